"""Words -> WordPiece windows for token classification, and window logits -> one score per word.

  TokenFeaturizer.featurize ──► TokenFeatures: `[CLS] window [SEP]` ids per window of whole words,
                                the training label of every sub-word (IGNORED where the loss skips it),
                                the word each position starts, and whether that window scores it
  word_logits               ──► per sentence, one row of logits per word, each from exactly one window

Alignment. Each word is tokenized on its own with the vocabulary and casing of BertPreprocessor
(tensorflow-text's FastBertTokenizer). The first sub-word of a word carries the word's label; the others are
IGNORED in the loss, or with `label_all_subwords` carry it too (a B-X word's later pieces get I-X when the
label set has it, so that a word stays one entity). A word the tokenizer maps to nothing (a control
character, a lone combining mark) becomes one [UNK], so every word has a position and gets a tag. A word
longer than a window keeps its first window-size pieces. A word's prediction is its first sub-word's.

Long sentences. A sentence longer than max_seq_length - 2 sub-words is cut into windows of whole words, each
starting at the first word at least `doc_stride` sub-words after the previous window's start (never past
its end, so no word is skipped). A word in several windows is scored in the one where it has the most
context, BERT's SQuAD rule (min(left, right) + 0.01 * window length; the first such window on ties), so
every word is scored exactly once.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from adapter_keras.preprocessing import BertPreprocessor, read_vocab
from adapter_keras.tasks.tagging import TaggedSentence

IGNORED = -1  # the label id of positions the loss skips ([CLS], [SEP], padding, later sub-words)
NO_WORD = -1  # word_index of positions that start no word


@dataclasses.dataclass
class TokenFeatures:
  """One row per (sentence, window); arrays are [windows, max_seq_length] or [windows].

  label_ids: the training label per position (IGNORED where the loss skips it; all IGNORED without tags).
  word_index: the sentence's word whose first sub-word sits here, else NO_WORD.
  scores_word: whether this window is the one that scores that word (max context).
  """

  input_word_ids: np.ndarray
  input_mask: np.ndarray
  input_type_ids: np.ndarray
  label_ids: np.ndarray
  word_index: np.ndarray
  scores_word: np.ndarray
  example_index: np.ndarray

  def __len__(self) -> int:
    return len(self.example_index)

  def inputs(self) -> Dict[str, np.ndarray]:
    return dict(input_word_ids=self.input_word_ids, input_mask=self.input_mask,
                input_type_ids=self.input_type_ids)


def word_windows(piece_counts: Sequence[int], capacity: int, doc_stride: int) -> List[Tuple[int, int]]:
  """(first word, end word) of each window over words of `piece_counts` sub-words, at most `capacity`
  sub-words each (every count must be <= capacity); see the module docstring."""
  offsets = np.concatenate([[0], np.cumsum(piece_counts)]).astype(int)
  n = len(piece_counts)
  windows, start = [], 0
  while True:
    end = start
    while end < n and offsets[end + 1] - offsets[start] <= capacity:
      end += 1
    windows.append((start, end))
    if end >= n:
      return windows
    later = [w for w in range(start + 1, end + 1) if offsets[w] - offsets[start] >= doc_stride]
    start = later[0] if later else end


def scoring_windows(piece_counts: Sequence[int], windows: Sequence[Tuple[int, int]]) -> List[int]:
  """The window that scores each word: where its first sub-word has the most context (module docstring)."""
  offsets = np.concatenate([[0], np.cumsum(piece_counts)]).astype(int)
  best = [None] * len(piece_counts)
  best_score = [None] * len(piece_counts)
  for index, (first, end) in enumerate(windows):
    length = offsets[end] - offsets[first]
    for word in range(first, end):
      position = offsets[word] - offsets[first]
      score = min(position, length - 1 - position) + 0.01 * length
      if best_score[word] is None or score > best_score[word]:
        best[word], best_score[word] = index, score
  return best


class TokenFeaturizer:
  """TaggedSentences -> TokenFeatures with a BertPreprocessor's vocabulary, casing and max_seq_length.

  Args:
    vocab_file, lower_case, max_seq_length: the preprocessor's.
    labels: the label set (class id = index).
    doc_stride: sub-words between the starts of a long sentence's windows.
    label_all_subwords: every sub-word of a word carries its label (module docstring), not only the first.
  """

  def __init__(self, vocab_file: str, lower_case: bool, max_seq_length: int, labels: Sequence[str],
               doc_stride: int = 64, label_all_subwords: bool = False):
    if max_seq_length < 3:
      raise ValueError(f"max_seq_length must be >= 3 ([CLS], a word, [SEP]), got {max_seq_length}")
    if doc_stride < 1:
      raise ValueError(f"doc_stride must be >= 1, got {doc_stride}")
    vocab = read_vocab(vocab_file)
    self.cls_id, self.sep_id, self.pad_id, self.unk_id = (vocab.index(t) for t in ("[CLS]", "[SEP]", "[PAD]",
                                                                                   "[UNK]"))
    self.max_seq_length = max_seq_length
    self.capacity = max_seq_length - 2
    self.doc_stride = doc_stride
    self.labels = tuple(labels)
    self.label_ids = {label: index for index, label in enumerate(self.labels)}
    self.label_all_subwords = bool(label_all_subwords)
    self._tokenizer = tf_text.FastBertTokenizer(vocab=vocab, lower_case_nfd_strip_accents=lower_case,
                                                token_out_type=tf.int32)

  @classmethod
  def from_preprocessor(cls, preprocessor: BertPreprocessor, labels: Sequence[str], doc_stride: int = 64,
                        label_all_subwords: bool = False) -> "TokenFeaturizer":
    return cls(preprocessor.vocab_file, preprocessor.lower_case, preprocessor.max_seq_length, labels, doc_stride,
               label_all_subwords)

  def word_pieces(self, words: Sequence[str]) -> List[np.ndarray]:
    """The sub-word ids of each word: [UNK] for a word the tokenizer drops, at most a window's worth."""
    if not words:
      return []
    pieces = self._tokenizer.tokenize(tf.constant(list(words), tf.string))
    return [ids[:self.capacity] if len(ids) else np.asarray([self.unk_id], np.int32)
            for ids in (np.asarray(row, np.int32) for row in pieces.to_list())]

  def _continuation_id(self, label_id: int) -> int:
    """The label of a word's later sub-words with label_all_subwords (B-X -> I-X when the set has it)."""
    label = self.labels[label_id]
    if label.startswith("B-") and "I-" + label[2:] in self.label_ids:
      return self.label_ids["I-" + label[2:]]
    return label_id

  def featurize(self, sentences: Sequence[TaggedSentence], with_labels: Optional[bool] = None) -> TokenFeatures:
    """Windows of every sentence; labels from its tags (which must be in the label set) when `with_labels`
    (default: when the sentences have tags)."""
    if with_labels is None:
      with_labels = all(s.tags is not None for s in sentences)
    flat = [word for sentence in sentences for word in sentence.words]
    all_pieces = self.word_pieces(flat)
    rows: Dict[str, list] = {k: [] for k in ("input_word_ids", "input_mask", "input_type_ids", "label_ids",
                                             "word_index", "scores_word", "example_index")}
    cursor = 0
    for example_index, sentence in enumerate(sentences):
      pieces = all_pieces[cursor:cursor + len(sentence.words)]
      cursor += len(sentence.words)
      counts = [len(p) for p in pieces]
      word_labels = [self.label_ids[t] for t in sentence.tags] if with_labels else [IGNORED] * len(counts)
      windows = word_windows(counts, self.capacity, self.doc_stride)
      scorer = scoring_windows(counts, windows)
      for window_index, (first, end) in enumerate(windows):
        ids = np.full(self.max_seq_length, self.pad_id, np.int32)
        labels = np.full(self.max_seq_length, IGNORED, np.int32)
        word_index = np.full(self.max_seq_length, NO_WORD, np.int32)
        scores = np.zeros(self.max_seq_length, bool)
        ids[0] = self.cls_id
        position = 1
        for word in range(first, end):
          count = counts[word]
          ids[position:position + count] = pieces[word]
          labels[position] = word_labels[word]
          if self.label_all_subwords and count > 1 and word_labels[word] != IGNORED:
            labels[position + 1:position + count] = self._continuation_id(word_labels[word])
          word_index[position] = word
          scores[position] = scorer[word] == window_index
          position += count
        ids[position] = self.sep_id
        for key, value in (("input_word_ids", ids), ("input_mask", np.arange(self.max_seq_length) <= position),
                           ("input_type_ids", np.zeros(self.max_seq_length, np.int32)), ("label_ids", labels),
                           ("word_index", word_index), ("scores_word", scores), ("example_index", example_index)):
          rows[key].append(value)
    if not rows["example_index"]:
      raise ValueError("no sentences to featurize")
    arrays = {key: np.asarray(value) for key, value in rows.items()}
    for key in ("input_word_ids", "input_mask", "input_type_ids", "label_ids", "word_index", "example_index"):
      arrays[key] = arrays[key].astype(np.int32)
    return TokenFeatures(**arrays)


def word_logits(features: TokenFeatures, logits: np.ndarray, word_counts: Sequence[int]) -> List[np.ndarray]:
  """Per sentence, its words' logits [words, labels]: each word's first sub-word in the window that scores it.
  ValueError if a word is scored in no window or in two (the windows' contract, checked)."""
  logits = np.asarray(logits)
  if logits.shape[:2] != features.input_word_ids.shape:
    raise ValueError(f"logits of shape {logits.shape} do not match features {features.input_word_ids.shape}")
  out = [np.zeros((count, logits.shape[-1]), logits.dtype) for count in word_counts]
  seen = [np.zeros(count, np.int32) for count in word_counts]
  rows, positions = np.nonzero(features.scores_word)
  for row, position in zip(rows, positions):
    example, word = features.example_index[row], features.word_index[row, position]
    out[example][word] = logits[row, position]
    seen[example][word] += 1
  for example, counts in enumerate(seen):
    if (counts != 1).any():
      word = int(np.nonzero(counts != 1)[0][0])
      raise ValueError(f"sentence {example} word {word} was scored {int(counts[word])} times, not once")
  return out
