"""The frozen-bottom cache's data: the prefix output of every training example, computed once.

`FrozenBottomCache.build` runs a FrozenBottomModel's frozen bottom
(networks/frozen_bottom.py) once over the training set and keeps its output
per example, without padding, in memory or in a file on disk (the size
guard decides); `features(index)` gives one example's hidden states inside
a tf.data map (train/inputs.py: make_dataset(prefix_cache=...)).

Adapters with BatchNorm inside are refused (methods.frozen_bottom_start_layer):
their batch statistics include padding positions, whose prefix outputs the
cache does not keep.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from adapter_keras.networks.frozen_bottom import BOTTOM_OUTPUT, FrozenBottomModel

# Above this a cache goes to disk (cache_dir) or is refused. SST-2's 67k
# training sentences take about 1.3 GB after 3 MiniLM layers in float32.
DEFAULT_MAX_MEMORY_BYTES = 2 << 30
# Free space a disk cache leaves on its file system.
DISK_HEADROOM_BYTES = 1 << 30


class FrozenBottomCache:
  """The frozen-bottom output of every example, unpadded and stored flat.

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
  def build(cls, model: FrozenBottomModel, encoded, batch_size: int = 64,
            cache_dir: Optional[str] = None,
            max_memory_bytes: int = DEFAULT_MAX_MEMORY_BYTES) -> "FrozenBottomCache":
    """Runs `model`'s prefix once over `encoded` (train.inputs.EncodedExamples).

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
          f"the frozen-bottom cache would take {nbytes / 2**30:.2f} GiB ({len(lengths)} examples, {shape[0]} "
          f"tokens x {hidden_size} x {dtype.size} bytes), over the {max_memory_bytes / 2**30:.2f} GiB "
          "memory limit: give a cache directory on disk, or train on fewer examples")
    else:
      os.makedirs(cache_dir, exist_ok=True)
      free = shutil.disk_usage(cache_dir).free
      if nbytes + DISK_HEADROOM_BYTES > free:
        raise ValueError(f"the frozen-bottom cache would take {nbytes / 2**30:.2f} GiB but {cache_dir} has only "
                         f"{free / 2**30:.2f} GiB free (and {DISK_HEADROOM_BYTES / 2**30:.0f} GiB stay free)")
      fd, path = tempfile.mkstemp(prefix="prefix_cache_", suffix=".bin", dir=cache_dir)
      os.close(fd)
      values = np.memmap(path, dtype=dtype.as_numpy_dtype, mode="w+", shape=shape)
    cache = cls(values, row_splits, model.start_layer, path)
    id_dtype = encoded.word_ids.dtype
    prefix = tf.function(model.bottom_output, input_signature=[dict(
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
    """{BOTTOM_OUTPUT: [length, hidden]} for a scalar example index, inside a tf.data map."""
    hidden = tf.numpy_function(self.hidden_states, [index], self.dtype, stateful=False)
    hidden.set_shape([None, self.hidden_size])
    return {BOTTOM_OUTPUT: hidden}


def _remove_file(path: str) -> None:
  if os.path.exists(path):
    os.remove(path)
