"""The BERT distributions TF users hold: TF Hub SavedModels (and handles), Google's original TF1
checkpoints, sharded and task-prefixed Hugging Face checkpoints; each loaded strictly, compared with
an independent reference, counted by `params`, and refused with one line when broken."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import load_file, save_file

from adapter_keras import pretrained
from adapter_keras.config import AdapterConfig
from adapter_keras.pretrained import WeightsError, load_encoder
from adapter_keras.testing import (tiny_bert_tensors, write_sharded_hf_copy, write_tiny_glue_dir, write_tiny_hf_bert,
                                   write_tiny_tf1_bert, write_tiny_tfhub_bert)
from tests.helpers import assert_one_error_line, run_cli, run_cli_subprocess
from tests.numpy_bert import bert_forward


def _inputs(vocab_size, batch=3, length=11, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, vocab_size, (batch, length)).astype(np.int32)
  types = np.zeros_like(ids)
  types[:, length // 2:] = 1
  mask = np.ones_like(ids)
  mask[-1, length - 3:] = 0
  return dict(input_word_ids=ids, input_mask=mask, input_type_ids=types)


def _outputs(encoder, inputs):
  out = encoder(inputs, training=False)
  return out["sequence_output"].numpy(), out["pooled_output"].numpy()


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
  """The same kind of tiny BERT in every format, plus the originals to compare with."""
  root = tmp_path_factory.mktemp("formats")
  hub, hub_original = write_tiny_tfhub_bert(str(root / "hub"), seed=1)
  return dict(root=root, hub=hub, hub_original=hub_original, tf1=write_tiny_tf1_bert(str(root / "tf1"), seed=0),
              hf=write_tiny_hf_bert(str(root / "hf"), seed=0), hf_other=write_tiny_hf_bert(str(root / "hf2"), seed=5),
              glue=write_tiny_glue_dir(str(root / "glue"), n_train=16, n_dev=8))


# ---------------------------------------------------------------- TF Hub SavedModels


@pytest.mark.parametrize("exact_gelu", [False, True])
def test_tfhub_savedmodel_reproduces_the_exported_encoder(tmp_path, exact_gelu, formats):
  if exact_gelu:
    path, original = write_tiny_tfhub_bert(str(tmp_path / "hub"), seed=2, exact_gelu=True, do_lower_case=False)
  else:
    path, original = formats["hub"], formats["hub_original"]
  loaded = load_encoder(path, AdapterConfig(size=4), adapter_seed=0)
  loaded.encoder.set_adapters_enabled(False)
  inputs = _inputs(loaded.config.vocab_size)
  for ours, theirs in zip(_outputs(loaded.encoder, inputs), _outputs(original, inputs)):
    assert np.abs(ours - theirs).max() <= 1e-5
  assert loaded.config.hidden_act == ("gelu" if exact_gelu else "gelu_new")
  assert (loaded.config.num_hidden_layers, loaded.config.hidden_size, loaded.config.num_attention_heads,
          loaded.config.intermediate_size) == (2, 32, 4, 64)
  # Tokenizer settings come from the SavedModel's own asset and variable.
  assert loaded.vocab_file == os.path.join(os.path.abspath(path), "assets", "vocab.txt")
  assert loaded.lower_case is (not exact_gelu)
  assert pretrained.encoder_vocabulary(path)[1:] == (loaded.vocab_file, loaded.lower_case)


def test_tfhub_handle_resolves_through_the_download_cache(tmp_path, monkeypatch, formats):
  handle = "https://tfhub.dev/tensorflow/small_bert/bert_en_uncased_L-2_H-32_A-4/2"
  cache = tmp_path / "cache"
  shutil.copytree(formats["hub"], cache / hashlib.sha1(handle.encode("utf8")).hexdigest())
  monkeypatch.setenv("TFHUB_CACHE_DIR", str(cache))
  loaded = load_encoder(handle)
  assert loaded.name == handle and loaded.config.num_hidden_layers == 2
  hub = load_encoder(formats["hub"])
  assert pretrained.base_fingerprint(loaded.encoder) == pretrained.base_fingerprint(hub.encoder)


def test_preprocessing_savedmodel_is_refused_naming_the_encoder_it_needs(tmp_path):
  """A bert_en_uncased_preprocess-like SavedModel: its tokenize and bert_pack_inputs, no encoder."""
  root = tf.train.Checkpoint()
  root.tokenize = tf.function(lambda texts: tf.strings.split(texts), input_signature=[tf.TensorSpec([None], tf.string)])
  root.bert_pack_inputs = tf.function(lambda ids: ids, input_signature=[tf.TensorSpec([None, None], tf.int32)])
  path = str(tmp_path / "preprocess")
  tf.saved_model.save(root, path)
  with pytest.raises(WeightsError, match="preprocessing SavedModel"):
    load_encoder(path)


def _hub_like(path, tensors, vocab, outputs=None):
  """A SavedModel shaped like a TF Hub BERT export (named variables, vocab asset, do_lower_case),
  callable when `outputs` (a constant per output name) is given."""
  root = tf.train.Checkpoint()
  if outputs is not None:
    def call(inputs, training=False):
      del training
      batch, length = tf.shape(inputs["input_word_ids"])[0], tf.shape(inputs["input_word_ids"])[1]
      return {"sequence_output": tf.fill([batch, length, 32], outputs), "pooled_output": tf.fill([batch, 32], outputs)}
    root.__call__ = tf.function(call)
    root.__call__.get_concrete_function(
        {k: tf.TensorSpec([None, None], tf.int32) for k in ("input_word_ids", "input_mask", "input_type_ids")},
        training=False)
  root.variables = [tf.Variable(value, name=name) for name, value in tensors.items()]
  vocab_file = os.path.join(os.path.dirname(path), os.path.basename(path) + "-vocab.txt")
  with open(vocab_file, "w", encoding="utf-8") as f:
    f.write("\n".join(vocab) + "\n")
  root.vocab_file = tf.saved_model.Asset(vocab_file)
  root.do_lower_case = tf.Variable(True)
  tf.saved_model.save(root, path)
  return path


@pytest.mark.parametrize("outputs,message", [
    (None, "does not run as a BERT encoder"), (0.5, "differs from the SavedModel's outputs")])
def test_savedmodel_that_does_not_compute_bert_is_refused(tmp_path, formats, outputs, message):
  loaded = tf.saved_model.load(formats["hub"])
  tensors = {v.name[:-2]: v.numpy() for v in loaded.variables if v.dtype.is_floating}
  vocab = open(os.path.join(formats["hub"], "assets", "vocab.txt"), encoding="utf-8").read().split()
  with pytest.raises(WeightsError, match=message):
    load_encoder(_hub_like(str(tmp_path / "fake"), tensors, vocab, outputs))


# ---------------------------------------------------------------- Google's TF1 checkpoints


def test_tf1_checkpoint_matches_the_numpy_reference_and_sets_its_heads_aside(formats, capsys):
  loaded = load_encoder(formats["tf1"])
  with open(os.path.join(formats["tf1"], "bert_config.json"), encoding="utf-8") as f:
    config = json.load(f)
  inputs = _inputs(config["vocab_size"])
  # Google's modeling.py computes "gelu" with the tanh approximation (the reference's "gelu_new").
  reference = bert_forward(tiny_bert_tensors(config, seed=0), dict(config, hidden_act="gelu_new"),
                           inputs["input_word_ids"], inputs["input_type_ids"], inputs["input_mask"])
  for ours, theirs in zip(_outputs(loaded.encoder, inputs), reference):
    assert np.abs(ours - theirs).max() <= 1e-4
  assert loaded.ignored_tensors == ("cls/predictions/output_bias", "cls/seq_relationship/output_weights",
                                    "global_step")
  note = [l for l in capsys.readouterr().err.splitlines() if l.startswith("note: ")]
  assert len(note) == 1 and "ignored 3 tensors" in note[0] and "global_step" in note[0]


def test_tf1_and_hf_copies_of_one_model_share_a_fingerprint(formats):
  tf1 = pretrained.base_fingerprint(load_encoder(formats["tf1"]).encoder)
  assert tf1 == pretrained.base_fingerprint(load_encoder(formats["hf"]).encoder)
  assert tf1 != pretrained.base_fingerprint(load_encoder(formats["hf_other"]).encoder)


def _tf1_variant(root, name, mutate):
  path = root / name
  shutil.copytree(write_tiny_tf1_bert(str(root / (name + "-src")), seed=0, with_heads=False), path)
  reader = tf.train.load_checkpoint(str(path / "bert_model.ckpt"))
  variables = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
  for f in path.glob("bert_model.ckpt*"):
    f.unlink()
  mutate(variables)
  names = sorted(variables)
  tf.raw_ops.SaveV2(prefix=str(path / "bert_model.ckpt"), tensor_names=names, shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(variables[n]) for n in names])
  return str(path)


# ---------------------------------------------------------------- Hugging Face shards and task checkpoints


def test_sharded_safetensors_round_trip(tmp_path, formats):
  sharded = write_sharded_hf_copy(formats["hf"], str(tmp_path / "sharded"), shards=3)
  one, many = load_encoder(formats["hf"]), load_encoder(sharded)
  inputs = _inputs(one.config.vocab_size)
  for a, b in zip(_outputs(one.encoder, inputs), _outputs(many.encoder, inputs)):
    np.testing.assert_array_equal(a, b)
  assert pretrained.base_fingerprint(one.encoder) == pretrained.base_fingerprint(many.encoder)


def test_task_checkpoint_with_bert_prefix_lists_its_head_once_and_loads_the_encoder(tmp_path, formats, capsys):
  task = tmp_path / "task"
  shutil.copytree(formats["hf"], task)
  tensors = load_file(str(task / "model.safetensors"))
  tensors = {"bert." + k: v for k, v in tensors.items()}
  tensors["classifier.weight"] = np.ones((2, 32), np.float32)
  tensors["classifier.bias"] = np.zeros(2, np.float32)
  save_file(tensors, str(task / "model.safetensors"))
  capsys.readouterr()
  loaded = load_encoder(str(task))
  assert loaded.ignored_tensors == ("classifier.bias", "classifier.weight")
  notes = [l for l in capsys.readouterr().err.splitlines() if l.startswith("note: ")]
  assert len(notes) == 1 and "classifier.bias, classifier.weight" in notes[0]
  inputs = _inputs(loaded.config.vocab_size)
  for a, b in zip(_outputs(loaded.encoder, inputs), _outputs(load_encoder(formats["hf"]).encoder, inputs)):
    np.testing.assert_array_equal(a, b)
  # A prefixed tensor that is not BERT's is not a head: it is named as unexpected.
  tensors["bert.encoder.layer.5.output.dense.bias"] = np.zeros(32, np.float32)
  save_file(tensors, str(task / "model.safetensors"))
  with pytest.raises(WeightsError, match="unexpected tensors: encoder.layer.5.output.dense.bias"):
    load_encoder(str(task))


# ---------------------------------------------------------------- every format: params, bad variants


def _independent_count(formats, name):
  if name == "hub":
    return sum(int(np.prod(v.shape)) for v in formats["hub_original"].weights)
  tensors = load_file(os.path.join(formats["hf"], "model.safetensors"))
  return sum(v.size for k, v in tensors.items() if k != "embeddings.position_ids")


@pytest.mark.parametrize("name", ["hub", "tf1", "hf-sharded", "hf"])
def test_params_reports_exact_counts_for_every_format(name, tmp_path, formats):
  path = (write_sharded_hf_copy(formats["hf"], str(tmp_path / "sharded")) if name == "hf-sharded"
          else formats[name.split("-")[0]])
  status, out, err = run_cli(["params", "--encoder", path, "--adapter-size", "4", "--json"])
  assert status == 0, err
  report = json.loads(out.strip().splitlines()[-1])
  assert report["base_params"] == _independent_count(formats, name)
  # Two adapters per layer, 2md + d + m each (d = 32, m = 4, 2 layers).
  assert report["adapter_params"] == 2 * 2 * (2 * 32 * 4 + 32 + 4)


BAD_VARIANTS = ("hub missing tensor", "hub wrong shape", "hub vocab size", "tf1 missing tensor", "tf1 wrong shape",
                "tf1 vocab size", "tf1 NaN weights", "hf shard lacks a tensor", "pytorch_model.bin only",
                "hub handle offline", "config is a JSON list", "vocab with a token twice", "tf1 data file cut in half")
# These run as a user runs them, in a fresh process; the others through the same CLI entry point
# in-process (a fresh TensorFlow import costs ~8 s a case on 2 cores).
IN_A_SUBPROCESS = ("hub missing tensor", "tf1 wrong shape", "hub handle offline")


@pytest.fixture(scope="module")
def bad_variants(formats):
  """name -> (encoder directory or handle, what the one error line must name)."""
  root = formats["root"] / "bad"
  root.mkdir(exist_ok=True)
  variants = {}
  hub_tensors = {v.name[:-2]: v.numpy() for v in tf.saved_model.load(formats["hub"]).variables
                 if v.dtype.is_floating}
  vocab = open(os.path.join(formats["hub"], "assets", "vocab.txt"), encoding="utf-8").read().split()
  missing = {k: v for k, v in hub_tensors.items() if k != "transformer/layer_1/output/bias"}
  variants["hub missing tensor"] = (_hub_like(str(root / "hub_missing"), missing, vocab),
                                    "missing tensors: transformer/layer_1/output/bias")
  wrong = dict(hub_tensors, **{"transformer/layer_0/output/bias": np.zeros(31, np.float32)})
  variants["hub wrong shape"] = (_hub_like(str(root / "hub_shape"), wrong, vocab),
                                 "tensor transformer/layer_0/output/bias has shape (31,)")
  variants["hub vocab size"] = (_hub_like(str(root / "hub_vocab"), hub_tensors, vocab[:-2]),
                                "has 65 tokens but the embedding has vocab_size=67")
  variants["tf1 missing tensor"] = (
      _tf1_variant(root, "tf1_missing", lambda v: v.pop("bert/encoder/layer_1/attention/self/key/bias")),
      "missing tensors: transformer/layer_1/self_attention/key/bias")
  variants["tf1 wrong shape"] = (
      _tf1_variant(root, "tf1_shape", lambda v: v.update({"bert/pooler/dense/kernel": np.zeros((32, 30), np.float32)})),
      "tensor pooler_transform/kernel has shape (32, 30)")
  tf1_vocab = _tf1_variant(root, "tf1_vocab", lambda v: None)
  with open(os.path.join(tf1_vocab, "vocab.txt"), "a", encoding="utf-8") as f:
    f.write("extra\n")
  variants["tf1 vocab size"] = (tf1_vocab, "has 68 tokens but the embedding has vocab_size=67")
  nan = _tf1_variant(root, "tf1_nan", lambda v: v["bert/encoder/layer_0/output/dense/bias"].__setitem__(3, np.nan))
  variants["tf1 NaN weights"] = (nan, "transformer/layer_0/output/bias holds non-finite values")
  cut = _tf1_variant(root, "tf1_cut", lambda v: None)
  data_file = os.path.join(cut, "bert_model.ckpt.data-00000-of-00001")
  data = open(data_file, "rb").read()
  open(data_file, "wb").write(data[:len(data) // 2])
  variants["tf1 data file cut in half"] = (cut, f"cannot read checkpoint {os.path.join(cut, 'bert_model.ckpt')}")
  sharded = write_sharded_hf_copy(formats["hf"], str(root / "hf_shard_missing"))
  shard = os.path.join(sharded, "model-00002-of-00002.safetensors")
  tensors = load_file(shard)
  tensors.pop(sorted(tensors)[0])
  save_file(tensors, shard)
  variants["hf shard lacks a tensor"] = (sharded, "model-00002-of-00002.safetensors does not match")
  pickled = root / "pickled"
  pickled.mkdir()
  shutil.copy(os.path.join(formats["hf"], "config.json"), pickled)
  shutil.copy(os.path.join(formats["hf"], "vocab.txt"), pickled)
  (pickled / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not read")
  variants["pytorch_model.bin only"] = (str(pickled), "convert it once where torch is installed")
  variants["hub handle offline"] = ("https://tfhub.invalid/google/bert/1",
                                    "cannot fetch TF Hub handle https://tfhub.invalid/google/bert/1")
  listed_config = root / "list_config"
  shutil.copytree(formats["hf"], listed_config)
  (listed_config / "config.json").write_text("[1, 2]")
  variants["config is a JSON list"] = (str(listed_config),
                                       "config.json holds a JSON list, not a JSON object of BERT settings")
  twice = root / "vocab_twice"
  shutil.copytree(formats["hf"], twice)
  tokens = (twice / "vocab.txt").read_text(encoding="utf-8").splitlines()
  tokens[-1] = tokens[10]
  (twice / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
  variants["vocab with a token twice"] = (str(twice), f"token {tokens[10]!r} appears twice (lines 11 and 67)")
  return variants


def test_bad_variants_cover_the_list(bad_variants):
  assert sorted(bad_variants) == sorted(BAD_VARIANTS)


@pytest.mark.parametrize("case", BAD_VARIANTS)
def test_each_bad_variant_is_one_error_line_naming_it(case, bad_variants, formats, tmp_path):
  """Every broken distribution fails `train` with one line that names the problem, and writes nothing."""
  encoder, expected = bad_variants[case]
  out = tmp_path / "out"
  argv = ["train", "--task", "sst2", "--data-dir", formats["glue"], "--encoder", encoder, "--epochs", "1",
          "--out", str(out)]
  if case in IN_A_SUBPROCESS:
    assert_one_error_line(run_cli_subprocess(argv), expected)
  else:
    status, _, err = run_cli(argv)
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    assert status == 2 and len(errors) == 1 and expected in errors[0], err
  assert not out.exists()


def test_train_an_adapter_on_a_tfhub_encoder_and_keep_its_artifact_to_that_base(formats, tmp_path):
  out = tmp_path / "run"
  result = run_cli_subprocess(["train", "--task", "sst2", "--data-dir", formats["glue"], "--encoder", formats["hub"],
                               "--adapter-size", "2", "--epochs", "1", "--out", out, "--json"])
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout.strip().splitlines()[-1])["metrics"]
  artifact = str(out / "artifact")
  evaluate = ["evaluate", "--artifact", artifact, "--task", "sst2", "--data-dir", formats["glue"], "--json"]
  status, _, err = run_cli(evaluate + ["--encoder", formats["hub"]])
  assert status == 0, err
  status, _, err = run_cli(evaluate + ["--encoder", formats["hf_other"]])
  assert status == 2 and "fingerprint" in err
