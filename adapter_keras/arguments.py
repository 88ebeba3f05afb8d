"""What the command lines (adapter-keras, automl-baseline) share: argparse value
types and how a parsed command runs (one-line errors, --json output)."""
from __future__ import annotations

import argparse
import json
import sys

# What a user can fix (bad flags, files, directories); anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, FileExistsError)


def positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
  return value


def positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
  if not value > 0:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
  return value


def run_command(args: argparse.Namespace) -> int:
  """Runs `args.func(args)`: user errors print one `error: ...` line and give exit
  status 2 (a traceback only with --debug); with --json the result is the last
  stdout line."""
  try:
    result = args.func(args)
  except USER_ERRORS as e:
    if getattr(args, "debug", False):
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  if getattr(args, "json", False):
    print(json.dumps(result))
  return 0
