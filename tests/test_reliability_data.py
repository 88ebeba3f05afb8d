"""Issue 17's artifact, io, data and train-CLI cases: incomplete or edited artifacts, bad manifests,
unknown splits, modes under the umask, stale staging directories, data-file encodings, learning rates,
finished runs without their artifact, and the AutoML baseline's early failures.

Each bad input gives exactly one `error:` line naming the problem, no traceback, and leaves what was
on disk as it was. Every group runs at least one case as a real subprocess; the other cases of a group
run in-process (tests.helpers.run_cli), which goes through the same run_command but saves a
TensorFlow import per case.
"""
import contextlib
import hashlib
import io as io_text
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from adapter_keras import io
from adapter_keras.testing import write_tiny_glue_dir
from tests.conftest import REPO_ROOT
from tests.helpers import assert_one_error_line, run_cli, run_cli_subprocess


def _snapshot(root):
  """{relative path: (mode, size, mtime)} of everything under `root`: to assert that nothing changed."""
  found = {}
  for directory, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(directory, name)
      info = os.lstat(path)
      found[os.path.relpath(path, root)] = (info.st_mode, info.st_size, info.st_mtime_ns)
  return found


def _assert_one_error_line_in_process(argv, expected, main=None):
  """assert_one_error_line for a command run in this process (`main`: automl_baseline.cli.main)."""
  if main is None:
    status, _, err = run_cli(list(map(str, argv)))
  else:
    with contextlib.redirect_stderr(io_text.StringIO()) as err_buffer:
      status = main(list(map(str, argv)))
    err = err_buffer.getvalue()
  assert status == 2, err
  return assert_one_error_line(subprocess.CompletedProcess(argv, status, "", err), expected)


def _train_argv(p, out, *extra):
  return ["train", "--task", "sst2", "--data-dir", p["glue"], "--encoder", p["enc"], "--adapter-size", "2",
          "--epochs", "1", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def env(tmp_path_factory, encoder_dir):
  """A tiny encoder, GLUE data and one trained run (its artifact is copied and broken by the tests)."""
  root = tmp_path_factory.mktemp("reliability_data")
  p = dict(root=root, enc=encoder_dir, glue=write_tiny_glue_dir(str(root / "glue"), n_train=16, n_dev=8))
  status, _, err = run_cli(_train_argv(p, root / "run"))
  assert status == 0, err
  p["run"] = root / "run"
  p["artifact"] = root / "run" / "artifact"
  return p


# ---------------------------------------------------------------- artifacts (item 2) and manifests (item 6)


def _rewrite(artifact, tensors=None, manifest_change=None, resign=True):
  """Rewrites the weights and/or manifest of `artifact`; `resign` puts the new file's sha256 in the manifest,
  as a consistent (but broken) artifact would have it."""
  manifest = json.loads((artifact / "manifest.json").read_text())
  if tensors is not None:
    save_file(tensors, str(artifact / "weights.safetensors"))
    if resign:
      manifest["weights_sha256"] = hashlib.sha256((artifact / "weights.safetensors").read_bytes()).hexdigest()
  if manifest_change is not None:
    manifest = manifest_change(manifest)
  (artifact / "manifest.json").write_text(json.dumps(manifest))


def _weights(artifact):
  return load_file(str(artifact / "weights.safetensors"))


def _without_head(t):
  return {k: v for k, v in t.items() if not k.startswith("head/")}


def _with_nan(t):
  t = dict(t)
  t["head/kernel"] = np.full_like(t["head/kernel"], np.nan)
  return t


def _flip_one_value(artifact):
  data = bytearray((artifact / "weights.safetensors").read_bytes())
  data[-1] ^= 0x01
  (artifact / "weights.safetensors").write_bytes(bytes(data))


def _as_format_1(manifest):
  """What adapter_keras 0.1.0 wrote: names only, no sha256, the adapter method's config as adapter_config."""
  manifest = dict(manifest, format_version=1, weights=sorted(manifest["weights"]), top_k=None,
                  adapter_config=manifest["method_config"])
  del manifest["weights_sha256"], manifest["method_config"]
  return manifest


def _drop(field):
  return lambda m: {k: v for k, v in m.items() if k != field}


def _set_max_seq_length(m):
  m["tokenizer"]["max_seq_length"] = 1024  # the tiny encoder has 128 positions
  return m


def _unlist_head(m):
  m["weights"] = {k: v for k, v in m["weights"].items() if not k.startswith("head/")}
  return m


def _relist_as_float16(m):
  m["weights"]["head/bias"]["dtype"] = "float16"
  return m


ARTIFACT_CASES = {
    # The weights file changed after saving: caught by the manifest's sha256, naming the file.
    "weights edited": (_flip_one_value, "weights.safetensors is not the file this artifact was saved with"),
    "weights truncated to nothing": (lambda a: (a / "weights.safetensors").write_bytes(b""),
                                     "weights.safetensors is not the file"),
    # Consistent (re-signed) but incomplete or broken artifacts: caught by the tensor list itself.
    "no tensors at all": (lambda a: _rewrite(a, {}), "lacks"),
    "head tensors missing from the file": (lambda a: _rewrite(a, _without_head(_weights(a))),
                                           "lacks 2 of the"),
    "head missing from file and manifest": (lambda a: _rewrite(a, _without_head(_weights(a)), _unlist_head),
                                            "head/bias, head/kernel"),
    "NaN weights": (lambda a: _rewrite(a, _with_nan(_weights(a))), "head/kernel holds NaN"),
    "dtype other than listed": (lambda a: _rewrite(a, manifest_change=_relist_as_float16),
                                "the manifest lists float16"),
    # An artifact in the old format (no sha256, names only) is checked as far as it allows.
    "format 1 without the head": (lambda a: _rewrite(a, _without_head(_weights(a)), _as_format_1,
                                                     resign=False), "lacks 2 of the"),
    # Manifests (item 6).
    "manifest is a JSON list": (lambda a: (a / "manifest.json").write_text("[1, 2]"), "holds a JSON list"),
    "manifest lacks task": (lambda a: _rewrite(a, manifest_change=_drop("task")), "it lacks task"),
    "manifest lacks base_fingerprint": (lambda a: _rewrite(a, manifest_change=_drop("base_fingerprint")),
                                        "it lacks base_fingerprint"),
    "manifest lacks tokenizer": (lambda a: _rewrite(a, manifest_change=_drop("tokenizer")), "it lacks tokenizer"),
    "manifest has an unknown field": (lambda a: _rewrite(a, manifest_change=lambda m: dict(m, colour="blue")),
                                      "unknown field(s) colour"),
    "max_seq_length above the encoder's positions": (lambda a: _rewrite(a, manifest_change=_set_max_seq_length),
                                                     "max_seq_length 1024 exceeds the encoder's "
                                                     "max_position_embeddings 128"),
}
# These go through a real `python -m adapter_keras` (the others in-process).
SUBPROCESS_ARTIFACT_CASES = ("head tensors missing from the file",)


@pytest.mark.parametrize("case", sorted(ARTIFACT_CASES))
def test_a_broken_artifact_is_refused_naming_what_is_wrong(case, env, tmp_path):
  mutate, expected = ARTIFACT_CASES[case]
  artifact = tmp_path / "artifact"
  shutil.copytree(env["artifact"], artifact)
  mutate(artifact)
  before = _snapshot(tmp_path)
  argv = ["evaluate", "--artifact", artifact, "--encoder", env["enc"], "--task", "sst2", "--data-dir", env["glue"]]
  if case in SUBPROCESS_ARTIFACT_CASES:
    line = assert_one_error_line(run_cli_subprocess(argv), expected)
  else:
    line = _assert_one_error_line_in_process(argv, expected)
  assert str(artifact) in line or "the artifact" in line, line  # names which artifact
  assert _snapshot(tmp_path) == before


def test_the_saved_manifest_lists_every_tensor_with_shape_dtype_and_the_file_digest(env):
  manifest = json.loads((env["artifact"] / "manifest.json").read_text())
  tensors = _weights(env["artifact"])
  assert manifest["format_version"] == 3
  assert manifest["weights"] == {k: dict(dtype=str(v.dtype), shape=list(v.shape)) for k, v in tensors.items()}
  assert {"head/kernel", "head/bias"} <= set(manifest["weights"])
  assert manifest["weights_sha256"] == hashlib.sha256(
      (env["artifact"] / "weights.safetensors").read_bytes()).hexdigest()


# ---------------------------------------------------------------- evaluate --split (item 4)


def test_evaluate_an_absent_split_names_the_available_ones(env):
  argv = ["evaluate", "--artifact", env["artifact"], "--encoder", env["enc"], "--task", "sst2",
          "--data-dir", env["glue"], "--split", "test"]
  line = assert_one_error_line(run_cli_subprocess(argv), "--split test")
  assert "has dev" in line


# ---------------------------------------------------------------- report (item 6)


def test_report_on_a_metrics_json_without_method_is_one_line(env, tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  metrics = json.loads((env["run"] / "metrics.json").read_text())
  del metrics["method"]
  (run / "metrics.json").write_text(json.dumps(metrics))
  line = assert_one_error_line(run_cli_subprocess(["report", run]), "lacks method")
  assert str(run / "metrics.json") in line
  (run / "metrics.json").write_text("[]")
  status, _, err = run_cli(["report", str(run)])
  assert status == 2 and "holds a JSON list" in err and err.count("\n") == 1


# ---------------------------------------------------------------- automl-baseline make-module (item 6)


def test_make_module_from_an_encoder_whose_config_is_a_json_list(env, tmp_path):
  encoder = tmp_path / "enc"
  shutil.copytree(env["enc"], encoder)
  (encoder / "config.json").write_text("[32, 2]")
  out = tmp_path / "module"
  from automl_baseline import cli as automl_cli  # pylint: disable=import-outside-toplevel
  _assert_one_error_line_in_process(["make-module", "--from-encoder", encoder, "--kind", "token-table",
                                     "--out", out], "config.json", main=automl_cli.main)
  assert not out.exists()


# ---------------------------------------------------------------- modes under the umask (item 9)

UMASK_SCRIPT = textwrap.dedent("""
    import json, os, stat, sys
    from adapter_keras import cli
    encoder, glue, root = sys.argv[1:4]
    modes = {}
    # Under 027 a whole run and an export of it; under 022 (TensorFlow's and tempfile's own modes differ
    # from both) another export of that artifact and another run's files, saved on their own.
    run = os.path.join(root, oct(0o027), "run")
    for umask in (0o027, 0o022):
      os.umask(umask)
      out = os.path.join(root, oct(umask))
      if umask == 0o027:
        assert cli.main(["train", "--task", "sst2", "--data-dir", glue, "--encoder", encoder, "--adapter-size",
                         "2", "--epochs", "1", "--out", run]) == 0
      else:
        from adapter_keras.io import write_json_atomic
        from adapter_keras.models import load_adapter
        load_adapter(run, encoder).save_adapter(os.path.join(out, "run", "artifact"))
        write_json_atomic(os.path.join(out, "run", "metrics.json"), {})
        write_json_atomic(os.path.join(out, "run", "run.json"), {})
      assert cli.main(["export", "--artifact", os.path.join(run, "artifact"), "--encoder", encoder,
                       "--out", os.path.join(out, "serving")]) == 0
      for directory, dirs, files in os.walk(out):
        for name in dirs + files:
          path = os.path.join(directory, name)
          modes[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    print(json.dumps(modes))
    """)


def test_outputs_get_the_modes_the_umask_gives(env, tmp_path):
  result = subprocess.run([sys.executable, "-c", UMASK_SCRIPT, env["enc"], env["glue"], str(tmp_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-3000:]
  modes = json.loads(result.stdout.strip().splitlines()[-1])
  for umask, file_mode, dir_mode in ((0o022, 0o644, 0o755), (0o027, 0o640, 0o750)):
    mine = {path: mode for path, mode in modes.items() if path.split(os.sep)[0] == oct(umask)}
    for name in ("run/run.json", "run/metrics.json", "run/artifact/manifest.json",
                 "run/artifact/weights.safetensors", "serving/saved_model.pb"):
      assert mine.pop(os.path.join(oct(umask), name)) == file_mode, name
    for name in ("run", "run/artifact", "serving", "serving/variables") + (("run/logs",) if umask == 0o027 else ()):
      assert mine.pop(os.path.join(oct(umask), name)) == dir_mode, name
    # Everything else (TensorBoard logs, SavedModel variables...) follows the same rule.
    wrong = {path: oct(mode) for path, mode in mine.items()
             if mode != (dir_mode if os.path.isdir(tmp_path / path) else file_mode)}
    assert not wrong, wrong


# ---------------------------------------------------------------- stale staging directories (item 10)


def test_the_next_save_removes_stale_staging_but_not_a_live_writers(tmp_path):
  target = tmp_path / "artifact"
  stale_dir = tmp_path / ".artifact.tmp-killed01"
  stale_dir.mkdir()
  (stale_dir / "weights.safetensors").write_bytes(b"half")
  stale_old = tmp_path / ".artifact.old-killed02"
  stale_old.mkdir()
  stale_file = tmp_path / ".metrics.json.tmp-killed03"
  stale_file.write_text("{")
  others = [tmp_path / ".artifact.tmpfoo", tmp_path / "artifact.tmp-x", tmp_path / ".other.tmp-abc"]
  for path in others:  # not ours: another name, or not our pattern
    path.mkdir()
  # A writer in another process, still writing: its staging directory must survive.
  writer = subprocess.Popen(
      [sys.executable, "-c", "import sys, time\nfrom adapter_keras.io import staging_directory\n"
                             "print(staging_directory(sys.argv[1]), flush=True)\ntime.sleep(60)", str(target)],
      cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
  try:
    live = writer.stdout.readline().strip()
    assert os.path.isdir(live)
    with io.atomic_directory(str(target)) as staging:
      (tmp_path / staging / "manifest.json").write_text("{}")
    io.write_json_atomic(str(tmp_path / "metrics.json"), {"score": 1})
    assert os.path.isdir(live), "a live writer's staging directory was deleted"
  finally:
    writer.kill()
    writer.wait()
  assert not stale_dir.exists() and not stale_old.exists() and not stale_file.exists()
  assert all(path.exists() for path in others)
  assert (target / "manifest.json").exists()
  # Its writer is gone (a kill releases its lock): the next save takes it away.
  with io.atomic_directory(str(target)):
    pass
  assert not os.path.exists(live)


def test_without_locks_only_old_staging_entries_are_removed(tmp_path, monkeypatch):
  """Where the file system cannot lock (some NFS mounts), age decides."""
  monkeypatch.setattr(io, "_lock", lambda fd, blocking: None)
  fresh, old = tmp_path / ".out.tmp-fresh", tmp_path / ".out.tmp-old"
  fresh.mkdir()
  old.mkdir()
  long_ago = time.time() - io.STALE_AFTER_SECONDS - 60
  os.utime(old, (long_ago, long_ago))
  io.remove_stale_staging(str(tmp_path / "out"))
  assert fresh.exists() and not old.exists()


def test_an_interrupted_export_is_cleaned_up_by_the_next_export(env, tmp_path):
  serving = tmp_path / "serving"
  stale = tmp_path / ".serving.tmp-killed99"
  stale.mkdir()
  (stale / "saved_model.pb").write_bytes(b"half")
  status, _, err = run_cli(["export", "--artifact", str(env["artifact"]), "--encoder", env["enc"],
                            "--out", str(serving)])
  assert status == 0, err
  assert not stale.exists() and (serving / "saved_model.pb").exists()


def test_a_failed_commit_puts_the_previous_directory_back(tmp_path, monkeypatch):
  final = tmp_path / "artifact"
  final.mkdir()
  (final / "old.txt").write_text("previous")
  staging = io.staging_directory(str(final))
  real_rename = os.rename

  def fail_second_rename(src, dst):
    if src == staging:
      raise OSError("disk full")
    return real_rename(src, dst)

  monkeypatch.setattr(os, "rename", fail_second_rename)
  with pytest.raises(OSError, match="disk full"):
    io.commit_directory(staging, str(final))
  assert (final / "old.txt").read_text() == "previous"
  io.discard_staging(staging)


# ---------------------------------------------------------------- data files (item 11)


def _files_argv(p, train, dev, out):
  return ["train", "--train", str(train), "--dev", str(dev), "--text-column", "text", "--label-column", "label",
          "--encoder", p["enc"], "--adapter-size", "2", "--epochs", "1", "--out", str(out)]


def test_a_csv_with_a_utf8_byte_order_mark_trains(env, tmp_path):
  from adapter_keras.tasks.data import load_text_file  # pylint: disable=import-outside-toplevel
  path = tmp_path / "excel.csv"
  path.write_bytes("\ufefftext,label\nthe film was good,pos\nawful plot,neg\n".encode("utf-8"))
  examples = load_text_file(str(path), "text", "label")
  assert examples.text == ["the film was good", "awful plot"] and examples.label_names == ["neg", "pos"]
  jsonl = tmp_path / "excel.jsonl"
  jsonl.write_bytes('\ufeff{"text": "good", "label": "pos"}\n'.encode("utf-8"))
  assert load_text_file(str(jsonl), "text", "label").text == ["good"]


def test_bad_data_files_are_one_line_and_write_nothing(env, tmp_path):
  good = tmp_path / "good.csv"
  good.write_text("text,label\nthe film was good,pos\nawful plot,neg\n")
  latin1 = tmp_path / "latin1.csv"
  latin1.write_bytes("text,label\nun film tr\u00e8s bon,pos\nnul,neg\n".encode("latin-1"))
  folder = tmp_path / "folder.csv"
  folder.mkdir()
  out = tmp_path / "out"
  line = _assert_one_error_line_in_process(_files_argv(env, latin1, good, out), "is not UTF-8")
  assert str(latin1) in line
  _assert_one_error_line_in_process(_files_argv(env, folder, good, out), f"{folder} is a directory")
  line = _assert_one_error_line_in_process(_files_argv(env, good, latin1, out), "is not UTF-8")  # the dev file
  assert str(latin1) in line
  assert not out.exists()


def test_a_glue_file_that_is_not_utf8_is_named(tmp_path):
  from adapter_keras.tasks.data import load_glue_split  # pylint: disable=import-outside-toplevel
  glue = write_tiny_glue_dir(str(tmp_path / "glue"), n_train=4, n_dev=4)
  path = os.path.join(glue, "SST-2", "dev.tsv")
  with open(path, "ab") as f:
    f.write("tr\u00e8s bon\t1\n".encode("latin-1"))
  with pytest.raises(ValueError, match="dev.tsv is not UTF-8"):
    load_glue_split(glue, "sst2", "dev")


# ---------------------------------------------------------------- learning rates (item 11)


@pytest.mark.parametrize("value,expected", [("inf", "not finite"), ("nan", "positive number"),
                                            ("1e30", "learning rate in (0, 1]")])
def test_an_unusable_learning_rate_is_refused_before_out_is_created(value, expected, env, tmp_path):
  out = tmp_path / "out"
  argv = _train_argv(env, out, f"--learning-rate={value}")
  if value == "inf":
    assert_one_error_line(run_cli_subprocess(argv), expected)
  else:
    with pytest.raises(SystemExit) as exit_info:  # argparse exits while parsing
      run_cli(argv)
    assert exit_info.value.code == 2
  assert not out.exists()


def test_train_config_refuses_the_same_learning_rates():
  from adapter_keras.train.config import TrainConfig  # pylint: disable=import-outside-toplevel
  for value in (float("inf"), float("nan"), 1e30, 0.0):
    with pytest.raises(ValueError, match="learning rate"):
      TrainConfig(learning_rate=value)
  assert TrainConfig(learning_rate=1.0).learning_rate == 1.0


# ---------------------------------------------------------------- a finished run without its artifact (item 11)


def test_a_finished_run_whose_artifact_was_deleted_is_not_reported_as_done(env, tmp_path):
  run = tmp_path / "run"
  shutil.copytree(env["run"], run)
  shutil.rmtree(run / "artifact")
  (run / "notes.txt").write_text("mine")
  before = _snapshot(run)
  line = assert_one_error_line(run_cli_subprocess(_train_argv(env, run)), "artifact/ is incomplete")
  assert str(run / "metrics.json") in line  # says how to train it again
  assert _snapshot(run) == before
  # Doing what it says trains it again, and the user's file stays.
  os.remove(run / "metrics.json")
  status, _, err = run_cli(_train_argv(env, run))
  assert status == 0, err
  assert (run / "artifact" / "weights.safetensors").exists() and (run / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- automl-baseline search (item 11)


def test_search_with_embeddings_that_are_not_a_module_writes_nothing(env, tmp_path):
  data = tmp_path / "data.csv"
  data.write_text("text,label\nthe film was good,pos\nawful plot,neg\na fine film,pos\nbad,neg\n")
  not_a_module = tmp_path / "not_a_module"
  shutil.copytree(env["enc"], not_a_module)  # a directory, but an encoder, not a SavedModel
  out = tmp_path / "search"
  argv = ["search", "--train", data, "--dev", data, "--text-column", "text", "--label-column", "label",
          "--embeddings", not_a_module, "--max-trials", "1", "--out", out]
  from automl_baseline import cli as automl_cli  # pylint: disable=import-outside-toplevel
  _assert_one_error_line_in_process(argv, "not a SavedModel", main=automl_cli.main)
  assert not out.exists()


def test_search_with_a_savedmodel_that_is_no_text_embedding_writes_nothing(env, tmp_path):
  """A SavedModel that is not a text embedding (here: an adapter_keras export) fails in the up-front probe."""
  from automl_baseline import modules  # pylint: disable=import-outside-toplevel
  export = tmp_path / "export"
  status, _, err = run_cli(["export", "--artifact", str(env["artifact"]), "--encoder", env["enc"],
                            "--out", str(export)])
  assert status == 0, err
  with pytest.raises(modules.ModuleError, match="cannot embed text"):
    modules.check_module(str(export))


# ---------------------------------------------------------------- the one "new or empty --out" check


def test_new_or_empty_directory_is_one_check(tmp_path):
  io.require_new_or_empty_directory(str(tmp_path / "new"))
  (tmp_path / "empty").mkdir()
  io.require_new_or_empty_directory(str(tmp_path / "empty"))
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "x").write_text("x")
  for path in (tmp_path / "taken", tmp_path / "taken" / "x"):
    with pytest.raises(FileExistsError, match="exists and is not an empty directory"):
      io.require_new_or_empty_directory(str(path))
  assert stat.S_ISREG(os.stat(tmp_path / "taken" / "x").st_mode)
