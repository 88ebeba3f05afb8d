"""TF Hub BERT encoder SavedModels and TF Hub / Kaggle Models handles.

A TF Hub BERT encoder (`bert_en_uncased_L-12_H-768_A-12`, the small BERTs, the BERT experts) is the
format Model Garden's `export_tfhub_lib.export_model` writes: a Keras SavedModel whose variables
carry BertEncoder's names (`transformer/layer_0/self_attention/query/kernel`, ...), with the
WordPiece vocabulary as the asset `vocab_file` and a `do_lower_case` variable. The architecture is
read from the variables' shapes (a SavedModel has no bert_config.json), every variable is assigned
strictly by name, and the rebuilt encoder must reproduce the SavedModel's own outputs on a probe
batch: that check also tells the tanh-GELU of Google's BERTs from an erf-GELU export.

Handles (`https://tfhub.dev/...`, `https://www.kaggle.com/models/...`) resolve through
tensorflow_hub's download cache (TFHUB_CACHE_DIR), so a handle fetched once loads offline later.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from adapter_keras.encoder import BertConfig, build_encoder
from adapter_keras.pretrained.directory import (PretrainedEncoder, WeightsError, assign_strictly, check_vocab,
                                                listed, lower_case_of, model_garden_targets)

HANDLE_PREFIXES = ("https://", "http://", "gs://")
_WORD_EMBEDDINGS = "word_embeddings/embeddings"
_LAYER = re.compile(r"^transformer/layer_(\d+)/")
# Activations a BERT encoder export may use, Google's tanh-GELU first (every TF Hub BERT uses it).
_ACTIVATIONS = ("gelu_new", "gelu")
# Relative to the size of the SavedModel's outputs: within _SAME the first activation is taken at once;
# otherwise the closer of _ACTIVATIONS is, if within _CLOSE. Float32 reordering through 12 layers of a
# badly conditioned (random, BERT-base-sized) model reached 2e-3; a different architecture (pre-LN,
# another attention) is off by O(1).
_SAME, _CLOSE = 1e-5, 1e-2


def is_hub_handle(spec: str) -> bool:
  return spec.startswith(HANDLE_PREFIXES)


def resolve_hub_handle(handle: str) -> str:
  """The local directory of a TF Hub / Kaggle Models handle, downloaded into tensorflow_hub's cache."""
  import tensorflow_hub as hub  # pylint: disable=import-outside-toplevel
  try:
    return hub.resolve(handle)
  except Exception as e:  # pylint: disable=broad-except  # urllib, OSError, tf.errors: all "not fetched"
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise FileNotFoundError(
        f"cannot fetch TF Hub handle {handle} ({reason}); without a network, download it where one "
        "exists, unpack it and pass that directory as --encoder, or set TFHUB_CACHE_DIR to a "
        "tensorflow_hub cache that holds it") from None


def is_savedmodel_dir(path: str) -> bool:
  return any(os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb", "saved_model.pbtxt"))


def _load_savedmodel(path: str):
  try:
    loaded = tf.saved_model.load(path)
  except Exception as e:  # pylint: disable=broad-except  # corrupt protos, missing ops, bad variables
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise WeightsError(f"cannot load the SavedModel in {path}: {reason}") from None
  if hasattr(loaded, "tokenize") and hasattr(loaded, "bert_pack_inputs"):
    raise WeightsError(
        f"{path} is a BERT preprocessing SavedModel (tokenize, bert_pack_inputs), not an encoder; pass the "
        "encoder SavedModel it goes with (its assets hold the same vocabulary)")
  if not hasattr(loaded, "variables"):
    raise WeightsError(f"{path} is a SavedModel without a variables list: not a TF Hub BERT encoder")
  return loaded


def _encoder_tensors(path: str, loaded) -> Dict[str, np.ndarray]:
  """The SavedModel's floating-point variables by name, without the export's own name scope."""
  named = {}
  for variable in loaded.variables:
    if variable.dtype.is_floating:  # the bool do_lower_case is a setting, not a weight
      named[variable.name[:-2] if variable.name.endswith(":0") else variable.name] = variable
  scopes = [n[:-len(_WORD_EMBEDDINGS)] for n in named if n.endswith(_WORD_EMBEDDINGS)]
  if len(scopes) != 1:
    raise WeightsError(f"{path} has {len(scopes)} {_WORD_EMBEDDINGS} variables, not one: not a BERT encoder "
                       f"(variables: {listed(sorted(named))})")
  scope = scopes[0]
  return {(n[len(scope):] if n.startswith(scope) else n): v.numpy() for n, v in named.items()}


def _shape(tensors: Dict[str, np.ndarray], name: str, path: str) -> Tuple[int, ...]:
  if name not in tensors:
    raise WeightsError(f"{path} lacks the tensor {name}, which gives the encoder's architecture")
  return tuple(tensors[name].shape)


def config_from_shapes(tensors: Dict[str, np.ndarray], path: str, hidden_act: str = "gelu_new") -> BertConfig:
  """The BERT architecture that the variables' shapes imply (dropout rates: BERT's 0.1)."""
  layers = sorted({int(m.group(1)) for m in map(_LAYER.match, tensors) if m})
  if layers != list(range(len(layers))) or not layers:
    raise WeightsError(f"{path} has Transformer layers {layers}: expected layer_0 to layer_N without gaps")
  vocab_size, _ = _shape(tensors, _WORD_EMBEDDINGS, path)
  hidden, heads, _ = (_shape(tensors, "transformer/layer_0/self_attention/query/kernel", path) + (0, 0))[:3]
  try:
    return BertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=len(layers), num_attention_heads=heads,
        intermediate_size=_shape(tensors, "transformer/layer_0/intermediate/kernel", path)[-1],
        max_position_embeddings=_shape(tensors, "position_embedding/embeddings", path)[0],
        type_vocab_size=_shape(tensors, "type_embeddings/embeddings", path)[0], hidden_act=hidden_act)
  except (ValueError, TypeError) as e:
    raise WeightsError(f"{path}: the variables' shapes give no valid BERT architecture ({e})") from None


def _vocabulary(path: str, loaded, vocab_size: int) -> Tuple[str, bool]:
  """(vocab file, do_lower_case), from the SavedModel's own asset and variable."""
  if hasattr(loaded, "vocab_file"):
    vocab_file = loaded.vocab_file.asset_path.numpy().decode("utf-8")
  elif hasattr(loaded, "sp_model_file"):
    raise WeightsError(f"{path} tokenizes with SentencePiece (an ALBERT-style export), not BERT's WordPiece")
  else:
    vocab_file = os.path.join(path, "assets", "vocab.txt")
    if not os.path.exists(vocab_file):
      raise WeightsError(f"{path} has no vocab_file asset (assets/vocab.txt): not a TF Hub BERT encoder")
  check_vocab(vocab_file, vocab_size)
  if hasattr(loaded, "do_lower_case"):
    return vocab_file, bool(loaded.do_lower_case.numpy())
  return vocab_file, lower_case_of(path, vocab_file)


def read_tfhub_vocabulary(path: str) -> Tuple[BertConfig, str, bool]:
  """(config, vocab file, do_lower_case) of a TF Hub BERT encoder, without building an encoder."""
  loaded = _load_savedmodel(path)
  config = config_from_shapes(_encoder_tensors(path, loaded), path)
  return (config,) + _vocabulary(path, loaded, config.vocab_size)


def _probe_inputs(config: BertConfig) -> Dict[str, tf.Tensor]:
  length = min(16, config.max_position_embeddings)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, config.vocab_size, (2, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, length // 2:] = 0
  types = np.zeros_like(ids)
  types[:, length // 2:] = 1
  return dict(input_word_ids=tf.constant(ids), input_mask=tf.constant(mask), input_type_ids=tf.constant(types))


def _difference(ours, theirs) -> float:
  """Largest difference of sequence and pooled outputs, relative to the size of the SavedModel's."""
  worst = 0.0
  for key in ("sequence_output", "pooled_output"):
    reference = np.asarray(theirs[key])
    scale = max(1.0, float(np.abs(reference).max()))
    worst = max(worst, float(np.abs(np.asarray(ours[key]) - reference).max()) / scale)
  return worst


def _rebuilt(config: BertConfig, activation: str, tensors, path):
  config = BertConfig(**{**config.to_dict(), "hidden_act": activation})
  encoder = build_encoder(config)
  assign_strictly(model_garden_targets(encoder), tensors, f"TF Hub SavedModel {path}")
  return encoder, config


def _run_savedmodel(path: str, loaded, inputs) -> Dict[str, np.ndarray]:
  try:
    outputs = loaded(inputs, training=False)
    return {k: outputs[k].numpy() for k in ("sequence_output", "pooled_output")}
  except Exception as e:  # pylint: disable=broad-except  # not callable, another signature, other outputs
    reason = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    raise WeightsError(f"{path} does not run as a BERT encoder on input_word_ids/input_mask/input_type_ids: "
                       f"{reason}") from None


def load_tfhub_dir(path: str, name: str) -> PretrainedEncoder:
  loaded = _load_savedmodel(path)
  tensors = _encoder_tensors(path, loaded)
  config = config_from_shapes(tensors, path)
  vocab_file, lower_case = _vocabulary(path, loaded, config.vocab_size)
  # The strict name/shape check runs before the SavedModel does, so a broken export is named by tensor.
  best = _rebuilt(config, _ACTIVATIONS[0], tensors, path)
  inputs = _probe_inputs(config)
  theirs = _run_savedmodel(path, loaded, inputs)
  best_difference = _difference(best[0](inputs, training=False), theirs)
  for activation in _ACTIVATIONS[1:]:
    if best_difference <= _SAME:
      break
    candidate = _rebuilt(config, activation, tensors, path)
    difference = _difference(candidate[0](inputs, training=False), theirs)
    if difference < best_difference:
      best, best_difference = candidate, difference
  if best_difference > _CLOSE:
    raise WeightsError(
        f"{path}: an encoder rebuilt from its weights differs from the SavedModel's outputs by "
        f"{best_difference:.2g} (relative): it is not a standard post-LayerNorm BERT encoder")
  encoder, config = best
  return PretrainedEncoder(encoder, config, vocab_file, lower_case, "cls", os.path.abspath(path), name)
