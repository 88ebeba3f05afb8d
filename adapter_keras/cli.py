"""The `adapter-keras` command line (also `python -m adapter_keras`).

With --json the last stdout line is one JSON object. User errors print one
line `error: ...` and exit with status 2 (traceback only with --debug).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
  return value


def _positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
  if not value > 0:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
  return value


def _cmd_params(args) -> dict:
  from adapter_keras.config import AdapterConfig  # pylint: disable=import-outside-toplevel
  from adapter_keras.encoder import ARCHITECTURES, build_encoder  # pylint: disable=import-outside-toplevel
  from adapter_keras.models import TaskModel  # pylint: disable=import-outside-toplevel
  from adapter_keras.pretrained import load_encoder  # pylint: disable=import-outside-toplevel
  from adapter_keras.tuning import apply_method, parameter_report, validate_method  # pylint: disable=import-outside-toplevel

  adapter_config = AdapterConfig(size=args.adapter_size) if args.method == "adapter" else None
  if args.arch:
    config = ARCHITECTURES[args.arch]
    validate_method(args.method, args.top_k, config.num_hidden_layers)
    encoder = build_encoder(config, adapter_config)
    pooling = args.pooling or ("mean" if args.arch == "minilm-l6" else "cls")
  else:
    pretrained = load_encoder(args.encoder, adapter_config)
    validate_method(args.method, args.top_k, pretrained.config.num_hidden_layers)
    encoder = pretrained.encoder
    pooling = args.pooling or pretrained.default_pooling
  task_type = "regression" if args.num_labels == 1 else "classification"
  model = TaskModel(encoder, args.num_labels, task_type=task_type, pooling=pooling)
  model.build_with_dummy_inputs()
  apply_method(model, args.method, args.top_k)
  report = parameter_report(model)
  print(f"{'base (pre-trained encoder)':<30}{report.base_params:>14,}")
  print(f"{'adapters':<30}{report.adapter_params:>14,}")
  print(f"{'layer norms':<30}{report.layer_norm_params:>14,}")
  print(f"{'head':<30}{report.head_params:>14,}")
  print(f"{'trained (method ' + args.method + ')':<30}{report.trained_params:>14,}"
        f"  ({100 * report.trained_fraction:.3f}% of base)")
  return report.to_dict()


def _cmd_demo(args) -> dict:
  from adapter_keras.demo import run_demo  # pylint: disable=import-outside-toplevel
  return run_demo(out_dir=args.out, encoder=args.encoder, epochs=args.epochs,
                  learning_rate=args.learning_rate, adapter_size=args.adapter_size,
                  seed=args.seed, max_train_examples=args.max_train_examples)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="adapter-keras", description=__doc__.splitlines()[0])
  parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
  sub = parser.add_subparsers(dest="command", required=True)

  p = sub.add_parser("params", help="parameter report for an architecture or encoder")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--arch", choices=["bert-base", "bert-large", "minilm-l6"],
                      help="count a randomly initialised architecture")
  source.add_argument("--encoder", help="count a pre-trained encoder (name or directory)")
  p.add_argument("--adapter-size", type=_positive_int, default=64)
  p.add_argument("--num-labels", type=_positive_int, default=2, help="1 = regression")
  p.add_argument("--method", default="adapter", choices=["adapter", "full", "top-k", "layer-norm"])
  p.add_argument("--top-k", type=_positive_int)
  p.add_argument("--pooling", choices=["cls", "mean"],
                 help="default: mean for MiniLM, else the pooled [CLS] output")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_params)

  p = sub.add_parser("demo", help="train an adapter on Rotten Tomatoes with MiniLM (offline)")
  p.add_argument("--out", default=os.path.join("runs", "demo"))
  p.add_argument("--encoder", default="minilm-l6")
  p.add_argument("--epochs", type=_positive_int, default=2)
  p.add_argument("--learning-rate", type=_positive_float, default=1e-3)
  p.add_argument("--adapter-size", type=_positive_int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max-train-examples", type=_positive_int)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_demo)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    result = args.func(args)
  except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
    if args.debug:
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  if getattr(args, "json", False):
    print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
