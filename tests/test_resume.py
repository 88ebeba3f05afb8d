"""Step checkpoints: a run resumed after a crash, a crash inside a save or a kill -9
ends with exactly the uninterrupted run's metrics and weights; a NaN keeps the last good checkpoint."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from safetensors.numpy import load_file

from adapter_keras.config import AdapterConfig
from adapter_keras.tasks import classification_task
from adapter_keras.tasks.data import TextExamples
from adapter_keras.testing import tiny_sentiment_data, write_tiny_glue_dir, write_tiny_hf_bert
from adapter_keras.train import checkpoints, classification, loop
from adapter_keras.train.run import train_task
from adapter_keras.train.config import TrainConfig
from tests.conftest import REPO_ROOT

EVERY = 5  # checkpoint interval (steps) of the interrupted runs


class SimulatedCrash(Exception):
  """Stands for the process dying (raised where a kill would land)."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A tiny task with dropout on everywhere, and its uninterrupted reference run.

  The reference writes checkpoints only at epoch ends, so the comparisons also
  show that writing step checkpoints does not change training.
  """
  root = tmp_path_factory.mktemp("resume")
  encoder = write_tiny_hf_bert(str(root / "enc"), seed=0, dropout=0.1)
  texts, labels = tiny_sentiment_data(96, seed=0)
  dev_texts, dev_labels = tiny_sentiment_data(24, seed=1)
  config = TrainConfig(encoder=encoder, adapter=AdapterConfig(size=4), learning_rate=3e-3, epochs=2,
                       batch_size=8, seed=0)
  args = (classification_task("tiny", ("0", "1")), TextExamples(texts, labels),
          {"dev": TextExamples(dev_texts, dev_labels)}, config)
  reference = root / "reference"
  train_task(*args, out_dir=str(reference), checkpoint_every_steps=None, verbose=False)
  return dict(root=root, args=args, reference=reference)


def _train(setup, out, verbose=False):
  return train_task(*setup["args"], out_dir=str(out), checkpoint_every_steps=EVERY, verbose=verbose)


def _assert_same_run(out, reference):
  """Equal metrics.json (history included) but for the timing, equal trained weights, no checkpoint left."""
  metrics = [json.loads((d / "metrics.json").read_text()) for d in (out, reference)]
  for m in metrics:
    m.pop("seconds")
  assert metrics[0] == metrics[1]
  weights = [load_file(str(d / "artifact" / "weights.safetensors")) for d in (out, reference)]
  assert weights[0].keys() == weights[1].keys()
  for key in weights[0]:
    np.testing.assert_array_equal(weights[0][key], weights[1][key], err_msg=key)
  assert not (out / "checkpoint").exists()


def _latest(out):
  return json.loads((out / "checkpoint" / checkpoints.LATEST_FILE).read_text())


def _latest_step(name):
  return int(re.match(r"step-(\d+)", name).group(1))


def test_resume_after_a_crash_between_checkpoints_equals_the_uninterrupted_run(setup, monkeypatch, capsys):
  out = setup["root"] / "crash"
  count_step = loop._RunProgress.on_train_batch_end

  def crash_at_step_18(self, batch, logs=None):
    count_step(self, batch, logs)
    if self.global_step == 18:
      raise SimulatedCrash

  with monkeypatch.context() as m:
    m.setattr(loop._RunProgress, "on_train_batch_end", crash_at_step_18)
    with pytest.raises(SimulatedCrash):
      _train(setup, out)
  latest = _latest(out)
  progress = json.loads((out / "checkpoint" / latest["checkpoint"] / checkpoints.PROGRESS_FILE).read_text())
  assert latest["global_step"] == 15
  assert progress["epoch"] == 1 and progress["step_in_epoch"] > 0  # mid-epoch, after one dev evaluation
  assert not (out / "metrics.json").exists()
  capsys.readouterr()
  _train(setup, out)
  assert f"[train] resuming from step 15 of 24 (epoch 2) in {out / 'checkpoint'}" in capsys.readouterr().out
  _assert_same_run(out, setup["reference"])
  # A finished run re-invoked only reports.
  stamp = os.path.getmtime(out / "metrics.json")
  _, model = _train(setup, out, verbose=True)
  assert model is None and "already holds this finished run" in capsys.readouterr().out
  assert os.path.getmtime(out / "metrics.json") == stamp


@pytest.mark.parametrize("where", ["commit_directory", "write_json_atomic"])
def test_a_crash_inside_a_save_leaves_the_previous_checkpoint_usable(setup, monkeypatch, capsys, where):
  """The third save dies after writing its files (before the rename), or after
  the rename but before latest.json points at it: the second one is resumed."""
  out = setup["root"] / f"crash-in-{where}"
  real = getattr(checkpoints, where)
  names = []

  def crash_in_third_save(path, arg):
    names.append(os.path.basename(arg) if where == "commit_directory" else arg["checkpoint"])
    if len(names) == 3:
      raise SimulatedCrash
    return real(path, arg)

  with monkeypatch.context() as m:
    m.setattr(checkpoints, where, crash_in_third_save)
    with pytest.raises(SimulatedCrash):
      _train(setup, out)
  entries = os.listdir(out / "checkpoint")
  assert _latest(out)["checkpoint"] == names[1]
  if where == "commit_directory":  # fully written but never renamed into place
    assert any(e.startswith(f".{names[2]}.tmp-") for e in entries), entries
  else:  # in place but not referenced
    assert names[2] in entries
  capsys.readouterr()
  _train(setup, out)
  assert f"resuming from step {_latest_step(names[1])} of 24" in capsys.readouterr().out
  _assert_same_run(out, setup["reference"])


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(setup, monkeypatch):
  out = setup["root"] / "nan"

  def compile_with_nan_at_step_18(model, optimizer, **kwargs):
    cross_entropy = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss(labels, logits):  # NaN on the 18th step (iterations counts the steps before it)
      return cross_entropy(labels, logits) + tf.where(tf.equal(optimizer.iterations, 17), np.nan, 0.0)

    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"], **kwargs)
    return model

  monkeypatch.setattr(classification, "compile_task_model", compile_with_nan_at_step_18)
  with pytest.raises(loop.NonFiniteLossError, match="at step 18 of 24") as error:
    _train(setup, out)
  assert "the model keeps its best epoch's (epoch 1) weights" in str(error.value)
  assert f"the last good checkpoint, step 15, stays in {out / 'checkpoint'}" in str(error.value)
  assert _latest(out)["global_step"] == 15 and not (out / "metrics.json").exists()


def test_kill_9_mid_epoch_then_the_same_command_resumes_and_matches(tmp_path):
  encoder = write_tiny_hf_bert(str(tmp_path / "enc"), seed=0, dropout=0.1)
  glue = write_tiny_glue_dir(str(tmp_path / "glue"), n_train=200, n_dev=16)

  def command(out):
    return [sys.executable, "-m", "adapter_keras", "train", "--task", "sst2", "--data-dir", glue,
            "--encoder", encoder, "--adapter-size", "4", "--epochs", "2", "--batch-size", "4",
            "--learning-rate", "3e-3", "--checkpoint-every", "4", "--out", str(out)]

  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  out, reference = tmp_path / "killed", tmp_path / "reference"
  with open(tmp_path / "victim.log", "w", encoding="utf-8") as log:
    victim = subprocess.Popen(command(out), cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    uninterrupted = subprocess.Popen(command(reference), cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
    try:
      latest, deadline = out / "checkpoint" / checkpoints.LATEST_FILE, time.time() + 300
      while not latest.exists():  # kill it right after its first step checkpoint
        assert victim.poll() is None, (tmp_path / "victim.log").read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.01)
      os.kill(victim.pid, signal.SIGKILL)
      assert victim.wait(timeout=60) == -signal.SIGKILL
      reference_log, _ = uninterrupted.communicate(timeout=300)
    finally:
      for process in (victim, uninterrupted):
        if process.poll() is None:
          process.kill()
  assert uninterrupted.returncode == 0, reference_log[-3000:]
  assert not (out / "metrics.json").exists()
  resumed = subprocess.run(command(out), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  match = re.search(r"\[train\] resuming from step (\d+) of (\d+) \(epoch 1\) in (\S+)", resumed.stdout)
  assert match, resumed.stdout[-3000:]
  step, total = int(match.group(1)), int(match.group(2))
  assert 4 <= step < total // 2 and match.group(3) == str(out / "checkpoint")  # mid-epoch 1
  _assert_same_run(out, reference)
