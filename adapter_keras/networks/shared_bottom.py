"""Task networks on one base split where they first differ: a shared bottom computed once, each task's own top.

The tasks of a multi-task bank (serving/multitask.py) look up their embeddings with the base's own layers, so on
the same encoder inputs the word + position + type embedding sum (before the embedding LayerNorm, which each
task owns) is the same for all of them. A task whose method leaves the embeddings and blocks < k structurally
as they are (TuningMethod.frozen_bottom_start) and whose LayerNorms there still hold the base's values (a task
trained with the frozen-bottom cache, or not trained yet) also computes the base's hidden states entering block
k. A task's *shared depth* says how far it shares:

  None   nothing (its embedding lookups are not the base's layers)
  0      the embedding sum
  k >= 1 the hidden states entering block k (the embeddings, their LayerNorm and blocks < k)

`shared_depth` finds it, `SharedBottom` computes every depth some task needs with the base's own layers, once,
and `own_top` runs a task's own remainder from there; the result equals the task's encoder outputs. Serving every
task in one call (serving/export.py: the `all` signature, MultiTaskModel.predict_all) is built on them. The
pieces are frozen_bottom.py's, which splits a model at layer k the same way for the frozen-bottom cache.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import numpy as np
import tensorflow as tf

from adapter_keras import _model_garden
from adapter_keras.methods import get_method
from adapter_keras.networks.frozen_bottom import frozen_bottom_layers, run_blocks, top_outputs


def untouched_layers(model) -> Optional[int]:
  """k when `model`'s tuning method changes nothing in the embeddings and blocks < k but what trains there
  (TuningMethod.frozen_bottom_start: the first adapted layer, ...), else None."""
  method = getattr(model, "method", None)
  if method is None:
    return None
  try:
    return get_method(method).frozen_bottom_start(len(model.encoder.transformer_layers), model.method_config)
  except ValueError:  # e.g. adapters in no top range of layers: the method has no frozen bottom
    return None


def shared_depth(task_encoder, base_encoder, untouched: Optional[int]) -> Optional[int]:
  """How far `task_encoder` computes what `base_encoder` computes (module docstring): None, 0, or the most
  blocks k <= `untouched` (and < the number of blocks) whose variables, with the embeddings' LayerNorm, are the
  base's or hold exactly the base's values."""
  if not _model_garden.shares_embedding_lookups(task_encoder, base_encoder):
    return None
  num_layers = len(task_encoder.transformer_layers)
  limit = min(untouched or 0, num_layers - 1)
  if limit < 1 or len(base_encoder.transformer_layers) != num_layers:
    return 0
  task_layers, base_layers = frozen_bottom_layers(task_encoder, limit), frozen_bottom_layers(base_encoder, limit)
  embeddings = len(task_layers) - limit
  if len(base_layers) != len(task_layers) or not all(
      _holds_base_values(t, b) for t, b in zip(task_layers[:embeddings], base_layers[:embeddings])):
    return 0
  depth = 0
  while depth < limit and _holds_base_values(task_layers[embeddings + depth], base_layers[embeddings + depth]):
    depth += 1
  return depth


def _holds_base_values(layer, base_layer) -> bool:
  """Whether `layer` computes what `base_layer` does: each variable is the base's own, or one of the task's with
  the same name, shape and exact value (a task's LayerNorm copy that has not moved)."""
  if layer is base_layer:
    return True
  mine, theirs = layer.weights, base_layer.weights
  if len(mine) != len(theirs):
    return False
  mine_ids, their_ids = {id(v) for v in mine}, {id(v) for v in theirs}
  own = [v for v in mine if id(v) not in their_ids]
  copies = [v for v in theirs if id(v) not in mine_ids]
  return len(own) == len(copies) and all(
      _tail(a) == _tail(b) and a.shape == b.shape and np.array_equal(a.numpy(), b.numpy())
      for a, b in zip(own, copies))


def _tail(variable) -> str:
  """A variable's name inside its layer ("attention_layer_norm/gamma:0"): the encoders' own prefixes differ."""
  return "/".join(variable.name.split("/")[-2:])


class SharedBottom:
  """What tasks at `depths` (their shared depths; None ignored) share, computed with `base_encoder`'s own layers,
  in inference mode: called on the encoder inputs of one tokenization, {depth: tensor} for every depth asked
  (0: the embedding sum; k: the hidden states entering block k), the blocks run once up to the deepest."""

  def __init__(self, base_encoder, depths: Iterable[Optional[int]]):
    self.base_encoder = base_encoder
    self.depths = sorted({d for d in depths if d is not None})

  def __call__(self, features: Dict[str, tf.Tensor]) -> Dict[int, tf.Tensor]:
    base = self.base_encoder
    shared = {0: _model_garden.embedding_sum(base, features["input_word_ids"], features["input_type_ids"])}
    blocks = [d for d in self.depths if d >= 1]
    if blocks:
      x = _model_garden.normalize_embeddings(base, shared[0])
      attention_mask = _model_garden.attention_mask(base, x, features["input_mask"])
      done = 0
      for depth in blocks:
        x = shared[depth] = run_blocks(base, x, attention_mask, done, depth, training=False)
        done = depth
    return {d: shared[d] for d in self.depths}


def own_top(encoder, shared: tf.Tensor, input_mask: tf.Tensor, depth: int, pooling: str) -> Dict[str, tf.Tensor]:
  """A task encoder's outputs ("sequence_output", and "pooled_output" when `pooling` is "cls"), in inference
  mode, from what it shares at `depth` (SharedBottom): its own embedding LayerNorm first at depth 0."""
  hidden = _model_garden.normalize_embeddings(encoder, shared) if depth == 0 else shared
  return top_outputs(encoder, hidden, input_mask, depth, pooling, training=False)
