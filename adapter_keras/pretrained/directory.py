"""What every weight format shares: the loaded encoder's record, the strictness error, and the
files that sit next to the weights (config.json / bert_config.json, vocab.txt, tokenizer and pooling
settings)."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Tuple

from adapter_keras.encoder import AdapterBertEncoder, BertConfig


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


def read_config(path: str, names: Tuple[str, ...]) -> BertConfig:
  for n in names:
    f = os.path.join(path, n)
    if os.path.exists(f):
      return BertConfig.from_json_file(f)
  raise FileNotFoundError(f"{path} has no {' or '.join(names)}")


def vocab_file_for(path: str, config: BertConfig) -> str:
  vocab_file = os.path.join(path, "vocab.txt")
  if not os.path.exists(vocab_file):
    raise FileNotFoundError(f"{path} has no vocab.txt (the WordPiece vocabulary)")
  with open(vocab_file, encoding="utf-8") as f:
    size = sum(1 for _ in f)
  if size != config.vocab_size:
    raise ValueError(
        f"{vocab_file} has {size} tokens but the config says vocab_size={config.vocab_size}")
  return vocab_file


def lower_case_of(path: str) -> bool:
  tok_config = os.path.join(path, "tokenizer_config.json")
  if os.path.exists(tok_config):
    with open(tok_config, encoding="utf-8") as f:
      return bool(json.load(f).get("do_lower_case", True))
  return True  # BERT's uncased vocabularies are the common case


def default_pooling_of(path: str) -> str:
  pooling_config = os.path.join(path, "1_Pooling", "config.json")
  if os.path.exists(pooling_config):
    with open(pooling_config, encoding="utf-8") as f:
      if json.load(f).get("pooling_mode_mean_tokens"):
        return "mean"
  return "cls"
