"""`adapter-keras train-squad` / `evaluate-squad` end to end on a tiny encoder and tiny SQuAD files."""
import json
import os
import re

import numpy as np
import pytest

from adapter_keras import testing
from adapter_keras.artifacts import read_manifest
from adapter_keras.models import load_adapter
from adapter_keras.networks import SpanModel
from adapter_keras.tasks import squad
from tests.helpers import run_cli

# Short windows so that some contexts span two of them (stride 8).
WINDOWS = ["--max-seq-length", "24", "--doc-stride", "8", "--max-query-length", "8",
           "--max-answer-length", "5"]


@pytest.fixture(scope="module")
def squad_files(tmp_path_factory):
  directory = tmp_path_factory.mktemp("squad_cli")
  return (testing.write_tiny_squad_json(str(directory / "train.json"), 40, seed=0),
          testing.write_tiny_squad_json(str(directory / "dev.json"), 12, seed=1))


def train_argv(tiny_hf_dir, squad_files, out, *extra):
  train, dev = squad_files
  return ["train-squad", "--train", train, "--dev", dev, "--encoder", tiny_hf_dir, "--adapter-size", "4",
          "--epochs", "2", "--batch-size", "8", "--learning-rate", "1e-2", "--seed", "3", *WINDOWS,
          "--out", out, "--json", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_hf_dir, squad_files):
  """One finished two-epoch adapter run: (argv, out dir, --json result, stdout)."""
  out = str(tmp_path_factory.mktemp("squad_run") / "run")
  argv = train_argv(tiny_hf_dir, squad_files, out)
  status, stdout, stderr = run_cli(argv)
  assert status == 0, stderr
  return argv, out, json.loads(stdout.strip().splitlines()[-1]), stdout


def test_train_squad_writes_metrics_predictions_and_an_adapter_only_artifact(trained, squad_files):
  _, out, result, stdout = trained
  assert "[train-squad] best epoch" in stdout
  with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
    metrics = json.load(f)
  assert {"task", "method", "metrics", "primary_metric", "score", "trained_params", "trained_fraction",
          "best_epoch", "history", "config", "base_params"} <= set(metrics)
  assert (metrics["task"], metrics["method"], metrics["primary_metric"]) == ("squad", "adapter", "f1")
  assert set(metrics["metrics"]) == {"exact_match", "f1"}
  assert all(0.0 <= v <= 1.0 for v in metrics["metrics"].values())
  assert metrics["score"] == metrics["metrics"]["f1"]
  # The best epoch is the one with the highest dev F1, and its metrics are the reported ones.
  history = metrics["history"]
  assert [h["epoch"] for h in history] == [1, 2] and all(np.isfinite(h["loss"]) for h in history)
  assert metrics["score"] == max(h["f1"] for h in history)
  best = history[metrics["best_epoch"] - 1]
  assert {k: best[k] for k in ("exact_match", "f1")} == metrics["metrics"]
  assert metrics["config"]["max_seq_length"] == 24 and metrics["config"]["doc_stride"] == 8
  assert metrics["train_windows"] > metrics["train_questions"] == 40  # some contexts need two windows
  assert metrics["trained_fraction"] == pytest.approx(metrics["trained_params"] / metrics["base_params"])
  for key in ("task", "method", "metrics", "score", "best_epoch", "trained_params"):
    assert result[key] == metrics[key]
  # predictions.json is the best epoch's answers: scoring it gives the reported metrics.
  dev = squad.load_squad_json(squad_files[1])
  with open(os.path.join(out, "predictions.json"), encoding="utf-8") as f:
    predictions = json.load(f)
  assert set(predictions) == {e.id for e in dev}
  rescored = squad.evaluate(dev, predictions)
  assert rescored["f1"] / 100 == pytest.approx(metrics["metrics"]["f1"])
  assert rescored["exact_match"] / 100 == pytest.approx(metrics["metrics"]["exact_match"])
  # Adapter-only artifact: adapters, LayerNorms and the span head, nothing of the frozen base.
  manifest = read_manifest(os.path.join(out, "artifact"))
  assert manifest["task"]["task_type"] == "span" and manifest["pooling"] == "none"
  assert manifest["squad"] == dict(doc_stride=8, max_query_length=8, max_answer_length=5, n_best_size=20)
  assert manifest["tokenizer"]["max_seq_length"] == 24
  assert manifest["trained_params"] == metrics["trained_params"]
  assert {"head/kernel", "head/bias"} <= set(manifest["weights"])
  assert all("adapter" in k or "layer_norm" in k or k.startswith("head/") for k in manifest["weights"])


def test_evaluate_squad_reproduces_the_training_metrics(trained, tiny_hf_dir, squad_files, tmp_path):
  _, out, _, _ = trained
  with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
    metrics = json.load(f)
  predictions_file = str(tmp_path / "preds" / "dev-predictions.json")
  status, stdout, stderr = run_cli(["evaluate-squad", "--artifact", out, "--encoder", tiny_hf_dir,
                                    "--dev", squad_files[1], "--predictions-out", predictions_file, "--json"])
  assert status == 0, stderr
  result = json.loads(stdout.strip().splitlines()[-1])
  assert result["metrics"] == pytest.approx(metrics["metrics"], abs=1e-9)
  assert result["questions"] == 12 and "squad dev (12 questions): exact_match" in stdout
  with open(predictions_file, encoding="utf-8") as f, \
       open(os.path.join(out, "predictions.json"), encoding="utf-8") as g:
    assert json.load(f) == json.load(g)
  model = load_adapter(out, tiny_hf_dir)
  assert isinstance(model, SpanModel) and model.method == "adapter"


def test_rerun_only_reports_and_a_different_run_is_refused(trained, tiny_hf_dir, squad_files):
  argv, out, first, _ = trained
  weights = os.path.join(out, "artifact", "weights.safetensors")
  mtime = os.stat(weights).st_mtime_ns
  status, stdout, stderr = run_cli(argv)
  assert status == 0, stderr
  assert "already holds this finished run; reporting it" in stdout
  assert json.loads(stdout.strip().splitlines()[-1]) == first
  assert os.stat(weights).st_mtime_ns == mtime
  status, _, stderr = run_cli(train_argv(tiny_hf_dir, squad_files, out, "--epochs", "1"))
  assert status == 2
  assert stderr.startswith("error: --out") and "holds a different run (differs in config)" in stderr


def test_top_k_run_on_a_subset_saves_only_its_layers_and_reloads(tiny_hf_dir, squad_files, tmp_path):
  out = str(tmp_path / "top1")
  argv = train_argv(tiny_hf_dir, squad_files, out, "--method", "top-k", "--top-k", "1", "--epochs", "1",
                    "--max-train-examples", "20")
  status, stdout, stderr = run_cli(argv)
  assert status == 0, stderr
  trained = json.loads(stdout.strip().splitlines()[-1])
  with open(os.path.join(out, "metrics.json"), encoding="utf-8") as f:
    assert json.load(f)["train_questions"] == 20
  weights = read_manifest(os.path.join(out, "artifact"))["weights"]
  assert {"head/kernel", "head/bias"} <= set(weights)
  assert all(k.startswith(("encoder/transformer/layer_1/", "head/")) for k in weights)
  # Without --encoder, the manifest's encoder is loaded only if it is a named offline one: an artifact is data.
  status, _, stderr = run_cli(["evaluate-squad", "--artifact", out, "--dev", squad_files[1], "--json"])
  assert status == 2 and "give that base explicitly" in stderr and stderr.count("\n") == 1
  status, stdout, stderr = run_cli(["evaluate-squad", "--artifact", out, "--encoder", tiny_hf_dir, "--dev",
                                    squad_files[1], "--json"])
  assert status == 0, stderr
  assert json.loads(stdout.strip().splitlines()[-1])["metrics"] == pytest.approx(trained["metrics"], abs=1e-9)


def test_glue_commands_refuse_a_squad_artifact(trained, tiny_hf_dir, tmp_path):
  _, out, _, _ = trained
  status, _, stderr = run_cli(["evaluate", "--artifact", out, "--encoder", tiny_hf_dir, "--task", "rte",
                               "--data-dir", str(tmp_path)])
  assert status == 2 and "extractive-QA model" in stderr and "evaluate-squad" in stderr


def _write(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


@pytest.mark.parametrize("case,message", [
    ("missing", "--train .*missing.json not found"),
    ("bad-json", "bad-json.json is not valid JSON"),
    ("empty", "--train .*empty.json holds no questions"),
    ("no-context", "is not SQuAD JSON: .* lacks the field 'context'"),
    ("short-windows", "max_seq_length 6 leaves no room for context"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(case, message, tiny_hf_dir, squad_files, tmp_path):
  train = {"missing": str(tmp_path / "missing.json"),
           "bad-json": _write(tmp_path / "bad-json.json", "{"),
           "empty": _write(tmp_path / "empty.json", json.dumps({"version": "1.1", "data": []})),
           "no-context": _write(tmp_path / "no-context.json",
                                json.dumps({"data": [{"paragraphs": [{"qas": []}]}]})),
           "short-windows": squad_files[0]}[case]
  out = str(tmp_path / "out")
  argv = train_argv(tiny_hf_dir, (train, squad_files[1]), out)
  if case == "short-windows":
    argv += ["--max-seq-length", "6"]
  status, _, stderr = run_cli(argv)
  assert status == 2
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ")
  assert re.search(message, lines[0]), lines[0]
  assert not os.path.exists(out)


def test_a_crashed_run_resumes_to_the_uninterrupted_result(trained, tiny_hf_dir, squad_files, tmp_path,
                                                           monkeypatch):
  from adapter_keras.train import loop
  from safetensors.numpy import load_file
  from tests.test_resume import SimulatedCrash
  _, reference, _, _ = trained
  out = str(tmp_path / "crashed")
  count_step = loop._RunProgress.on_train_batch_end
  steps = {}

  def crash_in_epoch_2(self, batch, logs=None):
    count_step(self, batch, logs)
    if self.epoch == 1 and self.step_in_epoch == 4:
      steps["crashed_at"] = self.global_step
      raise SimulatedCrash

  with monkeypatch.context() as m:
    m.setattr(loop._RunProgress, "on_train_batch_end", crash_in_epoch_2)
    with pytest.raises(SimulatedCrash):
      run_cli(train_argv(tiny_hf_dir, squad_files, out, "--checkpoint-every", "3"))
  assert not os.path.exists(os.path.join(out, "metrics.json"))
  status, stdout, stderr = run_cli(train_argv(tiny_hf_dir, squad_files, out, "--checkpoint-every", "3"))
  assert status == 0, stderr
  resumed_from = int(re.search(r"\[train-squad\] resuming from step (\d+) of", stdout).group(1))
  assert 0 < resumed_from < steps["crashed_at"]
  for name in ("metrics.json", "predictions.json"):
    with open(os.path.join(out, name), encoding="utf-8") as f, \
        open(os.path.join(reference, name), encoding="utf-8") as g:
      a, b = json.load(f), json.load(g)
    a.pop("seconds", None), b.pop("seconds", None)
    assert a == b, name
  weights = [load_file(os.path.join(d, "artifact", "weights.safetensors")) for d in (out, reference)]
  for key in weights[1]:
    np.testing.assert_array_equal(weights[0][key], weights[1][key], err_msg=key)
  assert not os.path.exists(os.path.join(out, "checkpoint"))
