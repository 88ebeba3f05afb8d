"""Reliability of export and predict through the CLI: nothing of the user's replaced, every bad input one line,
predict's inputs checked against the task, batched predictions independent of the batch size, bounded memory.

The refusals of export and predict happen before TensorFlow is imported, so their subprocesses are quick;
the fixture trains and exports once for the whole module.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from adapter_keras import cli
from adapter_keras.config import AdapterConfig
from adapter_keras.serving import predict as serving_predict
from adapter_keras.serving.signatures import EXPORT_MANIFEST, signature_names
from adapter_keras.tasks import classification_task, regression_task
from adapter_keras.testing import tiny_sentiment_data, write_tiny_glue_dir
from tests.conftest import REPO_ROOT
from tests.helpers import assert_one_error_line, run_cli, run_cli_subprocess

TEXTS, _ = tiny_sentiment_data(40, seed=3)


@pytest.fixture(scope="module")
def env(tmp_path_factory, encoder_dir):
  """A training run (task sst2), adapter artifacts (a pair task, colliding names) and three exports."""
  from adapter_keras.serving.multitask import MultiTaskModel  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("serving_reliability")
  glue = write_tiny_glue_dir(str(root / "glue"), n_train=16, n_dev=8)
  run = root / "run"
  assert cli.main(["train", "--task", "sst2", "--data-dir", glue, "--encoder", encoder_dir, "--adapter-size", "2",
                   "--epochs", "1", "--out", str(run)]) == 0
  # Untrained adapters are enough here: these tests are about names, inputs and files, not accuracy.
  multitask = MultiTaskModel.from_encoder(encoder_dir)
  tasks = {"pairs": classification_task("pairs", ("no", "yes"), is_pair=True),
           "similarity": regression_task("similarity", is_pair=True),
           "foo-bar": classification_task("foo-bar", ("a", "b")),
           "foo_bar": classification_task("foo_bar", ("a", "b")),
           "mixed": classification_task("mixed", ("a", "b")),
           "serving_default": classification_task("serving_default", ("a", "b"))}
  paths = dict(root=root, enc=encoder_dir, run=run)
  for i, (name, task) in enumerate(tasks.items()):
    multitask.add_task(name, task, AdapterConfig(size=2), seed=i)
    paths[name] = root / "artifacts" / name
    multitask.save_task(name, str(paths[name]))
  for name, artifacts in (("single", [run]), ("pair", [paths["pairs"]]),
                          ("multi", [run, paths["pairs"], paths["similarity"]])):
    paths[name] = root / "exports" / name
    args = ["export", "--encoder", encoder_dir, "--out", str(paths[name])]
    for artifact in artifacts:
      args += ["--artifact", str(artifact)]
    assert cli.main(args) == 0
  return paths


def _snapshot(path):
  """Every entry under `path` with its content's digest: what must not change."""
  state = {}
  for root, dirs, files in os.walk(path):
    for d in dirs:
      state[os.path.relpath(os.path.join(root, d), path) + "/"] = None
    for f in files:
      with open(os.path.join(root, f), "rb") as handle:
        state[os.path.relpath(os.path.join(root, f), path)] = hashlib.sha256(handle.read()).hexdigest()
  return state


def _staging_left(parent):
  return [n for n in os.listdir(parent) if ".tmp-" in n or ".old-" in n]


# ---------------------------------------------------------------- export: case 1


def test_export_refuses_an_out_it_did_not_write_even_with_overwrite(env, tmp_path):
  notes = tmp_path / "notes"
  notes.mkdir()
  (notes / "notes.txt").write_text("mine")
  foreign_in_export = tmp_path / "export_plus_notes"
  shutil.copytree(env["single"], foreign_in_export)
  (foreign_in_export / "notes.txt").write_text("mine too")
  artifact = str(env["run"] / "artifact")
  cases = [
      (notes, [], f"--out {notes} is not empty and holds no earlier export"),
      (notes, ["--overwrite"], f"--out {notes} is not empty and holds no earlier export"),
      (env["run"], ["--overwrite"], f"--out {env['run']} is a training run directory"),
      (env["pairs"], ["--overwrite"], f"--out {env['pairs']} is an artifact directory"),
      (foreign_in_export, ["--overwrite"], "plus files it did not write (notes.txt)"),
      (env["single"], [], f"--out {env['single']} holds an earlier export; pass --overwrite"),
  ]
  for out, extra, expected in cases:
    before = _snapshot(out)
    result = run_cli_subprocess(["export", "--artifact", artifact, "--encoder", env["enc"], "--out", out, *extra])
    line = assert_one_error_line(result, expected)
    assert "choose an empty or new directory" in line
    assert _snapshot(out) == before, f"export changed {out}"
    assert not _staging_left(os.path.dirname(out))


def test_export_overwrite_replaces_only_its_own_earlier_export(env, tmp_path):
  out = tmp_path / "serving"
  shutil.copytree(env["pair"], out)  # an earlier export of another task
  status, _, err = run_cli(["export", "--artifact", str(env["run"]), "--encoder", env["enc"], "--out", str(out),
                            "--overwrite"])
  assert status == 0, err
  manifest = json.loads((out / EXPORT_MANIFEST).read_text())
  assert [t["name"] for t in manifest["tasks"]] == ["sst2"]
  assert sorted(manifest["files"] + [EXPORT_MANIFEST]) == sorted(_snapshot(out))
  assert not _staging_left(tmp_path)
  empty = tmp_path / "empty"
  empty.mkdir()
  assert run_cli(["export", "--artifact", str(env["pairs"]), "--encoder", env["enc"], "--out", str(empty)])[0] == 0


# ---------------------------------------------------------------- export: case 3


def test_export_refuses_colliding_and_reserved_signature_names(env, tmp_path):
  out = tmp_path / "serving"
  result = run_cli_subprocess(["export", "--artifact", env["foo-bar"], "--artifact", env["foo_bar"],
                               "--artifact", env["mixed"], "--encoder", env["enc"], "--out", out])
  line = assert_one_error_line(result, "tasks 'foo-bar' and 'foo_bar' would all be signature 'foo_bar'")
  assert "task 'mixed' would be signature 'mixed', which is reserved" in line
  assert not out.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("task", ["serving_default", "mixed"])
def test_a_single_task_export_refuses_a_reserved_task_name_too(env, tmp_path, task):
  """README: names that take a reserved signature are refused; alone as with other tasks."""
  out = tmp_path / "serving"
  result = run_cli_subprocess(["export", "--artifact", env[task], "--encoder", env["enc"], "--out", out])
  assert_one_error_line(result, f"task {task!r} would be signature {task!r}, which is reserved")
  assert result.returncode == 2 and not out.exists() and os.listdir(tmp_path) == []


def test_signature_names_refuse_duplicates_and_serving_default():
  assert signature_names(["sst2", "foo-bar", "9x"]) == {"sst2": "sst2", "foo-bar": "foo_bar", "9x": "task_9x"}
  with pytest.raises(ValueError, match="'serving_default' would be signature 'serving_default'"):
    signature_names(["a", "serving_default"])
  with pytest.raises(ValueError, match="task 'a' is given twice"):
    signature_names(["a", "a", "b"])


# ---------------------------------------------------------------- predict: cases 5, 6, 7


def test_predict_refuses_what_the_model_does_not_serve(env, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  multi, single, pair = env["multi"], env["single"], env["pair"]
  cases = [
      # 5: an unknown task of a multi-task model names the task and the available ones.
      (["--model", multi, "--task", "nosuch", "good"],
       f"--model {multi} serves no task 'nosuch'; its tasks: sst2, pairs, similarity"),
      # 6: not a SavedModel.
      (["--model", empty, "good"], f"--model {empty} is not a SavedModel (no saved_model.pb); it is empty"),
      (["--model", env["run"], "good"], "it is a training run directory: export it first"),
      (["--model", a_file, "good"], f"--model {a_file} is a file, not a SavedModel directory"),
      # 7: what the model expects, not a silent guess.
      (["--model", single, "--task", "rte", "good"], f"--model {single} serves only task 'sst2', not --task 'rte'"),
      (["--model", single, "good", "--text-b", "bad"], "task 'sst2' takes one text per input, but input 1 has"),
      (["--model", multi, "--task", "pairs", "good"], "task 'pairs' is a sentence-pair task and input 1 has no"),
      (["--model", pair, "good"], "task 'pairs' is a sentence-pair task and input 1 has no second text"),
  ]
  for args, expected in cases:
    result = run_cli_subprocess(["predict", *args])
    assert_one_error_line(result, expected)
    assert result.stdout == ""


def test_predict_inputs_are_checked_before_any_output(env, tmp_path):
  bad_lines = {
      "not json": (b'good\n{"text": oops}\n', "line 2 starts with '{' but is not a JSON object"),
      "unknown field": (b'{"text": "a", "label": 1}\n', "line 1 has unknown field(s) label"),
      "empty line": (b"good\n\nbad\n", "line 2 is empty"),
      "not utf-8": (b"good\n\xff\xfe\n", "line 2 is not UTF-8 text"),
      "no inputs": (b"", "holds no inputs"),
      "text not a string": (b'{"text": 3}\n', 'line 1 needs "text" as a string'),
  }
  for name, (content, expected) in bad_lines.items():
    path = tmp_path / f"{name}.txt"
    path.write_bytes(content)
    status, out, err = run_cli(["predict", "--model", str(env["single"]), "--input", str(path)])
    assert status == 2 and out == "" and expected in err, (name, err)
  status, _, err = run_cli(["predict", "--model", str(env["single"]), "--input", str(tmp_path / "missing")])
  assert status == 2 and "--input" in err and "not found" in err
  status, _, err = run_cli(["predict", "--model", str(env["single"]), "--input", str(path), "good"])
  assert status == 2 and "not both" in err
  status, _, err = run_cli(["predict", "--model", str(env["single"])])
  assert status == 2 and "no inputs" in err
  result = run_cli_subprocess(["predict", "--model", env["single"], "--batch-size", "0", "good"])
  assert_one_error_line(result, "expected a positive integer, got '0'")


def test_input_lines_are_texts_or_json_objects():
  lines = [b"\xef\xbb\xbf{\"text\": \"a\", \"text_b\": \"b\"}\r\n",  # UTF-8 with BOM, CRLF
           b"  plain text, kept as is  \n", b'{"text": "{not json}", "text_b": null}']
  assert serving_predict.read_examples(lines, "f") == [
      serving_predict.Example("a", "b"), serving_predict.Example("  plain text, kept as is  "),
      serving_predict.Example("{not json}")]


def test_predict_serves_an_export_without_a_manifest_from_its_signatures(env, tmp_path):
  old = tmp_path / "old_export"
  shutil.copytree(env["multi"], old)
  os.remove(old / EXPORT_MANIFEST)
  status, _, err = run_cli(["predict", "--model", str(old), "--task", "nosuch", "good"])
  assert status == 2 and "its tasks: pairs, similarity, sst2" in err
  status, _, err = run_cli(["predict", "--model", str(old), "--task", "pairs", "good"])
  assert status == 2 and "sentence-pair task" in err
  status, out, err = run_cli(["predict", "--model", str(old), "--task", "sst2", "good", "bad"])
  assert status == 0, err
  assert [json.loads(l)["text"] for l in out.splitlines()] == ["good", "bad"]


# ---------------------------------------------------------------- predict: batching, input forms, memory (case 8)


@pytest.mark.parametrize("export,task", [("multi", "sst2"), ("multi", "similarity"), ("pair", "pairs")])
def test_outputs_do_not_depend_on_the_batch_size(env, export, task):
  model = serving_predict.ExportedModel(str(env[export]))
  served = model.choose_task(task)
  texts = [" ".join([t] * (1 + i % 5)) for i, t in enumerate(TEXTS)]  # lengths 1x to 5x, interleaved
  examples = [serving_predict.Example(t, TEXTS[-1 - i] if served.is_pair else None) for i, t in enumerate(texts)]
  predictor = serving_predict.Predictor(model, served)
  one = list(serving_predict.predict(predictor, examples, batch_size=1))
  many = list(serving_predict.predict(predictor, examples, batch_size=64))
  three_chunks = list(serving_predict.predict(predictor, examples, batch_size=7, chunk_inputs=16))
  assert len(one) == len(examples)
  for other in (many, three_chunks):
    assert [r["label"] for r in other] == [r["label"] for r in one]
    np.testing.assert_allclose([r["score"] for r in other], [r["score"] for r in one], atol=1e-5)


def test_batches_are_sorted_by_length():
  examples = [serving_predict.Example("x" * n) for n in (5, 300, 1, 7, 2, 9, 3)]
  batches = serving_predict.length_sorted_batches(examples, 3)
  assert [len(b) for b in batches] == [3, 3, 1]
  lengths = [[len(examples[i].text) for i in b] for b in batches]
  assert lengths == [[1, 2, 3], [5, 7, 9], [300]]


def test_predict_cli_positional_and_input_file_agree_in_input_order(env, tmp_path):
  pairs = [("good film", "a bad plot"), ("awful", "great"), ("fine", "fine")]
  args = ["predict", "--model", str(env["multi"]), "--task", "pairs"]
  status, positional, err = run_cli(args + ["--batch-size", "2", *[a for a, _ in pairs], "--text-b",
                                            *[b for _, b in pairs]])
  assert status == 0, err
  path = tmp_path / "pairs.jsonl"
  path.write_text("".join(json.dumps(dict(text=a, text_b=b)) + "\n" for a, b in pairs))
  status, from_file, err = run_cli(args + ["--input", str(path), "--json"])
  assert status == 0, err
  lines = [json.loads(l) for l in from_file.splitlines()]
  assert lines[-1] == dict(model=str(env["multi"]), task="pairs", inputs=3, batch_size=64)
  batched_by_two = [json.loads(l) for l in positional.splitlines()]
  assert [(l["text"], l["text_b"], l["label"]) for l in lines[:-1]] == [
      (l["text"], l["text_b"], l["label"]) for l in batched_by_two]
  np.testing.assert_allclose([l["score"] for l in lines[:-1]], [l["score"] for l in batched_by_two], atol=1e-5)
  assert [(l["text"], l["text_b"]) for l in lines[:-1]] == pairs
  assert all(l["label"] in ("no", "yes") and 0.5 <= l["score"] <= 1 for l in lines[:-1])


def _peak_rss_of_predict(model, input_path, tmp_path, name, stdin=False):
  """(peak RSS in bytes, stdout lines, stderr) of `predict --input` in a fresh process (os.wait4's own rusage)."""
  out_path, err_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
  source = "-" if stdin else str(input_path)
  with open(input_path, "rb") as stdin_file, open(out_path, "wb") as out, open(err_path, "wb") as err:
    process = subprocess.Popen([sys.executable, "-m", "adapter_keras", "predict", "--model", str(model),
                                "--input", source], stdin=stdin_file if stdin else subprocess.DEVNULL,
                               stdout=out, stderr=err, cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
  assert process.returncode == 0, err_path.read_text()[-2000:]
  return usage.ru_maxrss * 1024, out_path.read_text().splitlines(), err_path.read_text()


def test_predict_memory_stays_bounded_with_one_long_input(env, tmp_path):
  """10,000 short strings, then the same plus one 300-word string: peak RSS within 2x (issue 17, case 8)."""
  short = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(10_000)]
  long_text = " ".join(TEXTS[i % len(TEXTS)].split()[0] for i in range(300))
  short_file, mixed_file = tmp_path / "short.txt", tmp_path / "mixed.txt"
  short_file.write_text("\n".join(short) + "\n")
  mixed = short[:5000] + [long_text] + short[5000:]
  mixed_file.write_text("\n".join(mixed) + "\n")
  short_rss, _, _ = _peak_rss_of_predict(env["single"], short_file, tmp_path, "short")
  mixed_rss, lines, err = _peak_rss_of_predict(env["single"], mixed_file, tmp_path, "mixed", stdin=True)
  assert mixed_rss < 2 * short_rss, (short_rss, mixed_rss)
  assert [json.loads(l)["text"] for l in lines] == mixed  # streamed in input order
  progress = [l for l in err.splitlines() if l.startswith("predict: ")]
  assert progress and progress[-1].startswith("predict: 10001/10001 inputs"), err[-2000:]


def test_predict_into_a_closed_pipe_stops_without_a_traceback(env, tmp_path):
  """`predict ... | head -1`: the reader goes away after one line; predict stops quietly."""
  inputs = tmp_path / "inputs.txt"
  inputs.write_text("".join(f"{TEXTS[i % len(TEXTS)]} {i}\n" for i in range(3000)))  # output > a pipe's buffer
  process = subprocess.Popen([sys.executable, "-m", "adapter_keras", "predict", "--model", str(env["single"]),
                              "--input", str(inputs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  first = json.loads(process.stdout.readline())
  process.stdout.close()
  stderr = process.stderr.read().decode()
  assert process.wait(timeout=300) == 1
  assert first["text"] == f"{TEXTS[0]} 0"
  assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr[-2000:]
