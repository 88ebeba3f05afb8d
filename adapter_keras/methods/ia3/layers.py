"""IA3's layers: `IA3Vector` (one learned vector, the only new variable) and `IA3Projection`, which wraps one of
a block's pre-trained projections (Model Garden EinsumDense) and rescales its output (the keys, the values) or
its input (the FFN's activation, before the FFN's output projection) by that vector."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras.methods.base import mark_added
from adapter_keras.methods.sites import projection_dims
from adapter_keras.values import KERAS_PACKAGE

# The sides of a projection IA3 may scale.
SIDES = ("output", "input")
# merge refuses vectors with an entry this close to 0: unmerge divides by them.
MIN_MERGEABLE_SCALE = 1e-6


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class IA3Vector(tf_keras.layers.Layer):
  """x * l over x's last dimensions `scale_shape`, with l a vector of their product's size initialised to ones
  (so a new IA3 changes nothing). l is kept flat, as the paper writes it (l_k in R^d)."""

  def __init__(self, scale_shape: Sequence[int], **kwargs):
    super().__init__(**kwargs)
    self.scale_shape = tuple(int(n) for n in scale_shape)

  def build(self, input_shape):
    self.scale = self.add_weight(name="scale", shape=(int(np.prod(self.scale_shape)),), initializer="ones")
    super().build(input_shape)

  def call(self, x):
    return x * tf.cast(tf.reshape(self.scale, self.scale_shape), x.dtype)

  def get_config(self) -> dict:
    return dict(super().get_config(), scale_shape=list(self.scale_shape))


class IA3Projection(tf_keras.layers.Layer):
  """projection(x) * l (side "output") or projection(x * l) (side "input"); `merge()` folds l into the
  projection's kernel (and, on the output side, its bias), so that the merged wrapper computes the projection
  alone, and `unmerge()` takes it out again.

  unmerge divides by l rather than keeping a copy of the kernel, so a merged model holds no second copy of the
  base; merge therefore refuses a vector with an entry near 0 (|l| < 1e-6), whose division would not restore it.
  Train only unmerged: unmerge divides by the vector's current value.
  """

  def __init__(self, projection, side: str = "output", **kwargs):
    super().__init__(**kwargs)
    if side not in SIDES:
      raise ValueError(f"IA3 scales a projection's {' or '.join(SIDES)}, got side {side!r}")
    self.projection = projection
    self.side = side
    self.merged = False

  def build(self, input_shape):
    input_dims, output_dims = projection_dims(self.projection)
    self.vector = mark_added(IA3Vector(output_dims if self.side == "output" else input_dims, name="ia3"), "ia3")
    super().build(input_shape)

  def call(self, x):
    if self.merged:
      return self.projection(x)
    if self.side == "input":
      return self.projection(self.vector(x))
    return self.vector(self.projection(x))

  def _kernel_scale(self) -> tf.Tensor:
    """l shaped to broadcast over the kernel [input dims..., output dims...] on this wrapper's side."""
    input_dims, output_dims = projection_dims(self.projection)
    if self.side == "output":
      return tf.reshape(self.vector.scale, output_dims)
    return tf.reshape(self.vector.scale, input_dims + (1,) * len(output_dims))

  def check_mergeable(self) -> None:
    """Raises ValueError (before anything changes) when merge could not be undone or not fold the bias."""
    smallest = float(tf.reduce_min(tf.abs(self.vector.scale)))
    if smallest < MIN_MERGEABLE_SCALE:
      raise ValueError(f"cannot merge IA3 vector {self.vector.scale.name}: an entry is {smallest:.3g}, below "
                       f"{MIN_MERGEABLE_SCALE} (unmerge divides by it)")
    bias = self.projection.bias
    _, output_dims = projection_dims(self.projection)
    if self.side == "output" and bias is not None and tuple(bias.shape) != output_dims:
      raise ValueError(f"cannot merge IA3 into {self.projection.name}: its bias {tuple(bias.shape)} does not "
                       f"cover its outputs {output_dims}")

  def merge(self) -> None:
    if self.merged:
      return
    self.check_mergeable()
    scale = self._kernel_scale()
    self.projection.kernel.assign(self.projection.kernel * scale)
    if self.side == "output" and self.projection.bias is not None:
      self.projection.bias.assign(self.projection.bias * scale)
    self.merged = True

  def unmerge(self) -> None:
    if not self.merged:
      return
    scale = self._kernel_scale()
    self.projection.kernel.assign(self.projection.kernel / scale)
    if self.side == "output" and self.projection.bias is not None:
      self.projection.bias.assign(self.projection.bias / scale)
    self.merged = False
