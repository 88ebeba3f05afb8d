"""Words -> WordPiece windows for token classification, and window logits -> one score per word.

  TokenFeaturizer.featurize ──► TokenFeatures: `[CLS] window [SEP]` ids per window of sub-words,
                                the training label of every sub-word (IGNORED where the loss skips it),
                                the word each position starts, and whether that window scores it
  word_logits               ──► per sentence, one row of logits per word, each from exactly one window
  TokenFeaturizer.graph_windows ► the same windows and scoring positions in the graph, for raw strings

Alignment. Each word is tokenized on its own with the vocabulary and casing of BertPreprocessor
(tensorflow-text's FastBertTokenizer). The first sub-word of a word carries the word's label; the others are
IGNORED in the loss, or with `label_all_subwords` carry it too (a B-X word's later pieces get I-X when the
label set has it, so that a word stays one entity). A word the tokenizer maps to nothing (a control
character, a lone combining mark) becomes one [UNK], so every word has a position and gets a tag. A word's
prediction is its first sub-word's.

Long sentences. A sentence of more than max_seq_length - 2 sub-words is cut into windows of that many
sub-words, `doc_stride` apart (at most a window apart, so none is skipped), the last one reaching the end:
SQuAD's windows (tasks/squad.py). A word is scored in the window where its first sub-word has the most
context, BERT's SQuAD rule (min(left, right) + 0.01 * window length; the first such window on ties), so every
word is scored exactly once. The serving SavedModel (serving/export.py) cuts and scores the same windows
in the graph.
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


def token_windows(num_tokens: int, capacity: int, stride: int) -> List[Tuple[int, int]]:
  """(start, length) of the windows over a sentence's `num_tokens` sub-words: window k starts at k * stride
  (stride at most `capacity`, so no sub-word is skipped) and the last one reaches the end."""
  stride = min(stride, capacity)
  windows, start = [], 0
  while True:
    length = min(num_tokens - start, capacity)
    windows.append((start, length))
    if start + length >= num_tokens:
      return windows
    start += stride


def scoring_window(position: int, windows: Sequence[Tuple[int, int]]) -> int:
  """The window that scores the sub-word at `position`: where it has the most context (module docstring)."""
  best, best_score = None, None
  for index, (start, length) in enumerate(windows):
    if start <= position < start + length:
      # BERT's min(left, right) + 0.01 * length, times 100: integers, so that ties are exact here and in the graph.
      score = 100 * min(position - start, start + length - 1 - position) + length
      if best_score is None or score > best_score:
        best, best_score = index, score
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
    """The sub-word ids of each word: [UNK] for a word the tokenizer drops."""
    if not words:
      return []
    pieces = self._tokenizer.tokenize(tf.constant(list(words), tf.string))
    return [ids if len(ids) else np.asarray([self.unk_id], np.int32)
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
      # Per sub-word of the sentence: its training label and the word it starts (NO_WORD for later pieces).
      ids = np.concatenate(pieces)
      labels = np.full(len(ids), IGNORED, np.int32)
      starts = np.full(len(ids), NO_WORD, np.int32)
      position = 0
      for word, word_pieces in enumerate(pieces):
        starts[position] = word
        if with_labels:
          labels[position] = self.label_ids[sentence.tags[word]]
          if self.label_all_subwords:
            labels[position + 1:position + len(word_pieces)] = self._continuation_id(labels[position])
        position += len(word_pieces)
      windows = token_windows(len(ids), self.capacity, self.doc_stride)
      first_pieces = np.nonzero(starts != NO_WORD)[0]
      scorer = {int(p): scoring_window(int(p), windows) for p in first_pieces}
      for window_index, (start, length) in enumerate(windows):
        row = {key: np.full(self.max_seq_length, fill, dtype) for key, fill, dtype in (
            ("input_word_ids", self.pad_id, np.int32), ("label_ids", IGNORED, np.int32),
            ("word_index", NO_WORD, np.int32), ("scores_word", False, bool))}
        row["input_word_ids"][:length + 2] = np.concatenate([[self.cls_id], ids[start:start + length],
                                                             [self.sep_id]])
        row["label_ids"][1:length + 1] = labels[start:start + length]
        row["word_index"][1:length + 1] = starts[start:start + length]
        for p in first_pieces[(first_pieces >= start) & (first_pieces < start + length)]:
          row["scores_word"][p - start + 1] = scorer[int(p)] == window_index
        row.update(input_mask=np.arange(self.max_seq_length) < length + 2,
                   input_type_ids=np.zeros(self.max_seq_length, np.int32), example_index=example_index)
        for key, value in row.items():
          rows[key].append(value)
    if not rows["example_index"]:
      raise ValueError("no sentences to featurize")
    arrays = {key: np.asarray(value) for key, value in rows.items()}
    for key in ("input_word_ids", "input_mask", "input_type_ids", "label_ids", "word_index", "example_index"):
      arrays[key] = arrays[key].astype(np.int32)
    return TokenFeatures(**arrays)


  def graph_windows(self, text: tf.Tensor) -> Dict[str, tf.Tensor]:
    """What `featurize` and `word_logits` do, in the graph, for raw strings [batch] split on whitespace
    (tensorflow-text's WhitespaceTokenizer): the same windows and the same scoring window per word.

    Returns "inputs" (encoder features [windows, length], length the longest window's), "words" (ragged
    [batch, (words)] strings), "byte_start"/"byte_end" (their UTF-8 byte offsets in the text, ragged like
    words) and "scored_at" ([words, 2]: each word's window and position there, for tf.gather_nd)."""
    words, byte_start, byte_end = tf_text.WhitespaceTokenizer().tokenize_with_offsets(text)
    rows = tf.cast(words.value_rowids(), tf.int32)
    batch = tf.shape(text)[0]
    pieces = self._tokenizer.tokenize(words.flat_values)
    counts = tf.cast(pieces.row_lengths(), tf.int32)
    num_words = tf.shape(counts)[0]
    # A word the tokenizer drops becomes one [UNK]: pad every word's pieces with [UNK] and keep max(count, 1).
    dense = tf.concat([pieces.to_tensor(default_value=self.unk_id), tf.fill([num_words, 1], self.unk_id)], axis=1)
    counts = tf.maximum(counts, 1)
    word_ids = tf.RaggedTensor.from_tensor(dense, lengths=counts)
    totals = tf.math.unsorted_segment_sum(counts, rows, batch)  # sub-words per sentence
    piece_start = tf.cumsum(totals, exclusive=True)              # a sentence's first sub-word in word_ids
    first = tf.cumsum(counts, exclusive=True)
    position = first - tf.gather(first, tf.gather(tf.cast(words.row_starts(), tf.int32), rows))  # in its sentence
    capacity, stride = self.capacity, min(self.doc_stride, self.capacity)
    per_row = 1 + tf.maximum(0, (totals - capacity + stride - 1) // stride)  # token_windows' count
    window_row = tf.repeat(tf.range(batch), per_row)
    window_start = tf.ragged.range(per_row).flat_values * stride
    window_length = tf.minimum(tf.gather(totals, window_row) - window_start, capacity)
    begin = tf.gather(piece_start, window_row) + window_start
    taken = tf.ragged.range(begin, begin + window_length)
    inner = taken.with_flat_values(tf.gather(word_ids.flat_values, taken.flat_values)).to_tensor(self.pad_id)
    count = tf.shape(window_row)[0]
    ids = tf.concat([tf.fill([count, 1], self.cls_id), inner, tf.fill([count, 1], self.pad_id)], axis=1)
    column = tf.range(tf.shape(ids)[1])[None, :]
    ids = tf.where(column == window_length[:, None] + 1, self.sep_id, ids)
    mask = tf.cast(column <= window_length[:, None] + 1, tf.int32)
    # Each word's scoring window: the most context (scoring_window's integer score), the first on ties.
    k = tf.range(tf.reduce_max(per_row))[None, :]
    starts = k * stride
    lengths = tf.minimum(tf.gather(totals, rows)[:, None] - starts, capacity)
    p = position[:, None]
    inside = (k < tf.gather(per_row, rows)[:, None]) & (starts <= p) & (p < starts + lengths)
    score = tf.where(inside, 100 * tf.minimum(p - starts, starts + lengths - 1 - p) + lengths, -1)
    best = tf.reduce_max(score, axis=1, keepdims=True)
    chosen = tf.reduce_min(tf.where(inside & (score == best), k, tf.int32.max), axis=1)
    window = tf.gather(tf.cumsum(per_row, exclusive=True), rows) + chosen
    return dict(inputs=dict(input_word_ids=ids, input_mask=mask, input_type_ids=tf.zeros_like(ids)), words=words,
                byte_start=byte_start, byte_end=byte_end,
                scored_at=tf.stack([window, position - chosen * stride + 1], axis=1))


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
