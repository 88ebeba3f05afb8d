"""`--strategy multi-worker`: two worker processes on loopback (MultiWorkerMirroredStrategy from TF_CONFIG)
train the single-process run with the same global batch; only the chief writes into --out, the other
worker leaves nothing behind; after a kill -9 both resume from the chief's last step checkpoint.

Every process has a deadline and is killed in a `finally`: a worker whose peer died fails at its
next collective op (on loopback within seconds) or, across machines, may wait in it until the
coordination service gives up, so nothing here waits on a worker without a limit.
"""
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from adapter_keras.train import checkpoints
from tests.conftest import REPO_ROOT, free_port

# The two workers sum their gradients in another order than one process does, so weights and metrics
# agree to float rounding, not bit for bit (measured: metrics 2.4e-6 relative, weights 1.2e-7 absolute).
RTOL, ATOL = 1e-5, 1e-6
TIMEOUT = 300  # seconds all the processes of this file may run, together

# The command line, with the classification head's dropout off. Its rate is fixed (BERT's 0.1, no
# flag); under a distribution strategy each replica draws the masks of its half of the batch, so no
# two strategies can draw the same ones. (The tiny encoder itself has dropout 0.)
LAUNCHER = ("import dataclasses, sys\n"
            "from adapter_keras.cli import train\n"
            "config_from_args = train._train_config_from_args\n"
            "train._train_config_from_args = lambda args: dataclasses.replace(config_from_args(args), "
            "dropout_rate=0.0)\n"
            "from adapter_keras.cli import main\n"
            "sys.exit(main())\n")

# STS-B: its dev metrics (Pearson, Spearman) are continuous, so an evaluation on part of the dev set
# could not pass for the full one, and on this data the best epoch (by Spearman) is the first.
TASK = "stsb"
TOTAL_STEPS = 12  # 48 training examples (the tiny GLUE STS-B), global batch 8, 2 epochs


def _command(encoder, glue, out, strategy):
  return [sys.executable, "-c", LAUNCHER, "train", "--task", TASK, "--data-dir", glue, "--encoder", encoder,
          "--adapter-size", "4", "--epochs", "2", "--batch-size", "8", "--learning-rate", "1e-2",
          "--checkpoint-every", "2", "--strategy", strategy, "--out", str(out), "--json"]


def _env(tmpdir, tf_config=None):
  """CPU only; TMPDIR pointed at a directory of the test's, to see what a process leaves there."""
  os.makedirs(tmpdir, exist_ok=True)
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
             TMPDIR=str(tmpdir))
  env.pop("TF_CONFIG", None)
  if tf_config is not None:
    env["TF_CONFIG"] = json.dumps(tf_config)
  return env


def _free_ports(n):
  ports = set()
  while len(ports) < n:
    ports.add(free_port())
  return sorted(ports)


class Processes:
  """Started processes with their logs; every one still running is killed on exit."""

  def __init__(self, root, deadline):
    self.root, self.deadline = root, deadline
    self.procs, self.logs = {}, {}

  def start(self, name, command, env):
    self.logs[name] = self.root / f"{name}.log"
    with open(self.logs[name], "w", encoding="utf-8") as log:
      self.procs[name] = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

  def start_workers(self, prefix, command, ports):
    """Worker i of the cluster on `ports` as `prefix`i, with TMPDIR root/tmp-`prefix`i."""
    for index in range(len(ports)):
      tf_config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                   "task": {"type": "worker", "index": index}}
      self.start(f"{prefix}{index}", command, _env(self.root / f"tmp-{prefix}{index}", tf_config))

  def log(self, name):
    return self.logs[name].read_text()

  def alive(self, name):
    assert time.time() < self.deadline, f"{name} is still running after {TIMEOUT}s"
    code = self.procs[name].poll()
    assert code is None or code == 0, f"{name} exited with {code}:\n{self.log(name)[-4000:]}"
    return code is None

  def kill(self, name):
    self.procs[name].kill()
    return self.procs[name].wait(timeout=30)

  def finish(self, names):
    """Waits for each to exit 0; their logs."""
    for name in names:
      code = self.procs[name].wait(timeout=max(1.0, self.deadline - time.time()))
      assert code == 0, f"{name} exited with {code}:\n{self.log(name)[-4000:]}"
    return {name: self.log(name) for name in names}

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    for proc in self.procs.values():
      if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def _last_json(log):
  """The --json result (TensorFlow may log after it, at exit)."""
  return json.loads([line for line in log.splitlines() if line.startswith("{")][-1])


def _assert_close(actual, expected, where="metrics.json"):
  """Equal structure and non-float values; floats within RTOL/ATOL."""
  if isinstance(expected, dict):
    assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
    for key in expected:
      _assert_close(actual[key], expected[key], f"{where}[{key!r}]")
  elif isinstance(expected, list):
    assert isinstance(actual, list) and len(actual) == len(expected), where
    for i, (a, e) in enumerate(zip(actual, expected)):
      _assert_close(a, e, f"{where}[{i}]")
  elif isinstance(expected, float):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL, err_msg=where)
  else:
    assert actual == expected, where


def _assert_same_run(out, reference, strategies):
  """metrics.json within tolerance (but the timing and the strategy), the trained weights too."""
  runs = [json.loads((d / "metrics.json").read_text()) for d in (out, reference)]
  for run, strategy in zip(runs, strategies):
    run.pop("seconds")
    assert run["config"].pop("strategy") == strategy
  _assert_close(runs[0], runs[1])
  weights = [load_file(str(d / "artifact" / "weights.safetensors")) for d in (out, reference)]
  assert weights[0].keys() == weights[1].keys()
  for key in weights[0]:
    np.testing.assert_allclose(weights[0][key], weights[1][key], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, encoder_dir, glue_dir):
  """All side by side (on 2 cores this halves the file's time): the single-process reference, an
  uninterrupted two-worker run, and a two-worker run whose non-chief is killed with SIGKILL right after
  the first step checkpoint, then its chief, as an orchestrator would (on loopback the chief's next
  collective op fails within seconds, "Socket closed"; across machines it may wait up to the
  coordination service's heartbeat timeout), then both started again with the same command, TF_CONFIG
  and TMPDIR."""
  root = tmp_path_factory.mktemp("multi_worker")
  command = functools.partial(_command, encoder_dir, glue_dir)
  ports = _free_ports(4)
  seen = {}
  with Processes(root, deadline=time.time() + TIMEOUT) as procs:
    procs.start("reference", command(root / "reference", "default"), _env(root / "tmp-reference"))
    procs.start_workers("worker", command(root / "out", "multi-worker"), ports[:2])
    procs.start_workers("first", command(root / "killed", "multi-worker"), ports[2:])
    while not (root / "killed" / "checkpoint" / checkpoints.LATEST_FILE).exists():
      assert procs.alive("first0") and procs.alive("first1"), "the run to kill ended before its first checkpoint"
      time.sleep(0.01)
    seen["first1"] = procs.kill("first1")
    seen["first0"] = procs.kill("first0")
    seen["finished before the restart"] = (root / "killed" / "metrics.json").exists()
    seen["left in the non-chief's TMPDIR"] = sorted(os.listdir(root / "tmp-first1"))
    for i in range(2):
      os.rename(root / f"tmp-first{i}", root / f"tmp-second{i}")
    procs.start_workers("second", command(root / "killed", "multi-worker"), ports[2:])
    logs = procs.finish(["reference", "worker0", "worker1", "second0", "second1"])
  return dict(root=root, logs=logs, seen=seen)


def test_two_workers_train_the_single_process_run_and_only_the_chief_writes(runs):
  root, logs, out = runs["root"], runs["logs"], runs["root"] / "out"
  _assert_same_run(out, root / "reference", ("multi-worker", "default"))
  # Global batch 8 split over the two workers: 6 steps per epoch, as in one process, and the
  # progress lines show the same running loss (not summed over the workers).
  last_losses = [float(re.search(rf"step {TOTAL_STEPS}/{TOTAL_STEPS} loss (\S+)", logs[name]).group(1))
                 for name in ("worker0", "worker1", "reference")]
  np.testing.assert_allclose(last_losses[:2], last_losses[2], atol=2e-4)
  # Every worker scored the full dev set after each epoch: the same metrics, the same best epoch.
  summaries = [_last_json(logs[f"worker{i}"]) for i in range(2)]
  assert summaries[0] == summaries[1] and summaries[0]["out"] == str(out)
  assert re.findall(r"epoch \d dev: .*", logs["worker0"]) == re.findall(r"epoch \d dev: .*", logs["worker1"])
  # Only --out holds files, the chief's, and no worker's temporary ones are in it; the non-chief
  # deleted its temporary directories.
  assert sorted(os.listdir(out)) == ["artifact", "logs", "metrics.json", "run.json"]
  assert not [d for _, dirs, _ in os.walk(out) for d in dirs if "temp" in d]
  assert os.listdir(root / "tmp-worker1") == []


def test_kill_9_then_both_workers_resume_from_the_chiefs_checkpoint(runs):
  root, logs, seen, out = runs["root"], runs["logs"], runs["seen"], runs["root"] / "killed"
  assert seen["first1"] == -signal.SIGKILL and not seen["finished before the restart"]
  assert seen["first0"] in (-signal.SIGKILL, 1)  # killed, or already failed on its peer's death
  # Killed, the non-chief could not delete its scratch directory...
  assert [e for e in seen["left in the non-chief's TMPDIR"] if e.startswith("adapter_keras-")]
  resumed = [re.search(rf"\[train\] resuming from step (\d+) of {TOTAL_STEPS} \(epoch \d\) in (\S+)", logs[name])
             for name in ("second0", "second1")]
  assert resumed[0] and resumed[1], logs["second0"][-3000:] + logs["second1"][-3000:]
  assert 2 <= int(resumed[0].group(1)) < TOTAL_STEPS and resumed[0].group(2) == str(out / "checkpoint")
  assert resumed[1].groups() == resumed[0].groups()  # the non-chief restored the chief's checkpoint
  _assert_same_run(out, root / "out", ("multi-worker", "multi-worker"))
  assert sorted(os.listdir(out)) == ["artifact", "logs", "metrics.json", "run.json"]
  # ... the restarted one deleted it (TensorFlow's own autograph files of the killed process remain).
  assert not [e for e in os.listdir(root / "tmp-second1") if e.startswith("adapter_keras-")]
