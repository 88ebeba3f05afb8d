"""The token-classification model (NER, tagging): encoder -> dropout -> a Dense(num_labels) head on every token."""
from __future__ import annotations

from typing import Optional

import tf_keras

from adapter_keras.layers.pooling import head_outputs
from adapter_keras.networks.base import EncoderHeadModel
from adapter_keras.tasks.tagging import TOKEN_TASK_TYPE
from adapter_keras.values import KERAS_PACKAGE


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class TokenModel(EncoderHeadModel):
  """A BERT encoder plus a per-token head: logits [batch, seq, num_labels] (float32 under mixed precision too).

  The head reads every token's last-layer vector, so `pooling` is "none" (methods.apply_method then leaves the
  unused pooler frozen); which positions count (first sub-words, not padding) is the loss's business
  (train/tagging.py), so the logits of every position are returned.

  Args:
    encoder: an (Adapter)BertEncoderV2 returning sequence outputs.
    num_labels: labels per token.
    dropout_rate: dropout before the head.
    head_seed: seed of the head's initializer.
  """

  task_type = TOKEN_TASK_TYPE
  pooling = "none"

  def __init__(self, encoder: tf_keras.layers.Layer, num_labels: int, dropout_rate: float = 0.1,
               head_seed: Optional[int] = None, **kwargs):
    super().__init__(encoder, num_labels, dropout_rate, head_seed, **kwargs)
    self.num_labels = num_labels

  def call(self, inputs, training=None):
    sequence = self.encoder(inputs, training=training)["sequence_output"]
    return head_outputs(sequence, self.head_dropout, self.head, training)

  def get_config(self):
    return dict(super().get_config(), num_labels=self.num_labels)
