"""argparse value types shared by the command lines (adapter-keras, automl-baseline)."""
from __future__ import annotations

import argparse


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
