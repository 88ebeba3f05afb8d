"""Input pipelines: tokenize every example once, then batch it per epoch.

* `encode_examples`: TextExamples -> EncodedExamples (ragged ids, labels).
* `epoch_order`: epoch e's example order, drawn from (seed, e) alone, grouped
  by length (`length_grouped_order`), so any epoch can be rebuilt exactly in
  any process (resume after a crash).
* `make_dataset`: (features, labels) batches padded to their own longest
  example; under XLA rounded up to JIT_PAD_MULTIPLE; optionally carrying the
  frozen-prefix cache's hidden states (train/prefix_cache.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.tasks.data import TextExamples


@dataclasses.dataclass
class EncodedExamples:
  """Token ids per example (ragged, unpadded) and labels."""

  word_ids: tf.RaggedTensor
  type_ids: tf.RaggedTensor
  labels: np.ndarray

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  @property
  def lengths(self) -> np.ndarray:
    return self.word_ids.row_lengths().numpy()


def encode_examples(preprocessor: BertPreprocessor, examples: TextExamples,
                    chunk_size: int = 4096) -> EncodedExamples:
  """Tokenizes every example once (in chunks, to bound memory)."""
  if len(examples) == 0:
    raise ValueError("no examples to encode (the data set is empty)")
  word_parts, type_parts = [], []
  for start in range(0, len(examples), chunk_size):
    stop = start + chunk_size
    segments = [tf.constant(examples.text[start:stop])]
    if examples.text_b is not None:
      segments.append(tf.constant(examples.text_b[start:stop]))
    w, t = preprocessor.pack(segments)
    word_parts.append(w)
    type_parts.append(t)
  return EncodedExamples(tf.concat(word_parts, axis=0), tf.concat(type_parts, axis=0),
                         np.asarray(examples.labels))


# Length grouping ("sortish" batching, as fairseq and Hugging Face's
# group_by_length do): a shuffled order is cut into windows of this many
# batches, each window is sorted by length and cut into batches, and the
# batches are shuffled. On SST-2's training set with batch 32 it leaves 4.5%
# of the computed positions as padding, against 67% for random batches and
# 31% for fixed length buckets (16, 24, 32, 48, ...; docs/performance.md);
# batch composition stays random up to the window.
LENGTH_GROUP_BATCHES = 50


def length_grouped_order(order: Sequence[int], lengths: np.ndarray, batch_size: int,
                         rng: np.random.Generator, group_batches: int = LENGTH_GROUP_BATCHES) -> np.ndarray:
  """`order` rearranged so that every `batch_size` consecutive examples are a batch of similar lengths.

  `order` (one epoch's example indices, shuffled for training) is cut into
  windows of `group_batches * batch_size`; each window is sorted by length
  (stable) and cut into batches; the full batches are put in an order drawn
  from `rng`, and the one partial batch, when len(order) % batch_size, goes
  last. Every index keeps its one place, so batching the result by
  `batch_size` gives back exactly these batches.
  """
  if batch_size < 1 or group_batches < 1:
    raise ValueError(f"batch_size and group_batches must be >= 1, got {batch_size}, {group_batches}")
  order = np.asarray(order, np.int64)
  window = batch_size * group_batches
  grouped = np.concatenate(
      [order[i:i + window][np.argsort(lengths[order[i:i + window]], kind="stable")]
       for i in range(0, len(order), window)] or [order])
  full = len(order) // batch_size * batch_size
  batches = grouped[:full].reshape(-1, batch_size)[rng.permutation(full // batch_size)]
  return np.concatenate([batches.reshape(-1), grouped[full:]])


# Batch lengths are rounded up to a multiple of this under XLA (jit_compile):
# each distinct input shape is a compilation, and with dynamic padding almost
# every batch would bring a new one. 16 bounds it to max_seq_length / 16
# lengths per batch size while adding at most 15 padding positions.
JIT_PAD_MULTIPLE = 16


def make_dataset(encoded: EncodedExamples,
                 batch_size: int = 32,
                 shuffle: bool = False,
                 seed: int = 0,
                 repeat: bool = False,
                 bucket_by_length: bool = False,
                 order: Optional[Sequence[int]] = None,
                 pad_to_multiple: Optional[int] = None,
                 prefix_cache=None) -> tf.data.Dataset:
  """(features, labels) batches, each padded to its longest example.

  The dataset runs over example indices, so a shuffle is a permutation of
  integers and the same seed gives the same order on every run. With
  `bucket_by_length`, examples of similar length are batched together
  (`length_grouped_order`), which cuts the padding a random batch carries;
  every example still appears exactly once per pass, and with `shuffle` each
  pass (each epoch of `fit`) draws a new grouped order from `seed`.

  Args:
    order: the example indices to go through, in this order (an epoch's
      permutation, say), instead of 0..n-1.
    pad_to_multiple: rounds each batch's padded length up to a multiple of
      this, but never beyond the longest example of `encoded`; for XLA (see
      JIT_PAD_MULTIPLE). The extra positions are padding (mask 0).
    prefix_cache: a train.prefix_cache.PrefixCache built on `encoded`. Each
      example then also carries its frozen-prefix hidden states under
      models.prefix_cached.PREFIX_OUTPUT, [length, hidden], padded with zeros like
      the ids; a PrefixCachedModel trains on them.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if pad_to_multiple is not None and pad_to_multiple < 1:
    raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
  if prefix_cache is not None and len(prefix_cache) != len(encoded):
    raise ValueError(f"the prefix cache holds {len(prefix_cache)} examples, the data set {len(encoded)}: "
                     "build it on the same encoded examples")
  word_ids, type_ids = encoded.word_ids, encoded.type_ids
  label_dtype = tf.float32 if encoded.labels.dtype.kind == "f" else tf.int32
  labels = tf.constant(encoded.labels, label_dtype)

  def lookup(index):
    ids = word_ids[index]
    features = dict(input_word_ids=ids, input_mask=tf.ones_like(ids), input_type_ids=type_ids[index])
    if prefix_cache is not None:
      features.update(prefix_cache.features(index))
    return features, labels[index]

  if order is None:
    order = np.arange(len(encoded), dtype=np.int64)
  else:
    order = np.asarray(order, np.int64)
    if order.ndim != 1 or (order.size and (order.min() < 0 or order.max() >= len(encoded))):
      raise ValueError(f"order must be a list of example indices in [0, {len(encoded)})")
  if bucket_by_length:
    lengths = encoded.lengths
    rng = np.random.default_rng(seed)

    def grouped_pass():
      return length_grouped_order(rng.permutation(order) if shuffle else order, lengths, batch_size, rng)

    if shuffle:
      # The generator runs again for every pass over the dataset (every epoch
      # of fit, every repeat), each time drawing the next order from rng.
      ds = tf.data.Dataset.from_generator(lambda: iter([grouped_pass()]),
                                          output_signature=tf.TensorSpec([None], tf.int64)).unbatch()
    else:
      ds = tf.data.Dataset.from_tensor_slices(grouped_pass())
  else:
    ds = tf.data.Dataset.from_tensor_slices(order)
    if shuffle:
      ds = ds.shuffle(len(order), seed=seed, reshuffle_each_iteration=True)
  if repeat:
    ds = ds.repeat()
  ds = ds.map(lookup, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).padded_batch(batch_size)
  if pad_to_multiple is not None:
    ds = ds.map(_padder(pad_to_multiple, int(encoded.lengths.max())),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def _padder(multiple: int, longest: int):
  """A batch map that pads axis 1 of every feature to the next multiple of `multiple` (<= `longest`)."""

  def pad(features, labels):
    length = tf.shape(features["input_word_ids"])[1]
    target = tf.minimum((length + multiple - 1) // multiple * multiple, tf.maximum(length, longest))
    return {name: tf.pad(value, [[0, 0], [0, target - length]] + [[0, 0]] * (value.shape.rank - 2))
            for name, value in features.items()}, labels

  return pad


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return max(1, math.ceil(num_examples / batch_size))




def limit_examples(examples, max_examples: Optional[int], seed: int):
  """A seeded random subset of `max_examples` examples, in their original order (all if None).

  Works on TextExamples and on lists (SQuAD questions): the first N examples
  of a file would often come from one source (the first few SQuAD articles).
  """
  if not max_examples or max_examples >= len(examples):
    return examples
  chosen = np.sort(np.random.default_rng(seed).permutation(len(examples))[:max_examples])
  if isinstance(examples, TextExamples):
    return examples.take(chosen)
  return [examples[i] for i in chosen]


def epoch_order(num_examples: int, seed: int, epoch: int, group_lengths: Optional[np.ndarray] = None,
                batch_size: Optional[int] = None) -> np.ndarray:
  """The example order of `epoch` (0-based), drawn from (seed, epoch) alone.

  A numpy permutation, not tf.data's shuffle, whose order also depends on the
  global TF seed and on how many iterators were made of the dataset; this
  way any epoch can be rebuilt exactly, in any process. With `group_lengths`
  (the examples' lengths) it is grouped by length (length_grouped_order):
  every `batch_size` consecutive examples are one batch.
  """
  rng = np.random.default_rng([seed % 2**64, epoch])
  order = rng.permutation(num_examples)
  if group_lengths is not None:
    order = length_grouped_order(order, group_lengths, batch_size, rng)
  return order
