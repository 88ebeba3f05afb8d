"""GLUE test-set predictions in the files the GLUE server scores (`adapter-keras glue-submission`).

One TSV per submission file (`SUBMISSION_FILES`), header `index\\tprediction`,
one row per test example in the test file's order, labelled with the strings
the server expects (the GLUE files' own labels: 0/1, entailment/..., a float
for STS-B). AX, the diagnostic set, is predicted with the MNLI model. The
TSVs and `submission.zip` (them at its root, as the server wants) appear in
`--out` together or not at all.

A task without a model is "missing": not written, or, with `fill_missing`,
written with one constant prediction so that the server accepts the zip: the
majority class of the task's training labels (the first label without a
train file); for STS-B the mean training score (0 without a train file; any
constant scores the same correlation).
"""
from __future__ import annotations

import dataclasses
import io
import os
import zipfile
from typing import Dict, List, Mapping, Sequence

import numpy as np

from adapter_keras.models import load_adapter
from adapter_keras.io import atomic_directory, require_new_or_empty_directory, write_json_atomic
from adapter_keras.tasks.data import GLUE_DIAGNOSTIC_SPLIT, load_glue_split, load_glue_test_split
from adapter_keras.tasks.metrics import predictions_from_outputs
from adapter_keras.tasks.registry import GLUE_TASKS, TaskSpec
from adapter_keras.train.evaluation import predict_encoded
from adapter_keras.train.inputs import encode_examples

ZIP_NAME = "submission.zip"
SUMMARY_NAME = "submission.json"
HEADER = "index\tprediction"
# A fixed timestamp in the zip, so that the same predictions give the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class SubmissionFile:
  name: str  # the file name the GLUE server expects
  task: str  # the registry task whose model predicts it
  split: str  # its test split (load_glue_test_split)


SUBMISSION_FILES = (
    SubmissionFile("CoLA.tsv", "cola", "test"),
    SubmissionFile("SST-2.tsv", "sst2", "test"),
    SubmissionFile("MRPC.tsv", "mrpc", "test"),
    SubmissionFile("STS-B.tsv", "stsb", "test"),
    SubmissionFile("QQP.tsv", "qqp", "test"),
    SubmissionFile("MNLI-m.tsv", "mnli", "test_matched"),
    SubmissionFile("MNLI-mm.tsv", "mnli", "test_mismatched"),
    SubmissionFile("QNLI.tsv", "qnli", "test"),
    SubmissionFile("RTE.tsv", "rte", "test"),
    SubmissionFile("WNLI.tsv", "wnli", "test"),
    SubmissionFile("AX.tsv", "mnli", GLUE_DIAGNOSTIC_SPLIT),
)


def prediction_strings(task: TaskSpec, outputs: np.ndarray) -> List[str]:
  """The server's label strings: the task's label names by argmax, or the regression score."""
  predictions = predictions_from_outputs(task, outputs)
  if task.task_type == "regression":
    return [f"{float(v):.6f}" for v in predictions]
  return [task.label_names[i] for i in predictions]


def constant_prediction(data_dir: str, task: TaskSpec) -> str:
  """What a missing task is filled with (module docstring)."""
  try:
    labels = load_glue_split(data_dir, task, "train").labels
  except FileNotFoundError:
    labels = None
  if task.task_type == "regression":
    return f"{float(np.mean(labels)) if labels is not None else 0.0:.6f}"
  if labels is None:
    return task.label_names[0]
  return task.label_names[int(np.argmax(np.bincount(labels, minlength=len(task.label_names))))]


def tsv_text(indices: Sequence[str], predictions: Sequence[str]) -> str:
  return HEADER + "\n" + "".join(f"{i}\t{p}\n" for i, p in zip(indices, predictions))


def _zip_bytes(texts: Mapping[str, str]) -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
    for name, text in texts.items():
      archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), text)
  return buffer.getvalue()


def _present_test_files(data_dir: str, task: TaskSpec, targets: Sequence[SubmissionFile]) -> Dict:
  """{file name: (indices, examples)} of the targets whose test file `data_dir` holds; the others are
  reported as missing (the shared data has AX but no MNLI test files, for one)."""
  found = {}
  for target in targets:
    try:
      found[target.name] = load_glue_test_split(data_dir, task, target.split)
    except FileNotFoundError as e:
      print(f"[glue-submission] {target.name}: not written: {e}", flush=True)
  return found


def write_glue_submission(artifacts: Mapping[str, str], encoder_spec: str, data_dir: str, out_dir: str,
                          fill_missing: bool = False, batch_size: int = 64) -> Dict:
  """Predicts every GLUE test file that has a model in `artifacts` ({task name: artifact or run
  dir}) and writes the submission to `out_dir` (new or empty); returns what submission.json holds.

  Every artifact must be a model of the task it is given for, and `data_dir`
  must hold at least one of that task's test files; a file that cannot be
  written is listed in "missing", never dropped silently. Missing tasks:
  module docstring.
  """
  if not artifacts:
    raise ValueError("give at least one --artifact TASK=RUN")
  unknown = sorted(set(artifacts) - set(GLUE_TASKS))
  if unknown:
    raise ValueError(f"no GLUE task {', '.join(unknown)}; the tasks are {', '.join(GLUE_TASKS)}")
  require_new_or_empty_directory(out_dir)
  texts: Dict[str, str] = {}
  files: Dict[str, Dict] = {}
  for task_name in dict.fromkeys(f.task for f in SUBMISSION_FILES):
    targets = [f for f in SUBMISSION_FILES if f.task == task_name]
    task = GLUE_TASKS[task_name]
    if task_name in artifacts:
      tests = _present_test_files(data_dir, task, targets)
      if not tests:
        raise FileNotFoundError(f"--artifact {task_name}: {data_dir} holds none of its test files "
                                f"({', '.join(f.split for f in targets)}); download them with download_glue_data.py")
      model = load_adapter(artifacts[task_name], encoder_spec)
      trained = model.task
      if trained.name != task_name:
        raise ValueError(f"--artifact {task_name}={artifacts[task_name]} holds a model of task "
                         f"{trained.name!r}, not {task_name!r}")
      for name, (indices, examples) in tests.items():
        outputs = predict_encoded(model, encode_examples(model.preprocessor, examples), batch_size)
        # The artifact's own label order: its outputs are indexed by it.
        texts[name] = tsv_text(indices, prediction_strings(trained, outputs))
        files[name] = dict(task=task_name, source="model", artifact=artifacts[task_name], rows=len(indices))
      print(f"[glue-submission] {task_name}: predicted {', '.join(tests)}", flush=True)
    elif fill_missing:
      constant = constant_prediction(data_dir, task)
      for name, (indices, _) in _present_test_files(data_dir, task, targets).items():
        texts[name] = tsv_text(indices, [constant] * len(indices))
        files[name] = dict(task=task_name, source="filled", prediction=constant, rows=len(indices))
  written = [f.name for f in SUBMISSION_FILES if f.name in texts]
  summary = dict(
      files=files, zip=ZIP_NAME, predicted=[n for n in written if files[n]["source"] == "model"],
      filled=[n for n in written if files[n]["source"] == "filled"],
      missing=[f.name for f in SUBMISSION_FILES if f.name not in texts])
  with atomic_directory(out_dir) as staging:
    for name in written:
      with open(os.path.join(staging, name), "w", encoding="utf-8", newline="") as f:
        f.write(texts[name])
    with open(os.path.join(staging, ZIP_NAME), "wb") as f:
      f.write(_zip_bytes({name: texts[name] for name in written}))
    write_json_atomic(os.path.join(staging, SUMMARY_NAME), summary)
  return summary
