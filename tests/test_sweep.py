"""Sweep: presets, selection with mean/s.e.m., resume, chief + worker on loopback."""
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
from adapter_keras.train.sweep import PRESETS, SweepGrid, select_best
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
  assert set(PRESETS) == {"paper-glue", "paper-extra"}
  with pytest.raises(ValueError):
    SweepGrid([1e-3, 1e-3], [1], [8], [0])


def test_selection_uses_the_mean_over_seeds_and_reports_sem():
  rows = [dict(learning_rate=1e-3, epochs=3, adapter_size=8, seed=s, score=v) for s, v in
          ((0, 0.90), (1, 0.50))] + [dict(learning_rate=1e-4, epochs=3, adapter_size=8, seed=s, score=v)
                                     for s, v in ((0, 0.80), (1, 0.78))]
  best = select_best(rows)
  assert best["best_setting"]["learning_rate"] == 1e-4
  assert best["best_setting"]["mean"] == pytest.approx(0.79)
  assert best["best_setting"]["sem"] == pytest.approx(0.01)
  assert best["best_trial"]["score"] == 0.90


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
  assert json.loads(first.strip().splitlines()[-1]) == best
  assert cli.main(_sweep_args(data, out)) == 0
  second = capsys.readouterr().out
  assert "4 already completed" in second and "[sweep] trial" not in second


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
