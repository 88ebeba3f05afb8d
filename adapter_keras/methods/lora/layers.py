"""LoRA's layers: `LoRAFactors` (A and B, the only new variables) and `LoRAProjection`, which wraps one of a
block's pre-trained projections (Model Garden EinsumDense) and adds (alpha / r) * x A B to its output."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras.methods.base import mark_added
from adapter_keras.methods.sites import projection_dims


class LoRAFactors(tf_keras.layers.Layer):
  """x -> dropout(x) A B with A [in, r] random (uniform in +-1/sqrt(in), PEFT's kaiming-uniform bound) and
  B [r, out] zeros, so a new LoRA changes nothing. x's last `input_dims` dimensions are flattened."""

  def __init__(self, rank: int, input_dims, output_size: int, dropout: float = 0.0, seed: Optional[int] = None,
               **kwargs):
    super().__init__(**kwargs)
    self.rank, self.input_dims, self.output_size = rank, tuple(input_dims), output_size
    self.input_size = int(np.prod(self.input_dims))
    self.dropout = tf_keras.layers.Dropout(dropout, seed=seed)
    self.seed = seed

  def build(self, input_shape):
    bound = 1.0 / math.sqrt(self.input_size)
    self.lora_a = self.add_weight(
        name="lora_a", shape=(self.input_size, self.rank),
        initializer=tf_keras.initializers.RandomUniform(-bound, bound, seed=self.seed))
    self.lora_b = self.add_weight(name="lora_b", shape=(self.rank, self.output_size), initializer="zeros")
    super().build(input_shape)

  def call(self, x, training=None):
    leading = tf.shape(x)[:len(x.shape) - len(self.input_dims)]
    flat = tf.reshape(x, tf.concat([leading, [self.input_size]], axis=0))
    return tf.matmul(tf.matmul(self.dropout(flat, training=training), self.lora_a), self.lora_b)

  def delta(self) -> tf.Tensor:
    """A B, [in, out]."""
    return tf.matmul(self.lora_a, self.lora_b)


class LoRAProjection(tf_keras.layers.Layer):
  """projection(x) + (alpha / r) * LoRA(x); `merge()` folds the update into the projection's kernel (no extra
  computation afterwards) and `unmerge()` takes it out again."""

  def __init__(self, projection, rank: int, alpha: float, dropout: float = 0.0, seed: Optional[int] = None,
               **kwargs):
    super().__init__(**kwargs)
    self.projection = projection
    self.input_dims, self.output_dims = projection_dims(projection)
    self.scale = alpha / rank
    self.lora = mark_added(LoRAFactors(rank, self.input_dims, int(np.prod(self.output_dims)), dropout, seed,
                                       name="lora"), "lora")
    self.merged = False

  def call(self, x, training=None):
    out = self.projection(x)
    if self.merged:
      return out
    update = tf.cast(self.lora(x, training=training) * self.scale, out.dtype)
    return out + tf.reshape(update, tf.shape(out))

  def _kernel_delta(self) -> tf.Tensor:
    return tf.reshape(self.lora.delta() * self.scale, self.projection.kernel.shape)

  def merge(self) -> None:
    if not self.merged:
      self.projection.kernel.assign_add(self._kernel_delta())
      self.merged = True

  def unmerge(self) -> None:
    if self.merged:
      self.projection.kernel.assign_sub(self._kernel_delta())
      self.merged = False
