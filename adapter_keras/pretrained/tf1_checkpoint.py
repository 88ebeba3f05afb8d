"""Google's original BERT checkpoints (what the paper fine-tuned): `bert_model.ckpt.*` written by TF1's
Saver with names like `bert/encoder/layer_0/attention/self/query/kernel`, next to `bert_config.json`
and `vocab.txt`.

Names and attention-kernel shapes go through Model Garden's own TF1 converter steps
(`_model_garden.tf1_bert_to_model_garden`), then every encoder variable is assigned strictly by its
Model Garden name. Heads (`cls/*`, a fine-tuned `output_weights`), `global_step` and Adam slots are
not the encoder's: they are set aside and named in one note.
"""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf

from adapter_keras import _model_garden
from adapter_keras.encoder import BertConfig, build_encoder
from adapter_keras.pretrained.directory import (PretrainedEncoder, WeightsError, assign_strictly,
                                                default_pooling_of, lower_case_of, model_garden_targets,
                                                read_config, vocab_file_for)

_ENCODER_SCOPE = "bert/"
_OPTIMIZER_SLOTS = ("/adam_m", "/adam_v")
# The key object-based (TF2) checkpoints carry and name-based TF1 ones lack.
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


def is_tf1_bert_checkpoint(checkpoint: str) -> bool:
  """A name-based checkpoint with original BERT names (not a tf.train.Checkpoint)."""
  names = [name for name, _ in tf.train.list_variables(checkpoint)]
  return _OBJECT_GRAPH_KEY not in names and any(n.startswith(_ENCODER_SCOPE) for n in names)


def read_tf1_bert_tensors(checkpoint: str, num_heads: int) -> Tuple[Dict[str, np.ndarray], List[str]]:
  """(encoder tensors by Model Garden name in Model Garden's shapes, names of the other variables)."""
  try:
    reader = tf.train.load_checkpoint(checkpoint)
  except (tf.errors.OpError, ValueError) as e:
    raise WeightsError(f"cannot read checkpoint {checkpoint}: {e.message if hasattr(e, 'message') else e}") from None
  tensors, others = {}, []
  for name in sorted(reader.get_variable_to_shape_map()):
    if not name.startswith(_ENCODER_SCOPE) or name.endswith(_OPTIMIZER_SLOTS):
      others.append(name)
      continue
    try:
      stored = reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError) as e:
      # A data file cut short fails here, not when the index is opened (IndexError "Read less bytes than requested").
      reason = e.message if hasattr(e, "message") else str(e) or type(e).__name__
      raise WeightsError(f"cannot read checkpoint {checkpoint}: variable {name}: {reason.splitlines()[0]} "
                         "(a data file cut short or damaged?)") from None
    new_name, value = _model_garden.tf1_bert_to_model_garden(name, stored, num_heads)
    tensors[new_name] = value
  return tensors, others


def tf1_bert_config(path: str) -> BertConfig:
  """bert_config.json, read the way Google's modeling.py reads it: its "gelu" is the tanh approximation."""
  config = read_config(path, ("bert_config.json", "config.json"))
  if config.hidden_act == "gelu":
    config = BertConfig(**{**config.to_dict(), "hidden_act": "gelu_new"})
  return config


def load_tf1_checkpoint_dir(path, checkpoint, name) -> PretrainedEncoder:
  config = tf1_bert_config(path)
  vocab_file = vocab_file_for(path, config)
  tensors, others = read_tf1_bert_tensors(checkpoint, config.num_attention_heads)
  encoder = build_encoder(config)
  assign_strictly(model_garden_targets(encoder), tensors, f"TF1 BERT checkpoint {checkpoint}")
  return PretrainedEncoder(encoder, config, vocab_file, lower_case_of(path, vocab_file),
                           default_pooling_of(path), os.path.abspath(path), name,
                           ignored_tensors=tuple(others))
