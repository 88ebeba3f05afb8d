"""Bad input through the CLI, run directories, NaN losses and determinism."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from safetensors.numpy import load_file, save_file

from adapter_keras import cli
from adapter_keras.testing import write_tiny_glue_dir
from tests.conftest import REPO_ROOT
from tests.helpers import last_json


@pytest.fixture(scope="module")
def env(tmp_path_factory, encoder_dir):
  """A tiny encoder, variants of it broken in every way, data and a trained artifact."""
  root = tmp_path_factory.mktemp("reliability")
  enc = encoder_dir
  glue = write_tiny_glue_dir(str(root / "glue"), n_train=16, n_dev=8)

  def broken(name, mutate):
    path = root / name
    shutil.copytree(enc, path)
    mutate(path)
    return str(path)

  def truncate(path):
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:len(data) // 3])

  def widen(path):
    config = json.loads((path / "config.json").read_text())
    config["intermediate_size"] = 128
    (path / "config.json").write_text(json.dumps(config))

  def short_vocab(path):
    lines = (path / "vocab.txt").read_text().splitlines()
    (path / "vocab.txt").write_text("\n".join(lines[:-1]) + "\n")

  def other_weights(path):
    tensors = load_file(str(path / "model.safetensors"))
    tensors["pooler.dense.bias"][0] += 1.0
    save_file(tensors, str(path / "model.safetensors"))

  paths = dict(
      enc=enc, glue=glue,
      corrupt=broken("corrupt", truncate), mismatch=broken("mismatch", widen),
      novocab=broken("novocab", lambda p: os.remove(p / "vocab.txt")),
      shortvocab=broken("shortvocab", short_vocab), otherbase=broken("otherbase", other_weights))
  (root / "empty.csv").write_text("text,label\n")
  (root / "train.csv").write_text("text,label\nthe movie was good,pos\nawful plot,neg\n")
  (root / "unseen.csv").write_text("text,label\na good film,meh\n")
  (root / "inf.csv").write_text("text,score\na good film,1e38\nbad,1.0\n")  # MSE overflows
  (root / "a_file").write_text("x")
  paths.update({k: str(root / f) for k, f in (("empty", "empty.csv"), ("train", "train.csv"),
                                             ("unseen", "unseen.csv"), ("inf", "inf.csv"),
                                             ("file", "a_file"))})
  artifact = root / "run"
  assert cli.main(["train", "--task", "sst2", "--data-dir", glue, "--encoder", enc, "--adapter-size", "2",
                   "--epochs", "1", "--out", str(artifact)]) == 0
  paths["artifact"] = str(artifact / "artifact")
  old = root / "old_artifact"
  shutil.copytree(artifact / "artifact", old)
  manifest = json.loads((old / "manifest.json").read_text())
  manifest["format_version"], manifest["library_version"] = 7, "9.0.0"
  (old / "manifest.json").write_text(json.dumps(manifest))
  paths["old_artifact"] = str(old)
  paths["root"] = str(root)
  return paths


def _train(p, *extra, data=None, out="OUT"):
  data = data or ["--task", "sst2", "--data-dir", p["glue"]]
  return ["train", *data, "--epochs", "1", "--out", out, *extra]


BAD_INPUTS = {
    "encoder path missing": (lambda p: _train(p, "--encoder", "/nonexistent/encoder"), "not found"),
    "weights truncated": (lambda p: _train(p, "--encoder", p["corrupt"]), "truncated or corrupt"),
    "config/weights shape mismatch": (lambda p: _train(p, "--encoder", p["mismatch"]), "has shape"),
    "vocab missing": (lambda p: _train(p, "--encoder", p["novocab"]), "vocab.txt"),
    "vocab of wrong size": (lambda p: _train(p, "--encoder", p["shortvocab"]), "vocab_size"),
    "unknown task": (lambda p: _train(p, "--encoder", p["enc"], data=["--task", "nosuch", "--data-dir", p["glue"]]),
                     "nosuch"),
    "data dir without the task's files": (
        lambda p: _train(p, "--encoder", p["enc"], data=["--task", "mrpc", "--data-dir", p["glue"]]), "MRPC"),
    "misnamed column": (lambda p: _train(p, "--encoder", p["enc"], data=[
        "--train", p["train"], "--dev", p["train"], "--text-column", "review", "--label-column", "label"]),
        "review"),
    "empty training set": (lambda p: _train(p, "--encoder", p["enc"], data=[
        "--train", p["empty"], "--dev", p["train"], "--text-column", "text", "--label-column", "label"]),
        "empty"),
    "label not in the label set": (lambda p: _train(p, "--encoder", p["enc"], data=[
        "--train", p["train"], "--dev", p["unseen"], "--text-column", "text", "--label-column", "label"]),
        "meh"),
    "adapter size 0": (lambda p: _train(p, "--encoder", p["enc"], "--adapter-size", "0"), "positive integer"),
    "adapter size not an integer": (lambda p: _train(p, "--encoder", p["enc"], "--adapter-size", "2.5"),
                                    "positive integer"),
    "top-k above the layers": (lambda p: _train(p, "--encoder", p["enc"], "--method", "top-k", "--top-k", "3"),
                               "exceeds"),
    "learning rate 0": (lambda p: _train(p, "--encoder", p["enc"], "--learning-rate", "0"), "positive number"),
    "learning rate negative": (lambda p: _train(p, "--encoder", p["enc"], "--learning-rate=-1e-3"),
                               "positive number"),
    "artifact on another base": (lambda p: ["evaluate", "--artifact", p["artifact"], "--encoder", p["otherbase"],
                                            "--task", "sst2", "--data-dir", p["glue"]], "fingerprint"),
    "artifact from an incompatible version": (
        lambda p: ["evaluate", "--artifact", p["old_artifact"], "--encoder", p["enc"], "--task", "sst2",
                   "--data-dir", p["glue"]], "format version 7"),
    "export into a non-writable place": (
        lambda p: ["export", "--artifact", p["artifact"], "--encoder", p["enc"],
                   "--out", os.path.join(p["file"], "saved")], "not a directory"),
    "NaN/Inf loss": (lambda p: _train(p, "--encoder", p["enc"], data=[
        "--train", p["inf"], "--dev", p["inf"], "--text-column", "text", "--label-column", "score",
        "--regression"], out="NAN_OUT"), "at step 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_without_traceback_or_partial_output(case, env, tmp_path):
  make_args, expected = BAD_INPUTS[case]
  out = tmp_path / "out"
  args = [str(out) if a == "OUT" else str(tmp_path / "nan") if a == "NAN_OUT" else a for a in make_args(env)]
  result = subprocess.run([sys.executable, "-m", "adapter_keras", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode != 0
  error_lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(error_lines) == 1, result.stderr[-2000:]
  assert expected in error_lines[0], error_lines[0]
  assert "Traceback" not in result.stderr
  assert not out.exists(), "a failed command left an output directory"


def test_debug_flag_shows_the_traceback(env, capsys):
  with pytest.raises(FileNotFoundError):
    cli.main(["--debug", "params", "--encoder", "/nonexistent"])


def test_output_dir_holding_another_run_is_refused_and_a_finished_run_only_reports(env, tmp_path, capsys):
  out = str(tmp_path / "run")
  base = ["train", "--task", "sst2", "--data-dir", env["glue"], "--encoder", env["enc"], "--adapter-size", "2",
          "--epochs", "1", "--out", out, "--json"]
  assert cli.main(base) == 0
  first = last_json(capsys)
  stamp = os.path.getmtime(os.path.join(out, "metrics.json"))
  assert cli.main(base) == 0
  printed = capsys.readouterr().out
  assert "already holds this finished run" in printed
  assert json.loads(printed.strip().splitlines()[-1])["metrics"] == first["metrics"]
  assert os.path.getmtime(os.path.join(out, "metrics.json")) == stamp
  assert cli.main(base[:-3] + ["--learning-rate", "1e-2", "--out", out]) == 2
  assert "holds a different run (differs in config)" in capsys.readouterr().err
  stranger = tmp_path / "stranger"
  stranger.mkdir()
  (stranger / "notes.txt").write_text("mine")
  assert cli.main(base[:-3] + ["--out", str(stranger)]) == 2
  assert "holds other files" in capsys.readouterr().err


def test_same_seed_same_metrics(env, tmp_path, capsys):
  results = []
  for i in range(2):
    assert cli.main(["train", "--task", "rte", "--data-dir", env["glue"], "--encoder", env["enc"],
                     "--adapter-size", "2", "--epochs", "2", "--seed", "3", "--out", str(tmp_path / str(i)),
                     "--json"]) == 0
    results.append(last_json(capsys)["metrics"])
  assert results[0] == results[1]
  history = [json.loads((tmp_path / str(i) / "metrics.json").read_text())["history"] for i in range(2)]
  assert history[0] == history[1]
