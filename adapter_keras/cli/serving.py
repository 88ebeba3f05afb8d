"""`adapter-keras export` (a SavedModel from artifacts) and `adapter-keras predict` (from a SavedModel)."""
from __future__ import annotations

import json
import os
import sys
import time

from adapter_keras.train.config import TrainConfig
from adapter_keras.cli.flags import positive_int
from adapter_keras.serving.predict import CHUNK_INPUTS, DEFAULT_BATCH_SIZE


def _cmd_export(args) -> dict:
  from adapter_keras.serving.signatures import (  # pylint: disable=import-outside-toplevel
      check_export_destination, check_task_name, signature_names)
  # Before TensorFlow's import and the encoder's loading: a refused --out costs nothing.
  check_export_destination(args.out, args.overwrite)
  from adapter_keras.artifacts import (read_manifest,  # pylint: disable=import-outside-toplevel
                                       resolve_artifact_dir, task_from_manifest, task_type_of)
  from adapter_keras.tasks.tagging import TokenTask  # pylint: disable=import-outside-toplevel
  from adapter_keras.models import load_adapter  # pylint: disable=import-outside-toplevel
  from adapter_keras.serving.export import export_saved_model  # pylint: disable=import-outside-toplevel
  from adapter_keras.serving.multitask import MultiTaskModel  # pylint: disable=import-outside-toplevel
  artifacts = [resolve_artifact_dir(a) for a in args.artifact]
  manifests = [read_manifest(a) for a in artifacts]
  # A span model: one line, before any loading; a token model's task is a TokenTask.
  tasks = [TokenTask.from_dict(m["task"]) if task_type_of(m) == "token" else task_from_manifest(m) for m in manifests]
  if len(artifacts) > 1:
    signature_names([task.name for task in tasks])  # colliding names, before any loading
  else:
    check_task_name(tasks[0].name)  # a reserved signature name, before any loading
  base = None
  if len(artifacts) == 1:  # one task: its own model, whatever its method (nothing to share)
    entries = {tasks[0].name: load_adapter(artifacts[0], args.encoder)}
  else:
    multitask = MultiTaskModel.from_encoder(args.encoder)
    for artifact in artifacts:
      multitask.add_artifact(artifact)
    entries = {name: multitask[name] for name in multitask.task_names}
    base = multitask.base.encoder  # the `all` signature computes what the tasks share with its layers
  # One task only: several share the base's kernels, so their updates cannot be folded into them.
  export_saved_model(entries, args.out, overwrite=args.overwrite, merge=len(entries) == 1 and not args.no_merge,
                     base=base)
  print(f"exported {', '.join(entries)} to {args.out}")
  return dict(out=args.out, tasks=list(entries))


def _read_input(source: str):
  from adapter_keras.serving.predict import read_examples  # pylint: disable=import-outside-toplevel
  if source == "-":
    return read_examples(sys.stdin.buffer, "stdin")
  try:
    with open(source, "rb") as f:
      return read_examples(f, f"--input {source}")
  except FileNotFoundError:
    raise FileNotFoundError(f"--input {source} not found") from None
  except IsADirectoryError:
    raise ValueError(f"--input {source} is a directory; give a file, or - for stdin") from None


def _cmd_predict(args) -> dict:
  from adapter_keras.serving.predict import (  # pylint: disable=import-outside-toplevel
      ExportedModel, Predictor, check_examples, examples_from_texts, predict)
  # Model, task and inputs are all checked before TensorFlow is imported (for a model with a manifest).
  model = ExportedModel(args.model)
  if args.input is not None:
    if args.texts or args.text_b:
      raise ValueError("give inputs either as TEXT arguments (with --text-b) or with --input, not both; "
                       'with --input, second texts go in JSON lines as "text_b"')
    examples = _read_input(args.input)
  else:
    examples = examples_from_texts(args.texts, args.text_b)
  task = model.choose_task(args.task)
  check_examples(task, examples)
  predictor = Predictor(model, task)
  start = time.perf_counter()

  def progress(done, total):
    print(f"predict: {done}/{total} inputs ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)

  long_input = len(examples) > CHUNK_INPUTS
  results = predict(predictor, examples, args.batch_size, progress=progress if long_input else None)
  try:
    for index, result in enumerate(results):
      example = examples[index]
      line = dict(text=example.text)
      if example.text_b is not None:
        line["text_b"] = example.text_b
      line.update(result)
      print(json.dumps(line, ensure_ascii=False))
    sys.stdout.flush()
  except BrokenPipeError:
    # The reader has gone (`predict ... | head`): stop quietly like other line tools, without a traceback
    # from Python's final flush of the closed stdout.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)
  return dict(model=args.model, task=task.name, inputs=len(examples), batch_size=args.batch_size)


def add_parsers(subparsers) -> None:
  p = subparsers.add_parser("export", help="SavedModel (raw strings in) from one or more artifacts")
  p.add_argument("--artifact", action="append", required=True, help="artifact dir; repeat for several")
  p.add_argument("--encoder", default=TrainConfig.encoder, help="the base encoder the artifacts were trained on")
  p.add_argument("--out", required=True, help="a new or empty directory")
  p.add_argument("--overwrite", action="store_true",
                 help="let --out be an earlier export (and nothing else), which is replaced")
  p.add_argument("--no-merge", action="store_true",
                 help="one task: keep its method's update as operations of its own in the graph (by default a "
                      "method with a merge, LoRA or IA3, is folded into the base kernels; several tasks never are)")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_export)

  p = subparsers.add_parser("predict", help="predictions of an exported SavedModel: one JSON line per input "
                                            "({text, [text_b], label, score}; a token model's {text, words: "
                                            "[{word, tag, start, end, score}]}; with --task all {text, [text_b], "
                                            "tasks: {task: its result}}), in input order")
  p.add_argument("--model", required=True, help="SavedModel directory written by export")
  p.add_argument("--task", help="the task to run: required for a multi-task model; a single-task model "
                                "refuses any other than its own. `all`: every task of a multi-task model, in one "
                                "call that computes what the tasks share once (text_b when any is a pair task)")
  p.add_argument("--input", metavar="FILE|-",
                 help='inputs, one per line: the text, or a JSON object {"text": ..., "text_b": ...} '
                      "(text_b for pair tasks); - reads stdin")
  p.add_argument("--text-b", nargs="+", help="second texts for a pair task, one per TEXT")
  p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                 help="inputs per model call, grouped by length (bounds memory; default %(default)s)")
  p.add_argument("texts", nargs="*", metavar="TEXT")
  p.add_argument("--json", action="store_true", help="end with one JSON summary line")
  p.set_defaults(func=_cmd_predict)
