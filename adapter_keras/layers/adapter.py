"""The Houlsby bottleneck adapter and the wrapper that attaches it to a sublayer.

An adapter maps x -> x + up(act(down(x))) with down: d -> m and up: m -> d.
Both kernels start from a truncated normal (cut at two standard deviations)
with a small std and the biases start at zero, so a fresh adapter is a
near-identity. Parameters: 2md + d + m.

Each adapter also holds a non-trainable scalar `enabled` gate. Setting it to 0
makes the layer return its input bit for bit (x + 0 * delta == x), which is how
ablations and "pure base" inference switch adapters off without retracing or
copying the model.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tf_keras

_PACKAGE = "AdapterKeras"


def truncated_normal(stddev: float, seed: Optional[int]) -> tf_keras.initializers.Initializer:
  """A fresh initializer instance; never share one between two kernels.

  tf_keras's TruncatedNormal re-draws values beyond two standard deviations,
  which is the paper's initialisation.
  """
  return tf_keras.initializers.TruncatedNormal(mean=0.0, stddev=stddev, seed=seed)


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class BottleneckAdapter(tf_keras.layers.Layer):
  """x + up(act(down(x))), a near-identity at initialisation.

  Args:
    bottleneck_size: m, the width of the bottleneck.
    activation: nonlinearity applied to the bottleneck.
    init_std: std of the truncated normal for both kernels.
    seed: optional seed; the two kernels get distinct seeds derived from it.
  """

  def __init__(self,
               bottleneck_size: int,
               activation: str = "gelu",
               init_std: float = 1e-2,
               seed: Optional[int] = None,
               **kwargs):
    super().__init__(**kwargs)
    if isinstance(bottleneck_size, bool) or not isinstance(bottleneck_size, int) or bottleneck_size < 1:
      raise ValueError(f"bottleneck_size must be an integer >= 1, got {bottleneck_size!r}")
    self.bottleneck_size = bottleneck_size
    self.activation_name = activation
    self.init_std = float(init_std)
    self.seed = seed

  def build(self, input_shape):
    hidden_size = int(input_shape[-1])
    down_seed = None if self.seed is None else self.seed * 2
    up_seed = None if self.seed is None else self.seed * 2 + 1
    self.down_project = tf_keras.layers.Dense(
        self.bottleneck_size,
        kernel_initializer=truncated_normal(self.init_std, down_seed),
        bias_initializer="zeros",
        name="down")
    self.up_project = tf_keras.layers.Dense(
        hidden_size,
        kernel_initializer=truncated_normal(self.init_std, up_seed),
        bias_initializer="zeros",
        name="up")
    # Build the projections now (not lazily at the first call) so that the
    # adapter's variables exist, under their own names, as soon as it is built.
    input_shape = tf.TensorShape(input_shape)
    with tf.name_scope(self.down_project.name):
      self.down_project.build(input_shape)
    with tf.name_scope(self.up_project.name):
      self.up_project.build(input_shape[:-1].concatenate([self.bottleneck_size]))
    self.activation = tf_keras.activations.get(self.activation_name)
    self.enabled = self.add_weight(
        name="enabled", shape=(), initializer="ones", trainable=False, dtype=tf.float32)
    super().build(input_shape)

  def call(self, inputs):
    delta = self.up_project(self.activation(self.down_project(inputs)))
    return inputs + tf.cast(self.enabled, delta.dtype) * delta

  def set_enabled(self, enabled: bool) -> None:
    if not self.built:
      raise RuntimeError(f"{self.name} is not built yet; call the model once first")
    self.enabled.assign(1.0 if enabled else 0.0)

  @property
  def parameters(self) -> list:
    """The adapter's trainable-kind variables (kernels and biases, not the gate)."""
    return self.down_project.weights + self.up_project.weights

  @property
  def is_enabled(self) -> bool:
    return bool(self.enabled.numpy() != 0.0)

  def get_config(self):
    config = super().get_config()
    config.update(
        bottleneck_size=self.bottleneck_size,
        activation=self.activation_name,
        init_std=self.init_std,
        seed=self.seed)
    return config


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class SublayerWithAdapter(tf_keras.layers.Layer):
  """Runs `sublayer`, then `adapter` on its output.

  Used to put an adapter right after an existing sublayer of a pre-built block
  (the dropout after a projection) without touching the block's code or the
  names of its pre-trained variables.
  """

  def __init__(self, sublayer: tf_keras.layers.Layer, adapter: BottleneckAdapter, **kwargs):
    super().__init__(**kwargs)
    self.sublayer = sublayer
    self.adapter = adapter

  def call(self, inputs):
    return self.adapter(self.sublayer(inputs))

  def get_config(self):
    config = super().get_config()
    config.update(
        sublayer=tf_keras.layers.serialize(self.sublayer),
        adapter=tf_keras.layers.serialize(self.adapter))
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["sublayer"] = tf_keras.layers.deserialize(config["sublayer"])
    config["adapter"] = tf_keras.layers.deserialize(config["adapter"])
    return cls(**config)
