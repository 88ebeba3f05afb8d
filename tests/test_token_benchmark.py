"""benchmarks/token_classification.py on tiny generated CoNLL files and the tiny encoder: the JSON and markdown
cells, test scores stored beside each run, resuming without training, and --plan."""
import importlib.util
import json
import os
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.test_token_classifier import tiny_tagged, write_conll


def _benchmark():
  spec = importlib.util.spec_from_file_location(
      "token_classification", os.path.join(REPO_ROOT, "benchmarks", "token_classification.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module


def _data_dir(tmp_path):
  folder = tmp_path / "tagging" / "tiny"
  folder.mkdir(parents=True)
  for split, n, seed in (("train", 24, 2), ("dev", 8, 3), ("test", 8, 4)):
    write_conll(folder / f"{split}.conll", *tiny_tagged(n, seed))
  return str(tmp_path / "tagging")


def test_cells_are_written_a_second_run_trains_nothing_and_plan_trains_nothing(tmp_path, encoder_dir, capsys):
  bench = _benchmark()
  out_json, out_md, runs_dir = tmp_path / "tc.json", tmp_path / "tc.md", tmp_path / "runs"
  argv = ["--encoder", encoder_dir, "--data-dir", _data_dir(tmp_path), "--tasks", "tiny", "--seeds", "0",
          "--epochs", "1", "--max-train-examples", "16", "--learning-rates", "adapter=1e-2", "full=1e-3",
          "--adapter-size", "4", "--runs-dir", str(runs_dir), "--out-json", str(out_json), "--out-md", str(out_md)]

  assert bench.main(argv + ["--plan"]) == 0
  out = capsys.readouterr().out
  assert "tiny adapter-m4: lr1e-2-seed0 to train" in out and "tiny full: lr1e-3-seed0 to train" in out
  assert not runs_dir.exists() and not out_json.exists()

  assert bench.main(argv) == 0
  out = capsys.readouterr().out
  assert "runs trained 2, reused 0" in out
  result = json.loads(out_json.read_text())
  assert result["tasks"]["tiny"]["status"] == "complete"
  cells = result["scores"]["tiny"]
  assert set(cells) == {"adapter", "full"}
  for method, cell in cells.items():
    run = {"adapter": "adapter-m4/lr1e-2-seed0", "full": "full/lr1e-3-seed0"}[method]
    stored = json.loads((runs_dir / "tiny" / run / "test_metrics.json").read_text())
    assert stored["sentences"] == 8 and cell["test"]["best_run"] == stored["metrics"]
    assert cell["test"]["mean"]["f1"]["mean"] == stored["metrics"]["f1"] and cell["runs"] == 1
    assert set(cell["test"]["mean"]) == {"f1", "precision", "recall", "accuracy"}
    assert 0 < cell["trained_params"] and 0 <= cell["test"]["best_run"]["accuracy"] <= 1
  assert cells["adapter"]["trained_params"] < cells["full"]["trained_params"]
  text = out_md.read_text()
  assert "tiny complete (2/2 runs" in text and "| tiny | adapter-m4 |" in text and "| tiny | full |" in text
  assert "Command: `python benchmarks/token_classification.py --encoder" in text
  assert not list(runs_dir.rglob("artifact"))  # runs keep no artifact: test is scored in the run's process

  # Resumed: every run reused from its directory with its test scores, the same results.
  assert bench.main(argv) == 0
  assert "runs trained 0, reused 2" in capsys.readouterr().out
  assert json.loads(out_json.read_text())["scores"] == result["scores"]
  assert bench.main(argv + ["--plan"]) == 0
  assert "lr1e-2-seed0 finished" in capsys.readouterr().out


def test_a_rate_run_with_one_seed_is_not_compared_on_its_one_score_against_a_mean():
  from adapter_keras.analysis import run_grid
  def run(lr, seed, score):
    return dict(score=score, config=dict(learning_rate=lr, seed=seed, method="full"), trained_params=1, seconds=1.0)
  # first-seed search: 1e-4 won seed 0 and got seeds 1, 2; its mean (0.375) is below 5e-5's single score (0.378)
  runs = [run(5e-5, 0, 0.378), run(1e-4, 0, 0.417), run(1e-4, 1, 0.314), run(1e-4, 2, 0.394)]
  summary = run_grid.summarize(runs)
  assert summary["learning_rate"] == 1e-4 and summary["n_seeds"] == 3
  assert summary["mean"] == pytest.approx((0.417 + 0.314 + 0.394) / 3)
  assert summary["best_run"] == dict(score=0.417, learning_rate=1e-4, seed=0)


@pytest.mark.parametrize("argv,expected", [
    ([], "python benchmarks/fusion.py"),
    (["--targets", "rte", "mrpc"], "python benchmarks/fusion.py --targets rte mrpc"),
    (["--data-dir", "my data"], "python benchmarks/fusion.py --data-dir 'my data'")])
def test_a_report_quotes_the_command_as_a_shell_would_run_it(argv, expected):
  from adapter_keras.analysis import run_grid
  assert run_grid.benchmark_command(os.path.join(REPO_ROOT, "benchmarks", "fusion.py"), argv) == expected
