"""The paper's optimizer: Adam with a linear warm-up over the first 10% of steps, then linear decay
to 0 (Houlsby et al. 2019, following BERT); and mixed precision (dtype policies, loss scaling).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import tensorflow as tf
import tf_keras

from adapter_keras.train.config import MIXED_PRECISION_CHOICES
from adapter_keras.values import KERAS_PACKAGE



@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class WarmupLinearDecay(tf_keras.optimizers.schedules.LearningRateSchedule):
  """0 -> peak linearly over `warmup_steps`, then peak -> 0 linearly at `total_steps`.

  Not official.nlp.optimization's WarmUp + PolynomialDecay: that one gives
  step/warmup (learning rate 0 on the first step) and decays from step 0, not
  from the end of warm-up; this is the schedule every measured result here
  was trained with.
  """

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
MIXED_PRECISION_POLICIES = {name: f"mixed_{name}" for name in MIXED_PRECISION_CHOICES}


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
                     f"train.optim.precision_policy({mixed_precision!r})")


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
