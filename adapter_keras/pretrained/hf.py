"""Hugging Face BERT directories: config.json, model.safetensors, vocab.txt, read with numpy and
safetensors (no torch). Torch `[out, in]` kernels are transposed and the attention kernels reshaped to
Model Garden's `[hidden, heads, head_size]`; every tensor is checked."""
from __future__ import annotations

import os
from typing import Callable, Dict, Tuple

import numpy as np
import tensorflow as tf

from adapter_keras import _model_garden
from adapter_keras.encoder import AdapterBertEncoder, BertConfig, build_encoder
from adapter_keras.pretrained.directory import (PretrainedEncoder, WeightsError, default_pooling_of,
                                                lower_case_of, read_config, vocab_file_for)

# Tensors a Hugging Face checkpoint may carry that are not encoder weights.
_HF_IGNORED_KEYS = ("embeddings.position_ids",)
_HF_IGNORED_PREFIXES = ("cls.",)  # BertForPreTraining's MLM/NSP heads
WEIGHTS_FILE = "model.safetensors"


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
      "embeddings.word_embeddings.weight": (_model_garden.word_embedding(encoder).embeddings, same),
      "embeddings.position_embeddings.weight": (_model_garden.position_embedding(encoder).weights[0], same),
      "embeddings.token_type_embeddings.weight": (_model_garden.type_embedding(encoder).embeddings, same),
      "embeddings.LayerNorm.weight": (_model_garden.embedding_layer_norm(encoder).gamma, same),
      "embeddings.LayerNorm.bias": (_model_garden.embedding_layer_norm(encoder).beta, same),
      "pooler.dense.weight": (_model_garden.pooler_dense(encoder).kernel, dense_kernel),
      "pooler.dense.bias": (_model_garden.pooler_dense(encoder).bias, same),
  }
  for i, block in enumerate(encoder.transformer_layers):
    p = f"encoder.layer.{i}."
    attention = _model_garden.attention_projections(block)
    for part in ("query", "key", "value"):
      layout[f"{p}attention.self.{part}.weight"] = (attention[part].kernel, qkv_kernel)
      layout[f"{p}attention.self.{part}.bias"] = (attention[part].bias, qkv_bias)
    attention_norm, output_norm = _model_garden.block_layer_norms(block)
    intermediate, output = _model_garden.ffn_projections(block)
    layout.update({
        f"{p}attention.output.dense.weight": (attention["output"].kernel, attention_output_kernel),
        f"{p}attention.output.dense.bias": (attention["output"].bias, same),
        f"{p}attention.output.LayerNorm.weight": (attention_norm.gamma, same),
        f"{p}attention.output.LayerNorm.bias": (attention_norm.beta, same),
        f"{p}intermediate.dense.weight": (intermediate.kernel, dense_kernel),
        f"{p}intermediate.dense.bias": (intermediate.bias, same),
        f"{p}output.dense.weight": (output.kernel, dense_kernel),
        f"{p}output.dense.bias": (output.bias, same),
        f"{p}output.LayerNorm.weight": (output_norm.gamma, same),
        f"{p}output.LayerNorm.bias": (output_norm.beta, same),
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


def load_hf_dir(path, name, adapter_config, adapter_seed) -> PretrainedEncoder:
  config = read_config(path, ("config.json",))
  vocab_file = vocab_file_for(path, config)
  tensors = read_safetensors(os.path.join(path, WEIGHTS_FILE))
  encoder = build_encoder(config, adapter_config, adapter_seed)
  assign_hf_weights(encoder, config, tensors)
  return PretrainedEncoder(encoder, config, vocab_file, lower_case_of(path), default_pooling_of(path),
                           os.path.abspath(path), name)
