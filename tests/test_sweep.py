"""Sweep: presets, both selection rules with s.e.m., variable fine-tuning, resume, chief + worker on loopback."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from adapter_keras import cli
from adapter_keras.testing import write_tiny_glue_dir, write_tiny_hf_bert
from adapter_keras.train.sweep import PRESETS, SweepGrid, select_best, top_layers_for_depth
from tests.conftest import REPO_ROOT
from tests.helpers import run_keras_tuner_chief_and_worker


def test_presets_are_the_papers_grids():
  glue = SweepGrid.from_preset("paper-glue")
  assert (list(glue.learning_rates), list(glue.epochs), list(glue.adapter_sizes), len(glue.seeds)) == (
      [3e-5, 3e-4, 3e-3], [3, 20], [8, 64, 256], 5)
  assert glue.size == 3 * 2 * 3 * 5
  extra = SweepGrid.from_preset("paper-extra")
  assert list(extra.learning_rates) == [1e-5, 3e-5, 1e-4, 3e-3]
  assert list(extra.adapter_sizes) == [2, 4, 8, 16, 32, 64] and list(extra.epochs) == [20, 50, 100]
  assert SweepGrid.from_preset("paper-glue", seeds=[0, 1]).size == 36
  assert set(PRESETS) == {"paper-glue", "paper-extra", "paper-variable-ft"}
  with pytest.raises(ValueError):
    SweepGrid([1e-3, 1e-3], [1], [8], [0])


def test_the_two_selection_rules_disagree_and_both_report_their_settings_sem():
  # lr 1e-3 has the best single run (0.90) but the worse mean (0.70); lr 1e-4 the better mean (0.79).
  rows = [dict(learning_rate=1e-3, epochs=3, adapter_size=8, seed=s, score=v) for s, v in
          ((0, 0.90), (1, 0.50))] + [dict(learning_rate=1e-4, epochs=3, adapter_size=8, seed=s, score=v)
                                     for s, v in ((0, 0.80), (1, 0.78))]
  paper = select_best(rows)  # the default is the paper's rule
  assert paper["select"] == "best-run" and paper["best_setting"] == paper["rules"]["best-run"]
  assert paper["best_setting"]["learning_rate"] == 1e-3 and paper["best_setting"]["score"] == 0.90
  assert paper["best_setting"]["seed"] == 0
  assert paper["best_setting"]["mean"] == pytest.approx(0.70)
  assert paper["best_setting"]["sem"] == pytest.approx(0.20)
  by_mean = select_best(rows, "best-mean")
  assert by_mean["best_setting"] == by_mean["rules"]["best-mean"] == paper["rules"]["best-mean"]
  assert by_mean["best_setting"]["learning_rate"] == 1e-4
  assert by_mean["best_setting"]["mean"] == by_mean["best_setting"]["score"] == pytest.approx(0.79)
  assert by_mean["best_setting"]["sem"] == pytest.approx(0.01)
  assert by_mean["best_trial"]["score"] == 0.90
  with pytest.raises(ValueError, match="best-run"):
    select_best(rows, "best-median")
  diverged = rows + [dict(learning_rate=1e-2, epochs=3, adapter_size=8, seed=0, score=float("nan"))]
  assert select_best(diverged)["rules"] == paper["rules"]  # a NaN score never wins


def test_report_fills_cells_by_either_rule_with_the_settings_sem():
  from adapter_keras.analysis.report import markdown_table

  def run(lr, seed, score):
    return dict(task="rte", method="adapter", score=score, primary_metric="accuracy", base_params=100,
                trained_params=2, trained_fraction=0.02,
                config=dict(learning_rate=lr, seed=seed, adapter=dict(size=8)))

  runs = [run(1e-3, 0, 0.90), run(1e-3, 1, 0.50), run(1e-4, 0, 0.80), run(1e-4, 1, 0.78)]
  table, summary = markdown_table(runs)
  assert "| adapter | 90.0 ± 20.0 |" in table
  assert summary["adapter"]["scores"]["rte"] == 0.90 and summary["adapter"]["sem"]["rte"] == pytest.approx(0.2)
  table, summary = markdown_table(runs, select="best-mean")
  assert "| adapter | 79.0 ± 1.0 |" in table and summary["adapter"]["scores"]["rte"] == pytest.approx(0.79)


@pytest.mark.parametrize("depth, expected", [(12, [1, 2, 3, 5, 7, 9, 11, 12]), (6, [1, 2, 3, 4, 5, 6]),
                                             (2, [1, 2])])
def test_variable_fine_tuning_preset_maps_the_papers_layers_onto_the_depth(depth, expected):
  assert top_layers_for_depth(depth) == expected
  grid = SweepGrid.from_preset("paper-variable-ft", num_layers=depth)
  assert list(grid.top_ks) == expected and list(grid.adapter_sizes) == []
  assert (list(grid.learning_rates), list(grid.epochs)) == ([3e-5, 3e-4, 3e-3], [3, 20])
  assert grid.size == 3 * 2 * len(expected) * 5
  assert SweepGrid.from_preset("paper-variable-ft", num_layers=depth, seeds=[0]).size == 6 * len(expected)


def test_variable_fine_tuning_preset_needs_the_depth_and_no_adapter_sizes():
  with pytest.raises(ValueError, match="num_layers"):
    SweepGrid.from_preset("paper-variable-ft")
  with pytest.raises(ValueError, match="no adapter sizes"):
    SweepGrid.from_preset("paper-variable-ft", num_layers=2, adapter_sizes=[8])


@pytest.fixture(scope="module")
def data(tmp_path_factory, encoder_dir):
  root = tmp_path_factory.mktemp("sweepdata")
  return write_tiny_glue_dir(str(root / "glue"), n_train=24, n_dev=8), encoder_dir


def _sweep_args(data, out):
  glue_dir, encoder_dir = data
  return ["sweep", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
          "--learning-rates", "1e-3", "1e-2", "--epochs", "1", "--adapter-sizes", "2", "--seeds", "0", "1",
          "--batch-size", "8", "--out", str(out)]


def test_sweep_writes_results_and_resumes_without_rerunning(tmp_path, capsys, data):
  out = tmp_path / "sweep"
  assert cli.main(_sweep_args(data, out) + ["--json"]) == 0
  first = capsys.readouterr().out
  assert first.count("[sweep] trial") == 2 * 4  # a start and an end line per trial
  with open(out / "results.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4
  assert {(r["learning_rate"], r["seed"]) for r in rows} == {("0.001", "0"), ("0.001", "1"),
                                                             ("0.01", "0"), ("0.01", "1")}
  best = json.loads((out / "best.json").read_text())
  assert best["best_setting"]["n_seeds"] == 2 and best["trials"] == 4
  assert best["select"] == "best-run" and set(best["rules"]) == {"best-run", "best-mean"}
  assert best["rules"]["best-run"]["score"] == max(float(r["score"]) for r in rows)
  assert json.loads(first.strip().splitlines()[-1]) == best
  assert cli.main(_sweep_args(data, out)) == 0
  second = capsys.readouterr().out
  assert "4 already completed" in second and "[sweep] trial" not in second


def test_save_artifacts_keeps_each_trials_best_model_which_scores_its_recorded_score(tmp_path, capsys, data):
  out = tmp_path / "sweep"
  args = _sweep_args(data, out)
  args[args.index("--seeds") + 1:args.index("--seeds") + 3] = ["0"]  # two trials: the two learning rates
  assert cli.main(args + ["--save-artifacts", "--json"]) == 0
  best = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  with open(out / "results.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 and all((out / r["run_dir"] / "artifact" / "manifest.json").exists() for r in rows)
  chosen = best["rules"]["best-run"]
  assert chosen["run_dir"] == next(r["run_dir"] for r in rows if float(r["score"]) == chosen["score"])
  glue_dir, encoder_dir = data
  assert cli.main(["evaluate", "--artifact", str(out / chosen["run_dir"] / "artifact"), "--encoder",
                   encoder_dir, "--task", "sst2", "--data-dir", glue_dir, "--json"]) == 0
  metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["metrics"]
  assert list(metrics.values())[0]["accuracy"] == pytest.approx(chosen["score"], abs=1e-6)


def _grid_tuner(grid, directory):
  """The sweep's tuner on `grid`, its project under `directory` (reloaded if there), not training."""
  from adapter_keras.train import sweep  # pylint: disable=import-outside-toplevel
  return sweep._make_tuner_class()(sweep._grid_oracle(grid, "adapter"), None, None, None, None,
                                   str(directory / "trials"), directory=str(directory), project_name="tuner",
                                   overwrite=False)


def _run_trials(oracle, count=None):
  """Creates and completes trials like a search would; their values, until `count` or the grid ends."""
  values = []
  while count is None or len(values) < count:
    trial = oracle.create_trial("tuner0")
    if trial.status == "STOPPED":
      break
    oracle.update_trial(trial.trial_id, {"score": 0.5})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
    values.append(tuple(sorted(trial.hyperparameters.values.items())))
  return values


@pytest.mark.parametrize("stopped_after", [1, 2, 3])
def test_a_sweep_stopped_between_trials_runs_the_rest_of_the_grid_when_resumed(tmp_path, stopped_after):
  """keras-tuner's grid oracle forgets its place on reload; a resumed sweep must not end early."""
  grid = SweepGrid([1e-3, 1e-2], [1], [2, 4], [0])
  tuner = _grid_tuner(grid, tmp_path)
  first = _run_trials(tuner.oracle, stopped_after)
  tuner.save()  # as the search does after every trial; a new tuner then reloads the project
  rest = _run_trials(_grid_tuner(grid, tmp_path).oracle)
  assert len(first) == stopped_after and len(rest) == grid.size - stopped_after
  assert len(set(first + rest)) == grid.size


def test_chief_and_worker_run_every_trial_once(tmp_path, data):
  out = tmp_path / "distributed"
  command = [sys.executable, "-m", "adapter_keras"] + _sweep_args(data, out)
  chief_out, worker_out = run_keras_tuner_chief_and_worker(command, REPO_ROOT, chief_timeout=120)
  started = [line for line in worker_out.splitlines() if line.startswith("[sweep] trial") and "=" in line]
  assert len(started) == 4 and len(set(started)) == 4
  with open(out / "results.csv", encoding="utf-8") as f:
    assert len(list(csv.DictReader(f))) == 4


def test_kill_9_mid_trial_then_the_same_sweep_resumes_the_trial_and_matches(tmp_path):
  """A sweep killed inside a trial, right after that trial's first step
  checkpoint: the same command re-run resumes the trial (not from step 0),
  finishes the grid, and every trial scores what an uninterrupted sweep's does."""
  glue = write_tiny_glue_dir(str(tmp_path / "glue"), n_train=160, n_dev=16)
  encoder = write_tiny_hf_bert(str(tmp_path / "enc"), seed=0, dropout=0.1)

  def command(out):
    return [sys.executable, "-m", "adapter_keras", "sweep", "--task", "sst2", "--data-dir", glue,
            "--encoder", encoder, "--learning-rates", "3e-3", "1e-2", "--epochs", "2", "--adapter-sizes", "4",
            "--seeds", "0", "--batch-size", "4", "--checkpoint-every", "5", "--out", str(out)]

  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  out, reference = tmp_path / "killed", tmp_path / "reference"
  victim = subprocess.Popen(command(out), cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  uninterrupted = subprocess.Popen(command(reference), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.time() + 300
    while not list(out.glob("trials/*/checkpoint/latest.json")):
      assert victim.poll() is None and time.time() < deadline
      time.sleep(0.01)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    reference_log, _ = uninterrupted.communicate(timeout=600)
  finally:
    for process in (victim, uninterrupted):
      if process.poll() is None:
        process.kill()
  assert uninterrupted.returncode == 0, reference_log[-3000:]
  assert not (out / "results.csv").exists()
  resumed = subprocess.run(command(out), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  assert re.search(r"resuming from step [1-9]\d* of \d+", resumed.stdout), resumed.stdout[-3000:]

  def scores(directory):
    with open(directory / "results.csv", encoding="utf-8") as f:
      return sorted((row["learning_rate"], row["score"]) for row in csv.DictReader(f))

  assert len(scores(out)) == 2 and scores(out) == scores(reference)


def test_variable_fine_tuning_sweep_through_the_cli_then_report_reads_it(tmp_path, capsys, data):
  glue_dir, encoder_dir = data  # a 2-layer encoder: top 1 and top 2 layers
  out = tmp_path / "variable-ft"
  args = ["sweep", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
          "--preset", "paper-variable-ft", "--learning-rates", "1e-3", "--epochs", "1", "--seeds", "0",
          "--batch-size", "8", "--out", str(out), "--json"]
  assert cli.main(args) == 2  # the preset tunes layers, so an adapter sweep is refused
  assert "add --method top-k" in capsys.readouterr().err
  assert cli.main(args + ["--method", "top-k", "--select", "best-mean"]) == 0
  best = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  with open(out / "results.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert sorted(r["top_k"] for r in rows) == ["1", "2"] and best["select"] == "best-mean"
  assert best["best_setting"] == best["rules"]["best-mean"] and best["best_setting"]["top_k"] in (1, 2)
  assert cli.main(["report", str(out), "--json"]) == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert set(summary) == {"top-1", "top-2"}
  assert {summary[label]["scores"]["sst2"] for label in summary} == {float(r["score"]) for r in rows}
