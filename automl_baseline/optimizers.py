"""The towers' optimizers: LazyAdam for tf_keras, and the per-tower factories.

`LazyAdam` is Adam that, on sparse gradients (`tf.IndexedSlices`, e.g. from
an embedding lookup), updates the moments and weights of the touched rows only,
as TF Addons' LazyAdam did for Keras 2. It is written here against tf_keras's optimizer API because
TF 2.20 has none: tf_keras ships no LazyAdam, tensorflow_addons (its last release, 0.23, needs TF < 2.16) is
not installable, and tf_keras's Adam on IndexedSlices still decays and applies every row's moments.
On dense gradients it is exactly tf_keras's Adam.

The deep tower trains with Adagrad or LazyAdam (Table 5 rows 14-15); the wide (linear)
tower with FTRL, the classic wide & deep choice, whose L2 strength is the wide
tower's regularisation weight. The legacy FTRL is used because its sparse
kernel also only touches the rows that occur in the batch, which matters for
a hashed table with 2^18 rows.
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from automl_baseline import KERAS_PACKAGE

DEEP_OPTIMIZERS = ("adagrad", "lazy_adam")


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class LazyAdam(tf_keras.optimizers.Optimizer):
  """Adam whose sparse updates touch only the rows present in the gradient.

  The bias correction uses the optimizer's global step, so a row that is seen
  rarely is corrected as if its moments had decayed all along (the behaviour
  of TF Addons' LazyAdam), which is what makes skipping the other rows cheap.
  """

  def __init__(self,
               learning_rate: float = 0.001,
               beta_1: float = 0.9,
               beta_2: float = 0.999,
               epsilon: float = 1e-7,
               name: str = "LazyAdam",
               **kwargs):
    super().__init__(name=name, **kwargs)
    self._learning_rate = self._build_learning_rate(learning_rate)
    self.beta_1 = beta_1
    self.beta_2 = beta_2
    self.epsilon = epsilon

  def build(self, var_list):
    super().build(var_list)
    if hasattr(self, "_built") and self._built:
      return
    self._built = True
    self._momentums = [self.add_variable_from_reference(v, "m") for v in var_list]
    self._velocities = [self.add_variable_from_reference(v, "v") for v in var_list]

  def update_step(self, gradient, variable):
    lr = tf.cast(self.learning_rate, variable.dtype)
    local_step = tf.cast(self.iterations + 1, variable.dtype)
    beta_1_power = tf.pow(tf.cast(self.beta_1, variable.dtype), local_step)
    beta_2_power = tf.pow(tf.cast(self.beta_2, variable.dtype), local_step)
    index = self._index_dict[self._var_key(variable)]
    m = self._momentums[index]
    v = self._velocities[index]
    # The same step size and epsilon as tf_keras's Adam, so dense updates match it.
    alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)

    if isinstance(gradient, tf.IndexedSlices):
      # apply_gradients has already summed duplicate indices.
      indices = gradient.indices
      m_rows = self.beta_1 * tf.gather(m, indices) + (1 - self.beta_1) * gradient.values
      v_rows = (self.beta_2 * tf.gather(v, indices)
                + (1 - self.beta_2) * tf.square(gradient.values))
      m.scatter_update(tf.IndexedSlices(m_rows, indices))
      v.scatter_update(tf.IndexedSlices(v_rows, indices))
      variable.scatter_sub(
          tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), indices))
    else:
      m.assign_add((gradient - m) * (1 - self.beta_1))
      v.assign_add((tf.square(gradient) - v) * (1 - self.beta_2))
      variable.assign_sub((m * alpha) / (tf.sqrt(v) + self.epsilon))

  def get_config(self):
    config = super().get_config()
    config.update(
        learning_rate=self._serialize_hyperparameter(self._learning_rate),
        beta_1=self.beta_1,
        beta_2=self.beta_2,
        epsilon=self.epsilon)
    return config


def deep_optimizer(name: str, learning_rate: float) -> tf_keras.optimizers.Optimizer:
  """The deep tower's optimizer by its Table 5 name."""
  if name == "adagrad":
    return tf_keras.optimizers.Adagrad(learning_rate=learning_rate)
  if name == "lazy_adam":
    return LazyAdam(learning_rate=learning_rate)
  raise ValueError(f"unknown deep optimizer {name!r}; expected one of {', '.join(DEEP_OPTIMIZERS)}")


def wide_optimizer(learning_rate: float, l2_weight: float) -> tf_keras.optimizers.legacy.Ftrl:
  """FTRL for the linear tower; its L2 strength is the wide regularisation weight."""
  return tf_keras.optimizers.legacy.Ftrl(learning_rate=learning_rate,
                                         l2_regularization_strength=l2_weight)
