"""LazyAdam: exactly Adam on dense gradients; on sparse ones only the touched rows move."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from automl_baseline.optimizers import LazyAdam, deep_optimizer, wide_optimizer

ROWS, COLS = 6, 3


def _table(seed=0):
  return tf.Variable(np.random.default_rng(seed).standard_normal([ROWS, COLS]).astype(np.float32))


def _sparse(rows, seed):
  values = np.random.default_rng(seed).standard_normal([len(rows), COLS]).astype(np.float32)
  return tf.IndexedSlices(tf.constant(values), tf.constant(rows, tf.int64),
                          tf.constant([ROWS, COLS], tf.int64))


def test_dense_updates_equal_adam():
  lazy_var, adam_var = _table(), _table()
  lazy = LazyAdam(learning_rate=0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6)
  adam = tf_keras.optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-6)
  rng = np.random.default_rng(1)
  for _ in range(5):
    gradient = tf.constant(rng.standard_normal([ROWS, COLS]).astype(np.float32))
    lazy.apply_gradients([(gradient, lazy_var)])
    adam.apply_gradients([(gradient, adam_var)])
  np.testing.assert_allclose(lazy_var.numpy(), adam_var.numpy(), rtol=1e-6, atol=1e-7)
  assert not np.allclose(lazy_var.numpy(), _table().numpy())


def test_sparse_updates_touch_only_the_gradient_rows():
  variable, start = _table(), _table().numpy()
  lazy = LazyAdam(learning_rate=0.1)
  lazy.apply_gradients([(_sparse([1, 3, 1], seed=2), variable)])  # duplicate row 1 is summed
  moved = np.any(variable.numpy() != start, axis=1)
  assert moved.tolist() == [False, True, False, True, False, False]

  # Step 2 touches row 3 only: row 1 stays put although its momentum is non-zero
  # (tf_keras's Adam, which decays every row, moves it).
  after_first = variable.numpy()
  adam_variable = tf.Variable(start)
  adam = tf_keras.optimizers.Adam(learning_rate=0.1)
  adam.apply_gradients([(_sparse([1, 3, 1], seed=2), adam_variable)])
  np.testing.assert_allclose(adam_variable.numpy(), after_first, rtol=1e-6)  # same first step
  lazy.apply_gradients([(_sparse([3], seed=3), variable)])
  adam.apply_gradients([(_sparse([3], seed=3), adam_variable)])
  moved = np.any(variable.numpy() != after_first, axis=1)
  assert moved.tolist() == [False, False, False, True, False, False]
  assert not np.allclose(adam_variable.numpy()[1], after_first[1])

  # Row 3's second update is Adam's, on that row's own moments, at the global step.
  g1 = _sparse([1, 3, 1], seed=2).values.numpy()[1]  # row 3's value in the first gradient
  g2 = _sparse([3], seed=3).values.numpy()[0]
  m = 0.1 * g1 * 0.9 + 0.1 * g2
  v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
  alpha = 0.1 * np.sqrt(1 - 0.999**2) / (1 - 0.9**2)
  np.testing.assert_allclose(variable.numpy()[3], after_first[3] - alpha * m / (np.sqrt(v) + 1e-7),
                             rtol=1e-5)


def test_embedding_lookup_trains_only_looked_up_rows():
  layer = tf_keras.layers.Embedding(ROWS, COLS)
  layer.build([None])
  start = layer.embeddings.numpy()
  optimizer = LazyAdam(learning_rate=0.05)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(tf.constant([0, 4, 4])) ** 2)
  gradient = tape.gradient(loss, layer.embeddings)
  assert isinstance(gradient, tf.IndexedSlices)
  optimizer.apply_gradients([(gradient, layer.embeddings)])
  moved = np.any(layer.embeddings.numpy() != start, axis=1)
  assert moved.tolist() == [True, False, False, False, True, False]


def test_config_round_trip_and_factories():
  config = LazyAdam(learning_rate=0.02, beta_1=0.7).get_config()
  restored = LazyAdam.from_config(config)
  assert restored.beta_1 == 0.7 and float(restored.learning_rate) == pytest.approx(0.02)
  assert isinstance(deep_optimizer("lazy_adam", 0.1), LazyAdam)
  assert isinstance(deep_optimizer("adagrad", 0.1), tf_keras.optimizers.Adagrad)
  with pytest.raises(ValueError, match="unknown deep optimizer"):
    deep_optimizer("sgd", 0.1)
  ftrl = wide_optimizer(0.05, 0.01)
  assert ftrl.get_config()["l2_regularization_strength"] == pytest.approx(0.01)


def test_xla_compiled_updates_match():
  # On GPUs tf_keras compiles optimizer updates with XLA by default; force that path here.
  plain_var, xla_var = _table(), _table()
  plain, xla = LazyAdam(learning_rate=0.1), LazyAdam(learning_rate=0.1)
  xla.jit_compile = True
  for gradient in (_sparse([1, 3, 1], seed=2), tf.ones([ROWS, COLS]), _sparse([4], seed=3)):
    plain.apply_gradients([(gradient, plain_var)])
    xla.apply_gradients([(gradient, xla_var)])
  np.testing.assert_allclose(xla_var.numpy(), plain_var.numpy(), rtol=1e-6)
