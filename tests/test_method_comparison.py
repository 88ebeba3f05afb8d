"""benchmarks/method_comparison.py on the tiny fixtures: budget matching against counted parameters, the scores
phase's outputs (JSON, markdown, figure), resuming without training, and the resources phase."""
import importlib.util
import json
import os
import sys

import pytest

from tests.conftest import REPO_ROOT


def _benchmark():
  spec = importlib.util.spec_from_file_location(
      "method_comparison", os.path.join(REPO_ROOT, "benchmarks", "method_comparison.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # its dataclasses look their module up there
  spec.loader.exec_module(module)
  return module


# The tiny encoder has 24,512 parameters: budgets of 0.1% would be a few dozen.
TARGETS = ("5", "20", "50")


def test_plan_chooses_the_knob_whose_counted_parameters_are_closest_to_each_target(encoder_dir, capsys):
  import tensorflow as tf
  from adapter_keras.methods import parameter_report
  from adapter_keras.tasks import get_task
  from adapter_keras.train.run import build_trainable_model
  bench = _benchmark()
  assert bench.main(["--plan", "--encoder", encoder_dir, "--methods", "houlsby", "lora", "bitfit",
                     "--targets", *TARGETS]) == 0
  assert "houlsby-20%" in capsys.readouterr().out
  shape = bench.encoder_shape(encoder_dir)
  cells, _ = bench.plan_cells(["houlsby", "lora", "bitfit"], shape, [float(t) / 100 for t in TARGETS])
  task = get_task("rte")

  class Args:
    encoder, epochs, max_train_examples = encoder_dir, 1, None

  def counted(cell, value):
    """Trained parameters of the run's own model, the head taken out."""
    cell = bench.Cell(cell.method, cell.target, value, 0, shape.base_params)
    model = build_trainable_model(bench.train_config(Args, cell, 1e-3, 0), task, tf.distribute.get_strategy())
    report = parameter_report(model)
    return report.trained_params - report.head_params

  assert {c.method for c in cells} == {"houlsby", "lora", "bitfit"}
  for cell in cells:
    assert counted(cell, cell.value) == cell.trained_params  # the formula is the count
    if cell.value is None:
      continue
    target = cell.target * shape.base_params
    miss = abs(cell.trained_params - target)
    for neighbour in (cell.value - 1, cell.value + 1):
      if neighbour >= 1:
        assert abs(bench.formula_params(bench.METHODS[cell.method], shape, neighbour) - target) >= miss


def test_scores_are_written_per_task_and_a_second_run_trains_nothing(tmp_path, encoder_dir, glue_dir, capsys):
  bench = _benchmark()
  out_json, out_md, figure = tmp_path / "mc.json", tmp_path / "mc.md", tmp_path / "fig" / "mc.png"
  runs_dir = tmp_path / "runs"
  argv = ["--encoder", encoder_dir, "--data-dir", glue_dir, "--tasks", "rte", "--methods", "houlsby", "lora",
          "bitfit", "--targets", "20", "--seeds", "0", "1", "--epochs", "1", "--max-train-examples", "16",
          "--learning-rates", "houlsby=1e-3,1e-2", "lora=1e-3", "bitfit=1e-3", "--runs-dir", str(runs_dir),
          "--out-json", str(out_json), "--out-md", str(out_md), "--figure", str(figure)]
  assert bench.main(argv) == 0
  out = capsys.readouterr().out
  result = json.loads(out_json.read_text())
  cells = {c["key"]: c for c in result["cells"]}
  houlsby = [k for k, c in cells.items() if c["method"] == "houlsby"]
  assert houlsby and "bitfit" in cells and any(c["method"] == "lora" for c in cells.values())
  assert result["tasks"]["rte"]["status"] == "complete"
  scores = result["scores"]["rte"]
  assert set(scores) == set(cells)
  # First-seed learning-rate search: both rates with seed 0, seed 1 only at the better one.
  cell = scores[houlsby[0]]
  assert cell["runs"] == 3 and len(cell["by_learning_rate"]) == 2
  seed0 = {lr: by_seed["0"] for lr, by_seed in cell["by_learning_rate"].items()}
  best_lr = max(seed0, key=seed0.get)
  assert set(cell["by_learning_rate"][best_lr]) == {"0", "1"}
  assert cell["best_run"]["score"] == max(s for by_seed in cell["by_learning_rate"].values() for s in by_seed.values())
  mean_scores = list(cell["by_learning_rate"][best_lr].values())
  assert cell["mean"] == pytest.approx(sum(mean_scores) / 2) and cell["n_seeds"] == 2
  assert f"[method_comparison] rte {cells[houlsby[0]]['label']} lr1e-3 seed0: accuracy" in out
  text = out_md.read_text()
  assert "rte complete" in text and cells[houlsby[0]]["label"] in text and figure.exists()
  run_dirs = sorted(str(p) for p in runs_dir.rglob("metrics.json"))
  # Resumed: every run is reused from its directory, nothing new, the same results.
  assert bench.main(argv) == 0
  again = capsys.readouterr().out
  assert "runs trained 0, reused" in again and "(reused)" in again
  assert sorted(str(p) for p in runs_dir.rglob("metrics.json")) == run_dirs
  assert json.loads(out_json.read_text())["scores"] == result["scores"]


def test_resources_are_measured_per_cell(tmp_path, encoder_dir, glue_dir, capsys):
  bench = _benchmark()
  out_json = tmp_path / "mc.json"
  argv = ["--encoder", encoder_dir, "--data-dir", glue_dir, "--tasks", "rte", "--methods", "lora",
          "--targets", "20", "--resources", "--report-only", "--resources-examples", "32", "--resources-rounds", "1",
          "--runs-dir", str(tmp_path / "runs"), "--out-json", str(out_json), "--out-md", str(tmp_path / "mc.md"),
          "--figure", str(tmp_path / "mc.png")]
  assert bench.main(argv) == 0
  capsys.readouterr()
  result = json.loads(out_json.read_text())
  assert result["tasks"]["rte"]["status"] == "missing" and not result["scores"]
  measured = result["resources"]["cells"]
  assert set(measured) == {c["key"] for c in result["cells"]}
  for key, r in measured.items():
    assert r["train_examples_per_s"] > 0 and r["peak_train_memory_bytes"] > 0 and r["artifact_bytes"] > 0
    assert r["infer_over_base_bs1"] > 0 and r["infer_over_base_bs32"] > 0
    assert r["infer_over_base_bs1_merged"] > 0 and r["infer_over_base_bs32_merged"] > 0  # LoRA merges
  assert "Resources (sst2" in (tmp_path / "mc.md").read_text()
