"""Training with `model.fit`: the paper's optimizer and schedule, input pipelines.

* Adam with a linear warm-up over the first 10% of steps, then linear decay
  to 0 (Houlsby et al. 2019, following BERT).
* Inputs are tokenized once per example and padded per batch to the longest
  example in that batch (dynamic padding), optionally grouped by length.
* The speed options of docs/performance.md that live below the model: XLA
  (`compile_task_model(jit_compile=True)` with `make_dataset(pad_to_multiple=
  JIT_PAD_MULTIPLE)`, which bounds the shapes XLA compiles for), mixed
  precision (`precision_policy`, `create_optimizer(mixed_precision=...)`), and
  the frozen-prefix cache's extra input (`make_dataset(prefix_cache=...)`,
  see prefix_cache.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from typing import Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras.data import TextExamples
from adapter_keras.models import TaskModel
from adapter_keras.preprocessing import BertPreprocessor

_PACKAGE = "AdapterKeras"


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class WarmupLinearDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
  """0 -> peak linearly over `warmup_steps`, then peak -> 0 linearly at `total_steps`."""

  def __init__(self, peak_learning_rate: float, total_steps: int, warmup_steps: int):
    if peak_learning_rate <= 0:
      raise ValueError(f"learning rate must be > 0, got {peak_learning_rate}")
    if total_steps < 1:
      raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    self.peak_learning_rate = float(peak_learning_rate)
    self.total_steps = int(total_steps)
    self.warmup_steps = int(min(max(warmup_steps, 0), total_steps))

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    peak = tf.constant(self.peak_learning_rate, tf.float32)
    warmup = tf.constant(float(self.warmup_steps), tf.float32)
    total = tf.constant(float(self.total_steps), tf.float32)
    warming = peak * (step + 1.0) / tf.maximum(warmup, 1.0)
    decaying = peak * tf.maximum(total - step, 0.0) / tf.maximum(total - warmup, 1.0)
    return tf.where(step < warmup, warming, decaying)

  def get_config(self):
    return dict(peak_learning_rate=self.peak_learning_rate, total_steps=self.total_steps,
                warmup_steps=self.warmup_steps)


# --mixed-precision choices -> Keras dtype policies. Variables stay float32
# under both; TaskModel casts its output to float32, so the loss is float32.
MIXED_PRECISION_POLICIES = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def check_mixed_precision(mixed_precision: Optional[str]) -> None:
  if mixed_precision is not None and mixed_precision not in MIXED_PRECISION_POLICIES:
    raise ValueError(f"mixed_precision must be None or one of {sorted(MIXED_PRECISION_POLICIES)}, "
                     f"got {mixed_precision!r}")


@contextlib.contextmanager
def precision_policy(mixed_precision: Optional[str]) -> Iterator[None]:
  """Layers created inside compute in `mixed_precision` ("bfloat16", "float16"; None: float32).

  Keras fixes a layer's dtype policy when the layer is created, so load the
  encoder and build the task model inside this block; the global policy is
  restored on exit and the model keeps its own. Meant for accelerators: on
  CPU both mixed policies were slower than float32 (docs/performance.md).
  """
  check_mixed_precision(mixed_precision)
  previous = tf_keras.mixed_precision.global_policy()
  if mixed_precision is not None:
    tf_keras.mixed_precision.set_global_policy(MIXED_PRECISION_POLICIES[mixed_precision])
  try:
    yield
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)


def check_compute_dtype(layer: tf_keras.layers.Layer, mixed_precision: Optional[str]) -> None:
  """Raises ValueError unless `layer` computes in the dtype `mixed_precision` asks for."""
  check_mixed_precision(mixed_precision)
  wanted = "float32" if mixed_precision is None else mixed_precision
  if layer.compute_dtype != wanted:
    raise ValueError(f"{layer.name} computes in {layer.compute_dtype}, but mixed precision "
                     f"{mixed_precision!r} asks for {wanted}: build it inside "
                     f"training.precision_policy({mixed_precision!r})")


def create_optimizer(learning_rate: float, total_steps: int, warmup_fraction: float = 0.1,
                     mixed_precision: Optional[str] = None) -> tf_keras.optimizers.Optimizer:
  """Adam with the paper's warm-up + linear-decay schedule.

  With mixed_precision "float16" it is wrapped in a dynamic LossScaleOptimizer:
  small float16 gradients would otherwise underflow to zero. bfloat16 has
  float32's exponent range and needs no loss scaling.
  """
  check_mixed_precision(mixed_precision)
  schedule = WarmupLinearDecay(learning_rate, total_steps, int(round(warmup_fraction * total_steps)))
  optimizer = tf_keras.optimizers.Adam(learning_rate=schedule, epsilon=1e-6)
  if mixed_precision == "float16":
    optimizer = tf_keras.mixed_precision.LossScaleOptimizer(optimizer)
  return optimizer


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
    prefix_cache: a prefix_cache.PrefixCache built on `encoded`. Each
      example then also carries its frozen-prefix hidden states under
      prefix_cache.PREFIX_OUTPUT, [length, hidden], padded with zeros like
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


def compile_task_model(model: TaskModel, optimizer, jit_compile: bool = False) -> TaskModel:
  """Loss and metrics for the model's task type. `jit_compile` XLA-compiles the
  train and predict steps (feed them pad_to_multiple batches; see JIT_PAD_MULTIPLE)."""
  if model.task_type == "classification":
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    metrics = [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
  else:
    loss = tf_keras.losses.MeanSquaredError()
    metrics = [tf_keras.metrics.MeanAbsoluteError(name="mae")]
  model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile)
  return model


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  return max(1, math.ceil(num_examples / batch_size))


class ProgressLogger(tf_keras.callbacks.Callback):
  """One line every `every_seconds`: step, loss/metrics, examples/s, ETA.

  Works the same in a terminal and in a CI log (Keras's bar does not).
  `initial_step`: steps done before this process (a resumed run); the rate
  and ETA count only the steps done here.
  """

  def __init__(self, total_steps: int, batch_size: int, every_seconds: float = 15.0,
               stream=None, prefix: str = "", initial_step: int = 0):
    super().__init__()
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.every_seconds = every_seconds
    self.stream = stream or sys.stdout
    self.prefix = prefix
    self._step = self._initial_step = initial_step
    self._start = None
    self._last_print = 0.0
    self._epoch = 0

  def on_train_begin(self, logs=None):
    self._start = time.perf_counter()
    self._last_print = self._start

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    self._step += 1
    now = time.perf_counter()
    if now - self._last_print >= self.every_seconds or self._step == self.total_steps:
      self._last_print = now
      elapsed = now - self._start
      done_here = self._step - self._initial_step
      rate = done_here * self.batch_size / max(elapsed, 1e-9)
      eta = (self.total_steps - self._step) * elapsed / max(done_here, 1)
      metrics = " ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
      print(f"{self.prefix}epoch {self._epoch + 1} step {self._step}/{self.total_steps} {metrics} "
            f"{rate:.1f} ex/s elapsed {elapsed:.0f}s eta {eta:.0f}s", file=self.stream, flush=True)


def predict_outputs(model: TaskModel, dataset: tf.data.Dataset) -> np.ndarray:
  """Model outputs (logits or scores) for every example of an unshuffled dataset."""
  return model.predict(dataset.map(lambda features, _: features), verbose=0)


def predict_encoded(model: TaskModel, encoded: EncodedExamples, batch_size: int = 64) -> np.ndarray:
  """Model outputs for every example of `encoded`, in its order.

  The batches run sorted by length, so they carry almost no padding, and
  the outputs are put back in the examples' order. A model compiled with
  jit_compile gets JIT_PAD_MULTIPLE padding (few shapes to compile).
  """
  order = np.argsort(encoded.lengths, kind="stable")
  pad = JIT_PAD_MULTIPLE if getattr(model, "jit_compile", False) else None
  sorted_outputs = predict_outputs(model, make_dataset(encoded, batch_size, order=order, pad_to_multiple=pad))
  outputs = np.empty_like(sorted_outputs)
  outputs[order] = sorted_outputs
  return outputs


def accuracy(model: TaskModel, encoded: EncodedExamples, batch_size: int = 64) -> float:
  logits = predict_encoded(model, encoded, batch_size)
  return float(np.mean(np.argmax(logits, axis=-1) == encoded.labels))


def seed_everything(seed: Optional[int]) -> None:
  if seed is not None:
    tf_keras.utils.set_random_seed(seed)
