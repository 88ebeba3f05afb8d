"""`adapter-keras preprocess`, and the `train --train-records` flags: training data as sharded TFRecord files.

`preprocess` tokenizes a task's training set once, with the tokenizer of
--encoder at --max-seq-length, into --num-shards TFRecord files and a
records.json spec (train/records.py owns the format); `train --train-records
DIR` then streams them, so training memory no longer grows with the data.
The data flags are `train`'s, so a `train` command line becomes a
`preprocess` one by swapping the training flags for --out/--num-shards.
--max-train-examples and --seed are here because a subset is chosen when
the records are written: the same seeded subset `train --max-train-examples N
--seed S` would use, written once instead of tokenized whole every run.
"""
from __future__ import annotations

import time

from adapter_keras.cli.flags import add_data_arguments, data_source_from_args, positive_int
from adapter_keras.train.config import TrainConfig

# Copies of train/records.py's constants (TensorFlow-importing; tests/test_records.py checks them equal).
DEFAULT_NUM_SHARDS = 8
DEFAULT_SHUFFLE_WINDOW = 16384


def _cmd_preprocess(args) -> dict:
  # pylint: disable=import-outside-toplevel
  from adapter_keras.tasks.sources import load_task_data
  from adapter_keras.io import require_new_or_empty_directory
  from adapter_keras.train.records import encoder_tokenizer, write_training_records
  started = time.perf_counter()
  require_new_or_empty_directory(args.out)  # before reading any data
  preprocessor = encoder_tokenizer(args.encoder, args.max_seq_length)
  task, train, _ = load_task_data(data_source_from_args(args), need_dev=False)
  print(f"[preprocess] task {task.name}: {len(train):,} training examples read in "
        f"{time.perf_counter() - started:.1f}s", flush=True)
  spec = write_training_records(args.out, task, train, preprocessor, num_shards=args.num_shards, seed=args.seed,
                                max_train_examples=args.max_train_examples, encoder=args.encoder,
                                log=lambda line: print(line, flush=True))
  seconds = time.perf_counter() - started
  print(f"[preprocess] wrote {spec['num_examples']:,} examples in {len(spec['shards'])} shards to {args.out} "
        f"in {seconds:.1f}s; train on them with: adapter-keras train --train-records {args.out} ...")
  return dict(out=args.out, task=task.name, num_examples=spec["num_examples"], num_shards=len(spec["shards"]),
              longest_example=spec["longest_example"], shards=spec["shards"], seconds=seconds)


def add_train_records_arguments(parser) -> None:
  """`train`'s --train-records and --shuffle-window."""
  g = parser.add_argument_group("streaming training data (adapter-keras preprocess; docs/performance.md)")
  g.add_argument("--train-records", metavar="DIR",
                 help="train on the tokenized examples `adapter-keras preprocess` wrote to DIR, streamed from "
                      "disk; the dev data comes from the data flags (--task with --data-dir, or --dev FILE); "
                      "replaces --train")
  g.add_argument("--shuffle-window", type=positive_int, metavar="EXAMPLES",
                 help=f"with --train-records: examples shuffled together (default {DEFAULT_SHUFFLE_WINDOW}; "
                      "a window holding the whole training set trains exactly as without records)")


def train_on_records(args, config):
  """`train --train-records`: the RecordsClassificationRecipe through the shared run; its TrainResult."""
  # pylint: disable=import-outside-toplevel
  from adapter_keras.tasks.sources import load_task_data
  from adapter_keras.train.run import run
  from adapter_keras.train.records import open_training_records
  from adapter_keras.train.records_recipe import RecordsClassificationRecipe
  if args.train_file:
    raise ValueError("--train-records DIR replaces --train FILE; give one of them")
  records = open_training_records(args.train_records)
  task = records.task
  source = data_source_from_args(args)
  if source.is_generic:
    if source.regression and task.task_type != "regression":
      raise ValueError(f"--regression, but the records in {args.train_records} hold classification task "
                       f"{task.name!r}")
    if (source.text_b_column is not None) != task.is_pair:
      raise ValueError(f"the records hold {'sentence pairs' if task.is_pair else 'single sentences'} "
                       f"(task {task.name!r}): {'give' if task.is_pair else 'drop'} --text-b-column")
    source.regression = task.task_type == "regression"
  elif source.task is None:
    source.task = task.name
  dev_task, _, dev = load_task_data(source, need_train=False, task=task)
  if dev_task.to_dict() != task.to_dict():
    raise ValueError(f"the records in {args.train_records} hold task {task.name!r}, the dev data is task "
                     f"{dev_task.name!r}")
  recipe = RecordsClassificationRecipe(records, dev, shuffle_window=args.shuffle_window or DEFAULT_SHUFFLE_WINDOW)
  result, _ = run(recipe, config, args.out, checkpoint_every_steps=args.checkpoint_every)
  return result


def add_parsers(subparsers) -> None:
  p = subparsers.add_parser("preprocess", help="tokenize a task's training set once into sharded TFRecord files "
                                               "for train --train-records")
  add_data_arguments(p)
  defaults = TrainConfig()
  g = p.add_argument_group("tokenization and output")
  g.add_argument("--encoder", default=defaults.encoder,
                 help="the encoder whose tokenizer to use, in any --encoder form (no encoder is built)")
  g.add_argument("--max-seq-length", type=positive_int, default=defaults.max_seq_length)
  g.add_argument("--max-train-examples", type=positive_int,
                 help="write the seeded random subset train --max-train-examples N --seed S would use")
  g.add_argument("--seed", type=int, default=defaults.seed,
                 help="seeds the subset and the order the examples are written in")
  g.add_argument("--num-shards", type=positive_int, default=DEFAULT_NUM_SHARDS,
                 help="TFRecord files to write (at least the number of workers that will train on them)")
  g.add_argument("--out", required=True, help="new or empty output directory")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_preprocess)
