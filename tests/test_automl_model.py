"""The wide & deep model: builds for points of the space, trains each tower with its own optimizer."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from adapter_keras.data import TextExamples
from adapter_keras.testing import tiny_sentiment_data
from automl_baseline import model as wide_deep
from automl_baseline import modules
from automl_baseline.optimizers import LazyAdam
from automl_baseline.search_space import SearchSpace, sample_config


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
  return modules.write_tiny_word_module(str(tmp_path_factory.mktemp("automl_model") / "words"))


@pytest.fixture(scope="module")
def data():
  texts, labels = tiny_sentiment_data(48, seed=0)
  dev_texts, dev_labels = tiny_sentiment_data(16, seed=1)
  return (TextExamples(texts, labels, label_names=["neg", "pos"]),
          TextExamples(dev_texts, dev_labels, label_names=["neg", "pos"]))


SETTINGS = wide_deep.ModelSettings(num_classes=3, wide_buckets=512, max_tokens=8)


@pytest.mark.parametrize("use_convolution,hidden_layers,seed",
                         [(False, 0, 0), (False, 5, 1), (True, 0, 2), (True, 5, 3)])
def test_models_build_for_sampled_points(module_dir, use_convolution, hidden_layers, seed):
  config = sample_config(SearchSpace(embedding_modules=(module_dir,)), seed,
                         use_convolution=use_convolution, hidden_layers=hidden_layers)
  model = wide_deep.build_model(config, SETTINGS)
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
def test_each_tower_trains_with_its_own_optimizer(module_dir, data, use_convolution):
  train, dev = data
  config = sample_config(SearchSpace(embedding_modules=(module_dir,)), 0,
                         use_convolution=use_convolution, hidden_layers=1, fine_tune_module=True,
                         deep_optimizer="lazy_adam", hidden_dropout=0.0, conv_dropout=0.0,
                         deep_learning_rate=0.01, wide_learning_rate=0.1, batch_size=128,
                         training_samples=100_000)
  model = wide_deep.build_model(config, wide_deep.ModelSettings(num_classes=2, wide_buckets=512))
  model(tf.constant(["warm up"]))
  wide_vars = model.linear_model.trainable_variables
  deep_vars = model.dnn_model.trainable_variables
  assert {id(v) for v in wide_vars}.isdisjoint({id(v) for v in deep_vars})
  assert any("embeddings" in v.name for v in deep_vars)  # the fine-tuned module
  wide_before, deep_before = _weights(wide_vars), _weights(deep_vars)

  model.fit(wide_deep.make_dataset(train, 2, 16, shuffle_seed=0), steps_per_epoch=3, verbose=0)

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
    seen.update(wide_deep.hashed_ngram_ids(tf.constant([text]), 512, 2, "a:").flat_values.numpy())
  table = model.linear_model.hashed_weights.numpy()
  unseen = np.setdiff1d(np.arange(512), sorted(seen))
  assert len(unseen) > 0 and np.all(table[unseen] == 0)


def test_deep_regularization_adds_l2_losses(module_dir):
  config = sample_config(SearchSpace(embedding_modules=(module_dir,)), 0, use_convolution=True,
                         hidden_layers=2, conv_max_ngram=3, deep_regularization=1e-3)
  model = wide_deep.build_model(config, SETTINGS)
  model(tf.constant(["good"]))
  assert len(model.losses) == 3 + 2 + 1  # convolutions, hidden layers, output layer
  expected = sum(1e-3 * np.sum(v.numpy() ** 2) for v in model.dnn_model.trainable_variables
                 if "kernel" in v.name)
  assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-4)


def test_pairs_and_export_take_raw_strings(module_dir, tmp_path):
  texts, labels = tiny_sentiment_data(32, seed=2)
  pairs = TextExamples(texts, labels, text_b=list(reversed(texts)), label_names=["neg", "pos"])
  config = sample_config(SearchSpace(embedding_modules=(module_dir,)), 5, use_convolution=True,
                         hidden_layers=1, training_samples=100_000, batch_size=128)
  settings = wide_deep.ModelSettings(num_classes=2, is_pair=True, wide_buckets=256)
  result = wide_deep.train_and_evaluate(config, settings, pairs, pairs,
                                        wide_deep.TrainingBudget(sample_scale=0.002), seed=0)
  assert result.train_steps == 2 and 0.0 <= result.val_accuracy <= 1.0
  first, second = ["good fun", "awful plot"], ["the movie", "very bad"]
  expected = result.model({"text": tf.constant(first), "text_b": tf.constant(second)}).numpy()
  path = wide_deep.export_saved_model(result.model, str(tmp_path / "exported"), True,
                                      ["neg", "pos"])
  serve = wide_deep.load_exported(path).signatures["serving_default"]
  outputs = serve(text=tf.constant(first), text_b=tf.constant(second))
  np.testing.assert_allclose(outputs["logits"].numpy(), expected, rtol=1e-5, atol=1e-6)
  assert [l.decode() for l in outputs["labels"].numpy()] == [
      ["neg", "pos"][i] for i in expected.argmax(-1)]
  np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1), 1.0, rtol=1e-6)


def test_training_budget():
  budget = wide_deep.TrainingBudget()
  assert budget.train_steps(100_000, 128, 10) == 782
  assert wide_deep.TrainingBudget(sample_scale=0.01).train_steps(200_000, 256, 10) == 8
  capped = wide_deep.TrainingBudget(sample_scale=0.01, max_epochs=2)
  assert capped.train_steps(2_000_000, 128, 1000) == 16  # 2 passes over 1,000 examples
  assert capped.train_steps(2_000_000, 128, 1000, fraction=1 / 9) == 16
  assert wide_deep.TrainingBudget(sample_scale=1e-9).train_steps(100_000, 128, 10) == 1
  with pytest.raises(ValueError, match="sample_scale"):
    wide_deep.TrainingBudget(sample_scale=0)


def test_labels_must_be_class_ids():
  examples = TextExamples(["a", "b"], np.asarray([0.5, 1.2], np.float32))
  with pytest.raises(ValueError, match="regression"):
    wide_deep.make_dataset(examples, 2, 8)
  with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
    wide_deep.make_dataset(TextExamples(["a"], [2]), 2, 8)
