"""The `adapter-keras analyze` subcommands: ablation, init-scale, tradeoff and fusion.

`add_parsers(subparsers)` adds `analyze` to the main parser; each of its
subcommands sets `func`, which returns a JSON-able dict (printed as the last
stdout line with --json, like every other command) and writes `<name>.json`
and `<name>.png` under --out: an --out already holding them is refused before
any work unless --overwrite is given. The studies live in analysis/.

Several seeds: `ablation --artifacts A B C` (or `--artifacts-from-sweep SWEEP
--adapter-size 64`) averages the ablations of several models of one task;
`tradeoff --seeds ... --learning-rates ...` trains every setting at each
learning rate and seed and tunes the learning rate per point on the mean dev
score over seeds, as does `tradeoff --from-runs` given such runs (a sweep's
trial directories).
"""
from __future__ import annotations

import argparse
import functools
import os
from typing import Dict, List, Optional, Tuple

from adapter_keras.cli.flags import (add_data_arguments, add_training_arguments, data_source_from_args,
                                     learning_rate, positive_float, positive_int, train_config_kwargs)
from adapter_keras.cli.train import load_artifact_and_data
from adapter_keras.train.config import TrainConfig
from adapter_keras.tasks.sources import DataSource, load_task_data

# The paper's Fig. 6 spans init stds from 1e-7 to 1.
DEFAULT_INIT_STDS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_LEARNING_RATE = 3e-4


def _add_training_arguments(parser: argparse.ArgumentParser, with_adapter_size: bool) -> None:
  add_training_arguments(parser, methods=False, single_run=False, adapter_size=with_adapter_size)
  parser.add_argument("--learning-rate", type=learning_rate, default=DEFAULT_LEARNING_RATE)
  parser.add_argument("--epochs", type=positive_int, default=3)


def _train_config(args, seed: int = 0, adapter_size: int = 64, **overrides):
  return TrainConfig(**train_config_kwargs(
      args, method="adapter", top_k=None, seed=seed,
      adapter_size=getattr(args, "adapter_size", adapter_size), **overrides))


def _ablation_data(args, artifact_dir: str):
  """(model, task, train or None, dev split name, dev splits) of one artifact and the data flags; the
  split checked against the task's."""
  model, task, train, dev = load_artifact_and_data(args, with_train=True, artifact=artifact_dir)
  split = args.split or task.dev_splits[0]
  if split not in dev:
    raise ValueError(f"unknown split {split!r}; task {task.name} has {sorted(dev)}")
  return model, task, train, split, dev


def _ablate(model, task, encoded, train, args) -> Dict:
  """analysis.ablation.ablation_study with the majority class of `train` and progress lines."""
  from adapter_keras.analysis.ablation import ablation_study  # pylint: disable=import-outside-toplevel
  return ablation_study(model, task, encoded, majority_labels=None if train is None else train.labels,
                        majority_source=None if train is None else "train", batch_size=args.batch_size,
                        progress=lambda line: print(line, flush=True))


def _cmd_ablation(args) -> Dict:
  from adapter_keras.analysis.ablation import plot_ablation  # pylint: disable=import-outside-toplevel
  from adapter_keras.analysis.common import write_result  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.inputs import encode_examples  # pylint: disable=import-outside-toplevel
  if args.adapter_size is not None and not args.artifacts_from_sweep:
    raise ValueError("--adapter-size picks trials of --artifacts-from-sweep; give that too")
  if args.artifacts or args.artifacts_from_sweep:
    return _ablation_over_artifacts(args)
  model, trained_task, train, split, dev = _ablation_data(args, args.artifact)
  result = _ablate(model, trained_task, encode_examples(model.preprocessor, dev[split]), train, args)
  result["split"] = split
  paths = write_result(result, args.out, "ablation", plot_ablation, args.overwrite)
  print(f"[ablation] {trained_task.name} {split}: {result['metric']} {result['baseline']:.4f} with all "
        f"adapters, {result['all_removed']:.4f} with none; wrote {paths['json']} and {paths['png']}")
  return dict(result, **paths)


def _cmd_fusion(args) -> Dict:
  import numpy as np  # pylint: disable=import-outside-toplevel
  from adapter_keras.analysis.common import write_result  # pylint: disable=import-outside-toplevel
  from adapter_keras.analysis.fusion import fusion_weights, plot_fusion_weights  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.inputs import encode_examples  # pylint: disable=import-outside-toplevel
  model, trained_task, _, split, dev = _ablation_data(args, args.artifact)
  result = fusion_weights(model, encode_examples(model.preprocessor, dev[split]), batch_size=args.batch_size,
                          progress=lambda line: print(line, flush=True))
  result.update(task=trained_task.name, split=split, artifact=args.artifact,
                title=f"{trained_task.name} {split}: fusion attention over the source adapters")
  paths = write_result(result, args.out, "fusion", plot_fusion_weights, args.overwrite)
  top = max(result["sites"], key=lambda site: max(site["weights"]))
  print(f"[fusion] {trained_task.name} {split}: {result['tokens']} tokens, {len(result['sites'])} fusion layers; "
        f"the most weight, {max(top['weights']):.2f}, goes to "
        f"{result['sources'][int(np.argmax(top['weights']))]} at layer {top['layer']} {top['position']}; "
        f"wrote {paths['json']} and {paths['png']}")
  return dict(result, **paths)


def _run_seed(artifact_dir: str) -> Optional[int]:
  """The seed of the train run (or sweep trial) that wrote `artifact_dir`, if its metrics.json says."""
  from adapter_keras.io import read_json_object  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.abspath(artifact_dir)), "metrics.json")
  if not os.path.exists(path):
    return None
  seed = (read_json_object(path, "a run's metrics object").get("config") or {}).get("seed")
  return seed if isinstance(seed, int) else None


def _ablation_over_artifacts(args) -> Dict:
  """The ablation of each of several artifacts of one task and base, then their mean and s.e.m."""
  from adapter_keras.analysis import ablation  # pylint: disable=import-outside-toplevel
  from adapter_keras.analysis.common import write_result  # pylint: disable=import-outside-toplevel
  from adapter_keras.artifacts import read_manifest, resolve_artifact_dir  # pylint: disable=import-outside-toplevel
  from adapter_keras.models import load_adapter  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.inputs import encode_examples  # pylint: disable=import-outside-toplevel
  selected = None
  if args.artifacts_from_sweep:
    items, selected = ablation.best_mean_sweep_artifacts(args.artifacts_from_sweep, args.adapter_size or 64)
    print(f"[ablation] {args.artifacts_from_sweep}: size {selected['adapter_size']} at lr "
          f"{selected['learning_rate']:g}, {selected['epochs']} epochs has the best mean over seeds "
          f"{selected['seeds']}", flush=True)
  else:
    items = args.artifacts
  artifact_dirs = [resolve_artifact_dir(item) for item in items]
  if len(set(map(os.path.realpath, artifact_dirs))) != len(artifact_dirs):
    raise ValueError("an artifact is named twice in --artifacts")
  # Checked on the manifests, before any model is built or evaluated.
  manifests = [read_manifest(d) for d in artifact_dirs]
  ablation.check_one_task_and_base(items, manifests)
  runs, encoded, split = [], None, None
  for index, (item, artifact_dir) in enumerate(zip(items, artifact_dirs)):
    print(f"[ablation] artifact {index + 1}/{len(items)}: {item}", flush=True)
    if index == 0:
      model, task, train, split, dev = _ablation_data(args, artifact_dir)
    else:
      model = load_adapter(artifact_dir, args.encoder)
    # The dev set is encoded once, unless an artifact tokenizes differently (another max length).
    if encoded is None or manifests[index]["tokenizer"] != manifests[index - 1]["tokenizer"]:
      encoded = encode_examples(model.preprocessor, dev[split])
    result = _ablate(model, task, encoded, train, args)
    runs.append(dict(result, artifact=artifact_dir, seed=_run_seed(artifact_dir)))
    print(f"[ablation] artifact {index + 1}/{len(items)}: {result['metric']} {result['baseline']:.4f} with "
          f"all adapters, {result['all_removed']:.4f} with none", flush=True)
    del model
  result = ablation.ablation_over_runs(runs)
  result["split"] = split
  if selected is not None:
    result["selected_from_sweep"] = selected
  paths = write_result(result, args.out, "ablation", ablation.plot_ablation, args.overwrite)
  mean, sem = result["mean"], result["sem"]
  print(f"[ablation] {task.name} {split}, {len(runs)} artifacts: {result['metric']} "
        f"{mean['baseline']:.4f} ± {sem['baseline']:.4f} with all adapters, {mean['all_removed']:.4f} ± "
        f"{sem['all_removed']:.4f} with none; wrote {paths['json']} and {paths['png']}")
  return dict(result, **paths)


def _cmd_init_scale(args) -> Dict:
  from adapter_keras.analysis.common import write_result  # pylint: disable=import-outside-toplevel
  from adapter_keras.analysis.init_scale import init_scale_study, plot_init_scale  # pylint: disable=import-outside-toplevel
  config = _train_config(args)
  task, train, dev = load_task_data(data_source_from_args(args))
  result = init_scale_study(task, train, dev, config, args.stds, args.seeds, args.out)
  paths = write_result(result, args.out, "init_scale", plot_init_scale, args.overwrite)
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


def _distinct(values: Optional[List], flag: str) -> Optional[List]:
  if values is not None and len(set(values)) != len(values):
    raise ValueError(f"{flag} names a value twice: {values}")
  return values


def _cmd_tradeoff(args) -> Dict:
  from adapter_keras.analysis import tradeoff  # pylint: disable=import-outside-toplevel
  from adapter_keras.analysis.common import write_result  # pylint: disable=import-outside-toplevel
  if args.from_runs:
    if (args.adapter_sizes or args.top_k or args.layer_norm or args.full or args.tasks or args.task
        or args.seeds or args.learning_rates):
      raise ValueError("--from-runs plots finished runs; do not combine it with --tasks/--task, "
                       "--adapter-sizes, --top-k, --layer-norm, --full, --seeds or --learning-rates")
    result = tradeoff.tradeoff_from_runs(args.from_runs)
  else:
    if args.learning_rates and (args.learning_rate is not None or args.fine_tune_learning_rate is not None):
      raise ValueError("--learning-rates sets every method's learning rates; do not combine it with "
                       "--learning-rate or --fine-tune-learning-rate")
    if args.seeds and args.seed is not None:
      raise ValueError("give --seed or --seeds, not both")
    seeds, learning_rates = _distinct(args.seeds, "--seeds"), _distinct(args.learning_rates, "--learning-rates")
    config = _train_config(args, seed=args.seed or 0,
                           learning_rate=args.learning_rate or DEFAULT_LEARNING_RATE)
    data = _tradeoff_task_data(args)
    _check_top_ks(args.encoder, args.top_k or [])
    result = tradeoff.tradeoff_study(
        data, config, adapter_sizes=args.adapter_sizes or [], top_ks=args.top_k or [],
        layer_norm=args.layer_norm, full=True if args.full else None,
        fine_tune_learning_rate=args.fine_tune_learning_rate, out_dir=args.out,
        learning_rates=learning_rates, seeds=seeds)
  paths = write_result(result, args.out, "tradeoff", tradeoff.plot_tradeoff, args.overwrite)
  print(f"[tradeoff] {len(result['runs'])} runs on {', '.join(result['tasks'])}; wrote {paths['json']} "
        f"and {paths['png']}")
  return dict(result, **paths)


def _add_artifact_study_arguments(p: argparse.ArgumentParser, name: str, func) -> None:
  """The flags of a study of trained artifacts on a data set's split (ablation, fusion), writing <name>.json/png."""
  p.add_argument("--encoder", default=TrainConfig.encoder, help="the base encoder the artifact was trained on")
  add_data_arguments(p)
  p.add_argument("--split", help="dev split to evaluate (default: the task's first)")
  p.add_argument("--batch-size", type=positive_int, default=64)
  _add_out_arguments(p, name, func, f"writes {name}.json and {name}.png here")


def _study(name: str, func, args) -> Dict:
  """`func(args)`, after refusing an --out holding an earlier result (before any model is built or trained)."""
  from adapter_keras.analysis.common import check_result_destination  # pylint: disable=import-outside-toplevel
  check_result_destination(args.out, name, args.overwrite)
  return func(args)


def _add_out_arguments(p: argparse.ArgumentParser, name: str, func, out_help: str) -> None:
  """--out, --overwrite and --json of a study writing <name>.json and <name>.png; sets `func`."""
  p.add_argument("--out", required=True, help=out_help)
  p.add_argument("--overwrite", action="store_true",
                 help=f"replace the {name}.json and {name}.png an earlier run left in --out (otherwise refused)")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=functools.partial(_study, name, func))


def add_parsers(subparsers) -> argparse.ArgumentParser:
  """Adds `analyze {ablation,fusion,init-scale,tradeoff}` to the main parser's subparsers."""
  analyze = subparsers.add_parser(
      "analyze", help="the paper's analyses: ablation, init scale, size trade-off; fusion attention")
  studies = analyze.add_subparsers(dest="analysis", required=True)

  p = studies.add_parser("ablation", help="metric with the adapters of every layer span removed (Fig. 5)")
  which = p.add_mutually_exclusive_group(required=True)
  which.add_argument("--artifact", help="the artifact directory a train run wrote (or that run's directory)")
  which.add_argument("--artifacts", nargs="+", metavar="ARTIFACT",
                     help="several artifacts (or run directories) of one task and base, e.g. seeds: "
                          "ablates each, then plots the mean and s.e.m. per cell")
  which.add_argument("--artifacts-from-sweep", metavar="SWEEP_DIR",
                     help="the trials of an adapter sweep (their artifact/) of --adapter-size at the "
                          "setting with the best mean dev score over seeds; as --artifacts")
  p.add_argument("--adapter-size", type=positive_int,
                 help="with --artifacts-from-sweep: the size whose trials to ablate (default 64)")
  _add_artifact_study_arguments(p, "ablation", _cmd_ablation)

  p = studies.add_parser("fusion", help="the softmax weight each source adapter gets at every fusion layer, "
                                        "averaged over a data set's tokens (AdapterFusion's Figure 6)")
  p.add_argument("--artifact", required=True, help="an artifact of method fusion (or its train run's directory)")
  _add_artifact_study_arguments(p, "fusion", _cmd_fusion)

  p = studies.add_parser("init-scale", help="dev metric vs. adapter initialisation std (Fig. 6)")
  add_data_arguments(p)
  _add_training_arguments(p, with_adapter_size=True)
  p.add_argument("--stds", type=positive_float, nargs="+", default=list(DEFAULT_INIT_STDS))
  p.add_argument("--seeds", type=int, nargs="+", default=[0])
  _add_out_arguments(p, "init_scale", _cmd_init_scale,
                     "writes init_scale.json, init_scale.png and runs/ here (finished runs there are reused)")

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
  p.add_argument("--learning-rates", type=learning_rate, nargs="+",
                 help="train every method at each learning rate (instead of --learning-rate and "
                      "--fine-tune-learning-rate); each point takes the one with the best mean dev score "
                      "over seeds")
  p.add_argument("--seed", type=int, help="the seed of every run (default 0)")
  p.add_argument("--seeds", type=int, nargs="+",
                 help="train every setting with each seed; points are the mean with its s.e.m.")
  p.add_argument("--from-runs", nargs="+", metavar="RUN_DIR",
                 help="plot finished train runs or sweep trials (their metrics.json) instead of "
                      "training; runs of one setting at several learning rates / seeds are tuned and "
                      "averaged as with --learning-rates / --seeds; with several tasks each needs a full "
                      "fine-tuning run")
  # None tells an explicit --learning-rate apart, which --learning-rates refuses.
  p.set_defaults(learning_rate=None)
  _add_out_arguments(p, "tradeoff", _cmd_tradeoff,
                     "writes tradeoff.json, tradeoff.png and runs/ here (finished runs there are reused)")
  return analyze

