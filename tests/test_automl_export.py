"""The export: a trained pair model serves raw strings from a SavedModel."""
import numpy as np
import pytest
import tensorflow as tf

from adapter_keras.tasks.data import TextExamples
from adapter_keras.testing import tiny_sentiment_data
from automl_baseline import export, modules
from automl_baseline.search_space import SearchSpace, sample_config
from automl_baseline.towers import ModelSettings
from automl_baseline.training import TrainingBudget, train_and_evaluate


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
  return modules.write_tiny_word_module(str(tmp_path_factory.mktemp("automl_export") / "words"))


def test_pairs_and_export_take_raw_strings(module_dir, tmp_path):
  texts, labels = tiny_sentiment_data(32, seed=2)
  pairs = TextExamples(texts, labels, text_b=list(reversed(texts)), label_names=["neg", "pos"])
  config = sample_config(SearchSpace(embedding_modules=(module_dir,)), 5, use_convolution=True,
                         hidden_layers=1, training_samples=100_000, batch_size=128)
  settings = ModelSettings(num_classes=2, is_pair=True, wide_buckets=256)
  result = train_and_evaluate(config, settings, pairs, pairs, TrainingBudget(sample_scale=0.002),
                              seed=0)
  assert result.train_steps == 2 and 0.0 <= result.val_accuracy <= 1.0
  first, second = ["good fun", "awful plot"], ["the movie", "very bad"]
  expected = result.model({"text": tf.constant(first), "text_b": tf.constant(second)}).numpy()
  path = export.export_saved_model(result.model, str(tmp_path / "exported"), True, ["neg", "pos"])
  serve = export.load_exported(path).signatures["serving_default"]
  outputs = serve(text=tf.constant(first), text_b=tf.constant(second))
  np.testing.assert_allclose(outputs["logits"].numpy(), expected, rtol=1e-5, atol=1e-6)
  assert [l.decode() for l in outputs["labels"].numpy()] == [
      ["neg", "pos"][i] for i in expected.argmax(-1)]
  np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1), 1.0, rtol=1e-6)
