"""IA3 (methods/ia3/): the whole encoder against the numpy reference, identity at initialisation, what trains and
the parameter formula, merge/unmerge, bad settings, and the command line from training to predictions."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file

from adapter_keras import _model_garden, methods
from adapter_keras.artifacts import read_manifest, read_weights, variable_key
from adapter_keras.config import IA3Config
from adapter_keras.methods.ia3.layers import IA3Projection, IA3Vector
from adapter_keras.models import AdapterClassifier, load_adapter
from adapter_keras.pretrained import load_encoder
from adapter_keras.tasks.data import load_glue_split
from tests.helpers import fit_method_model, run_cli
from tests.numpy_bert import bert_forward


def _batch(vocab_size, batch=3, length=11, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, vocab_size, (batch, length)).astype(np.int32)
  ids[:, 0] = 2
  types = np.zeros_like(ids)
  types[:, length // 2:] = 1
  mask = np.ones_like(ids)
  mask[0, -3:] = 0
  return ids, types, mask


def _wrappers(encoder):
  return [layer for layer in _model_garden.all_sublayers(encoder) if isinstance(layer, IA3Projection)]


@pytest.mark.parametrize("targets", [("key", "value", "ffn"), ("value",)])
def test_the_encoder_with_ia3_computes_what_numpy_does(tiny_hf_dir, targets):
  with open(os.path.join(tiny_hf_dir, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  tensors = load_file(os.path.join(tiny_hf_dir, "model.safetensors"))
  ids, types, mask = _batch(config["vocab_size"])
  inputs = dict(input_word_ids=ids, input_mask=mask, input_type_ids=types)
  encoder = load_encoder(tiny_hf_dir).encoder
  plain = encoder(inputs)["sequence_output"].numpy()
  methods.inject_method(encoder, "ia3", IA3Config(targets=targets))
  np.testing.assert_array_equal(encoder(inputs)["sequence_output"].numpy(), plain)  # ones: exactly the base
  rng = np.random.default_rng(1)
  vectors = [{} for _ in range(config["num_hidden_layers"])]
  for i, block in enumerate(encoder.transformer_layers):
    for layer in _wrappers(block):
      target = layer.name[len("ia3_"):]
      vectors[i][target] = rng.uniform(0.5, 1.5, layer.vector.scale.shape).astype(np.float32)
      layer.vector.scale.assign(vectors[i][target])
  assert all(sorted(v) == sorted(targets) for v in vectors)
  out = encoder(inputs)
  ref_seq, ref_pooled = bert_forward(tensors, config, ids, types, mask, ia3=vectors)
  np.testing.assert_allclose(out["sequence_output"].numpy(), ref_seq, atol=1e-4)
  np.testing.assert_allclose(out["pooled_output"].numpy(), ref_pooled, atol=1e-4)
  # merge folds the vectors into the kernels and biases; unmerge takes them out again.
  kernels = [w.numpy() for w in encoder.weights if "ia3" not in w.name]
  methods.get_method("ia3").merge(encoder)
  np.testing.assert_allclose(encoder(inputs)["sequence_output"].numpy(), ref_seq, atol=1e-4)
  methods.get_method("ia3").unmerge(encoder)
  for before, after in zip(kernels, [w.numpy() for w in encoder.weights if "ia3" not in w.name]):
    np.testing.assert_allclose(after, before, atol=1e-5)


@pytest.mark.parametrize("settings, match", [
    (dict(targets=()), "targets"), (dict(targets=("key", "key")), "targets"), (dict(targets=("query",)), "targets"),
    (dict(targets="key"), "targets"), (dict(targets=None), "targets"),
])
def test_bad_settings_are_one_error(settings, match):
  with pytest.raises(ValueError, match=match):
    IA3Config(**settings)
  with pytest.raises(ValueError, match="unknown IA3 settings"):
    IA3Config.from_dict(dict(targets=["key"], scale=2))
  assert IA3Config.from_dict(IA3Config(targets=["ffn", "key"]).to_dict()) == IA3Config(targets=("ffn", "key"))
  with pytest.raises(ValueError, match="side"):
    IA3Projection(None, side="middle")


def test_the_vector_layer_round_trips_its_config():
  layer = IA3Vector((2, 3), name="ia3")
  assert IA3Vector.from_config(layer.get_config()).scale_shape == (2, 3)


@pytest.fixture(scope="module")
def ia3_model(encoder_dir, sentiment_examples):
  return fit_method_model(encoder_dir, sentiment_examples[0], "ia3")


def test_ia3_starts_as_the_base_and_trains_only_its_vectors_and_the_head(ia3_model):
  model, plain, (with_ia3, base) = ia3_model
  np.testing.assert_array_equal(with_ia3, base)
  assert model.base_fingerprint == plain.base_fingerprint
  trained = {variable_key(model, v) for v in model.trainable_variables}
  assert trained == {"head/kernel", "head/bias"} | {
      f"encoder/transformer/layer_{i}/{where}ia3_{t}/ia3/scale" for i in range(2)
      for t, where in (("key", "self_attention/"), ("value", "self_attention/"), ("ffn", ""))}
  assert all(not np.all(v.numpy() == 1) for v in model.trainable_variables if "ia3" in v.name)  # they trained
  spec, config = methods.get_method("ia3"), model.method_config
  assert spec.trained_params(methods.model_shape(model, model.bert_config), config) == \
      model.parameter_report().trained_params == 2 * (32 + 32 + 64) + 32 * 2 + 2
  assert spec.can_merge and not spec.fine_tunes_base


def test_merge_and_unmerge_keep_the_outputs(ia3_model, sentiment_examples):
  model = ia3_model[0]
  texts = sentiment_examples[1].text
  before = model.predict(texts)
  kernels = [w.numpy() for w in model.weights]
  spec = methods.get_method("ia3")
  spec.merge(model)
  try:
    np.testing.assert_allclose(model.predict(texts), before, atol=1e-5)
  finally:
    spec.unmerge(model)
  np.testing.assert_allclose(model.predict(texts), before, atol=1e-5)
  for value, weight in zip(kernels, model.weights):
    np.testing.assert_allclose(weight.numpy(), value, atol=1e-5)


def test_merge_refuses_a_vector_near_zero_and_changes_nothing(encoder_dir):
  model = AdapterClassifier.from_pretrained(encoder_dir, method="ia3", seed=0)
  wrappers = _wrappers(model.encoder)
  wrappers[-1].vector.scale.assign(tf.tensor_scatter_nd_update(wrappers[-1].vector.scale, [[0]], [0.0]))
  kernels = [w.numpy() for w in model.weights]
  with pytest.raises(ValueError, match="cannot merge IA3 vector .*below 1e-06"):
    methods.get_method("ia3").merge(model)
  assert not any(w.merged for w in wrappers)
  for value, weight in zip(kernels, model.weights):
    np.testing.assert_array_equal(weight.numpy(), value)


def test_ia3_through_the_command_line_to_predictions(glue_dir, encoder_dir, tmp_path):
  out = str(tmp_path / "run")
  status, _, stderr = run_cli(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--method", "ia3", "--method-config", '{"targets": ["value", "ffn"]}', "--epochs",
                               "1", "--batch-size", "16", "--learning-rate", "1e-2", "--out", out])
  assert status == 0, stderr
  artifact = os.path.join(out, "artifact")
  manifest = read_manifest(artifact)
  assert manifest["method"] == "ia3" and manifest["method_config"] == dict(targets=["value", "ffn"])
  assert sum(k.endswith("ia3/scale") for k in read_weights(artifact)) == 2 * 2
  model = load_adapter(artifact, encoder_dir)
  dev = load_glue_split(glue_dir, "sst2", "dev")
  status, stdout, stderr = run_cli(["evaluate", "--artifact", artifact, "--encoder", encoder_dir, "--task", "sst2",
                                    "--data-dir", glue_dir, "--json"])
  assert status == 0, stderr
  accuracy = float(np.mean(np.argmax(model.predict(dev.text), axis=-1) == np.asarray(dev.labels)))
  assert json.loads(stdout.strip().splitlines()[-1])["metrics"]["dev"]["accuracy"] == pytest.approx(accuracy)
  served_dir = str(tmp_path / "served")
  status, _, stderr = run_cli(["export", "--artifact", artifact, "--encoder", encoder_dir, "--out", served_dir])
  assert status == 0, stderr
  texts = ["a fine film", "a dull plot"]
  served = tf.saved_model.load(served_dir).signatures["serving_default"]
  expected = model.predict(texts)
  np.testing.assert_allclose(served(text=tf.constant(texts))["probabilities"].numpy(), expected, atol=1e-5)
  status, stdout, stderr = run_cli(["predict", "--model", served_dir] + texts)
  assert status == 0, stderr
  lines = [json.loads(line) for line in stdout.strip().splitlines()]
  np.testing.assert_allclose([line["score"] for line in lines], expected.max(axis=-1), atol=1e-5)
  status, stdout, stderr = run_cli(["params", "--arch", "minilm-l6", "--method", "ia3", "--json"])
  assert status == 0, stderr
  assert json.loads(stdout.strip().splitlines()[-1])["trained_params"] == 6 * (384 + 384 + 1536) + 384 * 2 + 2
  status, stdout, stderr = run_cli(["params", "--arch", "minilm-l6", "--method", "ia3", "--ia3-targets", "ffn",
                                    "--json"])
  assert status == 0, stderr
  assert json.loads(stdout.strip().splitlines()[-1])["trained_params"] == 6 * 1536 + 384 * 2 + 2
