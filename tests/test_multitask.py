"""Many tasks on one base: isolation, artifacts, atomic saves, SavedModel export."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from adapter_keras import artifacts, cli
from adapter_keras.config import AdapterConfig
from adapter_keras.serving.multitask import MultiTaskModel
from adapter_keras.tasks import classification_task, regression_task
from adapter_keras.tasks.data import TextExamples
from adapter_keras.testing import tiny_sentiment_data, write_tiny_hf_bert
from adapter_keras.train.config import TrainConfig

TEXTS, LABELS = tiny_sentiment_data(32, seed=0)
PAIRS = TEXTS[::-1]


@pytest.fixture(scope="module")
def trained(encoder_dir, tmp_path_factory):
  """A base with task A (single sentence, 2 classes) and B (pairs, regression), both trained."""
  mt = MultiTaskModel.from_encoder(encoder_dir)
  mt.add_task("sentiment", classification_task("sentiment", ("neg", "pos")), AdapterConfig(size=4), seed=0)
  config = TrainConfig(encoder=encoder_dir, learning_rate=1e-2, epochs=3, batch_size=8)
  data = TextExamples(TEXTS, LABELS)
  mt.train("sentiment", data, {"dev": data}, config, verbose=False)
  before_b = mt.predict(TEXTS, task="sentiment")
  mt.add_task("similarity", regression_task("similarity", is_pair=True), AdapterConfig(size=8), seed=1)
  pairs = TextExamples(TEXTS, (LABELS * 5).astype(np.float32), text_b=PAIRS)
  mt.train("similarity", pairs, {"dev": pairs}, config, verbose=False)
  return mt, before_b


def test_training_a_second_task_leaves_the_first_bit_identical(trained):
  mt, before = trained
  np.testing.assert_array_equal(mt.predict(TEXTS, task="sentiment"), before)


def test_tasks_share_the_base_variables(trained):
  mt, _ = trained
  base_ids = {id(v) for v in mt.base.encoder.weights}
  a, b = mt["sentiment"], mt["similarity"]
  shared = {id(v) for v in a.weights} & {id(v) for v in b.weights}
  embedding = mt.base.encoder._embedding_layer.embeddings
  assert id(embedding) in shared and shared <= base_ids
  own_a = {id(v) for v in a.trainable_variables}
  assert own_a.isdisjoint(base_ids) and own_a.isdisjoint({id(v) for v in b.weights})


def test_activate_disable_remove(encoder_dir, trained):
  mt, _ = trained
  mt.activate("similarity")
  assert mt.predict(TEXTS[:3], PAIRS[:3]).shape == (3,)  # scores, as the task model and the SavedModel give
  mt.disable()
  base_out = mt.predict(TEXTS[:3])
  assert base_out.shape == (3, 32)
  fresh = MultiTaskModel.from_encoder(encoder_dir)
  fresh.add_task("x", classification_task("x", ("a", "b")), AdapterConfig(size=2))
  fresh.add_task("y", classification_task("y", ("a", "b")), AdapterConfig(size=2))
  fresh.remove_task("x")
  assert fresh.task_names == ["y"] and fresh.active == "y"
  with pytest.raises(KeyError):
    fresh.activate("x")
  with pytest.raises(ValueError, match="already exists"):
    fresh.add_task("y", classification_task("y", ("a", "b")))


def test_task_encoder_with_adapters_off_equals_base(trained):
  mt, _ = trained
  model = mt["sentiment"]
  features = model.preprocessor(tf.constant(TEXTS[:4]))
  encoder = model.encoder
  encoder.set_adapters_enabled(False)
  try:
    got = encoder(features)["sequence_output"].numpy()
  finally:
    encoder.set_adapters_enabled(True)
  expected = mt.base.encoder(features)["sequence_output"].numpy()
  assert not np.array_equal(got, expected)  # the task's LayerNorms were trained...
  fresh = mt.add_task("fresh", classification_task("fresh", ("a", "b")), AdapterConfig(size=2))
  fresh.encoder.set_adapters_enabled(False)
  np.testing.assert_array_equal(fresh.encoder(features)["sequence_output"].numpy(), expected)
  mt.remove_task("fresh")


def test_artifact_round_trip_size_and_wrong_base(tmp_path, trained, encoder_dir):
  mt, _ = trained
  out = str(tmp_path / "sentiment")
  mt.save_task("sentiment", out)
  trained_params = sum(int(np.prod(v.shape)) for v in mt["sentiment"].trainable_variables)
  size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
  assert 4 * trained_params < size < 4 * trained_params + 20_000
  other = MultiTaskModel.from_encoder(encoder_dir)
  other.add_artifact(out)
  np.testing.assert_array_equal(other.predict(TEXTS, task="sentiment"), mt.predict(TEXTS, task="sentiment"))
  different = write_tiny_hf_bert(str(tmp_path / "different"), seed=5, dropout=0.0)
  with pytest.raises(artifacts.ArtifactError, match="fingerprint"):
    MultiTaskModel.from_encoder(different).add_artifact(out)


def test_interrupted_save_leaves_no_artifact(tmp_path, trained, monkeypatch):
  mt, _ = trained
  out = tmp_path / "crash"

  def crash(*args, **kwargs):
    raise KeyboardInterrupt("simulated crash mid-save")

  monkeypatch.setattr(artifacts.json, "dump", crash)  # weights written, manifest not
  with pytest.raises(KeyboardInterrupt):
    mt.save_task("sentiment", str(out))
  assert not out.exists()
  assert os.listdir(tmp_path) == []  # no temporary directory left behind either


def test_incompatible_artifact_version_is_refused(tmp_path, trained):
  mt, _ = trained
  out = tmp_path / "old"
  mt.save_task("sentiment", str(out))
  manifest = json.loads((out / "manifest.json").read_text())
  manifest["format_version"] = 99
  (out / "manifest.json").write_text(json.dumps(manifest))
  with pytest.raises(artifacts.ArtifactError, match="format version 99"):
    artifacts.read_manifest(str(out))


RELOAD_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    import tensorflow_text  # registers the tokenizer ops; adapter_keras is NOT imported
    assert "adapter_keras" not in sys.modules
    loaded = tf.saved_model.load(sys.argv[1])
    args = json.loads(sys.argv[2])
    out = {}
    for name, kwargs in args.items():
      result = loaded.signatures[name](**{k: tf.constant(v) for k, v in kwargs.items()})
      out[name] = {k: (v.numpy().astype(str).tolist() if v.dtype == tf.string else v.numpy().tolist())
                   for k, v in result.items()}
    assert "adapter_keras" not in sys.modules
    print(json.dumps(out))
""")


def _reload_without_library(tmp_path, path, calls):
  script = tmp_path / "reload.py"
  script.write_text(RELOAD_SCRIPT)
  result = subprocess.run([sys.executable, str(script), path, json.dumps(calls)], capture_output=True,
                          text=True, cwd=str(tmp_path), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_multi_task_export_reloads_without_the_library_and_mixed_equals_per_task(tmp_path, trained):
  mt, _ = trained
  path = str(tmp_path / "saved")
  mt.export(path, tasks=["sentiment", "similarity"])
  task_column = ["sentiment", "similarity"] * 4
  calls = {
      "sentiment": dict(text=TEXTS[:8]),
      "similarity": dict(text=TEXTS[:8], text_b=PAIRS[:8]),
      "mixed": dict(text=TEXTS[:8], text_b=PAIRS[:8], task=task_column),
  }
  out = _reload_without_library(tmp_path, path, calls)
  probabilities = mt.predict(TEXTS[:8], task="sentiment")  # the bank, the task model and the SavedModel agree
  np.testing.assert_allclose(tf.nn.softmax(mt.predict(TEXTS[:8], task="sentiment", logits=True)).numpy(),
                             probabilities, atol=1e-6)
  np.testing.assert_allclose(out["sentiment"]["probabilities"], probabilities, atol=1e-5)
  assert out["sentiment"]["label"] == [["neg", "pos"][i] for i in probabilities.argmax(-1)]
  scores = mt.predict(TEXTS[:8], PAIRS[:8], task="similarity")
  np.testing.assert_allclose(out["similarity"]["score"], scores, atol=1e-5)
  for i, task in enumerate(task_column):  # the mixed batch, example by example
    assert out["mixed"]["label"][i] == out[task]["label"][i]
    expected = probabilities[i].max() if task == "sentiment" else scores[i]
    assert out["mixed"]["score"][i] == pytest.approx(float(expected), abs=1e-5)


def test_export_stores_the_base_once(tmp_path, trained):
  mt, _ = trained

  def size(path):  # the variables (the graph grows with every signature, by design)
    path = os.path.join(path, "variables")
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))

  mt.export(str(tmp_path / "one"), tasks=["sentiment"])
  mt.export(str(tmp_path / "two"), tasks=["sentiment", "similarity"])
  base_bytes = 4 * sum(int(np.prod(v.shape)) for v in mt.base.encoder.weights)
  assert size(tmp_path / "two") - size(tmp_path / "one") < 0.5 * base_bytes


def test_export_and_predict_cli_single_task(tmp_path, capsys, trained, encoder_dir):
  mt, _ = trained
  artifact = str(tmp_path / "artifact")
  mt.save_task("sentiment", artifact)
  saved = str(tmp_path / "saved")
  assert cli.main(["export", "--artifact", artifact, "--encoder", encoder_dir, "--out", saved]) == 0
  capsys.readouterr()
  assert cli.main(["predict", "--model", saved, "--json", "the movie was great", "awful plot"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert json.loads(lines[-1]) == dict(model=saved, task="sentiment", inputs=2, batch_size=64)
  predictions = [json.loads(line) for line in lines[:-1]]  # one JSON line per input, in input order
  expected = mt.predict(["the movie was great", "awful plot"], task="sentiment")
  assert [p["text"] for p in predictions] == ["the movie was great", "awful plot"]
  assert [p["label"] for p in predictions] == [["neg", "pos"][i] for i in expected.argmax(-1)]
  np.testing.assert_allclose([p["score"] for p in predictions], expected.max(-1), atol=1e-5)


def test_export_into_a_non_writable_place_is_a_clear_error(tmp_path, capsys, trained, encoder_dir):
  mt, _ = trained
  artifact = str(tmp_path / "artifact")
  mt.save_task("sentiment", artifact)
  a_file = tmp_path / "file.txt"
  a_file.write_text("x")
  assert cli.main(["export", "--artifact", artifact, "--encoder", encoder_dir,
                   "--out", str(a_file / "saved")]) == 2
  assert "is a file, not a directory" in capsys.readouterr().err
  read_only = tmp_path / "ro"
  read_only.mkdir()
  os.chmod(read_only, 0o500)
  try:
    if not os.access(read_only, os.W_OK):  # root may write anywhere; then only the case above applies
      assert cli.main(["export", "--artifact", artifact, "--encoder", encoder_dir,
                       "--out", str(read_only / "x")]) == 2
      assert "not writable" in capsys.readouterr().err
  finally:
    os.chmod(read_only, 0o700)
