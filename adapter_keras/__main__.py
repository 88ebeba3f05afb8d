"""`python -m adapter_keras` runs the command line."""
import sys

from adapter_keras.cli import main

sys.exit(main())
