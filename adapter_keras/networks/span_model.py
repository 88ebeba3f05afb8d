"""The extractive-QA model (SQuAD): encoder -> a Dense(2) head on every token.

`build_span_model` is how training and artifact loading make one on a
loaded encoder.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf
import tf_keras

from adapter_keras.layers.pooling import head_outputs
from adapter_keras.networks.base import EncoderHeadModel
from adapter_keras.values import KERAS_PACKAGE

SPAN_TASK_TYPE = "span"

# Logit given to padding positions: far below any real logit, yet finite so
# that softmax cross-entropy stays finite.
MASKED_LOGIT = -1e9


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class SpanModel(EncoderHeadModel):
  """A BERT encoder plus a span head (extractive QA, e.g. SQuAD).

  The head is one Dense(2) over every token's last-layer vector, giving
  {"start_logits", "end_logits"}, each [batch, seq] float32; padding
  positions get MASKED_LOGIT. `task_type` is "span" so training code can tell
  it from a TaskModel; `pooling` is "none" because the head reads no pooled
  vector (methods.apply_method then leaves the unused pooler frozen).

  Args:
    encoder: an (Adapter)BertEncoderV2 returning sequence outputs.
    dropout_rate: dropout before the head.
    head_seed: seed of the head's initializer.
  """

  task_type = SPAN_TASK_TYPE
  pooling = "none"

  def __init__(self,
               encoder: tf_keras.layers.Layer,
               dropout_rate: float = 0.1,
               head_seed: Optional[int] = None,
               **kwargs):
    super().__init__(encoder, 2, dropout_rate, head_seed, **kwargs)

  def call(self, inputs, training=None):
    sequence = self.encoder(inputs, training=training)["sequence_output"]
    logits = head_outputs(sequence, self.head_dropout, self.head, training)
    is_token = tf.cast(inputs["input_mask"], tf.bool)
    masked = tf.fill(tf.shape(is_token), tf.constant(MASKED_LOGIT, tf.float32))
    return dict(start_logits=tf.where(is_token, logits[:, :, 0], masked),
                end_logits=tf.where(is_token, logits[:, :, 1], masked))


def build_span_model(pretrained, dropout_rate: float = 0.1, seed: Optional[int] = None) -> SpanModel:
  """A built SpanModel on a loaded encoder (pretrained.PretrainedEncoder)."""
  return SpanModel(pretrained.encoder, dropout_rate=dropout_rate, head_seed=seed,
                   name="span_model").build_with_dummy_inputs()
