"""The `adapter-keras` command line (also `python -m adapter_keras`).

One module per command group, each with `add_parsers(subparsers)`: model.py
(params, demo), train.py (train, evaluate, sweep, report), serving.py
(export, predict), squad.py (train-squad, evaluate-squad), analyze.py
(analyze ablation|init-scale|tradeoff), records.py (preprocess), submission.py
(glue-submission). Shared flags
and TF-free constants: flags.py. Commands import TensorFlow only when they run.

With --json the last stdout line is one JSON object. User errors print one
line `error: ...` and exit with status 2 (traceback only with --debug).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

from adapter_keras.cli import analyze, model, records, serving, squad, submission, train

# Both command lines (automl-baseline imports this module) keep TensorFlow's info lines out; the
# package's import already left the GPU probe out where no CUDA driver exists (_tf_runtime.py).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What a user can fix (bad flags, files, directories); anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, FileExistsError)
COMMAND_GROUPS = (model, train, records, serving, analyze, squad, submission)


def run_command(args: argparse.Namespace) -> int:
  """Runs `args.func(args)`: user errors print one `error: ...` line and give exit
  status 2 (a traceback only with --debug); with --json the result is the last
  stdout line. The automl-baseline command runs through here too."""
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


class OneLineErrorParser(argparse.ArgumentParser):
  """Usage errors as one line naming the problem and where to look, exit 2."""

  def error(self, message):
    self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
  parser = OneLineErrorParser(prog="adapter-keras", description=__doc__.splitlines()[0])
  parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
  subparsers = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)
  for group in COMMAND_GROUPS:
    group.add_parsers(subparsers)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
