"""glue-submission: the GLUE server's file names, header, rows in test-file order, label strings, AX
from the MNLI model, the zip, --fill-missing; on generated files and on the shared GLUE test files."""
import csv
import json
import os
import zipfile

import numpy as np
import pytest

from adapter_keras import cli
from adapter_keras.testing import write_tiny_glue_dir, write_tiny_glue_test_files
from tests.conftest import GLUE_DIR
from tests.helpers import last_json, run_cli_subprocess

ALL_FILES = ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv",
             "RTE.tsv", "WNLI.tsv", "AX.tsv"]
TEST_FILES = {"CoLA.tsv": "CoLA/test.tsv", "SST-2.tsv": "SST-2/test.tsv", "MRPC.tsv": "MRPC/test.tsv",
              "STS-B.tsv": "STS-B/test.tsv", "QQP.tsv": "QQP/test.tsv", "MNLI-m.tsv": "MNLI/test_matched.tsv",
              "MNLI-mm.tsv": "MNLI/test_mismatched.tsv", "QNLI.tsv": "QNLI/test.tsv", "RTE.tsv": "RTE/test.tsv",
              "WNLI.tsv": "WNLI/test.tsv", "AX.tsv": "diagnostic/diagnostic.tsv"}
LABELS = {"CoLA.tsv": {"0", "1"}, "SST-2.tsv": {"0", "1"}, "MRPC.tsv": {"0", "1"}, "QQP.tsv": {"0", "1"},
          "WNLI.tsv": {"0", "1"}, "MNLI-m.tsv": {"entailment", "neutral", "contradiction"},
          "MNLI-mm.tsv": {"entailment", "neutral", "contradiction"},
          "AX.tsv": {"entailment", "neutral", "contradiction"}, "QNLI.tsv": {"entailment", "not_entailment"},
          "RTE.tsv": {"entailment", "not_entailment"}}


def _tsv(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _test_file_indices(data_dir, submission_file):
  rows = _tsv(os.path.join(data_dir, TEST_FILES[submission_file]))
  return [row[0] for row in rows[1:] if row]


def check_submission_file(out, data_dir, name):
  """The file's header, one row per test example in the test file's index order, valid labels."""
  rows = _tsv(os.path.join(out, name))
  assert rows[0] == ["index", "prediction"]
  assert [r[0] for r in rows[1:]] == _test_file_indices(data_dir, name)
  predictions = [r[1] for r in rows[1:]]
  if name == "STS-B.tsv":
    assert np.isfinite([float(p) for p in predictions]).all()
  else:
    assert set(predictions) <= LABELS[name], (name, set(predictions))
  return predictions


def _train(data_dir, encoder, task, out):
  assert cli.main(["train", "--task", task, "--data-dir", data_dir, "--encoder", encoder, "--adapter-size", "4",
                   "--epochs", "1", "--max-train-examples", "16", "--max-seq-length", "32",
                   "--out", str(out)]) == 0
  return str(out)


@pytest.fixture(scope="module")
def glue(tmp_path_factory, encoder_dir):
  """A tiny GLUE dir with every test file, AX holding MNLI-m's pairs, and rte/stsb/mnli models."""
  root = tmp_path_factory.mktemp("submission")
  data_dir = write_tiny_glue_dir(str(root / "glue"), n_train=24, n_dev=8)
  write_tiny_glue_test_files(data_dir, n_train=24)
  # AX as MNLI-m's pairs under other indices: the MNLI model must then predict the same labels.
  rows = _tsv(os.path.join(data_dir, "MNLI", "test_matched.tsv"))
  header = rows[0]
  with open(os.path.join(data_dir, "diagnostic", "diagnostic.tsv"), "w", encoding="utf-8") as f:
    f.write("index\tsentence1\tsentence2\n")
    for i, row in enumerate(rows[1:]):
      f.write(f"{i}\t{row[header.index('sentence1')]}\t{row[header.index('sentence2')]}\n")
  runs = {task: _train(data_dir, encoder_dir, task, root / task) for task in ("rte", "stsb", "mnli")}
  return data_dir, encoder_dir, runs


def test_writes_the_servers_files_in_test_file_order_with_ax_from_mnli(tmp_path, capsys, glue):
  data_dir, encoder, runs = glue
  out = tmp_path / "submission"
  out.mkdir()  # an empty --out is fine
  assert cli.main(["glue-submission", "--artifact", f"rte={runs['rte']}", f"stsb={runs['stsb']}",
                   "--artifact", f"mnli={runs['mnli']}", "--encoder", encoder, "--data-dir", data_dir,
                   "--out", str(out), "--batch-size", "4", "--json"]) == 0
  summary = last_json(capsys)
  written = ["STS-B.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "RTE.tsv", "AX.tsv"]
  assert summary["predicted"] == written and summary["filled"] == []
  assert summary["missing"] == [n for n in ALL_FILES if n not in written]
  assert sorted(os.listdir(out)) == sorted(written + ["submission.zip", "submission.json"])
  predictions = {name: check_submission_file(out, data_dir, name) for name in written}
  assert predictions["AX.tsv"] == predictions["MNLI-m.tsv"]
  with zipfile.ZipFile(out / "submission.zip") as archive:
    assert archive.namelist() == written
    for name in written:
      assert archive.read(name).decode("utf-8") == (out / name).read_text(encoding="utf-8")
  assert json.loads((out / "submission.json").read_text())["missing"] == summary["missing"]


def test_refuses_a_used_out_a_model_of_another_task_and_unknown_tasks(tmp_path, capsys, glue):
  data_dir, encoder, runs = glue
  used = tmp_path / "used"
  used.mkdir()
  (used / "keep.txt").write_text("mine")
  args = ["glue-submission", "--encoder", encoder, "--data-dir", data_dir]
  assert cli.main(args + ["--artifact", f"rte={runs['rte']}", "--out", str(used)]) == 2
  assert "not an empty directory" in capsys.readouterr().err and os.listdir(used) == ["keep.txt"]
  assert cli.main(args + ["--artifact", f"qnli={runs['rte']}", "--out", str(tmp_path / "wrong")]) == 2
  assert "model of task 'rte', not 'qnli'" in capsys.readouterr().err
  assert not (tmp_path / "wrong").exists()
  with pytest.raises(SystemExit):
    cli.main(args + ["--artifact", f"squad={runs['rte']}", "--out", str(tmp_path / "x")])
  assert "not a GLUE task" in capsys.readouterr().err


def test_fill_missing_writes_every_file_with_majority_labels_in_a_fresh_process(tmp_path, glue):
  data_dir, encoder, runs = glue
  out = tmp_path / "filled"
  result = run_cli_subprocess(["glue-submission", "--artifact", f"rte={runs['rte']}", "--encoder", encoder,
                               "--data-dir", data_dir, "--out", out, "--fill-missing", "--json"])
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["predicted"] == ["RTE.tsv"] and summary["missing"] == []
  assert summary["filled"] == [n for n in ALL_FILES if n != "RTE.tsv"]
  assert "[glue-submission] filled: CoLA.tsv, SST-2.tsv" in result.stdout
  predictions = {name: check_submission_file(out, data_dir, name) for name in ALL_FILES}
  with open(os.path.join(data_dir, "SST-2", "train.tsv"), encoding="utf-8") as f:
    sst2_labels = [row["label"] for row in csv.DictReader(f, delimiter="\t")]
  majority = max(("0", "1"), key=sst2_labels.count)
  assert sst2_labels.count(majority) > len(sst2_labels) / 2  # the generated labels have a majority
  assert set(predictions["SST-2.tsv"]) == {majority}
  assert set(predictions["CoLA.tsv"]) == {"0"}  # no CoLA train file: the first label
  with open(os.path.join(data_dir, "STS-B", "train.tsv"), encoding="utf-8") as f:
    mean_score = np.mean([float(row["score"]) for row in csv.DictReader(f, delimiter="\t")])
  assert len(set(predictions["STS-B.tsv"])) == 1
  assert float(predictions["STS-B.tsv"][0]) == pytest.approx(mean_score, abs=1e-5)
  with zipfile.ZipFile(out / "submission.zip") as archive:
    assert archive.namelist() == ALL_FILES


@pytest.mark.skipif(not os.path.isdir(GLUE_DIR), reason="the shared GLUE data is not here")
def test_on_the_shared_glue_test_files(tmp_path, capsys, glue):
  """The real RTE, WNLI and AX test files (with rows, quotes and indices as GLUE ships them)."""
  _, encoder, runs = glue
  wnli = _train(GLUE_DIR, encoder, "wnli", tmp_path / "wnli")
  capsys.readouterr()
  out = tmp_path / "real"
  assert cli.main(["glue-submission", "--artifact", f"rte={runs['rte']}", f"wnli={wnli}", f"mnli={runs['mnli']}",
                   "--encoder", encoder, "--data-dir", GLUE_DIR, "--out", str(out), "--fill-missing",
                   "--batch-size", "256", "--json"]) == 0
  summary = last_json(capsys)
  assert summary["predicted"] == ["RTE.tsv", "WNLI.tsv", "AX.tsv"]
  # The shared data has no QQP, MNLI or QNLI test files: listed, not written, even with --fill-missing.
  assert summary["missing"] == ["QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv"]
  assert summary["filled"] == ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv"]
  counts = {}
  for name in summary["predicted"] + summary["filled"]:
    counts[name] = len(check_submission_file(out, GLUE_DIR, name))
  assert (counts["RTE.tsv"], counts["WNLI.tsv"], counts["AX.tsv"]) == (3000, 146, 1104)
  assert summary["files"]["SST-2.tsv"]["prediction"] == "1"  # SST-2's training set is 56% positive
