"""The frozen-bottom cache's model: a TaskModel split at Transformer layer k.

When everything that trains sits in Transformer layers k..L-1 (adapters
restricted to a top range with `AdapterConfig.layers`, or method top-k; k
comes from methods.frozen_bottom_start_layer), the embeddings and layers 0..k-1,
the *frozen bottom*, compute the same hidden states for an example at every
epoch. train/frozen_bottom_cache.py runs the prefix once over the training set
and keeps its outputs; `FrozenBottomModel` trains on them, paying only for
layers k..L-1, forward and backward.

What the cache changes, and where that is explicit:

* The prefix is entirely frozen. Method "adapter" trains every LayerNorm;
  `freeze_bottom` freezes the embedding LayerNorm and the LayerNorms of
  layers 0..k-1 too (a saved artifact then holds the LayerNorms from layer k
  on; the others keep their pre-trained values). `FrozenBottomModel` refuses
  a model whose prefix still has a trainable variable.
* The prefix runs without dropout. `FrozenBottomModel` fed plain batches
  computes the prefix itself, in inference mode and outside the gradient: the
  uncached run with the same semantics.

It calls BertEncoderV2's pieces through _model_garden.py;
tests/test_performance.py checks that the split model computes what the
task model computes.
"""
from __future__ import annotations

from typing import Dict, List

import tensorflow as tf
import tf_keras

from adapter_keras import _model_garden
from adapter_keras.layers.pooling import head_outputs, pool
from adapter_keras.values import is_integer

# The feature under which cached batches carry the prefix output, [batch, seq, hidden].
BOTTOM_OUTPUT = "bottom_output"


def frozen_bottom_layers(encoder, start_layer: int) -> List[tf_keras.layers.Layer]:
  """The layers of the frozen bottom: the embeddings (with their LayerNorm) and blocks < start_layer."""
  _check_start_layer(encoder, start_layer)
  return _model_garden.embedding_layers(encoder) + list(encoder.transformer_layers[:start_layer])


def freeze_bottom(model, start_layer: int) -> None:
  """Freezes every variable of the frozen bottom of `model` (a TaskModel).

  Call it after methods.apply_method, which resets every trainable flag.
  """
  for layer in frozen_bottom_layers(model.encoder, start_layer):
    layer.trainable = False


def trainable_bottom_variables(model, start_layer: int) -> List[str]:
  """Names of the trainable variables of `model` that sit in its frozen bottom (should be none)."""
  in_prefix = {id(v) for layer in frozen_bottom_layers(model.encoder, start_layer) for v in layer.weights}
  return [v.name for v in model.trainable_variables if id(v) in in_prefix]


def run_blocks(encoder, x, attention_mask, start: int, stop: int, training=None):
  """Transformer blocks start..stop-1 of `encoder` on the hidden states `x`, as BertEncoderV2.call runs them
  (its last block with the encoder's output range)."""
  blocks = encoder.transformer_layers
  for i in range(start, stop):
    output_range = _model_garden.output_range(encoder) if i == len(blocks) - 1 else None
    x = blocks[i]([x, attention_mask], output_range=output_range, training=training)
  return x


def bottom_output(encoder, features: Dict[str, tf.Tensor], start_layer: int, embeddings=None) -> tf.Tensor:
  """The hidden states entering block `start_layer`, in inference mode: BertEncoderV2.call up to it, the
  embedding dropout left out (inference mode makes it the identity). `embeddings`: the raw embedding sum
  (_model_garden.embedding_sum) when it is computed already."""
  if embeddings is None:
    embeddings = _model_garden.embedding_sum(encoder, features["input_word_ids"], features["input_type_ids"])
  x = _model_garden.normalize_embeddings(encoder, embeddings)
  attention_mask = _model_garden.attention_mask(encoder, x, features["input_mask"])
  return run_blocks(encoder, x, attention_mask, 0, start_layer, training=False)


def top_outputs(encoder, hidden: tf.Tensor, input_mask: tf.Tensor, start_layer: int, pooling: str,
                training=None) -> Dict[str, tf.Tensor]:
  """The encoder's outputs from `hidden`, the hidden states entering block `start_layer` (0: the normalized
  embeddings): "sequence_output", and "pooled_output" when `pooling` is "cls" (the pooler is read then only)."""
  attention_mask = _model_garden.attention_mask(encoder, hidden, input_mask)
  x = run_blocks(encoder, hidden, attention_mask, start_layer, len(encoder.transformer_layers), training)
  outputs = dict(sequence_output=x)
  if pooling == "cls":
    outputs["pooled_output"] = encoder.pooler_layer(x[:, 0, :])
  return outputs


def _check_start_layer(encoder, start_layer: int) -> None:
  num_layers = len(encoder.transformer_layers)
  if not is_integer(start_layer) or not 1 <= start_layer < num_layers:
    raise ValueError(f"start_layer must be in [1, {num_layers - 1}] for a {num_layers}-layer encoder, "
                     f"got {start_layer!r}")


class FrozenBottomModel(tf_keras.Model):
  """A TaskModel split at Transformer layer k: the frozen bottom, then layers k.. and the head.

  It owns no variables: training it trains `task_model`. On batches that
  carry BOTTOM_OUTPUT (make_dataset(prefix_cache=...)) it starts from those
  hidden states; on plain batches it computes the prefix itself, in inference
  mode and under tf.stop_gradient, which is the uncached run with the same
  semantics. In inference mode its outputs are `task_model`'s, so evaluation
  needs no cache. Train this, save `task_model` (this one has no config).

  Args:
    task_model: a built classification or regression TaskModel whose prefix
      is frozen (`freeze_bottom`).
    start_layer: k, the first Transformer layer that trains.
  """

  def __init__(self, task_model, start_layer: int, **kwargs):
    kwargs.setdefault("name", f"{task_model.name}_from_layer_{start_layer}")
    # No input casting: cached hidden states already have the dtype the
    # blocks compute in (bfloat16 under mixed_bfloat16), and the integer ids
    # are not cast anyway.
    super().__init__(autocast=False, **kwargs)
    if getattr(task_model, "task_type", None) not in ("classification", "regression"):
      raise ValueError("FrozenBottomModel needs a classification or regression TaskModel")
    encoder = task_model.encoder
    _check_start_layer(encoder, start_layer)
    config = encoder.get_config()
    if config.get("return_attention_scores") or config.get("with_dense_inputs"):
      raise ValueError("FrozenBottomModel does not support encoders with return_attention_scores or dense inputs")
    trainable = trainable_bottom_variables(task_model, start_layer)
    if trainable:
      raise ValueError(f"the frozen bottom (embeddings and layers < {start_layer}) has trainable variables "
                       f"{trainable[:3]}{'...' if len(trainable) > 3 else ''}; call "
                       f"freeze_bottom(model, {start_layer}) after apply_method")
    self.task_model = task_model
    self.start_layer = start_layer

  @property
  def encoder(self):
    return self.task_model.encoder

  @property
  def task_type(self) -> str:
    return self.task_model.task_type

  @property
  def pooling(self) -> str:
    return self.task_model.pooling

  def bottom_output(self, features: Dict[str, tf.Tensor]) -> tf.Tensor:
    """The hidden states entering layer k, computed in inference mode (no dropout): `bottom_output`."""
    return bottom_output(self.encoder, features, self.start_layer)

  def call(self, inputs, training=None):
    if BOTTOM_OUTPUT in inputs:
      hidden = inputs[BOTTOM_OUTPUT]
    else:
      hidden = tf.stop_gradient(self.bottom_output(inputs))
    model, mask = self.task_model, inputs["input_mask"]
    outputs = top_outputs(self.encoder, hidden, mask, self.start_layer, model.pooling, training)
    return head_outputs(pool(model.pooling, outputs, mask, model.mean_pooling), model.head_dropout,
                        model.head, training)
