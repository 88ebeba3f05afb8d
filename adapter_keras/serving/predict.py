"""Predictions from an export: inputs read and checked, then run in length-sorted batches, in input order.

Used by `adapter-keras predict`. Everything up to `Predictor` imports no
TensorFlow, so a wrong `--model`, `--task` or input fails in a fraction of a
second; the export's manifest (serving/signatures.py) says what each task
expects. An export written before the manifest existed is still served: its
tasks are then read from its signatures once it is loaded.

`--task all` (`ServedAll`) runs the export's `all` signature: every task's
result for each input from one call, which computes what the tasks share once
(serving/export.py); a multi-task export written before that signature existed
is refused with the fix named.

Inputs (`read_examples`): one per line, either the text itself or a JSON
object {"text": ..., "text_b": ...} ("text_b" only for sentence-pair tasks; a
text that itself starts with "{" must be given as JSON). Every input is read
and checked before the first prediction, so a bad line fails before any output.

Memory: the in-graph tokenizer pads a call's inputs to its longest one, so one
long input in a single call of 10,000 would pad all of them to
max_seq_length. `predict` runs chunks of `CHUNK_INPUTS` inputs, each sorted by
length and cut into batches of `batch_size`, and yields every chunk's results
in input order as soon as the chunk is done. Outputs do not depend on the
batching (padding is masked); tests/test_reliability_serving.py checks that.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from adapter_keras.serving.signatures import (ALL_SIGNATURE, ARTIFACT_FILES, DEFAULT_SIGNATURE,
                                              RESERVED_SIGNATURES, ROUTER_SIGNATURE, RUN_DIRECTORY_FILES,
                                              read_export_manifest)

INPUT_FIELDS = ("text", "text_b")
DEFAULT_BATCH_SIZE = 64
CHUNK_INPUTS = 2048
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclasses.dataclass(frozen=True)
class Example:
  text: str
  text_b: Optional[str] = None


def examples_from_texts(texts: Sequence[str], texts_b: Optional[Sequence[str]] = None) -> List[Example]:
  """Examples from the command line's TEXT arguments and `--text-b` values."""
  if not texts:
    raise ValueError("no inputs: give texts to predict, or --input FILE (- for stdin)")
  if texts_b is not None and len(texts_b) != len(texts):
    raise ValueError(f"{len(texts)} texts but {len(texts_b)} --text-b values; give one second text per text")
  return [Example(t, None if texts_b is None else texts_b[i]) for i, t in enumerate(texts)]


def read_examples(lines: Iterable[bytes], source: str) -> List[Example]:
  """Examples from the lines of `source` (see the module docstring), all checked; line n is input n."""
  examples = []
  for number, raw in enumerate(lines, 1):
    where = f"{source} line {number}"
    try:
      # utf-8-sig on the first line: editors that save "UTF-8 with BOM" put one there.
      line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
      raise ValueError(f"{where} is not UTF-8 text") from None
    if line.lstrip().startswith("{"):
      examples.append(_json_example(line, where))
    elif not line.strip():
      raise ValueError(f"{where} is empty; give one text (or one JSON object) per line")
    else:
      examples.append(Example(line))
  if not examples:
    raise ValueError(f"{source} holds no inputs")
  return examples


def _json_example(line: str, where: str) -> Example:
  try:
    value = json.loads(line)
  except ValueError as e:
    raise ValueError(f"{where} starts with '{{' but is not a JSON object ({e}); a text starting with '{{' "
                     'must be given as {"text": ...}') from None
  if not isinstance(value, dict):
    raise ValueError(f"{where} is JSON but not an object")
  unknown = sorted(set(value) - set(INPUT_FIELDS))
  if unknown:
    raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}; the fields are text and text_b")
  if not isinstance(value.get("text"), str):
    raise ValueError(f'{where} needs "text" as a string')
  text_b = value.get("text_b")
  if text_b is not None and not isinstance(text_b, str):
    raise ValueError(f'{where} has a "text_b" that is not a string')
  return Example(value["text"], text_b)


# ---------------------------------------------------------------- the export and its tasks


@dataclasses.dataclass(frozen=True)
class ServedTask:
  name: Optional[str]  # None: a single-task export too old to record its task's name
  signature: str
  is_pair: bool
  task_type: str = "classification"  # "token": a tag per word (serving/export.py's token signature)

  def describe(self) -> str:
    return f"task {self.name!r}" if self.name is not None else "this model's task"


@dataclasses.dataclass(frozen=True)
class ServedAll:
  """`--task all`: every task of a multi-task export, from its `all` signature in one call."""
  tasks: Tuple[ServedTask, ...]
  signature: str = ALL_SIGNATURE
  name: str = ALL_SIGNATURE
  task_type: str = "all"

  @property
  def is_pair(self) -> bool:
    """Whether the signature takes text_b: when any task is a pair task (the others ignore it)."""
    return any(t.is_pair for t in self.tasks)

  def describe(self) -> str:
    return f"--task {ALL_SIGNATURE}"


def _not_a_saved_model_hint(path: str) -> str:
  entries = os.listdir(path)
  if any(f in entries for f in RUN_DIRECTORY_FILES):
    return (f"; it is a training run directory: export it first with "
            f"`adapter-keras export --artifact {path} --out DIR`")
  if all(f in entries for f in ARTIFACT_FILES):
    return f"; it is an artifact: export it first with `adapter-keras export --artifact {path} --out DIR`"
  return "" if entries else "; it is empty"


class ExportedModel:
  """An export directory: checked and described without TensorFlow; `signatures()` loads it."""

  def __init__(self, path: str):
    if not os.path.exists(path):
      raise FileNotFoundError(f"--model {path} not found")
    if not os.path.isdir(path):
      raise NotADirectoryError(f"--model {path} is a file, not a SavedModel directory")
    if not any(os.path.isfile(os.path.join(path, f)) for f in SAVED_MODEL_FILES):
      raise ValueError(f"--model {path} is not a SavedModel (no saved_model.pb){_not_a_saved_model_hint(path)}; "
                       "give a directory written by `adapter-keras export`")
    self.path = path
    self.manifest = read_export_manifest(path)
    self._signatures = None

  def signatures(self):
    """The loaded SavedModel's signatures (loading runs its graph: load only exports you trust)."""
    if self._signatures is None:
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
      import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
      try:
        loaded = tf.saved_model.load(self.path)
      except Exception as e:  # pylint: disable=broad-except
        # A damaged SavedModel fails in protobuf, TensorFlow or the OS, with many exception types; all
        # mean the same to a user.
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"--model {self.path} cannot be loaded as a SavedModel: {first_line}") from None
      self._signatures = (loaded, loaded.signatures)
    return self._signatures[1]

  def tasks(self) -> List[ServedTask]:
    if self.manifest is not None:
      return [ServedTask(t["name"], t["signature"], t["is_pair"], t.get("task_type") or "classification")
              for t in self.manifest["tasks"]]
    signatures = self.signatures()
    if ROUTER_SIGNATURE in signatures:
      names = sorted(k for k in signatures if k not in RESERVED_SIGNATURES)
      return [ServedTask(n, n, _takes_text_b(signatures[n])) for n in names]
    return [ServedTask(None, DEFAULT_SIGNATURE, _takes_text_b(signatures[DEFAULT_SIGNATURE]))]

  def choose_task(self, requested: Optional[str]) -> Union[ServedTask, ServedAll]:
    """The task to run: `requested` (--task) must be one the export serves, or `all` (`ServedAll`)."""
    tasks = self.tasks()
    names = ", ".join(str(t.name) for t in tasks)
    # A task named "all" of an export from before the name was reserved keeps its meaning there.
    if requested == ALL_SIGNATURE and not any(t.name == ALL_SIGNATURE for t in tasks):
      return self._all_tasks(tasks, names)
    if len(tasks) > 1:
      if requested is None:
        raise ValueError(f"--model {self.path} serves several tasks; choose one with --task ({names})")
      for task in tasks:
        if task.name == requested:
          return task
      raise ValueError(f"--model {self.path} serves no task {requested!r}; its tasks: {names}")
    task = tasks[0]
    if requested is not None and requested != task.name:
      if task.name is None:
        raise ValueError(f"--model {self.path} serves a single task and does not record its name "
                         f"(exported by an older adapter_keras); leave out --task {requested}")
      raise ValueError(f"--model {self.path} serves only task {task.name!r}, not --task {requested!r}")
    return task


  def _all_tasks(self, tasks: List[ServedTask], names: str) -> ServedAll:
    if len(tasks) == 1:
      raise ValueError(f"--model {self.path} serves a single task ({tasks[0].describe()}); --task {ALL_SIGNATURE} "
                       "runs every task of a multi-task export: leave --task out")
    if self.manifest is not None:
      has_all = self.manifest.get("all_tasks") == ALL_SIGNATURE
    else:
      has_all = ALL_SIGNATURE in self.signatures()
    if not has_all:
      raise ValueError(f"--model {self.path} has no {ALL_SIGNATURE!r} signature (exported by an older adapter_keras): "
                       f"export its artifacts again for --task {ALL_SIGNATURE}, or choose one task with --task "
                       f"({names})")
    return ServedAll(tuple(tasks))


def _takes_text_b(function) -> bool:
  return "text_b" in function.structured_input_signature[1]


def check_examples(task: Union[ServedTask, ServedAll], examples: Sequence[Example]) -> None:
  """Refuses inputs that do not fit the task: a pair task needs every second text, a single one none; with
  `--task all`, every input needs one when any task is a pair task, and none may have one otherwise."""
  if isinstance(task, ServedAll):
    pairs = [t.name for t in task.tasks if t.is_pair]
    if pairs:
      missing = next((i for i, e in enumerate(examples) if e.text_b is None), None)
      if missing is not None:
        raise ValueError(f"{task.describe()} runs sentence-pair task {pairs[0]!r} and input {missing + 1} has no "
                         "second text; give one with --text-b, or as \"text_b\" in --input's JSON lines "
                         "(single-sentence tasks ignore it)")
    else:
      given = next((i for i, e in enumerate(examples) if e.text_b is not None), None)
      if given is not None:
        raise ValueError(f"{task.describe()} runs single-sentence tasks only, but input {given + 1} has a second "
                         "text (--text-b or text_b); leave it out")
    return
  if task.is_pair:
    missing = next((i for i, e in enumerate(examples) if e.text_b is None), None)
    if missing is not None:
      raise ValueError(f"{task.describe()} is a sentence-pair task and input {missing + 1} has no second text; "
                       'give one with --text-b, or as "text_b" in --input\'s JSON lines')
  else:
    given = next((i for i, e in enumerate(examples) if e.text_b is not None), None)
    if given is not None:
      raise ValueError(f"{task.describe()} takes one text per input, but input {given + 1} has a second "
                       "text (--text-b or text_b); leave it out")


# ---------------------------------------------------------------- running it


class Predictor:
  """One task's signature of a loaded export: a batch of examples -> a result per example: {"label", "score"},
  or for a token task {"words": [{"word", "tag", "start", "end", "score"}, ...]} (character offsets); with
  `--task all` (ServedAll) {"tasks": {task name: its result}}, in export order."""

  def __init__(self, model: ExportedModel, task: Union[ServedTask, ServedAll]):
    signatures = model.signatures()
    if task.signature not in signatures:
      raise ValueError(f"--model {model.path} has no signature {task.signature!r} for {task.describe()}; "
                       "its manifest does not match its SavedModel")
    self.function = signatures[task.signature]
    if _takes_text_b(self.function) != task.is_pair:
      raise ValueError(f"--model {model.path}: the signature of {task.describe()} does not take the inputs "
                       "its manifest says; the manifest does not match the SavedModel")
    self.is_pair = task.is_pair
    self.is_token = task.task_type == "token"
    self.tasks = task.tasks if isinstance(task, ServedAll) else None

  def __call__(self, batch: Sequence[Example]) -> List[dict]:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    inputs = dict(text=tf.constant([e.text for e in batch]))
    if self.is_pair:
      inputs["text_b"] = tf.constant([e.text_b for e in batch])
    out = {name: value.numpy() for name, value in self.function(**inputs).items()}
    if self.tasks is None:
      return _results(out, self.is_token)
    # `all` returns each task's outputs under "<its signature>/<output>".
    per_task = {t.name: _results({k[len(t.signature) + 1:]: v for k, v in out.items()
                                  if k.startswith(t.signature + "/")}, t.task_type == "token")
                for t in self.tasks}
    return [dict(tasks={name: results[row] for name, results in per_task.items()}) for row in range(len(batch))]


def _results(out: dict, is_token: bool) -> List[dict]:
  """A task signature's outputs (numpy) -> its result per example (Predictor)."""
  if is_token:
    return [dict(words=[dict(word=out["words"][row, i].decode("utf-8"), tag=out["tags"][row, i].decode("utf-8"),
                             start=int(out["start"][row, i]), end=int(out["end"][row, i]),
                             score=float(out["score"][row, i])) for i in range(count)])
            for row, count in enumerate(out["num_words"])]
  # A single-sentence classification signature returns probabilities without a score.
  scores = out["score"] if "score" in out else out["probabilities"].max(axis=-1)
  return [dict(label=label.decode("utf-8"), score=float(score)) for label, score in zip(out["label"], scores)]


def length_sorted_batches(examples: Sequence[Example], batch_size: int) -> List[np.ndarray]:
  """Indices of `examples` in batches of `batch_size`, shortest first.

  Length in characters: the tokenizer runs inside the graph, and characters
  are close enough to tokens to keep long inputs out of short inputs' batches.
  """
  lengths = np.array([len(e.text) + len(e.text_b or "") for e in examples])
  order = np.argsort(lengths, kind="stable")
  return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def predict(predictor: Callable[[Sequence[Example]], List[dict]],
            examples: Sequence[Example], batch_size: int = DEFAULT_BATCH_SIZE,
            chunk_inputs: int = CHUNK_INPUTS,
            progress: Optional[Callable[[int, int], None]] = None) -> Iterator[dict]:
  """Yields the predictor's result ({"label", "score"}; a token task's {"words"}) for every example, in order,
  one chunk of `chunk_inputs` at a time.

  `progress(done, total)` is called when a chunk is done, before its results are yielded.
  """
  if batch_size < 1:
    raise ValueError(f"batch size must be a positive integer, got {batch_size}")
  chunk_inputs = max(chunk_inputs, batch_size)
  for start in range(0, len(examples), chunk_inputs):
    chunk = examples[start:start + chunk_inputs]
    results: List[Optional[dict]] = [None] * len(chunk)
    for batch in length_sorted_batches(chunk, batch_size):
      for i, result in zip(batch, predictor([chunk[i] for i in batch])):
        results[i] = result
    if progress is not None:
      progress(start + len(chunk), len(examples))
    yield from results
