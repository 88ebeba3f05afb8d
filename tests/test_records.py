"""Training records (train/records.py, `adapter-keras preprocess`, `train --train-records`): the files and
their spec, one-line errors, training identical to the in-memory path, exact resume, sharding by file."""
import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from adapter_keras.cli import records as records_cli
from adapter_keras.tasks.data import load_glue_split
from adapter_keras.testing import tiny_vocab, write_tiny_hf_bert
from adapter_keras.train import loop, records, records_recipe
from adapter_keras.train.config import TrainConfig
from tests.helpers import run_cli

# The in-memory and the records runs: 48 examples, batch 8 -> 6 steps per epoch, 12 in all.
TRAIN_FLAGS = ["--adapter-size", "4", "--epochs", "2", "--batch-size", "8", "--learning-rate", "3e-3"]


class SimulatedCrash(Exception):
  """Stands for the process dying mid-run."""


def _sha256(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory, glue_dir, encoder_dir):
  out = str(tmp_path_factory.mktemp("records") / "sst2")
  status, stdout, stderr = run_cli(["preprocess", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                                    "--num-shards", "4", "--out", out, "--json"])
  assert status == 0, stderr
  return out, json.loads(stdout.strip().splitlines()[-1])


def _train(argv, capsys=None):
  status, stdout, stderr = run_cli(["train"] + argv + TRAIN_FLAGS + ["--json"])
  assert status == 0, stderr[-3000:]
  return json.loads(stdout.strip().splitlines()[-1])


def _same_run(a, b):
  """Equal metrics.json (history included) but for the timing and the records' own entry, equal weights."""
  metrics = [json.loads((d / "metrics.json").read_text()) for d in (a, b)]
  for m in metrics:
    m.pop("seconds")
    m.pop("train_records", None)
  assert metrics[0] == metrics[1]
  weights = [load_file(str(d / "artifact" / "weights.safetensors")) for d in (a, b)]
  assert weights[0].keys() == weights[1].keys()
  for key in weights[0]:
    np.testing.assert_array_equal(weights[0][key], weights[1][key], err_msg=key)


def test_the_cli_copies_equal_the_library_constants():
  assert records_cli.DEFAULT_NUM_SHARDS == records.DEFAULT_NUM_SHARDS
  assert records_cli.DEFAULT_SHUFFLE_WINDOW == records.DEFAULT_SHUFFLE_WINDOW


def test_preprocess_writes_shards_and_a_spec(records_dir, glue_dir, encoder_dir):
  out, summary = records_dir
  spec = json.loads(open(os.path.join(out, records.SPEC_FILE), encoding="utf-8").read())
  assert (summary["num_examples"], summary["num_shards"], spec["num_examples"]) == (48, 4, 48)
  assert [s["num_examples"] for s in spec["shards"]] == [12, 12, 12, 12]
  assert sorted(os.listdir(out)) == sorted([records.SPEC_FILE] + [s["file"] for s in spec["shards"]])
  for shard in spec["shards"]:
    assert _sha256(os.path.join(out, shard["file"])) == shard["sha256"]
  assert spec["format_version"] == records.FORMAT_VERSION and spec["task"]["name"] == "sst2"
  assert spec["tokenizer"] == dict(vocab_size=len(tiny_vocab()), lower_case=True, max_seq_length=128,
                                   vocab_sha256=_sha256(os.path.join(encoder_dir, "vocab.txt")))
  # Every training example once, tokenized as the in-memory path tokenizes it.
  opened = records.open_training_records(out)
  features = [f for f, _ in records.records_dataset(opened, 48, seed=0, epoch=0, with_example_index=True)][0]
  preprocessor = records.encoder_tokenizer(encoder_dir, 128)
  from adapter_keras.train.inputs import encode_examples  # pylint: disable=import-outside-toplevel
  encoded = encode_examples(preprocessor, load_glue_split(glue_dir, "sst2", "train"))
  order = features[records.INDEX].numpy()
  assert sorted(order) == list(range(48))
  np.testing.assert_array_equal(features["input_word_ids"].numpy(),
                                encoded.word_ids.to_tensor().numpy()[order][:, :features["input_word_ids"].shape[1]])


def test_preprocess_refuses_a_non_empty_out(tmp_path, glue_dir, encoder_dir):
  (tmp_path / "keep.txt").write_text("user data")
  status, stdout, stderr = run_cli(["preprocess", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                                    "--out", str(tmp_path)])
  assert status == 2 and stderr.count("\n") == 1 and "exists and is not an empty directory" in stderr
  assert os.listdir(tmp_path) == ["keep.txt"] and (tmp_path / "keep.txt").read_text() == "user data"


def test_training_on_records_equals_the_in_memory_run(records_dir, tmp_path, glue_dir, encoder_dir):
  """Exactly equal (not within a tolerance): a shuffle window holding the whole training set orders each
  epoch as the in-memory path does, and the batches are the same tensors."""
  out, _ = records_dir
  data = ["--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir]
  memory = _train(data + ["--out", str(tmp_path / "memory")])
  streamed = _train(["--train-records", out, "--data-dir", glue_dir, "--encoder", encoder_dir,
                     "--out", str(tmp_path / "records")])
  assert streamed["metrics"] == memory["metrics"] and streamed["best_epoch"] == memory["best_epoch"]
  _same_run(tmp_path / "memory", tmp_path / "records")
  # run.json covers the records: their spec (every shard's sha256), the shuffle window and the dev data.
  run = json.loads((tmp_path / "records" / "run.json").read_text())
  recipe = records_recipe.RecordsClassificationRecipe(records.open_training_records(out),
                                               {"dev": load_glue_split(glue_dir, "sst2", "dev")})
  assert run["data_sha256"] == recipe.data_sha256()
  other = str(tmp_path / "other-records")
  assert run_cli(["preprocess", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                  "--num-shards", "2", "--out", other])[0] == 0
  status, _, stderr = run_cli(["train", "--train-records", other, "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--out", str(tmp_path / "records")] + TRAIN_FLAGS)
  assert status == 2 and "holds a different run (differs in data_sha256)" in stderr


def test_a_crash_then_the_same_command_resumes_to_the_uninterrupted_result(records_dir, tmp_path, monkeypatch,
                                                                           glue_dir, encoder_dir):
  """Windows of 16 examples (3 per epoch) read from 4 interleaved shards; killed at step 10, resumed from
  the step 9 checkpoint (mid-epoch 2)."""
  out, _ = records_dir

  def argv(run_dir):
    return ["--train-records", out, "--data-dir", glue_dir, "--encoder", encoder_dir, "--shuffle-window", "16",
            "--checkpoint-every", "3", "--out", str(run_dir)]

  _train(argv(tmp_path / "reference"))
  count_step = loop._RunProgress.on_train_batch_end

  def crash_at_step_10(self, batch, logs=None):
    count_step(self, batch, logs)
    if self.global_step == 10:
      raise SimulatedCrash

  with monkeypatch.context() as m:
    m.setattr(loop._RunProgress, "on_train_batch_end", crash_at_step_10)
    with pytest.raises(SimulatedCrash):
      _train(argv(tmp_path / "crashed"))
  assert not (tmp_path / "crashed" / "metrics.json").exists()
  status, stdout, _ = run_cli(["train"] + argv(tmp_path / "crashed") + TRAIN_FLAGS)
  assert status == 0 and "[train] resuming from step 9 of 12 (epoch 2)" in stdout
  _same_run(tmp_path / "crashed", tmp_path / "reference")


def _corrupt_shard(directory):
  path = os.path.join(directory, "train-00001-of-00004.tfrecord")
  data = bytearray(open(path, "rb").read())
  data[20] ^= 0xFF
  open(path, "wb").write(bytes(data))


def _other_format_version(directory):
  path = os.path.join(directory, records.SPEC_FILE)
  spec = json.loads(open(path, encoding="utf-8").read())
  spec["format_version"] = 99
  open(path, "w", encoding="utf-8").write(json.dumps(spec))


def _edit_spec(edit):
  """A damage that edits records.json with `edit(spec)`."""
  def damage(directory):
    path = os.path.join(directory, records.SPEC_FILE)
    spec = json.loads(open(path, encoding="utf-8").read())
    edit(spec)
    open(path, "w", encoding="utf-8").write(json.dumps(spec))
  return damage


def _rehashed(cut):
  """Shard 1 rewritten by `cut(bytes)`, its sha256 in the spec updated to match (so only the counts tell)."""
  def damage(directory):
    path = os.path.join(directory, "train-00001-of-00004.tfrecord")
    data = open(path, "rb").read()
    open(path, "wb").write(cut(data))
    _edit_spec(lambda spec: spec["shards"][1].update(sha256=_sha256(path)))(directory)
  return damage


def _first_record(data):
  return data[:12 + int.from_bytes(data[:8], "little") + 4]


@pytest.mark.parametrize("damage, extra, message", [
    (_corrupt_shard, [], "shard train-00001-of-00004.tfrecord of .* was changed or corrupted: its sha256 is"),
    (_edit_spec(lambda spec: spec.update(shards=[s["file"] for s in spec["shards"]])), [],
     "records.json: shard 0 is a JSON str, not an object"),
    (_edit_spec(lambda spec: spec["shards"][2].pop("sha256")), [], "records.json: shard 2 lacks sha256"),
    (_edit_spec(lambda spec: spec.update(tokenizer={})), [],
     "records.json: tokenizer lacks vocab_size, vocab_sha256, lower_case, max_seq_length"),
    (_edit_spec(lambda spec: spec["shards"][0].update(file="../sst2/train-00000-of-00004.tfrecord")), [],
     r"records.json: shard '\.\./sst2/train-00000-of-00004.tfrecord' is outside the records' directory"),
    (_edit_spec(lambda spec: spec["shards"][0].update(file=os.path.abspath("/etc/hostname"))), [],
     "records.json: shard '/etc/hostname' is outside the records' directory"),
    (_rehashed(_first_record), [], "shard train-00001-of-00004.tfrecord of .* holds 1 examples, records.json says 12"),
    (_rehashed(lambda data: b""), [], "shard train-00001-of-00004.tfrecord of .* holds 0 examples, records.json says"),
    (_rehashed(lambda data: data[:len(data) // 2]), [], "shard .*train-00001-of-00004.tfrecord ends inside its record"),
    (lambda d: os.remove(os.path.join(d, records.SPEC_FILE)), [], "has no records.json"),
    (_other_format_version, [], "has format version 99; this adapter_keras reads version 1"),
    (None, ["--encoder", "OTHER_VOCAB"], "were tokenized with another vocabulary"),
    (None, ["--max-seq-length", "64"], "were cut to max_seq_length 128, this run has --max-seq-length 64"),
    (None, ["--train", "train.tsv"], "--train-records DIR replaces --train FILE"),
    (None, ["--prefix-cache", "--adapter-layers", "1"], "--prefix-cache needs every training example in memory"),
], ids=["corrupted-shard", "shards-of-strings", "shard-without-sha256", "empty-tokenizer", "shard-climbs-out",
        "absolute-shard", "rehashed-shard-of-one-example", "rehashed-empty-shard", "rehashed-shard-cut-in-half",
        "missing-spec", "format-version", "other-vocab", "max-seq-length", "with-train",
        "prefix-cache"])
def test_bad_records_or_flags_are_one_line_errors(records_dir, tmp_path, glue_dir, encoder_dir, damage, extra,
                                                  message):
  out, _ = records_dir
  if damage is not None:
    out = shutil.copytree(out, str(tmp_path / "records"))
    damage(out)
  if "OTHER_VOCAB" in extra:
    other = write_tiny_hf_bert(str(tmp_path / "other"), seed=0, vocab=tiny_vocab() + ["movies"], dropout=0.0)
    extra = ["--encoder", other]
  status, _, stderr = run_cli(["train", "--train-records", out, "--data-dir", glue_dir, "--encoder", encoder_dir]
                              + extra + TRAIN_FLAGS + ["--out", str(tmp_path / "run")])
  assert status == 2 and stderr.count("\n") == 1, stderr[-2000:]
  assert stderr.startswith("error: ") and re.search(message, stderr), stderr
  assert not (tmp_path / "run").exists()  # refused before the run wrote anything


def _indices_in(path):
  """The example_index of every record of one shard file."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  spec = {records.INDEX: tf.io.FixedLenFeature([], tf.int64)}
  return {int(tf.io.parse_single_example(r, spec)[records.INDEX]) for r in tf.data.TFRecordDataset(path)}


def test_static_lengths_of_records_are_the_flags_or_powers_of_two(records_dir, glue_dir):
  """The training lengths stay on disk: 32, 64, ..., max_seq_length unless --static-lengths gives them."""
  recipe = records_recipe.RecordsClassificationRecipe(records.open_training_records(records_dir[0]),
                                               {"dev": load_glue_split(glue_dir, "sst2", "dev")})
  recipe.config = TrainConfig(static_shapes=True)
  assert recipe.static_lengths == (32, 64, 128)
  recipe.config = TrainConfig(static_shapes=True, static_lengths=(16, 128))
  assert recipe.static_lengths == (16, 128)
  recipe.config = TrainConfig(static_shapes=False)
  assert recipe.static_lengths is None


def test_two_workers_read_disjoint_shards_that_cover_the_records(records_dir):
  """Worker w of 2 reads shards w and w + 2 (12 examples each): 6 full batches of 4, the same on both."""
  opened = records.open_training_records(records_dir[0])
  assert records.records_batches_per_epoch(opened, 4, num_workers=2) == 6
  seen = []
  for worker in (0, 1):
    batches = list(records.records_dataset(opened, 4, seed=0, epoch=1, worker_index=worker, num_workers=2,
                                           with_example_index=True))
    assert len(batches) == 6 and all(f["input_word_ids"].shape[0] == 4 for f, _ in batches)
    indices = set(np.concatenate([f[records.INDEX].numpy() for f, _ in batches]).tolist())
    own = [path for path, _ in opened.worker_shards(worker, 2)]
    assert [os.path.basename(p) for p in own] == [s["file"] for s in opened.spec["shards"]][worker::2]
    assert indices == set().union(*(_indices_in(p) for p in own))  # exactly its own shards, all of them
    seen.append(indices)
  assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 48
  with pytest.raises(ValueError, match="5 workers need at least as many shards"):
    opened.worker_shards(0, 5)


def test_regression_labels_are_floats(tmp_path, glue_dir, encoder_dir):
  out = str(tmp_path / "stsb")
  assert run_cli(["preprocess", "--task", "stsb", "--data-dir", glue_dir, "--encoder", encoder_dir,
                  "--num-shards", "2", "--max-train-examples", "20", "--out", out])[0] == 0
  opened = records.open_training_records(out)
  assert opened.num_examples == 20 and opened.spec["subset"]["source_examples"] == 48
  features, labels = next(iter(records.records_dataset(opened, 20, seed=0, epoch=0, with_example_index=True)))
  from adapter_keras.train.inputs import limit_examples  # pylint: disable=import-outside-toplevel
  expected = limit_examples(load_glue_split(glue_dir, "stsb", "train"), 20, seed=0).labels
  assert labels.dtype.name == "float32"
  np.testing.assert_array_equal(labels.numpy(), expected.astype(np.float32)[features[records.INDEX].numpy()])
