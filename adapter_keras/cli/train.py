"""`adapter-keras train`, `evaluate`, `sweep` and `report`: one task's runs, their grid, their table (token
classification's `train --task-type token` and `evaluate` of its artifacts: cli/tagging.py)."""
from __future__ import annotations

from typing import Optional

from adapter_keras.cli.flags import (SWEEP_PRESETS, add_checkpoint_argument, add_data_arguments,
                                     add_training_arguments, data_source_from_args, learning_rate,
                                     positive_int, train_config_kwargs)
from adapter_keras.cli.records import add_train_records_arguments, train_on_records
from adapter_keras.cli.tagging import (add_task_type_argument, check_token_flags, evaluate_token_command,
                                       read_token_data, token_train_config, train_token_command)
from adapter_keras.tasks.metrics import SELECTION_RULES


def _train_config_from_args(args, **overrides):
  from adapter_keras.train.config import TrainConfig  # pylint: disable=import-outside-toplevel
  return TrainConfig(**train_config_kwargs(args, **overrides))


def _cmd_train(args) -> dict:
  from adapter_keras.tasks.sources import load_task_data  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.run import train_task  # pylint: disable=import-outside-toplevel
  if args.task_type == "token":
    return train_token_command(args)
  check_token_flags(args)
  config = _train_config_from_args(args)
  if args.train_records:
    result = train_on_records(args, config)
  else:
    task, train, dev = load_task_data(data_source_from_args(args))
    result, _ = train_task(task, train, dev, config, out_dir=args.out,
                              checkpoint_every_steps=args.checkpoint_every,
                              prefix_cache_dir=args.prefix_cache_dir)
  shown = " ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
  print(f"[train] best epoch {result.best_epoch}: {shown}; wrote {args.out}")
  return result.summary(args.out)


def load_artifact_and_data(args, with_train: bool = False, artifact: Optional[str] = None):
  """(task model, trained task, train or None, {dev split: examples}) for --artifact/--encoder and the
  data flags; the task defaults to the artifact's, and a GLUE task must be the one it was
  trained for. `with_train` also reads the training set where the source has one (a GLUE directory
  without train.tsv, or --dev alone, is fine). `artifact` replaces --artifact."""
  artifact = artifact or args.artifact
  from adapter_keras.artifacts import read_manifest, resolve_artifact_dir, task_from_manifest  # pylint: disable=import-outside-toplevel
  from adapter_keras.models import load_adapter  # pylint: disable=import-outside-toplevel
  from adapter_keras.tasks.sources import load_task_data  # pylint: disable=import-outside-toplevel
  trained_task = task_from_manifest(read_manifest(resolve_artifact_dir(artifact)))  # a span model: one line
  model = load_adapter(artifact, args.encoder)
  source = data_source_from_args(args)
  if not source.is_generic and source.task is None:
    source.task = trained_task.name
  need_train = with_train and (source.train_file is not None or not source.is_generic)
  try:
    task, train, dev = load_task_data(source, need_train=need_train, task=trained_task)
  except FileNotFoundError:
    if not need_train or source.is_generic:
      raise
    task, train, dev = load_task_data(source, need_train=False, task=trained_task)
  if task.name != trained_task.name and not source.is_generic:
    raise ValueError(f"artifact {artifact} was trained for task {trained_task.name!r}, not {task.name!r}")
  return model, trained_task, train, dev


def _cmd_evaluate(args) -> dict:
  from adapter_keras.train.evaluation import evaluate_model  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.inputs import encode_examples  # pylint: disable=import-outside-toplevel
  from adapter_keras.artifacts import read_manifest, resolve_artifact_dir, task_type_of  # pylint: disable=import-outside-toplevel
  manifest = read_manifest(resolve_artifact_dir(args.artifact))
  if task_type_of(manifest) == "token":
    return evaluate_token_command(args, manifest)
  model, trained_task, _, dev = load_artifact_and_data(args)
  if args.split and args.split not in dev:
    raise ValueError(f"--split {args.split}: no such split with this data; task {trained_task.name} has "
                     f"{', '.join(sorted(dev))} (labelled dev data only)")
  splits = {args.split: dev[args.split]} if args.split else dev
  encoded = {split: encode_examples(model.preprocessor, ex) for split, ex in splits.items()}
  per_split = evaluate_model(model, trained_task, encoded)
  for split, metrics in per_split.items():
    print(f"{trained_task.name} {split}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
  return dict(task=trained_task.name, metrics=per_split, primary_metric=trained_task.primary_metric)


def _cmd_sweep(args) -> dict:
  from adapter_keras.tasks.sources import load_task_data  # pylint: disable=import-outside-toplevel
  from adapter_keras.pretrained import encoder_vocabulary  # pylint: disable=import-outside-toplevel
  from adapter_keras.train.sweep import PRESETS, SweepGrid, run_sweep  # pylint: disable=import-outside-toplevel
  if args.preset:
    num_layers = None
    if PRESETS[args.preset].get("top_ks") is not None:
      if args.method != "top-k":
        raise ValueError(f"--preset {args.preset} sweeps the number of fine-tuned top layers: add --method top-k")
      num_layers = encoder_vocabulary(args.encoder)[0].num_hidden_layers
    grid = SweepGrid.from_preset(args.preset, num_layers=num_layers, learning_rates=args.learning_rates,
                                 epochs=args.epochs_list, adapter_sizes=args.adapter_sizes, seeds=args.seeds)
  else:
    missing = [flag for flag, value in (("--learning-rates", args.learning_rates),
                                        ("--epochs", args.epochs_list)) if not value]
    if missing:
      raise ValueError(f"give --preset or the explicit lists (missing {', '.join(missing)})")
    grid = SweepGrid(args.learning_rates, args.epochs_list, args.adapter_sizes or [args.adapter_size],
                     args.seeds or [0])
  if grid.top_ks is not None:
    if args.top_k is not None:
      raise ValueError(f"--top-k: --preset {args.preset} sweeps the number of top layers itself")
  # With a grid over top layers, a valid top-k config to start from; each trial sets its own.
  overrides = {} if grid.top_ks is None else dict(top_k=grid.top_ks[0])
  check_token_flags(args)
  if args.task_type == "token":
    config = token_train_config(args, **overrides)
    task, train, dev = read_token_data(args)
  else:
    config = _train_config_from_args(args, **overrides)
    task, train, dev = load_task_data(data_source_from_args(args))
  best = run_sweep(task, train, dev, config, grid, args.out, prefix_cache_dir=args.prefix_cache_dir,
                   checkpoint_every_steps=args.checkpoint_every, select=args.select,
                   save_artifacts=args.save_artifacts)
  if best is None:
    return dict(role="worker", out=args.out)
  for rule, setting in best["rules"].items():
    chosen = " (selected)" if rule == best["select"] else ""
    size = f"top_k {setting['top_k']}" if setting.get("top_k") is not None else f"size {setting['adapter_size']}"
    print(f"[sweep] {rule}{chosen}: lr {setting['learning_rate']}, epochs {setting['epochs']}, {size}: "
          f"{task.primary_metric} {setting['score']:.4f}; its setting's mean {setting['mean']:.4f} "
          f"+- {setting['sem']:.4f} (s.e.m., {setting['n_seeds']} seeds)")
  print(f"[sweep] wrote {args.out}")
  return best


def _cmd_report(args) -> dict:
  from adapter_keras.analysis.report import collect_runs, markdown_table  # pylint: disable=import-outside-toplevel
  runs = collect_runs(args.run_dirs)
  table, summary = markdown_table(runs, select=args.select)
  print(table)
  # The other rule's table too: how much the choice of rule moves each cell.
  other = next(rule for rule in SELECTION_RULES if rule != args.select)
  print(f"\n(cells: {args.select}, +- the s.e.m. over seeds of the chosen setting)\n\n{other}:")
  print(markdown_table(runs, select=other)[0])
  return summary


def add_parsers(subparsers) -> None:
  p = subparsers.add_parser("train", help="train one task with one method; writes metrics.json and the model")
  add_data_arguments(p)
  add_training_arguments(p)
  add_train_records_arguments(p)
  add_task_type_argument(p)
  p.add_argument("--out", required=True, help="output directory")
  add_checkpoint_argument(p)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_train)

  p = subparsers.add_parser("evaluate", help="metrics of a saved model on a task's dev data (a token model's: "
                                             "entity f1, precision, recall and word accuracy on a CoNLL --dev)")
  p.add_argument("--artifact", required=True, help="the artifact directory a train run wrote")
  p.add_argument("--encoder", default="minilm-l6", help="the base encoder the artifact was trained on")
  add_data_arguments(p, need_train=False)
  p.add_argument("--split", help="one dev split (default: all of the task's)")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_evaluate)

  p = subparsers.add_parser("sweep", help="grid search (lr x epochs x adapter size or top layers x seeds), "
                                          "resumable")
  add_data_arguments(p)
  add_training_arguments(p, single_run=False)
  add_task_type_argument(p)
  p.add_argument("--preset", choices=SWEEP_PRESETS,
                 help="the paper's grids: paper-glue (§3.2), paper-extra (§3.3's additional tasks), paper-variable-ft "
                      "(§3.3, with --method top-k: fine-tune the top n layers, n in {1,2,3,5,7,9,11,12} of "
                      "BERT-base's 12; on an encoder of L layers each n becomes n*L/12 rounded half up, "
                      "clipped to [1, L], duplicates dropped: L=6 gives 1..6, L=2 gives 1,2)")
  p.add_argument("--select", choices=SELECTION_RULES, default=SELECTION_RULES[0],
                 help="best.json's best_setting: best-run (the paper's rule: the setting of the single trial "
                      "with the best dev score) or best-mean (the best mean over seeds); both are reported")
  p.add_argument("--learning-rates", type=learning_rate, nargs="+")
  p.add_argument("--epochs", dest="epochs_list", type=positive_int, nargs="+")
  p.add_argument("--adapter-sizes", type=positive_int, nargs="+")
  p.add_argument("--seeds", type=int, nargs="+")
  p.add_argument("--save-artifacts", action="store_true",
                 help="each trial also saves its best epoch's model in OUT/trials/<setting>/artifact (for "
                      "glue-submission and `analyze ablation --artifacts`)")
  p.add_argument("--out", required=True)
  add_checkpoint_argument(p)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_sweep, learning_rate=3e-4, epochs=3, seed=0)

  p = subparsers.add_parser("report", help="Table-1-style markdown table from train run directories")
  p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                 help="train run directories, folders of them, or sweep --out directories")
  p.add_argument("--select", choices=SELECTION_RULES, default=SELECTION_RULES[0],
                 help="which run of several per method and task fills a cell: best-run (the paper's rule) or "
                      "best-mean (the setting with the best mean over seeds); the other is printed below")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_report)
