"""The AdapterFusion layer (Pfeiffer et al. 2021): attention over frozen source adapters at one
adapter position.

With h the position's input (the sub-layer's output after its dropout, what a sequential adapter reads) and
z_n = adapter_n(h) each source adapter's output (its skip included), per token

    s = softmax_n((Q h) . (K z_n)),    o = sum_n s_n V z_n

Q and K start from a truncated normal of std 0.02 (the scores start near 0, so s near uniform) and V from the
identity with a zero bias, so training starts from the sources' average; over one source o = z_1 exactly.
The output replaces the adapter's, before the block's residual add and LayerNorm.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf
import tf_keras

from adapter_keras.methods.adapter.layers import truncated_normal
from adapter_keras.methods.base import LoadedSource
from adapter_keras.methods.composition import build_sources
from adapter_keras.values import KERAS_PACKAGE

QUERY_KEY_INIT_STD = 0.02  # BERT's initializer range: small scores, so the softmax starts near uniform


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class AdapterFusion(tf_keras.layers.Layer):
  """Attention over frozen source adapters (module docstring); its query, key and value train.

  Args:
    sources: the source BottleneckAdapters (unbuilt, from methods/composition.source_adapter).
    loaded: the LoadedSource each was read from, in the same order (their values are assigned at build).
    seed: optional seed of the query and key initialisers.
  """

  added_by_method = "fusion"

  def __init__(self, sources: Sequence, loaded: Sequence[LoadedSource], seed: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    if not sources or len(sources) != len(loaded):
      raise ValueError("AdapterFusion needs one or more source adapters, each with its loaded source")
    self.sources = list(sources)
    self._loaded = tuple(loaded)
    self.seed = seed
    self.record = False  # analysis/fusion.py: keep the last eager call's weights in `last_weights`
    self.last_weights = None

  def build(self, input_shape):
    hidden_size = int(tf.TensorShape(input_shape)[-1])
    build_sources(self, self.sources, self._loaded, hidden_size, "fusion")
    seeds = (None, None) if self.seed is None else (self.seed * 2, self.seed * 2 + 1)
    self.query = tf_keras.layers.Dense(hidden_size, kernel_initializer=truncated_normal(QUERY_KEY_INIT_STD, seeds[0]),
                                       name="query")
    self.key = tf_keras.layers.Dense(hidden_size, kernel_initializer=truncated_normal(QUERY_KEY_INIT_STD, seeds[1]),
                                     name="key")
    self.value = tf_keras.layers.Dense(hidden_size, kernel_initializer="identity", name="value")
    for layer in (self.query, self.key, self.value):
      with tf.name_scope(layer.name):
        layer.build(tf.TensorShape([None, hidden_size]))
    super().build(input_shape)

  def call(self, inputs):
    hidden_size = inputs.shape[-1]
    h = tf.reshape(inputs, [-1, hidden_size])  # [tokens, d]: one matrix product per projection
    z = tf.stack([source(h) for source in self.sources], axis=1)  # [tokens, n, d]
    flat = tf.reshape(z, [-1, hidden_size])
    keys = tf.reshape(self.key(flat), tf.shape(z))
    values = tf.reshape(self.value(flat), tf.shape(z))
    scores = tf.einsum("td,tnd->tn", self.query(h), keys)
    weights = tf.nn.softmax(scores, axis=-1)
    if self.record and tf.executing_eagerly():
      self.last_weights = tf.reshape(weights, tf.concat([tf.shape(inputs)[:-1], [len(self.sources)]], 0))
    return tf.reshape(tf.einsum("tn,tnd->td", weights, values), tf.shape(inputs))

  @property
  def source_names(self) -> list:
    return [s.ref.label for s in self._loaded]

  def get_config(self):
    raise NotImplementedError("AdapterFusion is rebuilt by the fusion method's inject from its sources; "
                              "serialise the task model (its method config) instead")
