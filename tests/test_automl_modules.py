"""make-module output is a TF2 hub-format module: hub.KerasLayer loads, fine-tunes and trains it."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from adapter_keras import testing
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import load_encoder
from automl_baseline import modules

hub = modules.hub
TEXTS = tf.constant(["The movie was GOOD!", "", "bad bad plot xyzzy"])


@pytest.fixture(scope="module")
def word_module(tmp_path_factory):
  return modules.write_tiny_word_module(str(tmp_path_factory.mktemp("automl_mod") / "words"))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
  return testing.write_tiny_hf_bert(str(tmp_path_factory.mktemp("automl_bert")), seed=0)


def _assert_fine_tunable(path):
  layer = hub.KerasLayer(path, trainable=True)
  assert [w.shape.as_list()[1:] for w in layer.trainable_weights] == [[16 if "words" in path else 32]]
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(TEXTS) ** 2)
  (gradient,) = tape.gradient(loss, layer.trainable_weights)
  assert gradient is not None
  # A lookup table's gradient is sparse: only the rows of the words in the batch.
  assert isinstance(gradient, tf.IndexedSlices)
  assert 0 < len(np.unique(gradient.indices.numpy())) < layer.trainable_weights[0].shape[0]

  model = tf_keras.Sequential([tf_keras.layers.Input([], dtype=tf.string), layer,
                               tf_keras.layers.Dense(2)])
  model.compile(tf_keras.optimizers.Adam(0.05),
                tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  texts, labels = testing.tiny_sentiment_data(32, seed=0)
  before = layer.trainable_weights[0].numpy()
  history = model.fit(tf.constant(texts), labels, epochs=3, batch_size=16, verbose=0)
  assert history.history["loss"][-1] < history.history["loss"][0]
  assert not np.allclose(layer.trainable_weights[0].numpy(), before)


def test_word_table_module_fine_tunes_in_hub_keras_layer(word_module):
  assert sorted(os.listdir(os.path.join(word_module, "assets"))) == ["vocab.txt"]
  _assert_fine_tunable(word_module)


def test_word_table_module_outputs(word_module):
  loaded = hub.load(word_module)
  sentences = loaded(TEXTS).numpy()
  assert sentences.shape == (3, 16)
  np.testing.assert_array_equal(sentences[1], 0)  # empty text
  tokens = loaded.token_embeddings(TEXTS)
  assert tokens["embeddings"].shape == (3, 4, 16)
  assert tokens["mask"].numpy().sum(axis=1).tolist() == [4, 0, 4]
  # normalisation: case and punctuation do not matter; sentence = sum / sqrt(n) of the tokens
  np.testing.assert_allclose(loaded(tf.constant(["the movie was good"])).numpy()[0], sentences[0],
                             rtol=1e-6)
  np.testing.assert_allclose(tokens["embeddings"].numpy()[0].sum(0) / 2.0, sentences[0], rtol=1e-5)
  # unknown words share the zero-initialised OOV row
  unknown = loaded.token_embeddings(tf.constant(["xyzzy"]))["embeddings"].numpy()
  np.testing.assert_array_equal(unknown, 0)


def test_make_module_rejects_bad_inputs(tmp_path):
  vocab = tmp_path / "vocab.txt"
  vocab.write_text("good\nbad\ngood\n")
  np.save(tmp_path / "m.npy", np.zeros([3, 4], np.float32))
  with pytest.raises(ValueError, match="duplicate token 'good'"):
    modules.make_word_table_module(str(vocab), str(tmp_path / "m.npy"), str(tmp_path / "out"))
  vocab.write_text("good\nbad\n")
  with pytest.raises(ValueError, match="3 rows but the vocabulary has 2"):
    modules.make_word_table_module(str(vocab), str(tmp_path / "m.npy"), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "file").write_text("x")
  np.save(tmp_path / "m.npy", np.zeros([2, 4], np.float32))
  with pytest.raises(FileExistsError, match="exists and is not an empty directory"):
    modules.make_word_table_module(str(vocab), str(tmp_path / "m.npy"), str(tmp_path / "taken"))


def test_encoder_token_table_module(tiny_bert, tmp_path):
  summary = modules.make_encoder_module(tiny_bert, "token-table", str(tmp_path / "wordpieces"))
  assert summary["dim"] == 32 and summary["trainable"]
  _assert_fine_tunable(summary["path"])
  # Token vectors are the encoder's WordPiece embedding rows: "unable" -> "un", "##able".
  pretrained = load_encoder(tiny_bert)
  ids = BertPreprocessor(pretrained.vocab_file).tokenize(tf.constant(["the unable movie"]))
  assert ids.flat_values.shape == (4,)
  loaded = hub.load(summary["path"])  # keep it referenced: its function needs its variables
  tokens = loaded.token_embeddings(tf.constant(["the unable movie"]))
  np.testing.assert_allclose(tokens["embeddings"].numpy()[0],
                             pretrained.encoder.get_embedding_table().numpy()[ids.flat_values])


def test_encoder_sentence_module_is_frozen_mean_pooling(tiny_bert, tmp_path):
  summary = modules.make_encoder_module(tiny_bert, "sentence", str(tmp_path / "sentence"))
  assert summary["dim"] == 32 and not summary["trainable"]
  loaded = hub.load(summary["path"])
  assert len(loaded.trainable_variables) == 0 and len(loaded.variables) > 0
  tokens = loaded.token_embeddings(TEXTS[:1])
  mask = tokens["mask"].numpy()[0]
  np.testing.assert_allclose(loaded(TEXTS[:1]).numpy()[0],
                             tokens["embeddings"].numpy()[0][mask].mean(axis=0), rtol=1e-5, atol=1e-6)
  layer = modules.sentence_embedding_layer(summary["path"], fine_tune=True)
  assert not layer.trainable and not layer.trainable_weights  # nothing to tune: left frozen


class _SentenceOnlyModule(tf.train.Checkpoint):
  """Like TF Hub's NNLM modules: `__call__` only, a bag of words."""

  def __init__(self):
    super().__init__()
    self.table = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(["good", "bad"], [0, 1], tf.string, tf.int64), 1)
    self.embeddings = tf.Variable([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    self.variables = [self.embeddings]
    self.trainable_variables = [self.embeddings]

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def __call__(self, texts):
    ids = tf.strings.split(texts).with_flat_values(
        self.table.lookup(tf.strings.split(texts).flat_values))
    return tf.reduce_sum(tf.gather(self.embeddings, ids), axis=1)


def test_token_embedding_falls_back_to_one_call_per_token(tmp_path):
  path = str(tmp_path / "sentence_only")
  tf.saved_model.save(_SentenceOnlyModule(), path)
  layer = modules.TokenEmbedding(path, trainable=True, max_tokens=2)
  assert not layer.has_token_output and len(layer.trainable_weights) == 1
  embeddings, mask = layer(tf.constant(["good bad good", "", "bad"]))
  np.testing.assert_allclose(embeddings.numpy(), [[[1, 0], [0, 1]], [[0, 0], [0, 0]],
                                                  [[0, 1], [0, 0]]])
  assert mask.numpy().tolist() == [[True, True], [False, False], [True, False]]


def test_token_embedding_of_an_empty_batch_still_has_a_token_axis(word_module):
  embeddings, mask = modules.TokenEmbedding(word_module)(tf.constant(["", ""]))
  assert embeddings.shape == (2, 1, 16) and not mask.numpy().any()


def test_tf1_modules_cannot_be_fine_tuned(tmp_path):
  (tmp_path / "tfhub_module.pb").write_bytes(b"")  # the marker of the TF1 hub.Module format
  with pytest.raises(modules.ModuleError, match="TF1 hub.Module format.*cannot be fine-tuned"):
    modules.sentence_embedding_layer(str(tmp_path), fine_tune=True)
  with pytest.raises(modules.ModuleError, match="TF1 hub.Module format"):
    modules.TokenEmbedding(str(tmp_path), trainable=True)


def test_unavailable_modules_are_clear_errors(tmp_path):
  with pytest.raises(modules.ModuleError, match="neither a directory nor a TF Hub handle"):
    modules.resolve_module(str(tmp_path / "missing"))
  with pytest.raises(modules.ModuleError, match="cannot fetch embedding module.*make-module"):
    modules.resolve_module("https://localhost:1/no-such-module")
  assert modules.short_name("https://tfhub.dev/google/nnlm-en-dim50/2") == "nnlm-en-dim50/2"
