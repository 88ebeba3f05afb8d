"""Distribution strategies by name: auto, default, mirrored, multi-worker, tpu.

`auto` picks a TPUStrategy when a TPU cluster resolves, a MirroredStrategy when
more than one GPU is visible, and the default strategy otherwise.
"""
from __future__ import annotations

import tensorflow as tf

from adapter_keras.train.config import STRATEGIES


def _tpu_strategy(tpu: str = "") -> tf.distribute.Strategy:
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def _tpu_available() -> bool:
  try:
    tf.distribute.cluster_resolver.TPUClusterResolver()
  except (ValueError, RuntimeError, tf.errors.NotFoundError):
    return False
  return True


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
  """The tf.distribute strategy called `name` (see module docstring)."""
  if name not in STRATEGIES:
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
  if name == "auto":
    if _tpu_available():
      return _tpu_strategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
      return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi-worker":
    # Reads the cluster from TF_CONFIG, as every tf.distribute multi-worker job.
    return tf.distribute.MultiWorkerMirroredStrategy()
  return _tpu_strategy()
