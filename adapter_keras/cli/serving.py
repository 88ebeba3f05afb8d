"""`adapter-keras export` (a SavedModel from artifacts) and `adapter-keras predict` (from a SavedModel)."""
from __future__ import annotations

import os


def _cmd_export(args) -> dict:
  from adapter_keras.artifacts import (load_artifact, read_manifest,  # pylint: disable=import-outside-toplevel
                                       resolve_artifact_dir, task_from_manifest)
  from adapter_keras.methods import get_method  # pylint: disable=import-outside-toplevel
  from adapter_keras.serving.export import export_saved_model  # pylint: disable=import-outside-toplevel
  from adapter_keras.serving.multitask import MultiTaskModel, TaskEntry  # pylint: disable=import-outside-toplevel
  artifacts = [resolve_artifact_dir(a) for a in args.artifact]
  manifests = [read_manifest(a) for a in artifacts]
  if len(artifacts) == 1 and not get_method(manifests[0]["method"]).uses_adapters:
    model, manifest, preprocessor = load_artifact(artifacts[0], args.encoder)
    task = task_from_manifest(manifest)
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


def add_parsers(subparsers) -> None:
  p = subparsers.add_parser("export", help="SavedModel (raw strings in) from one or more artifacts")
  p.add_argument("--artifact", action="append", required=True, help="artifact dir; repeat for several")
  p.add_argument("--encoder", default="minilm-l6", help="the base encoder the artifacts were trained on")
  p.add_argument("--out", required=True)
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_export)

  p = subparsers.add_parser("predict", help="predictions of an exported SavedModel, one line per input")
  p.add_argument("--model", required=True, help="SavedModel directory written by export")
  p.add_argument("--task", help="task name, for multi-task models")
  p.add_argument("--text-b", nargs="+", help="second sentences for pair tasks, one per text")
  p.add_argument("texts", nargs="+", metavar="TEXT")
  p.add_argument("--json", action="store_true")
  p.set_defaults(func=_cmd_predict)
