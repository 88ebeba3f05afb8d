"""The wide & deep towers: models build for points of the space, each tower trains with its own optimizer."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from automl_baseline import towers
from automl_baseline.optimizers import LazyAdam
from automl_baseline.search_space import SearchSpace, sample_config
from automl_baseline.training import make_dataset


SETTINGS = towers.ModelSettings(num_classes=3, wide_buckets=512, max_tokens=8)


@pytest.mark.parametrize("use_convolution,hidden_layers,seed",
                         [(False, 0, 0), (False, 5, 1), (True, 0, 2), (True, 5, 3)])
def test_models_build_for_sampled_points(word_module_dir, use_convolution, hidden_layers, seed):
  config = sample_config(SearchSpace(embedding_modules=(word_module_dir,)), seed,
                         use_convolution=use_convolution, hidden_layers=hidden_layers)
  model = towers.build_model(config, SETTINGS)
  logits = model(tf.constant(["good movie", "", "the plot was awful and boring"]))
  assert logits.shape == (3, 3)
  deep = model.dnn_model
  assert len([l for l in deep.hidden if isinstance(l, tf_keras.layers.Dense)]) == hidden_layers
  if use_convolution:
    assert [c.kernel_size for c in deep.convolutions] == [(w,) for w in
                                                          range(1, config.conv_max_ngram + 1)]
    assert deep.convolutions[0].filters == config.conv_filters
    assert len(deep.conv_norms) == (len(deep.convolutions) if config.conv_batch_norm else 0)
  else:
    assert not hasattr(deep, "convolutions")
  embedding = deep.token_embedding if use_convolution else deep.sentence_embedding
  assert bool(embedding.trainable_weights) == config.fine_tune_module
  assert [w.name for w in model.linear_model.trainable_weights] == ["hashed_weights:0", "bias:0"]


def _weights(variables):
  return {v.name: v.numpy().copy() for v in variables}


@pytest.mark.parametrize("use_convolution", [False, True])
def test_each_tower_trains_with_its_own_optimizer(word_module_dir, sentiment_examples, use_convolution):
  train, dev = sentiment_examples
  space = SearchSpace(embedding_modules=(word_module_dir,), deep_optimizers=("adagrad", "lazy_adam"))
  config = sample_config(space, 0, use_convolution=use_convolution, hidden_layers=1,
                         fine_tune_module=True, deep_optimizer="lazy_adam", hidden_dropout=0.0,
                         conv_dropout=0.0, deep_learning_rate=0.01, wide_learning_rate=0.1,
                         batch_size=128, training_samples=100_000)
  model = towers.build_model(config, towers.ModelSettings(num_classes=2, wide_buckets=512))
  model(tf.constant(["warm up"]))
  wide_vars = model.linear_model.trainable_variables
  deep_vars = model.dnn_model.trainable_variables
  assert {id(v) for v in wide_vars}.isdisjoint({id(v) for v in deep_vars})
  assert any("embeddings" in v.name for v in deep_vars)  # the fine-tuned module
  wide_before, deep_before = _weights(wide_vars), _weights(deep_vars)

  model.fit(make_dataset(train, 2, 16, shuffle_seed=0), steps_per_epoch=3, verbose=0)

  for name, value in _weights(wide_vars).items():
    assert not np.allclose(value, wide_before[name]), name
  for name, value in _weights(deep_vars).items():
    assert not np.allclose(value, deep_before[name]), name
  wide_optimizer, deep_optimizer = model.optimizer
  assert isinstance(wide_optimizer, tf_keras.optimizers.legacy.Ftrl)
  assert isinstance(deep_optimizer, LazyAdam)
  assert float(wide_optimizer.learning_rate) == pytest.approx(config.wide_learning_rate)
  assert float(deep_optimizer.learning_rate) == pytest.approx(config.deep_learning_rate)
  # Each optimizer holds slots for its own tower's variables only.
  for variable in wide_vars:
    assert wide_optimizer.get_slot(variable, "accumulator") is not None
  with pytest.raises(KeyError):
    wide_optimizer.get_slot(deep_vars[0], "accumulator")
  assert len(deep_optimizer.variables) == 1 + 2 * len(deep_vars)  # iterations, m and v
  assert int(deep_optimizer.iterations) == 3 and int(wide_optimizer.iterations) == 3

  # The wide table is sparse in the n-grams: rows no training n-gram hashes to stay zero.
  seen = set()
  for text in train.text:
    seen.update(towers.hashed_ngram_ids(tf.constant([text]), 512, 2, "a:").flat_values.numpy())
  table = model.linear_model.hashed_weights.numpy()
  unseen = np.setdiff1d(np.arange(512), sorted(seen))
  assert len(unseen) > 0 and np.all(table[unseen] == 0)


def test_deep_regularization_adds_l2_losses(word_module_dir):
  config = sample_config(SearchSpace(embedding_modules=(word_module_dir,)), 0, use_convolution=True,
                         hidden_layers=2, conv_max_ngram=3, deep_regularization=1e-3)
  model = towers.build_model(config, SETTINGS)
  model(tf.constant(["good"]))
  assert len(model.losses) == 3 + 2 + 1  # convolutions, hidden layers, output layer
  expected = sum(1e-3 * np.sum(v.numpy() ** 2) for v in model.dnn_model.trainable_variables
                 if "kernel" in v.name)
  assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-4)


def test_convolution_dropout_drops_pooled_features_in_training_only(word_module_dir):
  config = sample_config(SearchSpace(embedding_modules=(word_module_dir,)), 0, use_convolution=True,
                         hidden_layers=0, conv_dropout=0.4)
  deep = towers.build_model(config, SETTINGS).dnn_model
  texts = tf.constant(["good movie and fun plot"] * 8)
  assert deep.conv_dropout.rate == pytest.approx(0.4)
  np.testing.assert_allclose(deep(texts, training=False).numpy(), deep(texts, training=False).numpy())
  assert not np.allclose(deep(texts, training=True).numpy(), deep(texts, training=False).numpy())
