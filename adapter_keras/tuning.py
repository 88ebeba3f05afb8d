"""Tuning methods (which variables train) and the parameter report.

A method decides, leaf layer by leaf layer, what trains:

  adapter     adapters + every LayerNorm (embedding LayerNorm included) + head
  full        everything (the pooler only if the head reads it)
  top-k       the top k Transformer layers + head (+ pooler if the head reads it)
  layer-norm  every LayerNorm + head

`trainable` is set on leaf layers only: in tf_keras a parent with
trainable=False hides all its children's variables, and setting it on a parent
overwrites the children's flags. Decisions are made by position in the model
("inside an adapter", "a LayerNorm", "the head", "in block i"), not by lists of
classes to freeze, so layers such as Model Garden's OnDeviceEmbedding are
handled like any other frozen leaf.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Tuple

import numpy as np
import tf_keras
from official.nlp.modeling import layers as mg_layers

from adapter_keras.layers.adapter import BottleneckAdapter
from adapter_keras.models import TaskModel
from adapter_keras.pretrained import plain_encoder_variables

METHODS = ("adapter", "full", "top-k", "layer-norm")


def _leaves(layer: tf_keras.layers.Layer, ancestors: Tuple = ()) -> Iterator[Tuple[tf_keras.layers.Layer, Tuple]]:
  children = list(layer._flatten_layers(include_self=False, recursive=False))  # pylint: disable=protected-access
  if not children:
    yield layer, ancestors
    return
  for child in children:
    yield from _leaves(child, ancestors + (layer,))


def _block_index(model: TaskModel, ancestors: Tuple) -> Optional[int]:
  for ancestor in ancestors:
    if isinstance(ancestor, mg_layers.TransformerEncoderBlock):
      return next(i for i, b in enumerate(model.encoder.transformer_layers) if b is ancestor)
  return None


def validate_method(method: str, top_k: Optional[int], num_layers: int) -> None:
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}")
  if method == "top-k":
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
      raise ValueError(f"method top-k needs --top-k >= 1, got {top_k!r}")
    if top_k > num_layers:
      raise ValueError(f"--top-k {top_k} exceeds the encoder's {num_layers} Transformer layers")


def apply_method(model: TaskModel, method: str, top_k: Optional[int] = None) -> None:
  """Sets `trainable` on every leaf layer of `model` according to `method`.

  Call after the model is built (`build_with_dummy_inputs`), and collect
  `model.trainable_variables` only afterwards.
  """
  num_layers = len(model.encoder.transformer_layers)
  validate_method(method, top_k, num_layers)
  head_reads_pooler = model.pooling == "cls"
  pooler = model.encoder.pooler_layer
  model.trainable = True  # resets every flag below; leaves are decided next
  for leaf, ancestors in _leaves(model):
    is_head = leaf is model.head
    is_pooler = leaf is pooler
    in_adapter = isinstance(leaf, BottleneckAdapter) or any(
        isinstance(a, BottleneckAdapter) for a in ancestors)
    is_layer_norm = isinstance(leaf, tf_keras.layers.LayerNormalization)
    if is_head:
      trainable = True
    elif is_pooler:
      trainable = head_reads_pooler and method in ("full", "top-k")
    elif method == "full":
      trainable = True
    elif method == "adapter":
      trainable = in_adapter or is_layer_norm
    elif method == "layer-norm":
      trainable = is_layer_norm
    else:  # top-k
      block = _block_index(model, ancestors)
      trainable = block is not None and block >= num_layers - top_k
    leaf.trainable = trainable


@dataclasses.dataclass(frozen=True)
class ParameterReport:
  base_params: int
  adapter_params: int
  layer_norm_params: int
  head_params: int
  trained_params: int
  trained_fraction: float

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _count(variables) -> int:
  return int(sum(int(np.prod(v.shape)) for v in variables))


def parameter_report(model: TaskModel) -> ParameterReport:
  """Counts of a built TaskModel's parameters by kind, and what trains.

  base_params counts the pre-trained encoder (pooler included, adapters
  excluded); trained_fraction = trained_params / base_params.
  """
  encoder = model.encoder
  base = _count(plain_encoder_variables(encoder))
  adapters = _count([v for a in encoder.adapters() for v in a.parameters])
  layer_norms = _count([v for leaf, ancestors in _leaves(encoder)
                        if isinstance(leaf, tf_keras.layers.LayerNormalization)
                        and not any(isinstance(a, BottleneckAdapter) for a in ancestors)
                        for v in leaf.weights])
  head = _count(model.head.weights)
  trained = _count(model.trainable_variables)
  return ParameterReport(base, adapters, layer_norms, head, trained, trained / base)
