"""LoRA (methods/lora/): its forward pass against numpy, identity at initialisation, the parameter formula,
merge/unmerge, and the command line from training to a SavedModel."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from adapter_keras import methods
from adapter_keras.artifacts import read_manifest, read_weights, variable_key
from adapter_keras.methods.lora import LoRAConfig
from adapter_keras.methods.lora.layers import LoRAProjection
from adapter_keras.models import load_adapter
from tests.helpers import fit_method_model, run_cli


@pytest.mark.parametrize("equation, kernel, inputs", [
    ("abc,cde->abde", (6, 2, 3), (2, 5, 6)),    # query/key/value: [d] -> [heads, head size]
    ("abcd,cde->abe", (2, 3, 6), (2, 5, 2, 3)),  # attention output: [heads, head size] -> [d]
    ("abc,cd->abd", (6, 10), (2, 5, 6)),         # the FFN's projections
])
def test_the_lora_projection_computes_what_numpy_does(equation, kernel, inputs):
  rng = np.random.default_rng(0)
  input_letters, kernel_letters = equation.split(",")[0], equation.split(",")[1].split("->")[0]
  output_dims = [size for size, letter in zip(kernel, kernel_letters) if letter not in input_letters]
  dense = tf_keras.layers.EinsumDense(equation, output_shape=[inputs[1]] + output_dims, bias_axes=None)
  x = rng.normal(size=inputs).astype(np.float32)
  dense(x)
  kernel_value = rng.normal(size=kernel).astype(np.float32)
  dense.kernel.assign(kernel_value)
  wrapper = LoRAProjection(dense, rank=3, alpha=6.0)
  wrapper(x)
  np.testing.assert_array_equal(wrapper(x).numpy(), dense(x).numpy())  # B = 0: exactly the projection
  a = rng.normal(size=wrapper.lora.lora_a.shape).astype(np.float32)
  b = rng.normal(size=wrapper.lora.lora_b.shape).astype(np.float32)
  wrapper.lora.lora_a.assign(a)
  wrapper.lora.lora_b.assign(b)
  flat = x.reshape(x.shape[:x.ndim - len(wrapper.input_dims)] + (-1,))
  base = np.einsum(equation, x, kernel_value)
  expected = base + (6.0 / 3 * flat @ a @ b).reshape(base.shape)  # the numpy reference: W x + (alpha / r) x A B
  np.testing.assert_allclose(wrapper(x).numpy(), expected, rtol=1e-5, atol=1e-4)
  # merge folds (alpha / r) A B into the kernel; unmerge takes it out.
  wrapper.merge()
  np.testing.assert_allclose(dense(x).numpy(), expected, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(wrapper(x).numpy(), expected, rtol=1e-5, atol=1e-4)
  wrapper.unmerge()
  np.testing.assert_allclose(dense.kernel.numpy(), kernel_value, atol=1e-6)


@pytest.mark.parametrize("settings, match", [
    (dict(rank=0), "rank"), (dict(rank=True), "rank"), (dict(alpha=0), "alpha"), (dict(dropout=1.0), "dropout"),
    (dict(targets=("query", "query")), "targets"), (dict(targets=("pooler",)), "targets"),
    (dict(targets=()), "targets"),
])
def test_bad_settings_are_one_error(settings, match):
  with pytest.raises(ValueError, match=match):
    LoRAConfig(**settings)
  with pytest.raises(ValueError, match="unknown LoRA settings"):
    LoRAConfig.from_dict(dict(rank=2, r=2))


@pytest.fixture(scope="module")
def lora_model(encoder_dir, sentiment_examples):
  return fit_method_model(encoder_dir, sentiment_examples[0], "lora",
                          dict(rank=2, targets=["query", "value", "ffn_out"]))


def test_lora_starts_as_the_base_and_trains_only_its_factors_and_the_head(lora_model):
  model, plain, (with_lora, base) = lora_model
  np.testing.assert_array_equal(with_lora, base)
  assert model.base_fingerprint == plain.base_fingerprint
  trained = {variable_key(model, v) for v in model.trainable_variables}
  assert trained == {"head/kernel", "head/bias"} | {
      f"encoder/transformer/layer_{i}/{where}lora_{t}/lora/lora_{f}" for i in range(2) for f in "ab"
      for t, where in (("query", "self_attention/"), ("value", "self_attention/"), ("ffn_out", ""))}
  spec, config = methods.get_method("lora"), model.method_config
  assert spec.trained_params(methods.model_shape(model, model.bert_config), config) == \
      model.parameter_report().trained_params == 2 * (2 * (32 + 32) * 2 + 2 * (64 + 32)) + 32 * 2 + 2


def test_merge_and_unmerge_keep_the_outputs(lora_model, sentiment_examples):
  model = lora_model[0]
  texts = sentiment_examples[1].text
  before = model.predict(texts)
  spec = methods.get_method("lora")
  spec.merge(model)
  try:
    np.testing.assert_allclose(model.predict(texts), before, atol=1e-5)
  finally:
    spec.unmerge(model)
  np.testing.assert_allclose(model.predict(texts), before, atol=1e-6)


def test_lora_through_the_command_line_to_a_served_model(glue_dir, encoder_dir, tmp_path):
  out = str(tmp_path / "run")
  status, _, stderr = run_cli(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--method", "lora", "--lora-rank", "2", "--lora-alpha", "4", "--epochs", "1",
                               "--batch-size", "16", "--learning-rate", "1e-2", "--out", out])
  assert status == 0, stderr
  artifact = os.path.join(out, "artifact")
  manifest = read_manifest(artifact)
  assert manifest["method"] == "lora" and manifest["method_config"] == dict(rank=2, alpha=4, dropout=0.0,
                                                                            targets=["query", "value"])
  assert sum(k.endswith(("lora_a", "lora_b")) for k in read_weights(artifact)) == 2 * 2 * 2
  model = load_adapter(artifact, encoder_dir)
  status, _, stderr = run_cli(["export", "--artifact", artifact, "--encoder", encoder_dir, "--out",
                               str(tmp_path / "served")])
  assert status == 0, stderr
  texts = ["a fine film", "a dull plot"]
  served = tf.saved_model.load(str(tmp_path / "served")).signatures["serving_default"]
  np.testing.assert_allclose(served(text=tf.constant(texts))["probabilities"].numpy(), model.predict(texts),
                             atol=1e-5)
  status, stdout, stderr = run_cli(["params", "--arch", "minilm-l6", "--method", "lora", "--json"])
  assert status == 0, stderr
  assert json.loads(stdout.strip().splitlines()[-1])["trained_params"] == 6 * 2 * 8 * (384 + 384) + 384 * 2 + 2
