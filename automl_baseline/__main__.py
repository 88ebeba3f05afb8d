"""`python -m automl_baseline`: the automl-baseline command line."""
import sys

from automl_baseline.cli import main

sys.exit(main())
