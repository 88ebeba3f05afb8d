"""The Stack composition's layer: a frozen lower adapter (loaded from its artifact) and a trained upper one at
one adapter position, the upper reading the lower's output: o = upper(lower(h)) (AdapterHub's Stack)."""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from adapter_keras.methods.base import LoadedSource
from adapter_keras.methods.composition import build_sources
from adapter_keras.values import KERAS_PACKAGE


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class StackedAdapters(tf_keras.layers.Layer):
  """upper(lower(h)): `lower` a frozen source adapter (values from `loaded` at build), `upper` a new adapter."""

  added_by_method = "stack"  # its lower adapter is a loaded source (frozen); its upper one trains

  def __init__(self, lower, loaded: LoadedSource, upper, **kwargs):
    super().__init__(**kwargs)
    self.lower = lower
    self.upper = upper
    self._loaded = loaded

  def build(self, input_shape):
    hidden_size = int(tf.TensorShape(input_shape)[-1])
    build_sources(self, [self.lower], [self._loaded], hidden_size, "stack")
    with tf.name_scope(self.upper.name):
      self.upper.build(tf.TensorShape([None, hidden_size]))
    super().build(input_shape)

  def call(self, inputs):
    return self.upper(self.lower(inputs))

  def get_config(self):
    raise NotImplementedError("StackedAdapters is rebuilt by the stack method's inject from its lower artifact; "
                              "serialise the task model (its method config) instead")
