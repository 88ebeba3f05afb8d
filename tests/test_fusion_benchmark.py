"""benchmarks/fusion.py on the tiny fixtures: sources, the three cells of a target, the outputs (JSON, markdown,
the fusion attention figure), and a second invocation that trains nothing."""
import importlib.util
import json
import os

from tests.conftest import REPO_ROOT


def _benchmark():
  spec = importlib.util.spec_from_file_location("fusion_benchmark", os.path.join(REPO_ROOT, "benchmarks", "fusion.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_fusion_benchmark_trains_sources_and_cells_then_resumes(glue_dir, encoder_dir, tmp_path, capsys):
  bench = _benchmark()
  argv = ["--encoder", encoder_dir, "--data-dir", glue_dir, "--sources", "sst2", "stsb", "rte", "--targets", "rte",
          "--seeds", "0", "--epochs", "1", "--max-train-examples", "16", "--source-train-examples", "16",
          "--learning-rates", "adapter=1e-2", "fusion=1e-2", "full=1e-3", "--runs-dir", str(tmp_path / "runs"),
          "--out-json", str(tmp_path / "fusion.json"), "--out-md", str(tmp_path / "fusion.md"),
          "--figures-dir", str(tmp_path / "figures")]
  assert bench.main(argv) == 0
  out = capsys.readouterr().out
  assert "runs trained 6, reused 0" in out  # 3 sources, 3 cells x 1 learning rate x 1 seed
  result = json.load(open(tmp_path / "fusion.json"))
  assert result["targets"]["rte"]["status"] == "complete" and set(result["scores"]["rte"]) == {"adapter", "fusion",
                                                                                               "full"}
  weights = result["fusion_weights"]["rte"]
  assert weights["sources"] == ["sst2", "stsb"] and os.path.exists(weights["png"])
  text = open(tmp_path / "fusion.md").read()
  assert "| rte (complete) |" in text and "fusion_rte.png" in text
  assert bench.main(argv) == 0
  assert "runs trained 0, reused 6" in capsys.readouterr().out
