"""Token classification (NER, tagging): CoNLL files, the task record, and entity-level scoring.

  read_conll      ──► TaggedSentence (words, tags, each word's line), `-DOCSTART-` lines skipped
  label_set       ──► the labels of a training set: "O" first, then the others sorted
  check_tags      ──► a dev/test tag the training set lacks: one line naming file, line and tag
  score_tags      ──► entity-level precision/recall/F1 (seqeval's default mode, which is conlleval's)
                      and token accuracy

CoNLL here is two columns per line, the word and its tag, separated by a tab or by spaces; a blank or
whitespace-only line (WNUT-17 has lines of only a tab) ends a sentence. Anything else (one column, three
columns, a CSV or JSON file given as CoNLL) is refused with the file and line named.

The BIO repair policy is conlleval's, which seqeval's default mode follows: an I-X that does not continue an
entity of type X (after O, after another type, at a sentence's start) begins a new X entity, exactly as a
B-X would; nothing is rewritten in the files or the predictions, the repair happens only in scoring.
Sub-word alignment and windows are tasks/token_windows.py's.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Sequence, Tuple

TOKEN_TASK_TYPE = "token"  # networks.TokenModel.task_type, the artifact's task type
OUTSIDE = "O"
DOCSTART = "-DOCSTART-"
TOKEN_METRICS = ("f1", "precision", "recall", "accuracy")


@dataclasses.dataclass(frozen=True)
class TokenTask:
  """What the manifest and run.json record as a token-classification task (TaskSpec's fields that apply).

  `label_names` is the label set in class-id order (label_set's order for a training file).
  """

  name: str
  label_names: Tuple[str, ...]
  task_type: str = TOKEN_TASK_TYPE
  primary_metric: str = "f1"
  metrics: Tuple[str, ...] = TOKEN_METRICS
  dev_splits: Tuple[str, ...] = ("dev",)

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name.strip():
      raise ValueError(f"task name must be a non-empty string, got {self.name!r}")
    labels = tuple(str(label) for label in self.label_names)
    object.__setattr__(self, "label_names", labels)
    if not labels:
      raise ValueError(f"token task {self.name!r} needs at least one label")
    if len(set(labels)) != len(labels):
      raise ValueError(f"token task {self.name!r} has duplicate labels {list(labels)}")
    if self.task_type != TOKEN_TASK_TYPE:
      raise ValueError(f"a TokenTask has task_type {TOKEN_TASK_TYPE!r}, got {self.task_type!r}")

  @property
  def num_outputs(self) -> int:
    return len(self.label_names)

  def to_dict(self) -> Dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, data: Dict) -> "TokenTask":
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
  """One sentence: its words, their tags (None for untagged input) and the 1-based line of each word
  in `source` (0 for sentences not read from a file)."""

  words: Tuple[str, ...]
  tags: Tuple[str, ...] = None
  lines: Tuple[int, ...] = ()
  source: str = ""

  def where(self, position: int) -> str:
    """"FILE line N" of the word at `position`, or "sentence word N" where there is no file."""
    if self.source and self.lines:
      return f"{self.source} line {self.lines[position]}"
    return f"word {position}"


def _split_line(line: str) -> List[str]:
  return line.split("\t") if "\t" in line.strip() else line.split()


def read_conll(path: str, flag: str = "") -> List[TaggedSentence]:
  """The sentences of a two-column CoNLL file, in file order (see the module docstring).

  ValueError (one line, naming the file and the line) for a line that is not two columns, an empty
  word or tag, or a file holding no sentence; FileNotFoundError for a missing file.
  """
  name = f"{flag} {path}".strip()
  if not os.path.exists(path):
    raise FileNotFoundError(f"{name} not found")
  if os.path.isdir(path):
    raise ValueError(f"{name} is a directory; give a two-column CoNLL file (word<TAB>tag per line)")
  sentences: List[TaggedSentence] = []
  words, tags, lines = [], [], []

  def end_sentence():
    if words:
      sentences.append(TaggedSentence(tuple(words), tuple(tags), tuple(lines), path))
    words.clear(), tags.clear(), lines.clear()

  try:
    with open(path, encoding="utf-8") as f:
      for number, raw in enumerate(f, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
          end_sentence()
          continue
        columns = [c.strip() for c in _split_line(line)]
        if columns and columns[0] == DOCSTART:
          end_sentence()
          continue
        if len(columns) != 2:
          raise ValueError(f"{path} line {number}: expected two columns, a word and its tag (word<TAB>tag or "
                           f"word tag), got {len(columns)} in {line[:60]!r}: is this a CoNLL file?")
        words.append(columns[0])
        tags.append(columns[1])
        lines.append(number)
  except UnicodeDecodeError:
    raise ValueError(f"{name} is not UTF-8 text: give a two-column CoNLL file") from None
  end_sentence()
  if not sentences:
    raise ValueError(f"{name} holds no sentences (a CoNLL file has one word<TAB>tag per line, sentences "
                     "separated by blank lines)")
  return sentences


def check_tagged(sentences: Sequence[TaggedSentence], what: str = "the data") -> None:
  """ValueError naming the first sentence without words, or a tag list of another length than its words."""
  if not sentences:
    raise ValueError(f"{what} holds no sentences")
  for index, sentence in enumerate(sentences):
    if not sentence.words:
      raise ValueError(f"{what}: sentence {index} has no words")
    if sentence.tags is not None and len(sentence.tags) != len(sentence.words):
      raise ValueError(f"{what}: sentence {index} has {len(sentence.words)} words but {len(sentence.tags)} tags")


def label_set(sentences: Sequence[TaggedSentence]) -> Tuple[str, ...]:
  """The labels of a training set: "O" first when present, the others sorted (a stable, data-order-free
  class-id order, so that the same file always gives the same head)."""
  tags = {tag for sentence in sentences for tag in sentence.tags}
  return ((OUTSIDE,) if OUTSIDE in tags else ()) + tuple(sorted(tags - {OUTSIDE}))


def check_tags(sentences: Sequence[TaggedSentence], labels: Sequence[str], what: str = "") -> None:
  """ValueError naming the file, line and tag of the first tag outside `labels` (the training set's)."""
  known = set(labels)
  for index, sentence in enumerate(sentences):
    for position, tag in enumerate(sentence.tags or ()):
      if tag not in known:
        where = (sentence.where(position) if sentence.source
                 else f"{what or 'the data'}: sentence {index} word {position}")
        raise ValueError(f"{where}: tag {tag!r} is not in the training set's labels ({', '.join(labels)})")


def sentences_from(tokens, tags=None, what: str = "x") -> List[TaggedSentence]:
  """TaggedSentences of a list of sentences, each a list of words or a raw string (split on whitespace), and
  their tag lists; one string (with one tag list) is one sentence."""
  if isinstance(tokens, (str, bytes)):
    tokens, tags = [tokens], None if tags is None else [tags]
  sentences = []
  for index, item in enumerate(tokens):
    if isinstance(item, bytes):
      item = item.decode("utf-8")
    if isinstance(item, str):
      words = item.split()
    elif isinstance(item, (list, tuple)):
      words = [w.decode("utf-8") if isinstance(w, bytes) else w for w in item]
    else:
      raise TypeError(f"{what}: sentence {index} must be a list of words or a string, got {type(item).__name__}")
    if any(not isinstance(w, str) or not w.strip() for w in words):
      raise ValueError(f"{what}: sentence {index} holds a word that is not a non-empty string")
    if not words:
      raise ValueError(f"{what}: sentence {index} has no words")
    sentences.append(TaggedSentence(tuple(words)))
  if tags is not None:
    tags = list(tags)
    if len(tags) != len(sentences):
      raise ValueError(f"got {len(tags)} tag lists for {len(sentences)} sentences: give one per sentence")
    sentences = [dataclasses.replace(s, tags=tuple(str(t) for t in sentence_tags))
                 for s, sentence_tags in zip(sentences, tags)]
  check_tagged(sentences, what)
  return sentences


def score_tags(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> Dict[str, float]:
  """{"f1", "precision", "recall"} over entities, as conlleval counts them (seqeval's default mode: the
  module docstring's BIO repair), and "accuracy" over words; fractions in [0, 1]."""
  from seqeval import metrics  # pylint: disable=import-outside-toplevel
  gold, predicted = [list(s) for s in gold], [list(s) for s in predicted]
  if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted)):
    raise ValueError("gold and predicted tags must have the same sentences and lengths")
  if not gold:
    raise ValueError("cannot score zero sentences")
  return dict(f1=float(metrics.f1_score(gold, predicted, zero_division=0)),
              precision=float(metrics.precision_score(gold, predicted, zero_division=0)),
              recall=float(metrics.recall_score(gold, predicted, zero_division=0)),
              accuracy=float(metrics.accuracy_score(gold, predicted)))
