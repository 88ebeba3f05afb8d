"""Token classification on the command line: `adapter-keras train --task-type token`, `sweep --task-type token`,
`evaluate` of a token model's artifact and `params --task-type token` (cli/train.py and cli/model.py hand these
cases over here).

Token tasks take the same training flags as any run plus their windows (--doc-stride) and alignment
(--label-all-subwords); their data are CoNLL files (--train, --dev: `word<TAB>tag` per line, tasks/tagging.py)
and their labels the training file's ("O" first, the others sorted). The run itself is train/run.py's
train_token; every user error (a bad file, a tag the training set lacks, a flag that does not apply) is one
line before anything is written.
"""
from __future__ import annotations

from typing import Dict

from adapter_keras.cli.flags import positive_int, train_config_kwargs
from adapter_keras.train.config import TokenTrainConfig

TASK_TYPE_CHOICES = ("classification", "token")

# Flags of `train` that sentence classification reads and token classification does not (flag, dest).
_NOT_FOR_TOKENS = (("--data-dir", "data_dir"), ("--tfds-data-dir", "tfds_data_dir"), ("--text-column", "text_column"),
                   ("--text-b-column", "text_b_column"), ("--label-column", "label_column"),
                   ("--regression", "regression"), ("--train-records", "train_records"), ("--pooling", "pooling"),
                   ("--frozen-bottom-cache-dir", "prefix_cache_dir"), ("--label-names", "label_names"))


def add_task_type_argument(parser) -> None:
  """--task-type, and the token group's flags (--doc-stride, --label-all-subwords)."""
  defaults = TokenTrainConfig()
  parser.add_argument("--task-type", choices=TASK_TYPE_CHOICES, default="classification",
                      help="classification: one label (or --regression score) per text, the default; token: one "
                           "tag per word (NER, tagging) from two-column CoNLL files, --train and --dev")
  g = parser.add_argument_group("token classification (--task-type token)")
  g.add_argument("--doc-stride", type=positive_int, default=None,
                 help=f"sub-words between the starts of a long sentence's windows (default {defaults.doc_stride})")
  g.add_argument("--label-all-subwords", action="store_true",
                 help="train every sub-word of a word on its tag (B-X words' later pieces on I-X), not only the "
                      "first; a word's prediction is its first sub-word's either way")


def check_token_flags(args) -> None:
  """ValueError naming a token-only flag given without --task-type token, or a flag tokens do not take."""
  if args.task_type != "token":
    for flag, value in (("--doc-stride", args.doc_stride), ("--label-all-subwords", args.label_all_subwords)):
      if value:
        raise ValueError(f"{flag} applies to --task-type token")
    return
  for flag, dest in _NOT_FOR_TOKENS:
    if getattr(args, dest, None):
      raise ValueError(f"{flag} does not apply to --task-type token (CoNLL files via --train and --dev)")
  for flag, dest in (("--task", "task"), ("--train", "train_file"), ("--dev", "dev_file")):
    if not getattr(args, dest, None):
      raise ValueError(f"--task-type token needs {flag} (--task names the task; --train and --dev are CoNLL files)")


def token_train_config(args, **overrides) -> TokenTrainConfig:
  """The TokenTrainConfig of the training flags (`overrides` as flags.train_config_kwargs's)."""
  extra = {} if args.doc_stride is None else dict(doc_stride=args.doc_stride)
  return TokenTrainConfig(**train_config_kwargs(args, label_all_subwords=args.label_all_subwords,
                                                **dict(extra, **overrides)))


def read_token_data(args):
  """(TokenTask, train, dev) from --task, --train and --dev; dev tags checked against the training set's."""
  from adapter_keras.tasks.tagging import TokenTask, check_tags, label_set, read_conll  # pylint: disable=import-outside-toplevel
  train = read_conll(args.train_file, "--train")
  dev = read_conll(args.dev_file, "--dev")
  labels = label_set(train)
  check_tags(dev, labels)
  return TokenTask(args.task.strip(), labels), train, dev


def train_token_command(args) -> Dict:
  from adapter_keras.train.run import train_token  # pylint: disable=import-outside-toplevel
  check_token_flags(args)
  config = token_train_config(args)
  task, train, dev = read_token_data(args)
  result, _ = train_token(task, train, dev, config, out_dir=args.out, checkpoint_every_steps=args.checkpoint_every)
  shown = " ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
  print(f"[train] best epoch {result.best_epoch}: {shown}; wrote {args.out}")
  return result.summary(args.out)


def evaluate_token_command(args, manifest: Dict) -> Dict:
  """`evaluate` of a token model's artifact on --dev (a CoNLL file): f1, precision, recall, accuracy."""
  from adapter_keras.models.token_classifier import evaluate_token_artifact  # pylint: disable=import-outside-toplevel
  from adapter_keras.tasks.tagging import read_conll  # pylint: disable=import-outside-toplevel
  for flag, dest in _NOT_FOR_TOKENS + (("--split", "split"),):
    if getattr(args, dest, None):
      raise ValueError(f"{flag} does not apply to a token model's artifact (give its CoNLL file with --dev)")
  if not args.dev_file:
    raise ValueError("a token model's artifact is evaluated on a CoNLL file: give --dev FILE")
  sentences = read_conll(args.dev_file, "--dev")
  metrics, _, model = evaluate_token_artifact(args.artifact, sentences, args.encoder)
  name = model.task.name
  print(f"{name} dev ({len(sentences)} sentences): " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
  return dict(task=name, task_type="token", metrics=metrics, primary_metric="f1", score=metrics["f1"],
              sentences=len(sentences), **metrics)
