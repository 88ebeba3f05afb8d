"""What every weight format shares: the loaded encoder's record, the strictness error, and the
files that sit next to the weights (config.json / bert_config.json, vocab.txt, tokenizer and pooling
settings)."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable, Dict, Iterable, Mapping, Tuple

import numpy as np

from adapter_keras.encoder import AdapterBertEncoder, BertConfig
from adapter_keras.pretrained.fingerprint import plain_encoder_variables

# How many names one error or note line lists before it says "and N more".
_NAMES_SHOWN = 12


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
  # Tensors of the source that are not encoder weights (task heads, pre-training heads, optimizer
  # state) and were left out; `load_encoder` names them in one line.
  ignored_tensors: Tuple[str, ...] = ()


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
  check_vocab(vocab_file, config.vocab_size)
  return vocab_file


def check_vocab(vocab_file: str, vocab_size: int) -> None:
  """The vocabulary is UTF-8, has one token per embedding row and no token twice."""
  try:
    with open(vocab_file, encoding="utf-8") as f:
      tokens = f.read().split("\n")
  except UnicodeDecodeError as e:
    raise ValueError(f"{vocab_file} is not UTF-8 text ({e.reason} at byte {e.start})") from None
  if tokens and tokens[-1] == "":
    tokens.pop()
  if len(tokens) != vocab_size:
    raise ValueError(
        f"{vocab_file} has {len(tokens)} tokens but the embedding has vocab_size={vocab_size} rows")
  first_line = {}
  for line, token in enumerate(tokens, 1):
    token = token.rstrip("\r")
    if token in first_line:
      raise ValueError(f"{vocab_file}: token {token!r} appears twice (lines {first_line[token]} and {line})")
    first_line[token] = line


def listed(names: Iterable[str]) -> str:
  """Names for one line: all of them when few, else the first ones and how many more."""
  names = list(names)
  shown = ", ".join(names[:_NAMES_SHOWN])
  return shown if len(names) <= _NAMES_SHOWN else f"{shown} and {len(names) - _NAMES_SHOWN} more"


def _same(x):
  return x


def assign_strictly(targets: Mapping[str, Tuple[object, Callable]], tensors: Mapping[str, np.ndarray],
                    source: str) -> None:
  """Copies `tensors` into the variables of `targets` (name -> (variable, transform)), all or nothing.

  Every target must get exactly one tensor of its shape after `transform`, every tensor must have a
  target, and every value must be finite; otherwise nothing is assigned and one error names each
  missing, unexpected, mis-shaped or non-finite tensor.
  """
  missing = sorted(k for k in targets if k not in tensors)
  unexpected = sorted(k for k in tensors if k not in targets)
  problems = []
  if missing:
    problems.append(f"missing tensors: {listed(missing)}")
  if unexpected:
    problems.append(f"unexpected tensors: {listed(unexpected)}")
  converted = {}
  for key, (variable, transform) in targets.items():
    if key not in tensors:
      continue
    value = np.asarray(tensors[key])
    try:
      value = transform(value)
    except ValueError:
      pass  # reported as a shape mismatch below
    if tuple(value.shape) != tuple(variable.shape):
      problems.append(f"tensor {key} has shape {tuple(np.shape(tensors[key]))}, which does not fit "
                      f"{variable.name} of shape {tuple(variable.shape)} for the config")
      continue
    if not np.issubdtype(value.dtype, np.floating) or not np.isfinite(value).all():
      problems.append(f"tensor {key} holds non-finite values (NaN or Inf)"
                      if np.issubdtype(value.dtype, np.floating) else
                      f"tensor {key} has dtype {value.dtype}, not floating point")
      continue
    converted[key] = value
  if problems:
    raise WeightsError(f"{source} does not match the BERT config: " + "; ".join(problems))
  for key, value in converted.items():
    variable = targets[key][0]
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))


def model_garden_targets(encoder: AdapterBertEncoder) -> Dict[str, Tuple[object, Callable]]:
  """The encoder's non-adapter variables by their Model Garden names ("transformer/layer_0/...")
  without the encoder's own scope, each copied as it is: the names TF Hub exports and Model
  Garden's TF1 converter use."""
  scope = encoder.name + "/"
  targets = {}
  for variable in plain_encoder_variables(encoder):
    name = variable.name[:-len(":0")] if variable.name.endswith(":0") else variable.name
    targets[name[len(scope):] if name.startswith(scope) else name] = (variable, _same)
  return targets


def lower_case_of(path: str, vocab_file: str) -> bool:
  """do_lower_case from tokenizer_config.json; without one, from the vocabulary itself: a cased
  vocabulary holds words with capitals, an uncased one none outside its [SPECIAL] tokens."""
  tok_config = os.path.join(path, "tokenizer_config.json")
  if os.path.exists(tok_config):
    with open(tok_config, encoding="utf-8") as f:
      settings = json.load(f)
    if isinstance(settings, dict) and "do_lower_case" in settings:
      return bool(settings["do_lower_case"])
  with open(vocab_file, encoding="utf-8") as f:
    for token in f:
      token = token.strip()
      if not (token.startswith("[") and token.endswith("]")) and token != token.lower():
        return False
  return True


def default_pooling_of(path: str) -> str:
  pooling_config = os.path.join(path, "1_Pooling", "config.json")
  if os.path.exists(pooling_config):
    with open(pooling_config, encoding="utf-8") as f:
      if json.load(f).get("pooling_mode_mean_tokens"):
        return "mean"
  return "cls"
