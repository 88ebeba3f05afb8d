"""Trainer, train/evaluate CLI, artifacts on disk, strategies and report."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from adapter_keras import cli
from adapter_keras.artifacts import WEIGHTS_FILE
from adapter_keras.models import load_adapter
from adapter_keras.config import AdapterConfig
from adapter_keras.tasks import classification_task
from adapter_keras.tasks.data import TextExamples
from adapter_keras.testing import tiny_sentiment_data, write_tiny_hf_bert
from adapter_keras.train.run import train_task
from adapter_keras.train.config import TrainConfig
from tests.conftest import REPO_ROOT
from tests.helpers import last_json


def test_train_task_selects_best_epoch_and_saves_a_small_artifact(tmp_path, encoder_dir):
  texts, labels = tiny_sentiment_data(48, seed=0)
  dev_texts, dev_labels = tiny_sentiment_data(24, seed=1)
  task = classification_task("tiny", ("0", "1"))
  config = TrainConfig(encoder=encoder_dir, adapter=AdapterConfig(size=4), learning_rate=1e-2, epochs=4,
                       batch_size=8, seed=0)
  out = tmp_path / "run"
  result, model = train_task(task, TextExamples(texts, labels),
                                {"dev": TextExamples(dev_texts, dev_labels)}, config, out_dir=str(out))
  assert len(result.history) == 4
  scores = [h["accuracy"] for h in result.history]
  assert result.best_epoch == int(np.argmax(scores)) + 1
  assert result.score == max(scores) == result.metrics["accuracy"]
  metrics = json.loads((out / "metrics.json").read_text())
  for key in ("task", "method", "metrics", "primary_metric", "trained_params", "trained_fraction"):
    assert key in metrics
  assert metrics["primary_metric"] == "accuracy"
  weights = out / "artifact" / WEIGHTS_FILE
  assert 4 * result.trained_params <= weights.stat().st_size <= 4 * result.trained_params + 16_000
  assert any(f.startswith("events") for _, _, fs in os.walk(out / "logs") for f in fs)
  # The saved model reproduces the best epoch's metrics.
  reloaded = load_adapter(str(out / "artifact"), encoder_dir)
  assert reloaded.method == "adapter" and reloaded.task.label_names == ("0", "1")
  features = reloaded.preprocessor(np.array(dev_texts))
  np.testing.assert_allclose(reloaded(features).numpy(), model(features).numpy(), atol=1e-5)


@pytest.mark.parametrize("method,extra", [("adapter", ["--adapter-size", "4"]), ("full", []),
                                          ("top-k", ["--top-k", "1"]), ("layer-norm", [])])
def test_train_cli_on_a_glue_dir_for_every_method(tmp_path, capsys, glue_dir, encoder_dir, method, extra):
  out = tmp_path / method
  code = cli.main(["train", "--task", "rte", "--data-dir", glue_dir, "--encoder", encoder_dir,
                   "--method", method, *extra, "--epochs", "1", "--batch-size", "16",
                   "--learning-rate", "1e-3", "--max-train-examples", "32", "--out", str(out), "--json"])
  assert code == 0
  result = last_json(capsys)
  assert result["task"] == "rte" and result["method"] == method
  assert set(result["metrics"]) == {"accuracy"}
  metrics = json.loads((out / "metrics.json").read_text())
  assert metrics["config"]["max_train_examples"] == 32
  manifest = json.loads((out / "artifact" / "manifest.json").read_text())
  assert manifest["train_examples"] == 32


def test_evaluate_cli_matches_train_and_refuses_another_base(tmp_path, capsys, glue_dir, encoder_dir):
  out = tmp_path / "run"
  assert cli.main(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                   "--adapter-size", "4", "--epochs", "2", "--learning-rate", "1e-2",
                   "--batch-size", "8", "--out", str(out), "--json"]) == 0
  trained = last_json(capsys)
  assert cli.main(["evaluate", "--artifact", str(out / "artifact"), "--encoder", encoder_dir,
                   "--task", "sst2", "--data-dir", glue_dir, "--json"]) == 0
  evaluated = last_json(capsys)
  assert evaluated["metrics"]["dev"]["accuracy"] == pytest.approx(trained["metrics"]["accuracy"])
  other_base = write_tiny_hf_bert(str(tmp_path / "other"), seed=0, dropout=0.0)
  from safetensors.numpy import load_file, save_file
  tensors = load_file(os.path.join(other_base, "model.safetensors"))
  tensors["encoder.layer.0.output.dense.bias"][0] += 1e-3  # one value of one tensor
  save_file(tensors, os.path.join(other_base, "model.safetensors"))
  assert cli.main(["evaluate", "--artifact", str(out / "artifact"), "--encoder", other_base,
                   "--task", "sst2", "--data-dir", glue_dir]) == 2
  err = capsys.readouterr().err
  assert "fingerprint" in err and len(err.strip().splitlines()) == 1


def test_regression_task_trains_with_spearman(tmp_path, capsys, glue_dir, encoder_dir):
  assert cli.main(["train", "--task", "stsb", "--data-dir", glue_dir, "--encoder", encoder_dir,
                   "--adapter-size", "4", "--epochs", "1", "--out", str(tmp_path / "stsb"), "--json"]) == 0
  result = last_json(capsys)
  assert set(result["metrics"]) == {"pearson", "spearman"} and result["primary_metric"] == "spearman"


def test_generic_files_and_unseen_label(tmp_path, capsys, encoder_dir):
  texts, labels = tiny_sentiment_data(40, seed=2)
  train = tmp_path / "train.csv"
  dev = tmp_path / "dev.csv"
  names = np.array(["neg", "pos"])
  train.write_text("review,stars\n" + "".join(f"{t},{names[l]}\n" for t, l in zip(texts, labels)))
  dev.write_text("review,stars\n" + "".join(f"{t},{names[l]}\n" for t, l in zip(texts[:10], labels[:10])))
  assert cli.main(["train", "--train", str(train), "--dev", str(dev), "--text-column", "review",
                   "--label-column", "stars", "--task", "reviews", "--encoder", encoder_dir,
                   "--adapter-size", "4", "--epochs", "1", "--out", str(tmp_path / "run"), "--json"]) == 0
  manifest = json.loads((tmp_path / "run" / "artifact" / "manifest.json").read_text())
  assert manifest["task"]["label_names"] == ["neg", "pos"]
  capsys.readouterr()
  bad = tmp_path / "bad.csv"
  bad.write_text("review,stars\nthe movie,meh\n")
  assert cli.main(["evaluate", "--artifact", str(tmp_path / "run" / "artifact"), "--encoder", encoder_dir,
                   "--dev", str(bad), "--text-column", "review", "--label-column", "stars"]) == 2
  assert "meh" in capsys.readouterr().err


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from adapter_keras.config import AdapterConfig
    from adapter_keras.tasks import classification_task
    from adapter_keras.tasks.data import TextExamples
    from adapter_keras.testing import tiny_sentiment_data
    from adapter_keras.train.run import train_task
    from adapter_keras.train.config import TrainConfig
    texts, labels = tiny_sentiment_data(64, seed=0)
    task = classification_task("tiny", ("0", "1"))
    losses = {}
    for strategy in ("default", "mirrored"):
      config = TrainConfig(encoder=sys.argv[1], adapter=AdapterConfig(size=4), learning_rate=1e-2,
                           epochs=2, batch_size=16, seed=0, strategy=strategy, bucket_by_length=False,
                           dropout_rate=0.0)
      result, _ = train_task(task, TextExamples(texts, labels), {"dev": TextExamples(texts, labels)},
                                config, verbose=False)
      losses[strategy] = [h["loss"] for h in result.history]
    if "mirrored" in sys.argv[2:]:
      assert tf.distribute.MirroredStrategy().num_replicas_in_sync == 2
    print(json.dumps(losses))
""")


def test_mirrored_strategy_on_two_cpu_devices_matches_single_device(tmp_path, encoder_dir):
  script = tmp_path / "mirrored.py"
  script.write_text(MIRRORED_SCRIPT)
  result = subprocess.run([sys.executable, str(script), encoder_dir, "mirrored"], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  losses = json.loads(result.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(losses["mirrored"], losses["default"], rtol=1e-3)


def test_report_builds_a_table_1_style_markdown(tmp_path, capsys, glue_dir, encoder_dir):
  for task in ("sst2", "rte"):
    for method, extra in (("adapter", ["--adapter-size", "4"]), ("full", [])):
      assert cli.main(["train", "--task", task, "--data-dir", glue_dir, "--encoder", encoder_dir,
                       "--method", method, *extra, "--epochs", "1", "--max-train-examples", "16",
                       "--out", str(tmp_path / f"{task}-{method}")]) == 0
  capsys.readouterr()
  assert cli.main(["report", str(tmp_path), "--json"]) == 0
  printed = capsys.readouterr().out
  table = printed.strip().splitlines()
  assert table[0].startswith("| method | rte | sst2 | mean | total params (x base) | trained params / task |")
  summary = json.loads(table[-1])
  assert summary["full"]["total_params_x_base"] == pytest.approx(2.0, abs=0.01)
  assert 1.0 < summary["adapter"]["total_params_x_base"] < 1.2
  assert summary["adapter"]["tasks"] == 2
