"""In-graph BERT tokenization: raw strings (single or pairs) -> encoder inputs.

`BertPreprocessor` is a tf_keras layer around tensorflow-text's
FastBertTokenizer (WordPiece with BERT's normaliser), so exported models take
raw strings and the vocabulary travels inside the SavedModel graph. It packs
`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` with type ids 0/1, truncates the
segments round-robin to `max_seq_length`, and pads only to the longest example
of the batch (dynamic padding) unless `pad_to_max_length` is set.

`pack()` returns the unpadded (ragged) ids so that input pipelines can tokenize
once per example and pad per batch.
"""
from __future__ import annotations

import os
from typing import Dict, Sequence, Union

import tensorflow as tf
import tensorflow_text as tf_text
import tf_keras
from adapter_keras.values import KERAS_PACKAGE, is_integer

TextInputs = Union[tf.Tensor, Sequence[tf.Tensor], Dict[str, tf.Tensor]]


def read_vocab(vocab_file: str) -> list:
  with open(vocab_file, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f]


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class BertPreprocessor(tf_keras.layers.Layer):
  """Raw strings -> {input_word_ids, input_mask, input_type_ids} (int32).

  Args:
    vocab_file: WordPiece vocabulary, one token per line.
    lower_case: lower-case and strip accents (uncased BERT vocabularies).
    max_seq_length: maximum packed length, special tokens included.
    pad_to_max_length: pad every batch to max_seq_length (static shapes, for
      accelerators that need them) instead of to the batch's longest example.
  """

  def __init__(self,
               vocab_file: str,
               lower_case: bool = True,
               max_seq_length: int = 128,
               pad_to_max_length: bool = False,
               **kwargs):
    kwargs.setdefault("trainable", False)
    super().__init__(**kwargs)
    if not is_integer(max_seq_length) or max_seq_length < 5:
      raise ValueError(f"max_seq_length must be an integer >= 5, got {max_seq_length!r}")
    self.vocab_file = vocab_file
    self.lower_case = bool(lower_case)
    self.max_seq_length = max_seq_length
    self.pad_to_max_length = bool(pad_to_max_length)
    vocab = read_vocab(vocab_file)
    missing = [t for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]") if t not in vocab]
    if missing:
      raise ValueError(f"vocabulary {vocab_file} lacks the special tokens {missing}")
    self.vocab_size = len(vocab)
    self.cls_id = vocab.index("[CLS]")
    self.sep_id = vocab.index("[SEP]")
    self.pad_id = vocab.index("[PAD]")
    self._tokenizer = tf_text.FastBertTokenizer(
        vocab=vocab, lower_case_nfd_strip_accents=self.lower_case, token_out_type=tf.int32)

  @staticmethod
  def _segments(inputs: TextInputs) -> list:
    if isinstance(inputs, dict):
      segments = [inputs["text"]] + ([inputs["text_b"]] if inputs.get("text_b") is not None else [])
    elif isinstance(inputs, (list, tuple)):
      segments = list(inputs)
    else:
      segments = [inputs]
    if not 1 <= len(segments) <= 2:
      raise ValueError(f"expected one or two text segments, got {len(segments)}")
    return [tf.reshape(tf.convert_to_tensor(s, tf.string), [-1]) for s in segments]

  def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """[batch] strings -> [batch, (wordpieces)] int32 ids."""
    return self._tokenizer.tokenize(texts)

  def pack(self, inputs: TextInputs):
    """Ragged (word_ids, type_ids), each [batch, (length <= max_seq_length)]."""
    return self.pack_tokens([self.tokenize(s) for s in self._segments(inputs)])

  def pack_tokens(self, segments: list):
    """`pack` of segments tokenized already (`tokenize`), so that preprocessors that tokenize alike (same
    vocabulary and casing) but pack to different lengths can share one tokenization (serving/export.py)."""
    if not 1 <= len(segments) <= 2:
      raise ValueError(f"expected one or two text segments, got {len(segments)}")
    budget = self.max_seq_length - 1 - len(segments)  # [CLS] + one [SEP] per segment
    trimmed = tf_text.RoundRobinTrimmer(max_seq_length=budget).trim(segments)
    return self._combine(trimmed)

  def _combine(self, segments: list):
    """`[CLS] a [SEP] (b [SEP])` per row, type ids 0 up to the first [SEP] and 1 after it.

    tf_text.combine_segments gives the same ids, but its ragged concat along axis 1 runs an
    integer Transpose, and oneDNN builds of TensorFlow log an E-level "oneDNN supports DT_INT64
    only on platforms with AVX-512" for any non-float Transpose, AVX-512 or not (issue 17, item 12).
    Here the segments are laid side by side densely (each padded to its longest row) and the
    padding is masked out again, which needs no Transpose.
    """
    rows = tf.cast(segments[0].nrows(), tf.int32)

    def column(value, dtype=tf.int32):
      return tf.fill(tf.stack([rows, 1]), tf.constant(value, dtype))

    words, types, keep = [column(self.cls_id)], [column(0)], [column(True, tf.bool)]
    for type_id, segment in enumerate(segments):
      present = tf.ones_like(segment, tf.bool).to_tensor(default_value=False)
      words += [tf.cast(segment, tf.int32).to_tensor(default_value=self.pad_id), column(self.sep_id)]
      types += [tf.fill(tf.shape(present), type_id), column(type_id)]
      keep += [present, column(True, tf.bool)]
    keep = tf.concat(keep, axis=1)
    return (tf.ragged.boolean_mask(tf.concat(words, axis=1), keep),
            tf.ragged.boolean_mask(tf.concat(types, axis=1), keep))

  def call(self, inputs: TextInputs) -> Dict[str, tf.Tensor]:
    return self.pad(*self.pack(inputs))

  def pad(self, word_ids: tf.RaggedTensor, type_ids: tf.RaggedTensor) -> Dict[str, tf.Tensor]:
    """`pack`'s ragged ids -> the encoder inputs, padded to the longest row (or to max_seq_length)."""
    shape = [None, self.max_seq_length] if self.pad_to_max_length else None
    mask = tf.ones_like(word_ids)
    return dict(
        input_word_ids=word_ids.to_tensor(default_value=self.pad_id, shape=shape),
        input_mask=mask.to_tensor(default_value=0, shape=shape),
        input_type_ids=type_ids.to_tensor(default_value=0, shape=shape))

  def get_config(self):
    config = super().get_config()
    config.update(
        vocab_file=self.vocab_file,
        lower_case=self.lower_case,
        max_seq_length=self.max_seq_length,
        pad_to_max_length=self.pad_to_max_length)
    return config

  def tokenization_key(self) -> tuple:
    """What decides `tokenize`'s ids (the vocabulary file and the casing): preprocessors with equal keys
    tokenize every text alike, whatever lengths they pack to."""
    return (os.path.realpath(self.vocab_file), self.lower_case)

  def settings(self) -> dict:
    """What an artifact manifest records about tokenization."""
    return dict(lower_case=self.lower_case, max_seq_length=self.max_seq_length,
                vocab_size=self.vocab_size)
