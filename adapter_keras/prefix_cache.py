"""The frozen-prefix cache: the frozen bottom of the encoder runs once per example.

When everything that trains sits in Transformer layers k..L-1 (adapters
restricted to a top range with `AdapterConfig.layers`, or method top-k), the
embeddings and layers 0..k-1, the *frozen prefix*, compute the same hidden
states for an example at every epoch: an example's token ids never change
and the prefix runs in inference mode. `PrefixCache.build` runs the prefix
once over the training set and keeps its output per example, without
padding, in memory or in a file on disk; training then pays only for layers
k..L-1, forward and backward.

What the cache changes, and where that is explicit:

* The prefix is entirely frozen. Method "adapter" trains every LayerNorm;
  `freeze_prefix` freezes the embedding LayerNorm and the LayerNorms of
  layers 0..k-1 too (a saved artifact then holds the LayerNorms from layer k
  on; the others keep their pre-trained values). `PrefixCachedModel` refuses
  a model whose prefix still has a trainable variable.
* The prefix runs without dropout. `PrefixCachedModel` fed plain batches
  computes the prefix itself, in inference mode and outside the gradient: the
  uncached run with the same semantics.
* Adapters with BatchNorm inside are refused: their batch statistics include
  padding positions, whose prefix outputs the cache does not keep.

This module owns `prefix_start_layer` (k for a tuning method),
`freeze_prefix`, `PrefixCachedModel` (the task model split at layer k) and
`PrefixCache` (building, the size guard, memory or disk storage, per-example
lookups for tf.data). It calls Model Garden's BertEncoderV2 pieces by their
private names (tf-models-official 2.20 is pinned); tests/test_performance.py
checks that the split model computes what the task model computes.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras.config import AdapterConfig

# The feature under which cached batches carry the prefix output, [batch, seq, hidden].
PREFIX_OUTPUT = "prefix_output"
# Above this a cache goes to disk (cache_dir) or is refused. SST-2's 67k
# training sentences take about 1.3 GB after 3 MiniLM layers in float32.
DEFAULT_MAX_MEMORY_BYTES = 2 << 30
# Free space a disk cache leaves on its file system.
DISK_HEADROOM_BYTES = 1 << 30
PREFIX_METHODS = ("adapter", "top-k")


def prefix_start_layer(method: str, num_layers: int, adapter_config: Optional[AdapterConfig] = None,
                       top_k: Optional[int] = None) -> int:
  """k, the first Transformer layer that trains under `method`; layers < k form the frozen prefix.

  "adapter" needs adapters in exactly the layers k..L-1 (AdapterConfig.layers
  a top range, k >= 1); "top-k" gives k = L - top_k. Other methods train
  layer 0 (or every LayerNorm) and leave nothing to cache.
  """
  if method == "adapter":
    if adapter_config is None:
      raise ValueError("method adapter needs an AdapterConfig")
    adapted = [i for i in range(num_layers) if adapter_config.size_for_layer(i)]
    if not adapted:
      raise ValueError("the adapter config puts adapters in no layer")
    start = adapted[0]
    if adapted != list(range(start, num_layers)):
      raise ValueError(
          f"the prefix cache needs adapters in a top range of layers k..{num_layers - 1} "
          f"(AdapterConfig.layers, --adapter-layers); they are in layers {adapted}")
    if adapter_config.norm == "batch":
      raise ValueError("the prefix cache does not support adapters with BatchNorm (norm='batch'): their "
                       "batch statistics include padding positions, which the cache does not keep")
  elif method == "top-k":
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= num_layers:
      raise ValueError(f"method top-k needs 1 <= top_k <= {num_layers}, got {top_k!r}")
    start = num_layers - top_k
  else:
    raise ValueError(f"the prefix cache applies to methods {' and '.join(PREFIX_METHODS)}, not {method!r} "
                     "(it trains the bottom layer, so there is no frozen prefix)")
  if start < 1:
    top_half = tuple(range(num_layers // 2, num_layers))
    raise ValueError(
        "every Transformer layer trains, so there is no frozen prefix to cache; put the adapters in a top "
        f"range of layers only, e.g. AdapterConfig(layers={top_half}) (train: --adapter-layers "
        f"{' '.join(map(str, top_half))})")
  return start


def prefix_layers(encoder, start_layer: int) -> List[tf_keras.layers.Layer]:
  """The layers of the frozen prefix: the embeddings (with their LayerNorm) and blocks < start_layer."""
  _check_start_layer(encoder, start_layer)
  layers = [encoder._embedding_layer, encoder._position_embedding_layer,  # pylint: disable=protected-access
            encoder._type_embedding_layer, encoder._embedding_norm_layer]  # pylint: disable=protected-access
  if encoder._embedding_projection is not None:  # pylint: disable=protected-access
    layers.append(encoder._embedding_projection)  # pylint: disable=protected-access
  return layers + list(encoder.transformer_layers[:start_layer])


def freeze_prefix(model, start_layer: int) -> None:
  """Freezes every variable of the frozen prefix of `model` (a TaskModel).

  Call it after tuning.apply_method, which resets every trainable flag.
  """
  for layer in prefix_layers(model.encoder, start_layer):
    layer.trainable = False


def trainable_prefix_variables(model, start_layer: int) -> List[str]:
  """Names of the trainable variables of `model` that sit in its frozen prefix (should be none)."""
  in_prefix = {id(v) for layer in prefix_layers(model.encoder, start_layer) for v in layer.weights}
  return [v.name for v in model.trainable_variables if id(v) in in_prefix]


def _check_start_layer(encoder, start_layer: int) -> None:
  num_layers = len(encoder.transformer_layers)
  if isinstance(start_layer, bool) or not isinstance(start_layer, int) or not 1 <= start_layer < num_layers:
    raise ValueError(f"start_layer must be in [1, {num_layers - 1}] for a {num_layers}-layer encoder, "
                     f"got {start_layer!r}")


class PrefixCachedModel(tf_keras.Model):
  """A TaskModel split at Transformer layer k: the frozen prefix, then layers k.. and the head.

  It owns no variables: training it trains `task_model`. On batches that
  carry PREFIX_OUTPUT (make_dataset(prefix_cache=...)) it starts from those
  hidden states; on plain batches it computes the prefix itself, in inference
  mode and under tf.stop_gradient, which is the uncached run with the same
  semantics. In inference mode its outputs are `task_model`'s, so evaluation
  needs no cache. Train this, save `task_model` (this one has no config).

  Args:
    task_model: a built classification or regression TaskModel whose prefix
      is frozen (`freeze_prefix`).
    start_layer: k, the first Transformer layer that trains.
  """

  def __init__(self, task_model, start_layer: int, **kwargs):
    kwargs.setdefault("name", f"{task_model.name}_from_layer_{start_layer}")
    # No input casting: cached hidden states already have the dtype the
    # blocks compute in (bfloat16 under mixed_bfloat16), and the integer ids
    # are not cast anyway.
    super().__init__(autocast=False, **kwargs)
    if getattr(task_model, "task_type", None) not in ("classification", "regression"):
      raise ValueError("PrefixCachedModel needs a classification or regression TaskModel")
    encoder = task_model.encoder
    _check_start_layer(encoder, start_layer)
    config = encoder.get_config()
    if config.get("return_attention_scores") or config.get("with_dense_inputs"):
      raise ValueError("PrefixCachedModel does not support encoders with return_attention_scores or dense inputs")
    trainable = trainable_prefix_variables(task_model, start_layer)
    if trainable:
      raise ValueError(f"the frozen prefix (embeddings and layers < {start_layer}) has trainable variables "
                       f"{trainable[:3]}{'...' if len(trainable) > 3 else ''}; call "
                       f"freeze_prefix(model, {start_layer}) after apply_method")
    self.task_model = task_model
    self.start_layer = start_layer

  @property
  def encoder(self):
    return self.task_model.encoder

  @property
  def task_type(self) -> str:
    return self.task_model.task_type

  @property
  def pooling(self) -> str:
    return self.task_model.pooling

  def prefix_output(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """The hidden states entering layer k, computed in inference mode (no dropout).

    BertEncoderV2.call up to layer k; the embedding dropout is left out
    because inference mode makes it the identity.
    """
    encoder = self.encoder
    # pylint: disable=protected-access
    embeddings = encoder._get_embeddings(features["input_word_ids"], features["input_type_ids"],
                                         None, None, None)
    embeddings = encoder._embedding_norm_layer(embeddings)
    if encoder._embedding_projection is not None:
      embeddings = encoder._embedding_projection(embeddings)
    attention_mask = encoder._attention_mask_layer(embeddings, features["input_mask"])
    # pylint: enable=protected-access
    x = embeddings
    for block in encoder.transformer_layers[:self.start_layer]:
      x = block([x, attention_mask], training=False)
    return x

  def call(self, inputs, training=None):
    if PREFIX_OUTPUT in inputs:
      hidden = inputs[PREFIX_OUTPUT]
    else:
      hidden = tf.stop_gradient(self.prefix_output(inputs))
    encoder, model = self.encoder, self.task_model
    mask = inputs["input_mask"]
    attention_mask = encoder._attention_mask_layer(hidden, mask)  # pylint: disable=protected-access
    blocks = encoder.transformer_layers
    x = hidden
    for i in range(self.start_layer, len(blocks)):
      output_range = encoder._output_range if i == len(blocks) - 1 else None  # pylint: disable=protected-access
      x = blocks[i]([x, attention_mask], output_range=output_range, training=training)
    if model.pooling == "cls":
      pooled = encoder.pooler_layer(x[:, 0, :])
    else:
      pooled = model.mean_pooling(x, mask)
    return tf.cast(model.head(model.head_dropout(pooled, training=training)), tf.float32)


class PrefixCache:
  """The frozen-prefix output of every example, unpadded and stored flat.

  Example i's hidden states, [length_i, hidden], are
  values[row_splits[i]:row_splits[i + 1]]. `values` is a numpy array in
  memory, or a np.memmap over a temporary file that is deleted by `close()`
  or when the cache is garbage-collected.
  """

  def __init__(self, values: np.ndarray, row_splits: np.ndarray, start_layer: int,
               path: Optional[str] = None):
    self.values = values
    self.row_splits = row_splits
    self.start_layer = start_layer
    self.path = path
    self._remove_file = weakref.finalize(self, _remove_file, path) if path else None

  def __len__(self) -> int:
    return len(self.row_splits) - 1

  @property
  def hidden_size(self) -> int:
    return int(self.values.shape[1])

  @property
  def dtype(self) -> tf.DType:
    return tf.as_dtype(self.values.dtype)

  @property
  def nbytes(self) -> int:
    return int(self.values.nbytes)

  @property
  def on_disk(self) -> bool:
    return self.path is not None

  def close(self) -> None:
    """Deletes the disk file (if any); the cache is unusable afterwards."""
    self.values = None
    if self._remove_file is not None:
      self._remove_file()

  @classmethod
  def build(cls, model: PrefixCachedModel, encoded, batch_size: int = 64,
            cache_dir: Optional[str] = None,
            max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES) -> "PrefixCache":
    """Runs `model`'s prefix once over `encoded` (training.EncodedExamples).

    Kept in memory up to `max_memory_bytes`; a larger cache goes to a
    temporary file in `cache_dir` if given (refused when it would leave less
    than DISK_HEADROOM_BYTES free there), and is otherwise refused with its
    size in the message. Examples run sorted by length, `batch_size` at a
    time, so the prefix computes almost no padding.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = encoded.lengths.astype(np.int64)
    row_splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    hidden_size = model.encoder.hidden_size
    dtype = tf.as_dtype(model.encoder.transformer_layers[model.start_layer - 1].compute_dtype)
    shape = (int(row_splits[-1]), hidden_size)
    nbytes = shape[0] * shape[1] * dtype.size
    path = None
    if nbytes <= max_memory_bytes:
      values = np.empty(shape, dtype.as_numpy_dtype)
    elif cache_dir is None:
      raise ValueError(
          f"the prefix cache would take {nbytes / 2**30:.2f} GiB ({len(lengths)} examples, {shape[0]} "
          f"tokens x {hidden_size} x {dtype.size} bytes), over the {max_memory_bytes / 2**30:.2f} GiB "
          "memory limit: give a cache directory on disk, or train on fewer examples")
    else:
      os.makedirs(cache_dir, exist_ok=True)
      free = shutil.disk_usage(cache_dir).free
      if nbytes + DISK_HEADROOM_BYTES > free:
        raise ValueError(f"the prefix cache would take {nbytes / 2**30:.2f} GiB but {cache_dir} has only "
                         f"{free / 2**30:.2f} GiB free (and {DISK_HEADROOM_BYTES / 2**30:.0f} GiB stay free)")
      fd, path = tempfile.mkstemp(prefix="prefix_cache_", suffix=".bin", dir=cache_dir)
      os.close(fd)
      values = np.memmap(path, dtype=dtype.as_numpy_dtype, mode="w+", shape=shape)
    cache = cls(values, row_splits, model.start_layer, path)
    id_dtype = encoded.word_ids.dtype
    prefix = tf.function(model.prefix_output, input_signature=[dict(
        input_word_ids=tf.TensorSpec([None, None], id_dtype),
        input_mask=tf.TensorSpec([None, None], id_dtype),
        input_type_ids=tf.TensorSpec([None, None], encoded.type_ids.dtype))])
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
      chunk = order[start:start + batch_size]
      word_ids = tf.gather(encoded.word_ids, chunk).to_tensor()
      features = dict(input_word_ids=word_ids,
                      input_mask=tf.sequence_mask(lengths[chunk], tf.shape(word_ids)[1], dtype=id_dtype),
                      input_type_ids=tf.gather(encoded.type_ids, chunk).to_tensor())
      hidden = prefix(features).numpy()
      for row, i in enumerate(chunk):
        values[row_splits[i]:row_splits[i + 1]] = hidden[row, :lengths[i]]
    if path:
      values.flush()
    return cache

  def hidden_states(self, index: int) -> np.ndarray:
    """Example `index`'s prefix output, [length, hidden]."""
    return np.asarray(self.values[self.row_splits[index]:self.row_splits[index + 1]])

  def features(self, index: tf.Tensor) -> Dict[str, tf.Tensor]:
    """{PREFIX_OUTPUT: [length, hidden]} for a scalar example index, inside a tf.data map."""
    hidden = tf.numpy_function(self.hidden_states, [index], self.dtype, stateful=False)
    hidden.set_shape([None, self.hidden_size])
    return {PREFIX_OUTPUT: hidden}


def _remove_file(path: str) -> None:
  if os.path.exists(path):
    os.remove(path)
