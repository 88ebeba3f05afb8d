"""`adapter-keras glue-submission`: GLUE test-set predictions in the GLUE server's files and zip."""
from __future__ import annotations

import argparse

from adapter_keras.train.config import TrainConfig
from adapter_keras.cli.flags import ENCODER_HELP, positive_int
from adapter_keras.io import require_new_or_empty_directory
from adapter_keras.tasks.registry import GLUE_TASKS


def _task_and_run(text: str):
  task, sep, run = text.partition("=")
  task = task.strip().lower()
  if not sep or not run:
    raise argparse.ArgumentTypeError(f"expected TASK=RUN (e.g. rte=runs/rte), got {text!r}")
  if task not in GLUE_TASKS:
    raise argparse.ArgumentTypeError(f"{task!r} is not a GLUE task; choose from {', '.join(GLUE_TASKS)}")
  return task, run


def _cmd_glue_submission(args) -> dict:
  artifacts = {}
  for task, run in args.artifact:
    if task in artifacts:
      raise ValueError(f"--artifact names {task} twice ({artifacts[task]} and {run})")
    artifacts[task] = run
  # Before TensorFlow's import and the models' loading: a refused --out costs nothing.
  require_new_or_empty_directory(args.out)
  from adapter_keras.serving.glue_submission import write_glue_submission  # pylint: disable=import-outside-toplevel
  summary = write_glue_submission(artifacts, args.encoder, args.data_dir, args.out,
                                  fill_missing=args.fill_missing, batch_size=args.batch_size)
  for kind in ("predicted", "filled", "missing"):
    print(f"[glue-submission] {kind}: {', '.join(summary[kind]) or '-'}")
  print(f"[glue-submission] wrote {args.out} ({summary['zip']})")
  return dict(summary, out=args.out)


def add_parsers(subparsers) -> None:
  p = subparsers.add_parser(
      "glue-submission", help="GLUE test-set predictions as the GLUE server's TSV files (CoLA.tsv ... AX.tsv) "
                              "and a zip of them")
  p.add_argument("--artifact", type=_task_and_run, nargs="+", action="extend", required=True,
                 metavar="TASK=RUN", help="a trained model per task (run or artifact directory), e.g. "
                                          "rte=runs/rte mnli=runs/mnli; the MNLI model also predicts AX")
  p.add_argument("--encoder", default=TrainConfig.encoder, help="the base encoder the artifacts were trained on: "
                                                        + ENCODER_HELP)
  p.add_argument("--data-dir", required=True, help="the GLUE directory (download_glue_data.py's layout) "
                                                   "holding the test files, and diagnostic/ for AX")
  p.add_argument("--out", required=True, help="a new or empty directory")
  p.add_argument("--fill-missing", action="store_true",
                 help="write tasks without a model too, each with its majority training label (the first "
                      "label without a train file; STS-B: the mean score), so the server takes the zip")
  p.add_argument("--batch-size", type=positive_int, default=64)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_glue_submission)
