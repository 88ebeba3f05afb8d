"""The `adapter-keras` command line (also `python -m adapter_keras`).

With --json the last stdout line is one JSON object. User errors print one
line `error: ...` and exit with status 2 (traceback only with --debug).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from adapter_keras.arguments import positive_float, positive_int, run_command
from adapter_keras import train_flags
from adapter_keras.train_flags import METHODS, add_checkpoint_argument, add_training_arguments

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
                  topic_epochs=args.topic_epochs, learning_rate=args.learning_rate,
                  adapter_size=args.adapter_size, seed=args.seed,
                  max_train_examples=args.max_train_examples)


def _train_config_from_args(args):
  from adapter_keras.trainer import TrainConfig  # pylint: disable=import-outside-toplevel
  return TrainConfig(**train_flags.train_config_kwargs(args))


def _cmd_train(args) -> dict:
  from adapter_keras import task_data  # pylint: disable=import-outside-toplevel
  from adapter_keras.trainer import train_task  # pylint: disable=import-outside-toplevel
  config = _train_config_from_args(args)
  config.validate()
  task, train, dev = task_data.load_task_data(task_data.from_args(args))
  result, _, _ = train_task(task, train, dev, config, out_dir=args.out,
                            checkpoint_every_steps=args.checkpoint_every,
                            prefix_cache_dir=args.prefix_cache_dir)
  shown = " ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
  print(f"[train] best epoch {result.best_epoch}: {shown}; wrote {args.out}")
  return result.summary(args.out)


def _cmd_evaluate(args) -> dict:
  from adapter_keras import task_data  # pylint: disable=import-outside-toplevel
  from adapter_keras import training  # pylint: disable=import-outside-toplevel
  from adapter_keras.artifacts import load_artifact, task_from_dict  # pylint: disable=import-outside-toplevel
  from adapter_keras.trainer import evaluate_model  # pylint: disable=import-outside-toplevel
  model, manifest, preprocessor = load_artifact(args.artifact, args.encoder)
  trained_task = task_from_dict(manifest["task"])
  source = task_data.from_args(args)
  if not source.is_generic and source.task is None:
    source.task = trained_task.name
  task, _, dev = task_data.load_task_data(source, need_train=False, task=trained_task)
  if task.name != trained_task.name and not source.is_generic:
    raise ValueError(f"artifact {args.artifact} was trained for task {trained_task.name!r}, not {task.name!r}")
  splits = {args.split: dev[args.split]} if args.split else dev
  unknown = set(splits) - set(dev)
  if unknown:
    raise ValueError(f"unknown split {sorted(unknown)}; task {task.name} has {sorted(dev)}")
  encoded = {split: training.encode_examples(preprocessor, ex) for split, ex in splits.items()}
  per_split = evaluate_model(model, trained_task, encoded)
  for split, metrics in per_split.items():
    print(f"{trained_task.name} {split}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
  return dict(task=trained_task.name, metrics=per_split, primary_metric=trained_task.primary_metric)


def _cmd_sweep(args) -> dict:
  from adapter_keras import task_data  # pylint: disable=import-outside-toplevel
  from adapter_keras.sweep import SweepGrid, run_sweep  # pylint: disable=import-outside-toplevel
  if args.preset:
    grid = SweepGrid.from_preset(args.preset, learning_rates=args.learning_rates, epochs=args.epochs_list,
                                 adapter_sizes=args.adapter_sizes, seeds=args.seeds)
  else:
    missing = [flag for flag, value in (("--learning-rates", args.learning_rates),
                                        ("--epochs", args.epochs_list)) if not value]
    if missing:
      raise ValueError(f"give --preset or the explicit lists (missing {', '.join(missing)})")
    grid = SweepGrid(args.learning_rates, args.epochs_list, args.adapter_sizes or [args.adapter_size],
                     args.seeds or [0])
  config = _train_config_from_args(args)
  task, train, dev = task_data.load_task_data(task_data.from_args(args))
  best = run_sweep(task, train, dev, config, grid, args.out, prefix_cache_dir=args.prefix_cache_dir,
                   checkpoint_every_steps=args.checkpoint_every)
  if best is None:
    return dict(role="worker", out=args.out)
  setting = best["best_setting"]
  print(f"[sweep] best setting: lr {setting['learning_rate']}, epochs {setting['epochs']}, "
        f"size {setting['adapter_size']}: {task.primary_metric} {setting['mean']:.4f} "
        f"+- {setting['sem']:.4f} (s.e.m., {setting['n_seeds']} seeds); wrote {args.out}")
  return best


def _cmd_report(args) -> dict:
  from adapter_keras.report import collect_runs, markdown_table  # pylint: disable=import-outside-toplevel
  runs = collect_runs(args.run_dirs)
  table, summary = markdown_table(runs)
  print(table)
  return summary


def _cmd_export(args) -> dict:
  from adapter_keras.artifacts import read_manifest, resolve_artifact_dir  # pylint: disable=import-outside-toplevel
  from adapter_keras.export import export_saved_model  # pylint: disable=import-outside-toplevel
  from adapter_keras.multitask import MultiTaskModel  # pylint: disable=import-outside-toplevel
  artifacts = [resolve_artifact_dir(a) for a in args.artifact]
  manifests = [read_manifest(a) for a in artifacts]
  if len(artifacts) == 1 and manifests[0]["method"] != "adapter":
    from adapter_keras.artifacts import load_artifact, task_from_dict  # pylint: disable=import-outside-toplevel
    from adapter_keras.multitask import TaskEntry  # pylint: disable=import-outside-toplevel
    model, manifest, preprocessor = load_artifact(artifacts[0], args.encoder)
    task = task_from_dict(manifest["task"])
    entries = {task.name: TaskEntry(task.name, task, model, preprocessor, None)}
  else:
    multitask = MultiTaskModel.from_encoder(args.encoder)
    for artifact in artifacts:
      multitask.add_artifact(artifact)
    if len(set(multitask.task_names)) != len(artifacts):
      raise ValueError("two artifacts have the same task name")
    entries = {name: multitask[name] for name in multitask.task_names}
  export_saved_model(entries, args.out)
  print(f"exported {', '.join(entries)} to {args.out}")
  return dict(out=args.out, tasks=list(entries))


def _cmd_predict(args) -> dict:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  if not os.path.isdir(args.model):
    raise FileNotFoundError(f"SavedModel {args.model} not found")
  loaded = tf.saved_model.load(args.model)
  signatures = loaded.signatures
  if args.text_b and len(args.text_b) != len(args.texts):
    raise ValueError(f"{len(args.texts)} texts but {len(args.text_b)} --text-b values")
  text = tf.constant(args.texts)
  text_b = tf.constant(args.text_b or [""] * len(args.texts))
  if "mixed" in signatures:
    if not args.task:
      tasks = sorted(k for k in signatures if k not in ("mixed", "serving_default"))
      raise ValueError(f"this model serves several tasks; choose one with --task ({', '.join(tasks)})")
    out = signatures["mixed"](text=text, text_b=text_b, task=tf.constant([args.task] * len(args.texts)))
  else:
    fn = signatures["serving_default"]
    kwargs = dict(text=text)
    if "text_b" in fn.structured_input_signature[1]:
      if not args.text_b:
        raise ValueError("this is a sentence-pair task: give --text-b for every text")
      kwargs["text_b"] = text_b
    out = fn(**kwargs)
  labels = [l.decode() for l in out["label"].numpy()]
  scores = out["score"].numpy().tolist() if "score" in out else out["probabilities"].numpy().max(-1).tolist()
  for text_value, label, score in zip(args.texts, labels, scores):
    print(f"{label}\t{score:.4f}\t{text_value}")
  return dict(predictions=[dict(text=t, label=l, score=s) for t, l, s in zip(args.texts, labels, scores)])


class _OneLineErrorParser(argparse.ArgumentParser):
  """Usage errors as one line naming the problem and where to look, exit 2."""

  def error(self, message):
    self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
  parser = _OneLineErrorParser(prog="adapter-keras", description=__doc__.splitlines()[0])
  parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineErrorParser)

  p = sub.add_parser("params", help="parameter report for an architecture or encoder")
  source = p.add_mutually_exclusive_group(required=True)
  source.add_argument("--arch", choices=["bert-base", "bert-large", "minilm-l6"],
                      help="count a randomly initialised architecture")
  source.add_argument("--encoder", help="count a pre-trained encoder (name or directory)")
  p.add_argument("--adapter-size", type=positive_int, default=64)
  p.add_argument("--num-labels", type=positive_int, default=2, help="1 = regression")
  p.add_argument("--method", default="adapter", choices=METHODS)
  p.add_argument("--top-k", type=positive_int)
  p.add_argument("--pooling", choices=["cls", "mean"],
                 help="default: mean for MiniLM, else the pooled [CLS] output")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_params)

  p = sub.add_parser("demo", help="two adapter tasks on one frozen MiniLM, then export (offline)")
  p.add_argument("--out", default=os.path.join("runs", "demo"))
  p.add_argument("--encoder", default="minilm-l6")
  p.add_argument("--epochs", type=positive_int, default=2, help="epochs for Rotten Tomatoes")
  p.add_argument("--topic-epochs", type=positive_int, default=1, help="epochs for BBC News")
  p.add_argument("--learning-rate", type=positive_float, default=1e-3)
  p.add_argument("--adapter-size", type=positive_int, default=64)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max-train-examples", type=positive_int)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_demo)

  from adapter_keras import task_data  # pylint: disable=import-outside-toplevel
  p = sub.add_parser("train", help="train one task with one method; writes metrics.json and the model")
  task_data.add_arguments(p)
  add_training_arguments(p)
  p.add_argument("--out", required=True, help="output directory")
  add_checkpoint_argument(p)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_train)

  p = sub.add_parser("evaluate", help="metrics of a saved model on a task's dev data")
  p.add_argument("--artifact", required=True, help="the artifact directory a train run wrote")
  p.add_argument("--encoder", default="minilm-l6", help="the base encoder the artifact was trained on")
  task_data.add_arguments(p, need_train=False)
  p.add_argument("--split", help="one dev split (default: all of the task's)")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_evaluate)

  p = sub.add_parser("sweep", help="grid search (lr x epochs x adapter size x seeds), resumable")
  task_data.add_arguments(p)
  add_training_arguments(p, single_run=False)
  p.add_argument("--preset", choices=["paper-glue", "paper-extra"])
  p.add_argument("--learning-rates", type=positive_float, nargs="+")
  p.add_argument("--epochs", dest="epochs_list", type=positive_int, nargs="+")
  p.add_argument("--adapter-sizes", type=positive_int, nargs="+")
  p.add_argument("--seeds", type=int, nargs="+")
  p.add_argument("--out", required=True)
  add_checkpoint_argument(p)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_sweep, learning_rate=3e-4, epochs=3, seed=0)

  p = sub.add_parser("export", help="SavedModel (raw strings in) from one or more artifacts")
  p.add_argument("--artifact", action="append", required=True, help="artifact dir; repeat for several")
  p.add_argument("--encoder", default="minilm-l6", help="the base encoder the artifacts were trained on")
  p.add_argument("--out", required=True)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_export)

  p = sub.add_parser("predict", help="predictions of an exported SavedModel, one line per input")
  p.add_argument("--model", required=True, help="SavedModel directory written by export")
  p.add_argument("--task", help="task name, for multi-task models")
  p.add_argument("--text-b", nargs="+", help="second sentences for pair tasks, one per text")
  p.add_argument("texts", nargs="+", metavar="TEXT")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_predict)

  p = sub.add_parser("report", help="Table-1-style markdown table from train run directories")
  p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_report)

  from adapter_keras.analysis_cli import add_analyze_parser  # pylint: disable=import-outside-toplevel
  add_analyze_parser(sub)
  from adapter_keras.squad_cli import add_squad_parsers  # pylint: disable=import-outside-toplevel
  add_squad_parsers(sub)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
