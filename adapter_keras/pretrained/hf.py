"""Hugging Face BERT directories: config.json, model.safetensors (or shards listed in
model.safetensors.index.json), vocab.txt, read with numpy and safetensors (no torch, no pickle).
BertModel and BertFor* (task, "bert."-prefixed) checkpoints both load. Torch `[out, in]` kernels are
transposed and the attention kernels reshaped to Model Garden's `[hidden, heads, head_size]`; every
tensor is checked. pytorch_model.bin is refused: reading its pickle would run its code."""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Tuple

import numpy as np
import tensorflow as tf

from adapter_keras import _model_garden
from adapter_keras.encoder import AdapterBertEncoder, BertConfig, build_encoder
from adapter_keras.pretrained.directory import (PretrainedEncoder, WeightsError, assign_strictly,
                                                default_pooling_of, listed, lower_case_of, read_config,
                                                vocab_file_for)

# A buffer (not a weight) that Hugging Face checkpoints may carry.
_HF_IGNORED_KEYS = ("embeddings.position_ids",)
_HF_HEAD_PREFIXES = ("cls.",)  # BertForPreTraining's MLM/NSP heads in an unprefixed checkpoint
_TASK_PREFIX = "bert."
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLED_WEIGHTS_FILE = "pytorch_model.bin"
CONVERT_COMMAND = (
    "python -c \"import torch; from safetensors.torch import save_file; "
    "w = torch.load('pytorch_model.bin', map_location='cpu', weights_only=True); "
    "save_file({k: v.detach().clone().contiguous() for k, v in w.items()}, 'model.safetensors')\"")


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
  if not os.path.isfile(path):
    raise WeightsError(f"{path} does not exist")
  try:
    return load_file(path)
  except (SafetensorError, OSError, ValueError) as e:
    raise WeightsError(f"cannot read {path}: the file is truncated or corrupt ({e})") from None


def read_sharded_safetensors(index_file: str) -> Dict[str, np.ndarray]:
  """The tensors of a sharded checkpoint: `model.safetensors.index.json`'s weight_map names, for
  every tensor, the shard that holds it; each shard must hold exactly the tensors mapped to it."""
  try:
    with open(index_file, encoding="utf-8") as f:
      weight_map = json.load(f)["weight_map"]
    if not isinstance(weight_map, dict) or not weight_map:
      raise ValueError("weight_map is empty or not an object")
  except (ValueError, KeyError, TypeError) as e:
    raise WeightsError(f"{index_file} is not a safetensors index with a weight_map ({e})") from None
  directory = os.path.dirname(index_file)
  tensors = {}
  for shard in sorted(set(weight_map.values())):
    if os.path.basename(shard) != shard:
      raise WeightsError(f"{index_file} names shard {shard!r} outside its directory")
    held = read_safetensors(os.path.join(directory, shard))
    expected = {k for k, v in weight_map.items() if v == shard}
    absent, extra = sorted(expected - set(held)), sorted(set(held) - expected)
    if absent or extra:
      raise WeightsError(f"shard {shard} does not match {os.path.basename(index_file)}: "
                         + "; ".join(p for p in (absent and f"lacks {listed(absent)}",
                                                  extra and f"also holds {listed(extra)}") if p))
    tensors.update(held)
  return tensors


def read_hf_tensors(path: str) -> Dict[str, np.ndarray]:
  """The tensors of a Hugging Face directory: one model.safetensors, or the shards of an index."""
  single, index = os.path.join(path, WEIGHTS_FILE), os.path.join(path, INDEX_FILE)
  return read_safetensors(single) if os.path.exists(single) else read_sharded_safetensors(index)


def split_encoder_tensors(tensors: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[str]]:
  """(the encoder's tensors under BertModel names, the names of the other tensors).

  BertFor* task checkpoints prefix the encoder with "bert." and add heads ("classifier.*",
  "qa_outputs.*", "cls.*"); pre-training checkpoints add "cls.*". Those heads are not the encoder's,
  so they are set aside, while anything else stays for the strict check.
  """
  prefixed = any(k.startswith(_TASK_PREFIX) for k in tensors)
  encoder, heads = {}, []
  for key, value in tensors.items():
    if key in _HF_IGNORED_KEYS or key[len(_TASK_PREFIX):] in _HF_IGNORED_KEYS:
      continue
    if prefixed:
      if key.startswith(_TASK_PREFIX):
        encoder[key[len(_TASK_PREFIX):]] = value
      else:
        heads.append(key)
    elif key.startswith(_HF_HEAD_PREFIXES):
      heads.append(key)
    else:
      encoder[key] = value
  return encoder, sorted(heads)


def assign_hf_weights(encoder: AdapterBertEncoder, config: BertConfig,
                      tensors: Dict[str, np.ndarray]) -> List[str]:
  """Copies Hugging Face BERT tensors into a built encoder, strictly; the head tensors left out."""
  encoder_tensors, heads = split_encoder_tensors(tensors)
  assign_strictly(_hf_layout(encoder, config), encoder_tensors, "Hugging Face weights")
  return heads


def load_hf_dir(path, name) -> PretrainedEncoder:
  config = read_config(path, ("config.json",))
  vocab_file = vocab_file_for(path, config)
  tensors = read_hf_tensors(path)
  encoder = build_encoder(config)
  heads = assign_hf_weights(encoder, config, tensors)
  return PretrainedEncoder(encoder, config, vocab_file, lower_case_of(path, vocab_file), default_pooling_of(path),
                           os.path.abspath(path), name, ignored_tensors=tuple(heads))


def is_hf_dir(path: str) -> bool:
  return any(os.path.exists(os.path.join(path, f)) for f in (WEIGHTS_FILE, INDEX_FILE))


def refuse_pickled_weights(path: str) -> None:
  """A directory with only pytorch_model.bin: its pickle cannot be read safely without torch."""
  if os.path.exists(os.path.join(path, PICKLED_WEIGHTS_FILE)) and not is_hf_dir(path):
    raise WeightsError(
        f"{path} holds only {PICKLED_WEIGHTS_FILE}, a pickle that cannot be read without torch and "
        "without running its code; convert it once where torch is installed: " + CONVERT_COMMAND)
