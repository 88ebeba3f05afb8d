"""Pooling and the pooled -> dropout -> head path that every classification/regression model shares.

Pooling is "cls" (BERT's pooler: tanh(dense([CLS])), as in the paper) or
"mean" (masked mean of the last layer; the right choice for sentence-embedding
encoders such as all-MiniLM-L6-v2, whose pooler was never trained).

`pool` and `head_outputs` are the one implementation of that path:
TaskModel, the prefix-cached model, the multi-task bank's base outputs and
the exported serving graph all call them.
"""
from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf
import tf_keras
from adapter_keras.values import KERAS_PACKAGE

POOLINGS = ("cls", "mean")


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class MeanPooling(tf_keras.layers.Layer):
  """Mean of the token vectors where the mask is 1 (a sequence without tokens gives zeros)."""

  def call(self, sequence_output, mask):
    mask = tf.cast(mask, sequence_output.dtype)[:, :, None]
    total = tf.reduce_sum(sequence_output * mask, axis=1)
    count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
    return total / count


def pool(pooling: str, encoder_outputs: Dict[str, tf.Tensor], input_mask: tf.Tensor,
         mean_pooling: MeanPooling) -> tf.Tensor:
  """The pooled vector: the encoder's "pooled_output" ("cls") or the masked mean of "sequence_output"."""
  if pooling == "cls":
    return encoder_outputs["pooled_output"]
  if pooling == "mean":
    return mean_pooling(encoder_outputs["sequence_output"], input_mask)
  raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def head_outputs(pooled: tf.Tensor, head_dropout: tf_keras.layers.Layer, head: tf_keras.layers.Layer,
                 training: Optional[bool] = None) -> tf.Tensor:
  """head(dropout(pooled)) in float32 (logits, or the regression score), whatever the compute dtype."""
  return tf.cast(head(head_dropout(pooled, training=training)), tf.float32)
