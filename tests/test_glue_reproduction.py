"""benchmarks/glue_reproduction.py --protocol paper: sweeps per task and method, the paper's selection
rule with the s.e.m. over seeds, the GLUE server files from the best adapter runs, resume."""
import csv
import importlib.util
import json
import os

import pytest

from adapter_keras.testing import write_tiny_glue_dir, write_tiny_glue_test_files
from tests.conftest import REPO_ROOT


def _benchmark():
  spec = importlib.util.spec_from_file_location(
      "glue_reproduction", os.path.join(REPO_ROOT, "benchmarks", "glue_reproduction.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _rows(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_paper_protocol_selects_the_best_dev_run_writes_server_files_and_resumes(tmp_path, capsys, encoder_dir):
  data_dir = write_tiny_glue_dir(str(tmp_path / "glue"), n_train=24, n_dev=8)
  write_tiny_glue_test_files(data_dir, n_train=24)
  out_md, runs_dir = tmp_path / "paper.md", tmp_path / "runs"
  argv = ["--protocol", "paper", "--data-dir", data_dir, "--encoder", encoder_dir, "--tasks", "rte",
          "--methods", "adapter", "full", "--learning-rates", "1e-3", "1e-2", "--fine-tune-learning-rates",
          "1e-3", "--adapter-sizes", "2", "--seeds", "0", "1", "--epochs", "1", "--max-train-examples", "16",
          "--runs-dir", str(runs_dir), "--out-md", str(out_md)]
  assert _benchmark().main(argv) == 0
  capsys.readouterr()
  result = json.loads((tmp_path / "paper.json").read_text())
  trials = result["trials"]
  assert sorted((t["method"], t["learning_rate"], t["seed"]) for t in trials) == [
      ("adapter", 1e-3, 0), ("adapter", 1e-3, 1), ("adapter", 1e-2, 0), ("adapter", 1e-2, 1),
      ("full", 1e-3, 0), ("full", 1e-3, 1)]
  adapter = [t for t in trials if t["method"] == "adapter"]
  best = max(t["score"] for t in adapter)
  assert result["best_run"]["adapter"]["scores"]["rte"] == best  # the paper's rule: the single best run
  chosen_lr = next(t["learning_rate"] for t in adapter if t["score"] == best)
  same_setting = [t["score"] for t in adapter if t["learning_rate"] == chosen_lr]
  assert result["best_run"]["adapter"]["sem"]["rte"] == pytest.approx(abs(same_setting[0] - same_setting[1]) / 2)
  text = out_md.read_text()
  assert "best dev score (the paper's selection rule)" in text and "best mean over seeds" in text
  # The server file comes from the best run's own artifact: one row per test example, in file order.
  submission = runs_dir / "submission"
  test_rows = _rows(os.path.join(data_dir, "RTE", "test.tsv"))
  rows = _rows(submission / "RTE.tsv")
  assert rows[0] == ["index", "prediction"] and [r[0] for r in rows[1:]] == [r[0] for r in test_rows[1:]]
  assert {r[1] for r in rows[1:]} <= {"entailment", "not_entailment"}
  assert os.path.basename(result["best_runs"]["rte"]) in {os.path.basename(d) for d in
                                                          os.listdir(runs_dir / "rte" / "adapter" / "trials")}
  before = (submission / "RTE.tsv").stat().st_mtime_ns
  # Resumed: no trial trains again and the earlier server files stay as they were.
  assert _benchmark().main(argv) == 0
  again = capsys.readouterr().out
  assert "[sweep] trial" not in again and "not written again" in again
  assert (submission / "RTE.tsv").stat().st_mtime_ns == before
  assert json.loads((tmp_path / "paper.json").read_text())["best_run"] == result["best_run"]
  # --report-only trains nothing and reads the same trials, a partial sweep's too.
  (runs_dir / "rte" / "layer-norm" / "trials").mkdir(parents=True)  # started, nothing finished yet
  assert _benchmark().main(argv + ["--methods", "adapter", "full", "layer-norm", "--report-only",
                                   "--out-md", str(tmp_path / "report.md")]) == 0
  assert "[sweep]" not in capsys.readouterr().out
  report = json.loads((tmp_path / "report.json").read_text())
  assert report["best_run"] == result["best_run"] and report["best_runs"] == result["best_runs"]
