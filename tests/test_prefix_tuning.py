"""Prefix tuning (methods/prefix_tuning/): the whole encoder against the numpy BERT with prefixes (padding
included), what trains and the parameter formula, the reparameterisation saved as plain prefixes, bad settings,
the command line from training to a served model, and the span extractor."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.nlp.modeling import layers as mg_layers
from safetensors.numpy import load_file

from adapter_keras import _model_garden, methods, testing
from adapter_keras.artifacts import read_manifest, read_weights, variable_key
from adapter_keras.config import PrefixTuningConfig
from adapter_keras.methods.prefix_tuning.layers import (PrefixedProjection, PrefixMLP, PrefixVectors,
                                                        PrefixVisibleSoftmax)
from adapter_keras.methods.sites import wrap_attention_softmax, wrap_projection
from adapter_keras.models import AdapterClassifier, AdapterSpanExtractor, load_adapter
from adapter_keras.pretrained import load_encoder
from adapter_keras.tasks import squad
from tests.helpers import run_cli
from tests.numpy_bert import bert_forward

LAYERS, HIDDEN = 2, 32  # the tiny fixtures' encoder


def _numpy_prefixes(encoder):
  """[(P_k [p, H], P_v [p, H])] per layer, read from each block's wrapped key and value projections."""
  prefixes = []
  for block in encoder.transformer_layers:
    projections = _model_garden.attention_projections(block)
    prefixes.append(tuple(projections[t].prefix.prefix().numpy().reshape(-1, HIDDEN) for t in ("key", "value")))
  return prefixes


@pytest.mark.parametrize("reparameterize", [False, True])
def test_the_encoder_with_prefixes_computes_what_numpy_bert_does(tiny_hf_dir, reparameterize):
  with open(os.path.join(tiny_hf_dir, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  loaded = load_encoder(tiny_hf_dir)
  # init_std 1: prefixes large enough to change every output (the default starts them small).
  methods.inject_method(loaded.encoder, "prefix-tuning",
                        PrefixTuningConfig(length=3, reparameterize=reparameterize, hidden_size=16, init_std=1.0),
                        seed=0)
  rng = np.random.default_rng(0)
  ids = rng.integers(5, config["vocab_size"], (3, 9)).astype(np.int32)
  ids[:, 0] = 2
  types = np.zeros_like(ids)
  types[:, 5:] = 1
  mask = np.ones_like(ids)
  mask[1, 6:] = 0  # padding: its keys stay masked, the prefix keys stay visible
  mask[2, 2:] = 0
  out = loaded.encoder(dict(input_word_ids=ids, input_mask=mask, input_type_ids=types))
  tensors = load_file(os.path.join(tiny_hf_dir, "model.safetensors"))
  prefixes = _numpy_prefixes(loaded.encoder)
  assert len(prefixes) == LAYERS and all(k.shape == v.shape == (3, HIDDEN) for k, v in prefixes)
  sequence, pooled = bert_forward(tensors, config, ids, types, mask, prefix=prefixes)
  assert out["sequence_output"].shape == sequence.shape  # the prefix lives in keys and values only
  np.testing.assert_allclose(out["sequence_output"].numpy(), sequence, atol=1e-4)
  np.testing.assert_allclose(out["pooled_output"].numpy(), pooled, atol=1e-4)
  without, _ = bert_forward(tensors, config, ids, types, mask)
  assert np.abs(out["sequence_output"].numpy() - without).max() > 0.1


def test_keras_masks_of_the_inputs_combine_before_the_prefix_widens_the_mask():
  # tf_keras's attention ANDs the inputs' Keras masks (length T) into the attention mask; the prefix widens the
  # result at the softmax, so a masked input gives what the same explicit mask gives.
  block = mg_layers.TransformerEncoderBlock(num_attention_heads=2, inner_dim=16, inner_activation="relu")
  rng = np.random.default_rng(0)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
  x = rng.normal(size=(2, 5, 8)).astype(np.float32) * mask[..., None]
  block(x)
  owner, attribute = _model_garden.attention_softmax_owner(block)  # the private name still means this
  assert isinstance(getattr(owner, attribute), tf_keras.layers.Softmax)
  for target in ("key", "value"):
    wrap_projection(block, target, lambda projection, t=target: PrefixedProjection(
        projection, PrefixVectors(3, init_std=1.0, seed=1), name=f"prefixed_{t}"))
  wrap_attention_softmax(block, lambda softmax: PrefixVisibleSoftmax(softmax, 3))
  with_keras_mask = block(tf_keras.layers.Masking(mask_value=0.0)(x)).numpy()
  explicit = block([x, np.broadcast_to(mask[:, None, :], (2, 5, 5))]).numpy()
  # Where the query is not padding (a padded query sees only the prefix under a Keras mask).
  np.testing.assert_allclose(with_keras_mask[mask == 1], explicit[mask == 1], atol=1e-6)


@pytest.mark.parametrize("settings, match", [
    (dict(length=0), "length"), (dict(length=2.0), "length"), (dict(length=True), "length"),
    (dict(reparameterize=1), "reparameterize"), (dict(hidden_size=0), "hidden_size"),
    (dict(init_std=0.0), "init_std"), (dict(init_std="0.1"), "init_std"),
])
def test_bad_settings_are_one_error(settings, match):
  with pytest.raises(ValueError, match=match):
    PrefixTuningConfig(**settings)
  with pytest.raises(ValueError, match="unknown prefix-tuning settings"):
    PrefixTuningConfig.from_dict(dict(length=4, num_virtual_tokens=4))
  assert PrefixTuningConfig.from_dict(PrefixTuningConfig(length=4).to_dict()) == PrefixTuningConfig(length=4)


def test_there_is_no_frozen_bottom_to_cache():
  with pytest.raises(ValueError, match="prefix-tuning"):
    methods.frozen_bottom_start_layer("prefix-tuning", LAYERS)


def _trained_keys(model):
  return {variable_key(model, v) for v in model.trainable_variables}


@pytest.fixture(scope="module")
def reparameterized(encoder_dir, sentiment_examples, tmp_path_factory):
  """A classifier trained one epoch through the reparameterisation MLP, and its saved artifact."""
  train, _ = sentiment_examples
  model = AdapterClassifier.from_pretrained(encoder_dir, method="prefix-tuning", method_config=dict(
      length=4, reparameterize=True, hidden_size=16), seed=0)
  mlp_before = [v.numpy().copy() for v in model.trainable_variables if "prefix_mlp" in v.name]
  model.compile(learning_rate=1e-2)
  model.fit(train.text, train.labels, batch_size=16, epochs=1, verbose=0)
  artifact = model.save_adapter(str(tmp_path_factory.mktemp("prefix") / "artifact"))
  return model, mlp_before, artifact


def test_what_trains_and_the_parameter_formula(encoder_dir, reparameterized):
  head = {"head/kernel", "head/bias"}
  spec = methods.get_method("prefix-tuning")
  plain = AdapterClassifier.from_pretrained(encoder_dir, method="prefix-tuning", method_config=dict(length=4),
                                            seed=0)
  assert _trained_keys(plain) == head | {f"encoder/transformer/layer_{i}/self_attention/prefixed_{t}/prefix/vectors"
                                         for i in range(LAYERS) for t in ("key", "value")}
  assert spec.trained_params(methods.model_shape(plain, plain.bert_config), plain.method_config) == \
      plain.parameter_report().trained_params == LAYERS * 2 * 4 * HIDDEN + HIDDEN * 2 + 2
  model, mlp_before, _ = reparameterized
  mlp = {k for k in _trained_keys(model) - head}
  assert len(mlp) == 5 and all("prefix_mlp/" in k for k in mlp)  # embedding, two kernels, two biases
  assert spec.trained_params(methods.model_shape(model, model.bert_config), model.method_config) == \
      model.parameter_report().trained_params == \
      4 * HIDDEN + HIDDEN * 16 + 16 + 16 * LAYERS * 2 * HIDDEN + LAYERS * 2 * HIDDEN + HIDDEN * 2 + 2
  after = [v.numpy() for v in model.trainable_variables if "prefix_mlp" in v.name]
  assert all(not np.array_equal(a, b) for a, b in zip(after, mlp_before))  # the MLP trained
  assert model.base_fingerprint == plain.base_fingerprint


def test_the_reparameterised_model_saves_plain_prefixes_with_the_same_outputs(encoder_dir, reparameterized,
                                                                              sentiment_examples):
  model, _, artifact = reparameterized
  manifest = read_manifest(artifact)
  assert manifest["method_config"] == dict(length=4, reparameterize=False, hidden_size=16, init_std=0.02)
  weights = read_weights(artifact)
  assert not any("prefix_mlp" in k for k in weights)
  assert sorted(k for k in weights if not k.startswith("head/")) == sorted(
      f"encoder/transformer/layer_{i}/self_attention/prefixed_{t}/prefix/vectors"
      for i in range(LAYERS) for t in ("key", "value"))
  assert manifest["trained_params"] == LAYERS * 2 * 4 * HIDDEN + HIDDEN * 2 + 2
  loaded = load_adapter(artifact, encoder_dir)
  assert loaded.method_config == PrefixTuningConfig(length=4, hidden_size=16)
  assert not any(isinstance(layer, PrefixMLP) for layer in loaded.encoder.submodules)
  texts = sentiment_examples[1].text
  np.testing.assert_allclose(loaded.predict(texts), model.predict(texts), atol=1e-6)
  features = model.preprocessor(tf.constant(texts))
  np.testing.assert_allclose(loaded.encoder(features)["sequence_output"].numpy(),
                             model.encoder(features)["sequence_output"].numpy(), atol=1e-6)


def test_prefix_tuning_through_the_command_line_to_a_served_model(glue_dir, encoder_dir, tmp_path):
  out = str(tmp_path / "run")
  status, _, stderr = run_cli(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--method", "prefix-tuning", "--method-config", '{"length": 4}', "--epochs", "1",
                               "--batch-size", "16", "--learning-rate", "1e-2", "--out", out])
  assert status == 0, stderr
  artifact = os.path.join(out, "artifact")
  manifest = read_manifest(artifact)
  assert manifest["method"] == "prefix-tuning" and manifest["method_config"]["length"] == 4
  assert sum(k.endswith("prefix/vectors") for k in read_weights(artifact)) == LAYERS * 2
  model = load_adapter(artifact, encoder_dir)
  status, stdout, stderr = run_cli(["evaluate", "--artifact", artifact, "--encoder", encoder_dir, "--task", "sst2",
                                    "--data-dir", glue_dir, "--json"])
  assert status == 0, stderr
  assert 0 <= json.loads(stdout.strip().splitlines()[-1])["metrics"]["dev"]["accuracy"] <= 1
  served_dir = str(tmp_path / "served")
  status, _, stderr = run_cli(["export", "--artifact", artifact, "--encoder", encoder_dir, "--out", served_dir])
  assert status == 0, stderr
  texts = ["a fine film", "a dull plot"]
  expected = model.predict(texts)
  served = tf.saved_model.load(served_dir).signatures["serving_default"]
  np.testing.assert_allclose(served(text=tf.constant(texts))["probabilities"].numpy(), expected, atol=1e-5)
  status, stdout, stderr = run_cli(["predict", "--model", served_dir] + texts)
  assert status == 0, stderr
  lines = [json.loads(line) for line in stdout.strip().splitlines()]
  np.testing.assert_allclose([line["score"] for line in lines], expected.max(axis=-1), atol=1e-5)
  status, stdout, stderr = run_cli(["params", "--arch", "minilm-l6", "--method", "prefix-tuning", "--json"])
  assert status == 0, stderr
  assert json.loads(stdout.strip().splitlines()[-1])["trained_params"] == 6 * 2 * 16 * 384 + 384 * 2 + 2


@pytest.mark.parametrize("method, settings", [("prefix-tuning", dict(length=2)), ("lora", dict(rank=2)),
                                              ("ia3", None)])
def test_the_span_extractor_takes_the_methods_that_wrap_the_attention(method, settings, encoder_dir, tmp_path):
  examples = squad.parse_squad(testing.tiny_squad_document(8, seed=0))
  questions, contexts = [e.question for e in examples], [e.context for e in examples]
  answers = [dict(text=e.answers[0].text, answer_start=e.answers[0].answer_start) for e in examples]
  model = AdapterSpanExtractor.from_pretrained(encoder_dir, adapter=None, method=method,
                                               method_config=settings, dropout_rate=0.0, seed=0,
                                               max_seq_length=24, doc_stride=8, max_query_length=8)
  model.compile(learning_rate=1e-2)
  model.fit((questions, contexts), answers, batch_size=8, epochs=1, verbose=0)
  predicted = model.predict((questions, contexts))
  assert len(predicted) == len(examples) and all(isinstance(a, str) for a in predicted)
  loaded = AdapterSpanExtractor.load_adapter(model.save_adapter(str(tmp_path / "artifact")), encoder=encoder_dir)
  logits, reloaded = model.predict_logits((questions, contexts)), loaded.predict_logits((questions, contexts))
  assert logits["start_logits"].shape[-1] == 24
  np.testing.assert_allclose(reloaded["start_logits"], logits["start_logits"], atol=1e-5)
