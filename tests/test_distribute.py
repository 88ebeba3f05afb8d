"""train/distribute.py and the distribution flags: TPU resolution errors, who is the chief, one flag set."""
import json
import os
import subprocess
import sys

import pytest

from adapter_keras.cli import build_parser
from adapter_keras.train import distribute
from adapter_keras.train.config import TrainConfig
from tests.conftest import REPO_ROOT


def _train(encoder_dir, glue_dir, out, *flags):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  return subprocess.run([sys.executable, "-m", "adapter_keras", "train", "--task", "sst2", "--data-dir", glue_dir,
                         "--encoder", encoder_dir, "--out", str(out), *flags],
                        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)


@pytest.mark.parametrize("flags, message", [
    (["--strategy", "tpu", "--tpu", "local"], "error: no TPU found from --tpu local"),
    (["--strategy", "tpu"], "error: no TPU found from the environment"),
    (["--tpu", "local"], "error: --tpu local goes with --strategy tpu (or auto), not 'default'"),
])
def test_a_tpu_that_does_not_resolve_is_one_error_line_and_writes_nothing(flags, message, encoder_dir, glue_dir,
                                                                          tmp_path):
  out = tmp_path / "run"
  result = _train(encoder_dir, glue_dir, out, *flags)
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert result.returncode == 2 and len(errors) == 1 and errors[0].startswith(message), result.stderr
  assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("command", [
    ["train", "--task", "rte", "--out", "o"],
    ["train-squad", "--train", "t.json", "--dev", "d.json", "--out", "o"],
    ["sweep", "--task", "rte", "--learning-rates", "1e-3", "--epochs", "1", "--out", "o"],
    ["analyze", "init-scale", "--task", "rte", "--out", "o"],
    ["analyze", "tradeoff", "--task", "rte", "--adapter-sizes", "8", "--out", "o"],
])
def test_every_command_that_trains_takes_the_one_set_of_distribution_flags(command):
  args = build_parser().parse_args(command + ["--strategy", "tpu", "--tpu", "local", "--no-static-shapes",
                                              "--steps-per-execution", "4", "--jit-compile",
                                              "--mixed-precision", "bfloat16"])
  assert (args.strategy, args.tpu, args.static_shapes, args.steps_per_execution, args.jit_compile,
          args.mixed_precision) == ("tpu", "local", False, 4, True, "bfloat16")


@pytest.mark.parametrize("cluster, task, chief", [
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 0}, True),
    ({"worker": ["a:1", "b:1"]}, {"type": "worker", "index": 1}, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
    ({"chief": ["c:1"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
])
def test_the_chief_is_the_chief_task_or_worker_0_without_one(monkeypatch, cluster, task, chief):
  monkeypatch.setenv("TF_CONFIG", json.dumps(dict(cluster=cluster, task=task)))
  assert distribute.will_be_chief("multi-worker") is chief
  assert distribute.will_be_chief("default") is True  # only multi-worker makes a cluster


def test_without_tf_config_a_multi_worker_run_is_its_own_chief(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  assert distribute.will_be_chief("multi-worker") is True


def test_unknown_strategy_and_bad_steps_per_execution_are_refused_by_the_config():
  with pytest.raises(ValueError, match="Unknown strategy 'gpu'"):
    TrainConfig(strategy="gpu")
  with pytest.raises(ValueError, match="steps_per_execution must be an integer >= 1"):
    TrainConfig(steps_per_execution=0)
