"""Prefix tuning's layers: the prefix vectors prepended to a block's keys and values, the wrapper that puts them
behind a pre-trained key or value projection, the softmax wrapper that lets every query see them, and the
reparameterisation MLP that can produce the vectors while training.

In one attention of a block (tf_keras MultiHeadAttention, Model Garden's block):

    keys    = concat(P_k, x W_k)  [B, p + T, N, H]   PrefixedProjection(key projection, PrefixVectors)
    values  = concat(P_v, x W_v)  [B, p + T, N, H]   PrefixedProjection(value projection, PrefixVectors)
    mask    = concat(1, mask)     [B, 1, T, p + T]   PrefixVisibleSoftmax(the attention's masked softmax)

The queries keep their length, so the block's output has the input's length: pooling and span heads see no
change. The mask is widened at the softmax, after tf_keras has combined it with any Keras masks of the inputs
(they have the inputs' length, T), so padding keys stay masked and the p prefix keys are visible to all.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tf_keras

from adapter_keras.values import KERAS_PACKAGE


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class PrefixVectors(tf_keras.layers.Layer):
  """p learned vectors per head prepended to a projection's output: [B, T, N, H] -> [B, p + T, N, H].

  Its one variable, `vectors` [p, N, H], is created in build from the projection's output shape and drawn from
  N(0, init_std) (methods/prefix_tuning: PrefixTuningConfig says why small).
  """

  def __init__(self, length: int, init_std: float = 0.02, seed: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    self.length, self.init_std, self.seed = length, init_std, seed

  def build(self, input_shape):
    self.vectors = self.add_weight(name="vectors", shape=self._vector_shape(input_shape),
                                   initializer=tf_keras.initializers.RandomNormal(stddev=self.init_std, seed=self.seed))
    super().build(input_shape)

  def _vector_shape(self, input_shape):
    if len(input_shape) != 4:
      raise ValueError(f"prefix vectors go before a [batch, length, heads, head size] projection, got {input_shape}")
    return (self.length, int(input_shape[-2]), int(input_shape[-1]))

  def prefix(self) -> tf.Tensor:
    """The prefix, [p, N, H]."""
    return self.vectors

  def call(self, projected):
    prefix = tf.cast(self.prefix(), projected.dtype)
    batch = tf.shape(projected)[:1]
    prefix = tf.broadcast_to(prefix[tf.newaxis], tf.concat([batch, tf.shape(prefix)], axis=0))
    return tf.concat([prefix, projected], axis=1)

  def get_config(self):
    return dict(super().get_config(), length=self.length, init_std=self.init_std, seed=self.seed)


class ReparameterizedPrefix(PrefixVectors):
  """PrefixVectors whose prefix is one slice of the shared reparameterisation MLP's output (layer `layer_index`,
  keys at position 0 and values at 1). Its `vectors` are not trained: `store()` writes the MLP's current prefix
  into them, the form an artifact holds (PrefixTuningMethod.prepare_artifact), under the same name as the plain
  layer's. Not serializable on its own: inject rebuilds it with its MLP."""

  def __init__(self, length: int, mlp: "PrefixMLP", layer_index: int, position: int, **kwargs):
    super().__init__(length, **kwargs)
    self.mlp = mlp
    self.layer_index, self.position = layer_index, position

  def build(self, input_shape):
    self.vectors = self.add_weight(name="vectors", shape=self._vector_shape(input_shape), initializer="zeros",
                                   trainable=False)
    tf_keras.layers.Layer.build(self, input_shape)

  def prefix(self) -> tf.Tensor:
    table = self.mlp(tf.range(self.length))  # [p, layers, 2, d]
    return tf.reshape(table[:, self.layer_index, self.position], self.vectors.shape)

  def store(self) -> None:
    """Writes the MLP's current prefix into `vectors`."""
    self.vectors.assign(tf.cast(self.prefix(), self.vectors.dtype))

  def get_config(self):
    raise NotImplementedError("a ReparameterizedPrefix shares its MLP with every block: the prefix-tuning method's "
                              "inject rebuilds it; an artifact holds its stored vectors as plain PrefixVectors")


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class PrefixMLP(tf_keras.layers.Layer):
  """Li & Liang's reparameterisation as P-tuning v2's PrefixEncoder computes it: prefix positions (integers
  < p) -> an embedding [p, d] -> tanh(e W1 + b1) W2 + b2, reshaped to [p, layers, 2 (key, value), d].

  The embedding starts N(0, 1) (torch's Embedding default, which P-tuning v2 uses), the two kernels
  N(0, init_std) and the biases 0, so that the first prefixes are small as the plain ones are.
  """

  def __init__(self, length: int, hidden_size: int, mlp_hidden_size: int, num_layers: int, init_std: float = 0.02,
               seed: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    self.length, self.hidden_size, self.mlp_hidden_size = length, hidden_size, mlp_hidden_size
    self.num_layers, self.init_std, self.seed = num_layers, init_std, seed

  def build(self, input_shape):
    d, m, out = self.hidden_size, self.mlp_hidden_size, self.num_layers * 2 * self.hidden_size

    def normal(stddev, offset):
      return tf_keras.initializers.RandomNormal(stddev=stddev, seed=None if self.seed is None else self.seed + offset)

    self.embedding = self.add_weight(name="embedding", shape=(self.length, d), initializer=normal(1.0, 0))
    self.hidden_kernel = self.add_weight(name="hidden_kernel", shape=(d, m), initializer=normal(self.init_std, 1))
    self.hidden_bias = self.add_weight(name="hidden_bias", shape=(m,), initializer="zeros")
    self.output_kernel = self.add_weight(name="output_kernel", shape=(m, out), initializer=normal(self.init_std, 2))
    self.output_bias = self.add_weight(name="output_bias", shape=(out,), initializer="zeros")
    super().build(input_shape)

  def call(self, positions):
    embedded = tf.gather(self.embedding, positions)
    hidden = tf.tanh(tf.matmul(embedded, self.hidden_kernel) + self.hidden_bias)
    table = tf.matmul(hidden, self.output_kernel) + self.output_bias
    return tf.reshape(table, tf.concat([tf.shape(positions), [self.num_layers, 2, self.hidden_size]], axis=0))

  def get_config(self):
    return dict(super().get_config(), length=self.length, hidden_size=self.hidden_size,
                mlp_hidden_size=self.mlp_hidden_size, num_layers=self.num_layers, init_std=self.init_std,
                seed=self.seed)


class PrefixedProjection(tf_keras.layers.Layer):
  """A pre-trained key or value projection with the prefix before its output: prefix(projection(x)). It holds
  the pre-trained layer, so it is never marked as added; its `prefix` is."""

  def __init__(self, projection, prefix: PrefixVectors, **kwargs):
    super().__init__(**kwargs)
    self.projection = projection
    self.prefix = prefix

  def call(self, x):
    return self.prefix(self.projection(x))


class PrefixVisibleSoftmax(tf_keras.layers.Layer):
  """The attention's masked softmax with the mask widened by `length` ones in front: the scores are
  [B, N, T, p + S] once the keys carry the prefix, the mask the block computed [B, 1, T, S] (or None: nothing
  is masked). Its argument is not called `mask`, so Keras adds no mask handling of its own."""

  def __init__(self, softmax, length: int, **kwargs):
    super().__init__(**kwargs)
    self.softmax = softmax
    self.length = length

  def call(self, scores, attention_mask=None):
    if attention_mask is not None:
      shape = tf.concat([tf.shape(attention_mask)[:-1], [self.length]], axis=0)
      attention_mask = tf.concat([tf.ones(shape, attention_mask.dtype), attention_mask], axis=-1)
    return self.softmax(scores, attention_mask)
