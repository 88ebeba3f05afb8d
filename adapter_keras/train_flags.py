"""The command-line flags of a training run, shared by train, sweep, train-squad and analyze.

`add_training_arguments` adds a flag per TrainConfig field that a command
lets its user set; `train_config_kwargs` reads back exactly the fields whose
flags were added, so a command's flags and the TrainConfig it builds cannot
drift apart. This module imports no TensorFlow: `--help` and bad flags stay
fast.
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional

from adapter_keras.arguments import positive_float, positive_int
from adapter_keras.config import add_adapter_arguments, adapter_config_from_args

METHODS = ("adapter", "full", "top-k", "layer-norm")
STRATEGIES = ("auto", "default", "mirrored", "multi-worker", "tpu")
MIXED_PRECISION = ("bfloat16", "float16")
# TrainConfig fields that are plain flags of the same name (dashes for underscores).
_PLAIN_FIELDS = ("encoder", "method", "top_k", "learning_rate", "epochs", "seed", "batch_size",
                 "max_seq_length", "max_train_examples", "pooling", "strategy", "jit_compile",
                 "mixed_precision", "prefix_cache")


def add_training_arguments(parser: argparse.ArgumentParser, *, methods: bool = True,
                           single_run: bool = True, adapter_size: bool = True,
                           max_seq_length: Optional[int] = 128, pooling: bool = True,
                           strategy: bool = True, prefix_cache: bool = True) -> None:
  """Adds the "model and training" flags.

  Args:
    methods: --method and --top-k (off for commands that only train adapters).
    single_run: --learning-rate, --epochs and --seed (a sweep takes lists).
    adapter_size: --adapter-size (off for commands that loop over sizes).
    max_seq_length: the default of --max-seq-length; None leaves the flag to
      the command (train-squad documents it with its windows).
    pooling, strategy, prefix_cache: --pooling; --strategy; --prefix-cache
      and --prefix-cache-dir.
  """
  g = parser.add_argument_group("model and training")
  g.add_argument("--encoder", default="minilm-l6", help="encoder name or directory")
  if methods:
    g.add_argument("--method", default="adapter", choices=METHODS)
    g.add_argument("--top-k", type=positive_int, help="layers to fine-tune with --method top-k")
  add_adapter_arguments(g, with_size=adapter_size)
  if pooling:
    g.add_argument("--pooling", choices=["cls", "mean"], help="default: the encoder's")
  if single_run:
    g.add_argument("--learning-rate", type=positive_float, default=3e-4)
    g.add_argument("--epochs", type=positive_int, default=3)
    g.add_argument("--seed", type=int, default=0)
  g.add_argument("--batch-size", type=positive_int, default=32)
  if max_seq_length is not None:
    g.add_argument("--max-seq-length", type=positive_int, default=max_seq_length)
  g.add_argument("--max-train-examples", type=positive_int, help="a seeded random subset of the training set")
  if strategy:
    g.add_argument("--strategy", default="default", choices=STRATEGIES)
  g = parser.add_argument_group("speed (docs/performance.md)")
  g.add_argument("--jit-compile", action="store_true",
                 help="XLA-compile the train and predict steps (for accelerators; slower on CPU)")
  g.add_argument("--mixed-precision", choices=MIXED_PRECISION,
                 help="compute in bfloat16 or float16, variables in float32 (for accelerators)")
  if prefix_cache:
    g.add_argument("--prefix-cache", action="store_true",
                   help="run the frozen layers below the first trained one once per example and train on "
                        "their cached outputs (needs --adapter-layers with a top range of layers, or "
                        "--method top-k; freezes the LayerNorms of the prefix too)")
    g.add_argument("--prefix-cache-dir", metavar="DIR",
                   help="where a prefix cache too large for memory goes (a temporary file, deleted after)")


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
  """--checkpoint-every, for the commands that train into --out (train, sweep, train-squad)."""
  # 200 = trainer.DEFAULT_CHECKPOINT_EVERY_STEPS (not imported: that module loads TensorFlow).
  parser.add_argument("--checkpoint-every", type=positive_int, default=200, metavar="STEPS",
                      help="write a step checkpoint every STEPS steps (default %(default)s) and at every epoch "
                           "end, to OUT/checkpoint (a sweep trial's: OUT/trials/<setting>/checkpoint); "
                           "re-running a killed command resumes from the newest one")


def train_config_kwargs(args: argparse.Namespace, **overrides: Any) -> Dict[str, Any]:
  """TrainConfig keyword arguments from the flags `add_training_arguments` added.

  `overrides` replace flag values (e.g. method="adapter", or the adapter
  size of a loop, as adapter_size=...).
  """
  adapter_size = overrides.pop("adapter_size", None)
  kwargs = {name: getattr(args, name) for name in _PLAIN_FIELDS if hasattr(args, name)}
  kwargs["adapter"] = adapter_config_from_args(args, size=adapter_size)
  kwargs.update(overrides)
  return kwargs
