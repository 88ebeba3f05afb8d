"""The automl-baseline command line: make-module, search, --json and one-line errors."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import matthews_corrcoef

from adapter_keras import testing
from adapter_keras.tasks.data import TextExamples
from adapter_keras.tasks import get_task
from automl_baseline import cli, modules
from automl_baseline.export import predict_exported
from tests.conftest import REPO_ROOT
from tests.helpers import run_keras_tuner_chief_and_worker


def _run(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def test_make_module_from_a_word_table(tmp_path, capsys):
  (tmp_path / "vocab.txt").write_text("good\nbad\nmovie\n", encoding="utf-8")
  np.save(tmp_path / "matrix.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
  out_dir = str(tmp_path / "module")
  code, out, _ = _run(capsys, "make-module", "--vocab", str(tmp_path / "vocab.txt"),
                      "--matrix", str(tmp_path / "matrix.npy"), "--out", out_dir, "--json")
  assert code == 0
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary["dim"] == 4 and summary["vocab_size"] == 3 and summary["path"] == out_dir
  layer = modules.hub.KerasLayer(out_dir, trainable=True)
  assert layer.trainable_weights[0].shape == (4, 4)  # 3 words + 1 OOV row
  np.testing.assert_allclose(layer(np.array(["bad"])).numpy(), [[4, 5, 6, 7]])


def test_make_module_from_an_encoder(tmp_path, capsys):
  bert = testing.write_tiny_hf_bert(str(tmp_path / "bert"))
  code, out, _ = _run(capsys, "make-module", "--from-encoder", bert, "--kind", "token-table",
                      "--out", str(tmp_path / "wordpieces"), "--json")
  assert code == 0
  assert json.loads(out.strip().splitlines()[-1])["kind"] == "token-table"
  assert modules.hub.KerasLayer(str(tmp_path / "wordpieces"), trainable=True).trainable_weights


def test_search_command(tmp_path, capsys, monkeypatch):
  module_dir = modules.write_tiny_word_module(str(tmp_path / "words"))
  texts, labels = testing.tiny_sentiment_data(40, seed=0)
  train = TextExamples(texts[:32], labels[:32], label_names=["neg", "pos"])
  dev = TextExamples(texts[32:], labels[32:], label_names=["neg", "pos"])
  loaded = []

  def fake_load(args):  # the file loaders have their own tests; this checks the plumbing
    loaded.append((args.train_file, args.dev_file, args.text_column, args.label_column))
    return train, dev, get_task("cola")  # a task whose primary metric is not accuracy

  monkeypatch.setattr(cli, "_load_data", fake_load)
  out_dir = str(tmp_path / "search")
  code, out, err = _run(capsys, "search", "--train", "t.csv", "--dev", "d.csv", "--text-column",
                        "sentence", "--label-column", "label", "--embeddings", module_dir,
                        "--max-trials", "1", "--sample-scale", "0.001", "--max-epochs", "1",
                        "--wide-buckets", "256", "--out", out_dir, "--json")
  assert code == 0, err
  assert loaded == [("t.csv", "d.csv", "sentence", "label")]
  lines = out.strip().splitlines()
  assert any(l.startswith("trial 1/1: val_accuracy") for l in lines)
  best = json.loads(lines[-1])
  assert set(best["hyperparameters"]) >= {"embedding_module", "hidden_layers", "deep_optimizer"}
  assert ("batch_size" in best["hyperparameters"]) == (best["hyperparameters"]["deep_optimizer"] == "lazy_adam")
  assert 0.0 <= best["val_accuracy"] <= 1.0
  for name in ("trials.csv", "best.json", os.path.join("best_model", "saved_model.pb")):
    assert os.path.exists(os.path.join(out_dir, name)), name
  # The task's own metric of the exported best model, as the adapter runs report it.
  assert best["primary_metric"] == "mcc" and best["task"] == "cola"
  class_ids = predict_exported(os.path.join(out_dir, "best_model"), list(dev.text))["class_ids"]
  assert best["dev_metrics"]["mcc"] == pytest.approx(matthews_corrcoef(dev.labels, class_ids))


@pytest.mark.parametrize("argv,message", [
    (["search", "--task", "sst-2", "--max-trials", "1", "--out", "o"], "--task needs --data-dir"),
    (["search", "--task", "sts-b", "--data-dir", ".", "--max-trials", "1", "--out", "o"],
     "regression task"),
    (["search", "--train", "t.csv", "--max-trials", "1", "--out", "o"], "--train needs --dev"),
    (["search", "--max-trials", "1", "--out", "o"], "either --task"),
    (["make-module", "--vocab", "v.txt", "--out", "o"], "--vocab needs --matrix"),
    (["make-module", "--from-encoder", "minilm-l6", "--out", "o"], "--from-encoder needs --kind"),
    (["make-module", "--vocab", "missing.txt", "--matrix", "m.npy", "--out", "o"],
     "vocabulary file missing.txt not found"),
])
def test_errors_are_one_line_with_exit_status_2(argv, message, capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  code, _, err = _run(capsys, *argv)
  assert code == 2
  assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err


def test_unknown_module_is_a_one_line_error(capsys, monkeypatch, tmp_path):
  examples = TextExamples(["good", "bad"], [1, 0], label_names=["neg", "pos"])
  monkeypatch.setattr(cli, "_load_data", lambda args: (examples, examples, None))
  code, _, err = _run(capsys, "search", "--train", "t", "--dev", "d", "--text-column", "t",
                      "--label-column", "l", "--embeddings", str(tmp_path / "nope"),
                      "--max-trials", "1", "--out", str(tmp_path / "o"))
  assert code == 2 and err.count("\n") == 1 and "embedding module" in err


def test_python_dash_m_entry_point():
  result = subprocess.run([sys.executable, "-m", "automl_baseline", "make-module", "--help"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0 and "--from-encoder" in result.stdout


def _write_csv(path, texts, labels):
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["sentence", "label"])
    writer.writerows(zip(texts, ["neg" if label == 0 else "pos" for label in labels]))
  return str(path)


def test_chief_and_worker_run_every_trial_once(tmp_path):
  """keras-tuner's chief/worker protocol across two processes on loopback."""
  texts, labels = testing.tiny_sentiment_data(48, seed=0)
  train = _write_csv(tmp_path / "train.csv", texts[:36], labels[:36])
  dev = _write_csv(tmp_path / "dev.csv", texts[36:], labels[36:])
  module_dir = modules.write_tiny_word_module(str(tmp_path / "words"))
  out = tmp_path / "search"
  command = [sys.executable, "-m", "automl_baseline", "search", "--train", train, "--dev", dev,
             "--text-column", "sentence", "--label-column", "label", "--embeddings", module_dir,
             "--max-trials", "3", "--sample-scale", "0.001", "--max-epochs", "1",
             "--wide-buckets", "256", "--out", str(out), "--json"]
  chief_out, worker_out = run_keras_tuner_chief_and_worker(command, REPO_ROOT)
  trials_run = json.loads(worker_out.strip().splitlines()[-1])["trials_run"]
  assert len(trials_run) == 3 and len(set(trials_run)) == 3
  best = json.loads(chief_out.strip().splitlines()[-1])
  assert best["trials_completed"] == 3 and best["trial_id"] in trials_run
  with open(out / "trials.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert sorted(r["trial_id"] for r in rows) == sorted(trials_run)
  assert os.path.exists(out / "best_model" / "saved_model.pb")
  # The chief hosts the oracle and runs no trial, yet reports every trial its worker ends.
  for log in (chief_out, worker_out):
    lines = [l for l in log.splitlines() if l.startswith("trial ")]
    assert sorted(l.split(":")[0] for l in lines) == ["trial 1/3", "trial 2/3", "trial 3/3"], log
    assert all("val_accuracy" in l and "ETA" in l for l in lines), lines


def test_search_embeddings_default_to_table6_and_may_add_the_non_normalized(monkeypatch, capsys, tmp_path):
  from automl_baseline import tuner  # pylint: disable=import-outside-toplevel
  examples = TextExamples(["good", "bad"], [1, 0], label_names=["neg", "pos"])
  monkeypatch.setattr(cli, "_load_data", lambda args: (examples, examples, None))
  spaces = []
  monkeypatch.setattr(tuner, "run_search", lambda *a, space, **k: spaces.append(space) or {})
  argv = ["search", "--train", "t", "--dev", "d", "--text-column", "t", "--label-column", "l",
          "--max-trials", "1", "--out", str(tmp_path / "o")]
  assert _run(capsys, *argv)[0] == 0
  assert _run(capsys, *argv, "--with-non-normalized")[0] == 0
  assert _run(capsys, *argv, "--embeddings", "dir", "--with-non-normalized")[0] == 0
  assert spaces[0].embedding_modules == modules.TABLE6_MODULES
  assert spaces[1].embedding_modules == modules.TABLE6_MODULES + modules.NON_NORMALIZED_MODULES
  assert spaces[2].embedding_modules == ("dir",) + modules.NON_NORMALIZED_MODULES
