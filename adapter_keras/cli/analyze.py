"""The `adapter-keras analyze` subcommands: ablation, init-scale and tradeoff.

`add_parsers(subparsers)` adds `analyze` to the main parser; each of its
subcommands sets `func`, which returns a JSON-able dict (printed as the last
stdout line with --json, like every other command) and writes `<name>.json`
and `<name>.png` under --out. The studies live in analysis/.
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Tuple

from adapter_keras.cli.flags import (add_data_arguments, add_training_arguments, data_source_from_args,
                                     learning_rate, positive_float, positive_int, train_config_kwargs)
from adapter_keras.cli.train import load_artifact_and_data
from adapter_keras.tasks.sources import DataSource, load_task_data

# The paper's Fig. 6 spans init stds from 1e-7 to 1.
DEFAULT_INIT_STDS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _add_training_arguments(parser: argparse.ArgumentParser, with_adapter_size: bool) -> None:
  add_training_arguments(parser, methods=False, single_run=False, adapter_size=with_adapter_size)
  parser.add_argument("--learning-rate", type=learning_rate, default=3e-4)
  parser.add_argument("--epochs", type=positive_int, default=3)


def _train_config(args, seed: int = 0, adapter_size: int = 64):
  from adapter_keras.train.config import TrainConfig  # pylint: disable=import-outside-toplevel
  return TrainConfig(**train_config_kwargs(
      args, method="adapter", top_k=None, seed=seed,
      adapter_size=getattr(args, "adapter_size", adapter_size)))


def _cmd_ablation(args) -> Dict:
  from adapter_keras.analysis.ablation import ablation_study, plot_ablation  # pylint: disable=import-outside-toplevel
  from adapter_keras.analysis.common import write_result  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.inputs import encode_examples  # pylint: disable=import-outside-toplevel
  model, preprocessor, trained_task, train, dev = load_artifact_and_data(args, with_train=True)
  split = args.split or trained_task.dev_splits[0]
  if split not in dev:
    raise ValueError(f"unknown split {split!r}; task {trained_task.name} has {sorted(dev)}")
  encoded = encode_examples(preprocessor, dev[split])
  result = ablation_study(model, trained_task, encoded,
                          majority_labels=None if train is None else train.labels,
                          majority_source=None if train is None else "train", batch_size=args.batch_size,
                          progress=lambda line: print(line, flush=True))
  result["split"] = split
  paths = write_result(result, args.out, "ablation", plot_ablation)
  print(f"[ablation] {trained_task.name} {split}: {result['metric']} {result['baseline']:.4f} with all "
        f"adapters, {result['all_removed']:.4f} with none; wrote {paths['json']} and {paths['png']}")
  return dict(result, **paths)


def _cmd_init_scale(args) -> Dict:
  from adapter_keras.analysis.common import write_result  # pylint: disable=import-outside-toplevel
  from adapter_keras.analysis.init_scale import init_scale_study, plot_init_scale  # pylint: disable=import-outside-toplevel
  config = _train_config(args)
  task, train, dev = load_task_data(data_source_from_args(args))
  result = init_scale_study(task, train, dev, config, args.stds, args.seeds, args.out)
  paths = write_result(result, args.out, "init_scale", plot_init_scale)
  print(f"[init-scale] {len(result['stds'])} stds x {len(result['seeds'])} seeds; wrote {paths['json']} "
        f"and {paths['png']}")
  return dict(result, **paths)


def _tradeoff_task_data(args) -> Dict[str, Tuple]:
  source = data_source_from_args(args)
  if not args.tasks:
    task, train, dev = load_task_data(source)
    return {task.name: (task, train, dev)}
  if source.task or source.is_generic:
    raise ValueError("--tasks reads GLUE tasks from --data-dir/--tfds-data-dir; do not combine it with "
                     "--task or --train/--dev files")
  loaded = {}
  for name in args.tasks:
    task, train, dev = load_task_data(
        DataSource(task=name, data_dir=source.data_dir, tfds_data_dir=source.tfds_data_dir))
    if task.name in loaded:
      raise ValueError(f"task {task.name} is named twice in --tasks")
    loaded[task.name] = (task, train, dev)
  return loaded


def _check_top_ks(encoder_spec: str, top_ks: List[int]) -> None:
  """Fails before any training when a k exceeds the encoder's depth."""
  if not top_ks:
    return
  from adapter_keras.pretrained import load_encoder  # pylint: disable=import-outside-toplevel
  num_layers = load_encoder(encoder_spec).config.num_hidden_layers
  too_deep = [k for k in top_ks if k > num_layers]
  if too_deep:
    raise ValueError(f"--top-k {too_deep} exceeds the encoder's {num_layers} Transformer layers")


def _cmd_tradeoff(args) -> Dict:
  from adapter_keras.analysis import tradeoff  # pylint: disable=import-outside-toplevel
  from adapter_keras.analysis.common import write_result  # pylint: disable=import-outside-toplevel
  if args.from_runs:
    if args.adapter_sizes or args.top_k or args.layer_norm or args.full or args.tasks or args.task:
      raise ValueError("--from-runs plots finished runs; do not combine it with --tasks/--task, "
                       "--adapter-sizes, --top-k, --layer-norm or --full")
    result = tradeoff.tradeoff_from_runs(args.from_runs)
  else:
    config = _train_config(args, seed=args.seed)
    data = _tradeoff_task_data(args)
    _check_top_ks(args.encoder, args.top_k or [])
    result = tradeoff.tradeoff_study(
        data, config, adapter_sizes=args.adapter_sizes or [], top_ks=args.top_k or [],
        layer_norm=args.layer_norm, full=True if args.full else None,
        fine_tune_learning_rate=args.fine_tune_learning_rate, out_dir=args.out)
  paths = write_result(result, args.out, "tradeoff", tradeoff.plot_tradeoff)
  print(f"[tradeoff] {len(result['runs'])} runs on {', '.join(result['tasks'])}; wrote {paths['json']} "
        f"and {paths['png']}")
  return dict(result, **paths)


def add_parsers(subparsers) -> argparse.ArgumentParser:
  """Adds `analyze {ablation,init-scale,tradeoff}` to the main parser's subparsers."""
  analyze = subparsers.add_parser(
      "analyze", help="the paper's analyses: ablation, init scale, size trade-off")
  studies = analyze.add_subparsers(dest="analysis", required=True)

  p = studies.add_parser("ablation", help="metric with the adapters of every layer span removed (Fig. 5)")
  p.add_argument("--artifact", required=True, help="the artifact directory a train run wrote")
  p.add_argument("--encoder", default="minilm-l6", help="the base encoder the artifact was trained on")
  add_data_arguments(p)
  p.add_argument("--split", help="dev split to evaluate (default: the task's first)")
  p.add_argument("--batch-size", type=positive_int, default=64)
  p.add_argument("--out", required=True, help="writes ablation.json and ablation.png here")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_ablation)

  p = studies.add_parser("init-scale", help="dev metric vs. adapter initialisation std (Fig. 6)")
  add_data_arguments(p)
  _add_training_arguments(p, with_adapter_size=True)
  p.add_argument("--stds", type=positive_float, nargs="+", default=list(DEFAULT_INIT_STDS))
  p.add_argument("--seeds", type=int, nargs="+", default=[0])
  p.add_argument("--out", required=True, help="writes init_scale.json, init_scale.png and runs/ here")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_init_scale)

  p = studies.add_parser("tradeoff", help="metric vs. trained parameters: adapters, top-k, LayerNorm "
                                          "(Figs. 3 and 4)")
  add_data_arguments(p)
  p.add_argument("--tasks", nargs="+", help="several GLUE tasks (with --data-dir): scores become "
                                            "differences from full fine-tuning, shown as percentiles")
  _add_training_arguments(p, with_adapter_size=False)
  p.add_argument("--adapter-sizes", type=positive_int, nargs="+", help="adapter sizes m to train")
  p.add_argument("--top-k", type=positive_int, nargs="+", help="numbers of top layers to fine-tune")
  p.add_argument("--layer-norm", action="store_true", help="also tune only the LayerNorms (+ head)")
  p.add_argument("--full", action="store_true", help="also train full fine-tuning for a single task "
                                                     "(always trained with several tasks)")
  p.add_argument("--fine-tune-learning-rate", type=learning_rate,
                 help="learning rate of the top-k and full runs (default: --learning-rate)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--from-runs", nargs="+", metavar="RUN_DIR",
                 help="plot finished train runs (their metrics.json) instead of training; with several "
                      "tasks each needs a full fine-tuning run")
  p.add_argument("--out", required=True, help="writes tradeoff.json, tradeoff.png and runs/ here")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_tradeoff)
  return analyze

