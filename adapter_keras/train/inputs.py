"""Input pipelines: tokenize every example once, then batch it per epoch.

* `encode_examples`: TextExamples -> EncodedExamples (ragged ids, labels).
* `epoch_order`: epoch e's example order, drawn from (seed, e) alone, grouped
  by length (`length_grouped_order`), so any epoch can be rebuilt exactly in
  any process (resume after a crash).
* `make_dataset`: (features, labels) batches padded to their own longest
  example (under XLA without static shapes rounded up to JIT_PAD_MULTIPLE),
  or with static shapes to a fixed length; optionally carrying the
  frozen-bottom cache's hidden states (train/frozen_bottom_cache.py).
* Static shapes (`uses_static_shapes`: decided once per run from the config
  and the strategy): every batch holds exactly `batch_size` examples and is
  padded to one of a few fixed lengths (`static_batch_lengths`: at most
  MAX_STATIC_LENGTHS, chosen from the lengths of the examples the run pads),
  so that XLA and TPUs compile the train step once per length instead of once
  per distinct batch length. Training leaves each epoch's last partial batch out
  (`epoch_order(..., drop_remainder=True)`, `steps_per_epoch(...,
  drop_remainder=True)`); prediction fills it instead (train/evaluation.py).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.tasks.data import TextExamples
from adapter_keras.train.config import MAX_STATIC_LENGTHS, TrainConfig
from adapter_keras.train.distribute import is_tpu
from adapter_keras.values import is_integer


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
# The window under static shapes (epoch_order's drop_remainder). A sorted window has at most one batch
# that straddles each fixed length, and that batch is padded to the longer one; a longer window makes
# such batches rarer (SST-2, batch 32, 8 lengths from its data: 17.2% padding with 50 batches, 14.7%
# with 200; benchmarks/padding_modes.py).
STATIC_LENGTH_GROUP_BATCHES = 200


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


# The shortest fixed length of static-shape batches when no data lengths are given.
STATIC_MIN_LENGTH = 32


def static_batch_lengths(max_seq_length: int, lengths=None, max_lengths: int = MAX_STATIC_LENGTHS,
                         multiple: int = 1) -> Tuple[int, ...]:
  """The fixed padded lengths of static-shape batches.

  With `lengths` (the token counts of every example the run pads, as one array
  or a list of arrays: its training and each dev split's): at most
  `max_lengths` lengths, multiples of `multiple` but the last, which is the
  longest example (never beyond `max_seq_length`). They are the ones that
  minimise the positions computed when each example is padded to the smallest
  fixed length that holds it: an exact dynamic programme over the distinct
  (rounded) lengths, so short-sentence tasks get short lengths (SST-2 train and
  dev: (6, 9, 13, 18, 24, 32, 44, 66), 14.7% padding against 60.7% for 32, 64,
  128; docs/performance.md).

  Without `lengths`: powers of two from STATIC_MIN_LENGTH below
  `max_seq_length`, then `max_seq_length` itself ((32, 64, 128) for 128,
  (16,) for 16): what a run uses when its training lengths are not in memory
  (training records).
  """
  if not is_integer(max_seq_length) or max_seq_length < 1:
    raise ValueError(f"max_seq_length must be an integer >= 1, got {max_seq_length!r}")
  for name, value in (("max_lengths", max_lengths), ("multiple", multiple)):
    if not is_integer(value) or value < 1:
      raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  if lengths is None:
    fixed = []
    length = STATIC_MIN_LENGTH
    while length < max_seq_length:
      fixed.append(length)
      length *= 2
    return tuple(fixed) + (max_seq_length,)
  if isinstance(lengths, (list, tuple)):
    lengths = np.concatenate([np.asarray(part, np.int64).reshape(-1) for part in lengths] or [[]])
  lengths = np.minimum(np.asarray(lengths, np.int64).reshape(-1), max_seq_length)
  if not lengths.size or lengths.min() < 1:
    raise ValueError("static lengths from data need at least one example, each of >= 1 token")
  longest = int(lengths.max())
  # Candidate fixed lengths: each example's length rounded up to `multiple`, the longest as it is.
  rounded = np.minimum(-(-lengths // multiple) * multiple, longest)
  candidates, counts = np.unique(rounded, return_counts=True)
  return tuple(int(n) for n in _fewest_padded_positions(candidates, counts, max_lengths))


def _fewest_padded_positions(candidates: np.ndarray, counts: np.ndarray, max_lengths: int) -> np.ndarray:
  """The subset of at most `max_lengths` ascending `candidates`, always holding the last, that minimises
  sum(count * the smallest chosen candidate >= it). cost[b, j]: the best with b lengths, the largest
  candidates[j], covering candidates 0..j; O(max_lengths * n^2) with n <= max_seq_length distinct values."""
  n = len(candidates)
  below = np.concatenate([[0], np.cumsum(counts)])  # below[j]: examples in candidates[:j]
  size = candidates.astype(np.float64)
  cost = np.full((max_lengths + 1, n), np.inf)
  previous = np.zeros((max_lengths + 1, n), np.int64)
  cost[1] = below[1:] * size
  for b in range(2, max_lengths + 1):
    for j in range(1, n):
      # The lengths before candidates[j] end at candidates[i], i < j; candidates i+1..j pad to candidates[j].
      options = cost[b - 1, :j] + (below[j + 1] - below[1:j + 1]) * size[j]
      previous[b, j] = int(np.argmin(options))
      cost[b, j] = options[previous[b, j]]
  b, j = int(np.argmin(cost[:, n - 1])), n - 1
  chosen = [j]
  while b > 1:
    j = previous[b, j]
    chosen.append(j)
    b -= 1
  return candidates[chosen[::-1]]


def uses_static_shapes(config: TrainConfig, strategy: Optional[tf.distribute.Strategy] = None) -> bool:
  """Whether a run of `config` under `strategy` uses static shapes: config.static_shapes when set,
  else (auto) under a TPU strategy or with jit_compile. `strategy` None: not a TPU."""
  if config.static_shapes is not None:
    return bool(config.static_shapes)
  return config.jit_compile or (strategy is not None and is_tpu(strategy))


def make_dataset(encoded: EncodedExamples,
                 batch_size: int = 32,
                 shuffle: bool = False,
                 seed: int = 0,
                 repeat: bool = False,
                 bucket_by_length: bool = False,
                 order: Optional[Sequence[int]] = None,
                 pad_to_multiple: Optional[int] = None,
                 prefix_cache=None,
                 static_lengths: Optional[Sequence[int]] = None) -> tf.data.Dataset:
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
    prefix_cache: a train.frozen_bottom_cache.FrozenBottomCache built on `encoded`. Each
      example then also carries its frozen-bottom hidden states under
      models.prefix_cached.BOTTOM_OUTPUT, [length, hidden], padded with zeros like
      the ids; a FrozenBottomModel trains on them.
    static_lengths: static shapes (see the module docstring): every batch
      holds exactly `batch_size` examples (a last partial batch is dropped;
      give an `order` of whole batches: epoch_order(drop_remainder=True), or
      predict_encoded's filled one) and is padded to the smallest of these
      ascending lengths that holds its longest example (`static_batch_lengths`).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if pad_to_multiple is not None and pad_to_multiple < 1:
    raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
  if static_lengths is not None:
    if pad_to_multiple is not None:
      raise ValueError("give pad_to_multiple or static_lengths, not both")
    static_lengths = tuple(int(n) for n in static_lengths)
    if not static_lengths or min(static_lengths) < 1 or list(static_lengths) != sorted(set(static_lengths)):
      raise ValueError(f"static_lengths must be ascending lengths >= 1, got {static_lengths}")
    if int(encoded.lengths.max()) > static_lengths[-1]:
      raise ValueError(f"an example has {int(encoded.lengths.max())} tokens, more than the longest static "
                       f"length {static_lengths[-1]}")
  if prefix_cache is not None and len(prefix_cache) != len(encoded):
    raise ValueError(f"the frozen-bottom cache holds {len(prefix_cache)} examples, the data set {len(encoded)}: "
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
  # A static batch dimension (drop_remainder) is what TPUs need besides the lengths.
  ds = ds.map(lookup, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).padded_batch(
      batch_size, drop_remainder=static_lengths is not None)
  if pad_to_multiple is not None:
    ds = ds.map(_padder(pad_to_multiple, int(encoded.lengths.max())),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if static_lengths is not None:
    ds = ds.map(_static_padder(static_lengths), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def _pad_features(features, length, target):
  """Every feature padded on axis 1 from `length` to `target` (padding: 0, mask 0)."""
  return {name: tf.pad(value, [[0, 0], [0, target - length]] + [[0, 0]] * (value.shape.rank - 2))
          for name, value in features.items()}


def length_padded_to_multiple(length: tf.Tensor, multiple: int, longest: int) -> tf.Tensor:
  """A batch's padded length under XLA: `length` rounded up to a multiple of `multiple`, never
  beyond the longest example of the data (`longest`)."""
  return tf.minimum((length + multiple - 1) // multiple * multiple, tf.maximum(length, longest))


def length_padded_to_static(length: tf.Tensor, static_lengths: tf.Tensor) -> tf.Tensor:
  """A batch's padded length under static shapes: the smallest of `static_lengths` (ascending, the
  same dtype as `length`) that holds `length`."""
  return static_lengths[tf.reduce_sum(tf.cast(static_lengths < length, tf.int32))]


def _padder(multiple: int, longest: int):
  """A batch map that pads axis 1 of every feature to the next multiple of `multiple` (<= `longest`)."""

  def pad(features, labels):
    length = tf.shape(features["input_word_ids"])[1]
    return _pad_features(features, length, length_padded_to_multiple(length, multiple, longest)), labels

  return pad


def _static_padder(lengths: Tuple[int, ...]):
  """A batch map that pads axis 1 of every feature to the smallest of `lengths` (ascending) >= its own."""
  candidates = tf.constant(lengths, tf.int32)

  def pad(features, labels):
    length = tf.shape(features["input_word_ids"])[1]
    return _pad_features(features, length, length_padded_to_static(length, candidates)), labels

  return pad


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = False) -> int:
  """Batches per epoch; with `drop_remainder` (static shapes) only the full ones, at least one."""
  if not drop_remainder:
    return max(1, math.ceil(num_examples / batch_size))
  if num_examples < batch_size:
    raise ValueError(f"static shapes need at least one full batch: {num_examples} training examples, batch "
                     f"size {batch_size}; lower the batch size or turn static shapes off (--no-static-shapes)")
  return num_examples // batch_size




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
                batch_size: Optional[int] = None, drop_remainder: bool = False) -> np.ndarray:
  """The example order of `epoch` (0-based), drawn from (seed, epoch) alone.

  A numpy permutation, not tf.data's shuffle, whose order also depends on the
  global TF seed and on how many iterators were made of the dataset; this
  way any epoch can be rebuilt exactly, in any process. With `group_lengths`
  (the examples' lengths) it is grouped by length (length_grouped_order):
  every `batch_size` consecutive examples are one batch. With
  `drop_remainder` (static shapes) the order holds only whole batches: the
  permutation's last num_examples % batch_size examples sit this epoch out,
  and it is grouped in windows of STATIC_LENGTH_GROUP_BATCHES batches (so are
  the windows of training records read by several workers, which drop it too).
  """
  if drop_remainder and not batch_size:
    raise ValueError("drop_remainder needs the batch_size")
  rng = np.random.default_rng([seed % 2**64, epoch])
  order = rng.permutation(num_examples)
  if drop_remainder:
    # Cut before grouping: the examples left out are then random ones, not
    # the longest of the last window, which grouping would leave over.
    order = order[:num_examples // batch_size * batch_size]
  if group_lengths is not None:
    order = length_grouped_order(order, group_lengths, batch_size, rng,
                                 STATIC_LENGTH_GROUP_BATCHES if drop_remainder else LENGTH_GROUP_BATCHES)
  return order
