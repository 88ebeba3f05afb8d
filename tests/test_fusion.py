"""Compositions of trained adapters (methods/fusion, methods/stack, models/sources.py): AdapterFusion over one
source is that source's model at initialisation; training leaves the sources bit-identical and trains what the
formula counts; sources are referenced by sha256 (a changed, missing, foreign or non-adapter source is refused
by name; a directory moved as a whole still loads); Stack trains an adapter over a frozen one; the command
line trains, exports beside ordinary tasks and analyses a fusion model."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from adapter_keras import AdapterClassifier, AdapterConfig, testing
from adapter_keras.config import FusionConfig
from adapter_keras.artifacts import ArtifactError, artifact_sha256, read_manifest, read_weights
from adapter_keras.methods import get_method, model_shape
from adapter_keras.models import load_adapter
from tests.helpers import run_cli

TEXTS, LABELS = testing.tiny_sentiment_data(32, seed=0)


def _trained(encoder, seed, **kwargs):
  model = AdapterClassifier.from_pretrained(encoder, num_classes=2, seed=seed, **kwargs)
  model.compile(learning_rate=3e-2)
  model.fit(TEXTS, LABELS, epochs=1, verbose=0)
  return model


@pytest.fixture(scope="module")
def sources(encoder_dir, tmp_path_factory):
  """Two trained adapter artifacts of different sizes (the fusion's sources), in one directory."""
  root = tmp_path_factory.mktemp("sources")
  paths = []
  for i, size in enumerate((4, 6)):
    path = str(root / f"task{i}")
    _trained(encoder_dir, i, adapter=AdapterConfig(size=size), name=f"task{i}").save_adapter(path)
    paths.append(path)
  return paths


def _sequence_output(model, texts=TEXTS[:6]):
  return model.encoder(model.preprocessor(tf.constant(texts)), training=False)["sequence_output"].numpy()


def _source_values(model):
  return {v.name: v.numpy() for v in model.weights if ("/fusion/source_" in v.name or "/stack/lower/" in v.name)
          and not v.name.endswith("enabled:0")}


def test_fusion_over_one_source_is_that_source_at_initialisation(sources, encoder_dir):
  fused = AdapterClassifier.from_pretrained(encoder_dir, method="fusion", adapter=None,
                                            method_config=FusionConfig(sources=[sources[0]]))
  np.testing.assert_array_equal(_sequence_output(fused), _sequence_output(load_adapter(sources[0], encoder_dir)))


def test_fusion_trains_what_its_formula_counts_and_leaves_its_sources_bit_identical(sources, encoder_dir, tmp_path):
  model = _trained(encoder_dir, 7, method="fusion", adapter=None, method_config=dict(sources=sources))
  saved = [read_weights(s) for s in sources]
  for name, value in _source_values(model).items():
    n = int(name.split("/fusion/source_")[1].split("/")[0])
    key = name[:-2].replace(f"/fusion/source_{n}/", "/adapter/")
    np.testing.assert_array_equal(value, saved[n][key])
  trained = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  assert trained == get_method("fusion").trained_params(model_shape(model, model.bert_config), model.method_config)
  assert not any("source_" in v.name for v in model.trainable_variables)
  model.save_adapter(str(tmp_path / "fused"))
  manifest = read_manifest(str(tmp_path / "fused"))
  assert [s["sha256"] for s in manifest["method_config"]["sources"]] == [artifact_sha256(s) for s in sources]
  assert not any("source_" in key for key in manifest["weights"])  # referenced, never copied
  reloaded = load_adapter(str(tmp_path / "fused"), encoder_dir)
  np.testing.assert_array_equal(reloaded.predict(TEXTS[:6]), model.predict(TEXTS[:6]))


@pytest.fixture(scope="module")
def fused_dir(sources, encoder_dir, tmp_path_factory):
  """A fusion artifact beside copies of its two sources, in a directory of its own."""
  root = tmp_path_factory.mktemp("fused")
  copies = [shutil.copytree(s, str(root / os.path.basename(s))) for s in sources]
  AdapterClassifier.from_pretrained(encoder_dir, method="fusion", adapter=None, seed=3,
                                    method_config=dict(sources=copies)).save_adapter(str(root / "fused"))
  return str(root)


def _edit_manifest(path):
  manifest_path = os.path.join(path, "manifest.json")
  with open(manifest_path, "a", encoding="utf-8") as f:
    f.write("\n")


@pytest.mark.parametrize("damage, match", [
    (lambda d: _edit_manifest(os.path.join(d, "task1")), r"fusion source task1 at .* has changed since"),
    (lambda d: shutil.rmtree(os.path.join(d, "task0")),
     r"fusion source task0 \(sha256 [0-9a-f]{12}\.\.\.\) is missing"),
])
def test_a_changed_or_missing_source_is_refused_by_name(fused_dir, encoder_dir, tmp_path, damage, match):
  moved = str(tmp_path / "moved")
  shutil.copytree(fused_dir, moved)
  os.rename(fused_dir, fused_dir + "_gone")  # the recorded paths no longer exist
  try:
    load_adapter(os.path.join(moved, "fused"), encoder_dir)  # moved as a whole: its sources are found beside it
    damage(moved)
    with pytest.raises(ArtifactError, match=match):
      load_adapter(os.path.join(moved, "fused"), encoder_dir)
  finally:
    os.rename(fused_dir + "_gone", fused_dir)


def test_sources_of_another_base_or_method_are_refused(sources, encoder_dir, tmp_path):
  other_base = testing.write_tiny_hf_bert(str(tmp_path / "other"), seed=5, dropout=0.0)
  foreign = str(tmp_path / "foreign")
  AdapterClassifier.from_pretrained(other_base, adapter=AdapterConfig(size=4)).save_adapter(foreign)
  with pytest.raises(ArtifactError, match="fusion source foreign: .*fingerprint"):
    AdapterClassifier.from_pretrained(encoder_dir, method="fusion", adapter=None,
                                      method_config=dict(sources=[sources[0], foreign]))
  lora = str(tmp_path / "lora")
  AdapterClassifier.from_pretrained(encoder_dir, method="lora", adapter=None, name="lora").save_adapter(lora)
  with pytest.raises(ValueError, match="fusion source lora .* was trained with method 'lora'"):
    AdapterClassifier.from_pretrained(encoder_dir, method="fusion", adapter=None, method_config=dict(sources=[lora]))


def test_stack_trains_a_new_adapter_over_the_frozen_lower_one(sources, encoder_dir, tmp_path):
  config = dict(lower=sources[1], size=3)
  untrained = AdapterClassifier.from_pretrained(encoder_dir, method="stack", adapter=None, method_config=config)
  lower = load_adapter(sources[1], encoder_dir)
  # the upper adapter starts near the identity: the stack starts near its lower adapter's model
  np.testing.assert_allclose(_sequence_output(untrained), _sequence_output(lower), atol=1e-2)
  model = _trained(encoder_dir, 9, method="stack", adapter=None, method_config=config)
  saved = read_weights(sources[1])
  values = _source_values(model)
  assert len(values) == 2 * 2 * 4  # 2 layers x 2 positions x (down, up) x (kernel, bias)
  for name, value in values.items():
    np.testing.assert_array_equal(value, saved[name[:-2].replace("/stack/lower/", "/adapter/")])
  trained = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  assert trained == get_method("stack").trained_params(model_shape(model, model.bert_config), model.method_config)
  assert {v.name.split("/stack/")[1].split("/")[0] for v in model.trainable_variables if "/stack/" in v.name} == {
      "upper"}
  model.save_adapter(str(tmp_path / "stacked"))
  np.testing.assert_array_equal(load_adapter(str(tmp_path / "stacked"), encoder_dir).predict(TEXTS[:6]),
                                model.predict(TEXTS[:6]))


def test_fusion_through_the_command_line_beside_an_ordinary_task(sources, glue_dir, encoder_dir, tmp_path):
  out = str(tmp_path / "run")
  status, _, stderr = run_cli(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--method", "fusion", "--fuse", *sources, "--epochs", "1", "--batch-size", "16",
                               "--learning-rate", "1e-2", "--out", out])
  assert status == 0, stderr
  artifact = os.path.join(out, "artifact")
  manifest = read_manifest(artifact)
  assert [s["name"] for s in manifest["method_config"]["sources"]] == ["task0", "task1"]
  status, stdout, stderr = run_cli(["params", "--encoder", encoder_dir, "--method", "fusion", "--fuse", *sources,
                                    "--json"])
  assert status == 0, stderr
  assert json.loads(stdout.strip().splitlines()[-1])["trained_params"] == manifest["trained_params"]
  status, stdout, stderr = run_cli(["analyze", "fusion", "--artifact", artifact, "--encoder", encoder_dir,
                                    "--data-dir", glue_dir, "--out", str(tmp_path / "analysis"), "--json"])
  assert status == 0, stderr
  result = json.loads(stdout.strip().splitlines()[-1])
  assert result["sources"] == ["task0", "task1"] and len(result["sites"]) == 4
  assert all(abs(sum(site["weights"]) - 1) < 1e-5 for site in result["sites"])
  assert os.path.exists(result["png"])
  served = str(tmp_path / "served")
  status, _, stderr = run_cli(["export", "--artifact", sources[0], "--artifact", artifact, "--encoder", encoder_dir,
                               "--out", served])
  assert status == 0, stderr
  loaded = tf.saved_model.load(served)
  for name, path in (("task0", sources[0]), ("sst2", artifact)):
    probabilities = loaded.signatures[name](text=tf.constant(TEXTS[:4]))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, load_adapter(path, encoder_dir).predict(TEXTS[:4]), atol=1e-5)
  status, _, stderr = run_cli(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--method", "fusion", "--epochs", "1", "--out", str(tmp_path / "none")])
  assert status != 0 and "--fuse ARTIFACT" in stderr and len(stderr.strip().splitlines()) == 1


def test_a_fusion_task_joins_a_bank_leaving_its_source_task_bit_identical(sources, fused_dir, encoder_dir):
  from adapter_keras.serving.multitask import MultiTaskModel  # pylint: disable=import-outside-toplevel
  bank = MultiTaskModel.from_encoder(encoder_dir)
  bank.add_artifact(sources[0])
  before = bank.predict(TEXTS, task="task0", logits=True)
  fused = os.path.join(fused_dir, "fused")
  bank.add_artifact(fused, name="fused")
  np.testing.assert_array_equal(bank.predict(TEXTS, task="task0", logits=True), before)
  np.testing.assert_array_equal(bank.predict(TEXTS, task="fused"), load_adapter(fused, encoder_dir).predict(TEXTS))
