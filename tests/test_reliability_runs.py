"""A run's life beside other processes: two runs on one --out, workers and TPUs that never answer, TF_CONFIG.

Each case runs `adapter-keras train` as a user runs it, in a fresh process, and every process has a
deadline: these are the cases that used to hang (a missing worker, an unreachable TPU) or race (two
runs writing one directory).
"""
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from adapter_keras.train import distribute, run_dir
from tests.conftest import REPO_ROOT, free_port
from tests.helpers import assert_one_error_line, run_cli, run_cli_subprocess

# The first run, held right after it took --out's lock (before run.json) until GATE exists.
LOCK_HOLDER = ("import os, sys, time\n"
               "from adapter_keras.train import run_dir\n"
               "write_run_file = run_dir.write_run_file\n"
               "def gated(*args):\n"
               "  print('holding the lock', flush=True)\n"
               "  while not os.path.exists(os.environ['GATE']):\n"
               "    time.sleep(0.1)\n"
               "  write_run_file(*args)\n"
               "run_dir.write_run_file = gated\n"
               "from adapter_keras.cli import main\n"
               "sys.exit(main())\n")


def _train(encoder_dir, glue_dir, out, *extra):
  return ["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir, "--adapter-size", "2",
          "--epochs", "1", "--out", str(out), *extra]


def _env(**extra):
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", **extra)
  if "TF_CONFIG" not in extra:
    env.pop("TF_CONFIG", None)
  return env


class Lines:
  """A started process whose stdout and stderr lines are read as they come."""

  def __init__(self, command, env):
    self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
    self.lines, self.seen = queue.Queue(), []
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.process.stdout:
      self.lines.put(line)

  def wait_for(self, text, timeout):
    """Returns once a line containing `text` was printed; fails after `timeout` s or when the process ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      try:
        line = self.lines.get(timeout=0.5)
      except queue.Empty:
        assert self.process.poll() is None, "".join(self.seen)[-3000:]
        continue
      self.seen.append(line)
      if text in line:
        return
    raise AssertionError(f"no line with {text!r} after {timeout} s:\n{''.join(self.seen)[-3000:]}")

  def output(self):
    while not self.lines.empty():
      self.seen.append(self.lines.get())
    return "".join(self.seen)

  def kill(self):
    if self.process.poll() is None:
      self.process.kill()
      self.process.wait(timeout=30)


# ---------------------------------------------------------------- two runs on one --out


def test_a_second_run_on_the_same_out_fails_naming_the_first_ones_pid(encoder_dir, glue_dir, tmp_path):
  out, gate = tmp_path / "run", tmp_path / "gate"
  first = Lines([sys.executable, "-c", LOCK_HOLDER, *_train(encoder_dir, glue_dir, out, "--json")],
                _env(GATE=str(gate)))
  try:
    first.wait_for("holding the lock", timeout=180)
    second = run_cli_subprocess(_train(encoder_dir, glue_dir, out), timeout=180)
    assert second.returncode == 2
    assert_one_error_line(second, f"--out {out} is in use by another training run (pid {first.process.pid})")
    assert sorted(os.listdir(out)) == [run_dir.LOCK_FILE]  # the second wrote nothing
    gate.write_text("")
    assert first.process.wait(timeout=180) == 0, first.output()[-3000:]
  finally:
    first.kill()
  assert json.loads(first.output().strip().splitlines()[-1])["metrics"]
  assert (out / "metrics.json").exists() and not (out / run_dir.LOCK_FILE).exists()
  # The finished run is recognised as before: the same command only reports it.
  status, stdout, stderr = run_cli(_train(encoder_dir, glue_dir, out))
  assert status == 0 and "already holds this finished run" in stdout, stderr


def test_a_lock_file_left_by_a_killed_run_is_no_obstacle(encoder_dir, glue_dir, tmp_path):
  """The lock is the flock, not the file: a file whose holder is gone counts as an empty --out."""
  out = tmp_path / "run"
  out.mkdir()
  (out / run_dir.LOCK_FILE).write_text("999999\n")
  status, _, stderr = run_cli(_train(encoder_dir, glue_dir, out))
  assert status == 0, stderr
  assert (out / "metrics.json").exists() and not (out / run_dir.LOCK_FILE).exists()


def test_refused_input_leaves_no_out_even_though_the_lock_made_it(encoder_dir, glue_dir, tmp_path):
  """An encoder that fails to load fails inside the run, after it took the lock in a new --out (and its parent)."""
  broken = shutil.copytree(encoder_dir, tmp_path / "encoder")
  (broken / "config.json").write_text("[1, 2]")
  status, _, stderr = run_cli(_train(str(broken), glue_dir, tmp_path / "new" / "run"))
  assert status == 2 and stderr.startswith("error: ") and "config.json holds a JSON list" in stderr, stderr
  assert sorted(os.listdir(tmp_path)) == ["encoder"]


# ---------------------------------------------------------------- peers that never answer


def _two_workers(index):
  ports = [free_port(), free_port()]
  while ports[1] == ports[0]:
    ports[1] = free_port()
  return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                     "task": {"type": "worker", "index": index}})


def test_a_worker_that_never_starts_is_one_error_line_after_worker_timeout(encoder_dir, glue_dir, tmp_path):
  out = tmp_path / "run"
  started = time.monotonic()
  result = subprocess.run([sys.executable, "-m", "adapter_keras",
                           *_train(encoder_dir, glue_dir, out, "--strategy", "multi-worker", "--worker-timeout", "3")],
                          cwd=REPO_ROOT, env=_env(TF_CONFIG=_two_workers(0)), capture_output=True, text=True,
                          timeout=180)
  line = assert_one_error_line(result, "--strategy multi-worker: worker 1 at 127.0.0.1:")
  assert "did not answer within 3 s (--worker-timeout)" in line
  assert result.returncode == 2 and time.monotonic() - started < 120
  assert "[distribute] waiting up to 3 s (--worker-timeout) for the other tasks of TF_CONFIG" in result.stdout
  assert not out.exists()


def test_sigterm_ends_a_worker_waiting_for_its_peers(encoder_dir, glue_dir, tmp_path):
  waiting = Lines([sys.executable, "-m", "adapter_keras",
                   *_train(encoder_dir, glue_dir, tmp_path / "run", "--strategy", "multi-worker")],
                  _env(TF_CONFIG=_two_workers(1)))
  try:
    waiting.wait_for("[distribute] waiting up to 300 s (--worker-timeout) for the other tasks", timeout=180)
    waiting.process.send_signal(signal.SIGTERM)
    assert waiting.process.wait(timeout=20) == -signal.SIGTERM, waiting.output()[-3000:]
  finally:
    waiting.kill()


def test_a_tpu_address_where_nothing_listens_is_one_error_line_after_worker_timeout(encoder_dir, glue_dir, tmp_path):
  address = f"127.0.0.1:{free_port()}"
  started = time.monotonic()
  result = run_cli_subprocess(_train(encoder_dir, glue_dir, tmp_path / "run", "--strategy", "tpu",
                                     "--tpu", f"grpc://{address}", "--worker-timeout", "2"), timeout=180)
  assert_one_error_line(result, f"no TPU found from --tpu grpc://{address}: nothing answered at {address} within "
                                "2 s (--worker-timeout)")
  assert result.returncode == 2 and time.monotonic() - started < 120
  assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- TF_CONFIG


def test_tf_config_that_is_not_json_is_one_error_line_naming_it(encoder_dir, glue_dir, tmp_path):
  result = subprocess.run([sys.executable, "-m", "adapter_keras",
                           *_train(encoder_dir, glue_dir, tmp_path / "run", "--strategy", "multi-worker")],
                          cwd=REPO_ROOT, env=_env(TF_CONFIG="{'cluster': }"), capture_output=True, text=True,
                          timeout=180)
  assert_one_error_line(result, "TF_CONFIG is not valid JSON")
  assert result.returncode == 2 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("tf_config, message", [
    ("[1, 2]", "TF_CONFIG holds a JSON list, not an object"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG's cluster job 'worker' must be a non-empty list of HOST:PORT"),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG's cluster job 'worker' lists 'a', which is not HOST:PORT"),
    ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG names a cluster but its task is None"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 2}}',
     "TF_CONFIG's task worker 2 is not in its cluster (worker: 1 task(s))"),
])
def test_malformed_tf_config_is_named(monkeypatch, tf_config, message):
  monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    distribute.will_be_chief("multi-worker")
