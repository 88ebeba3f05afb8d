"""What every task model shares: an encoder, a dropout, a Dense head with BERT's initialisation, and the
Keras config plumbing around the encoder (TaskModel and SpanModel subclass it)."""
from __future__ import annotations

from typing import Optional

import tf_keras

from adapter_keras.encoder import dummy_inputs


class EncoderHeadModel(tf_keras.Model):
  """An (Adapter)BertEncoderV2, `head_dropout` and a Dense `head` of `head_units` outputs.

  Args:
    encoder: the encoder (its layers may be shared with other models).
    head_units: outputs of the head.
    dropout_rate: dropout before the head.
    head_seed: seed of the head's truncated-normal (std 0.02) initializer.
  """

  def __init__(self, encoder: tf_keras.layers.Layer, head_units: int, dropout_rate: float = 0.1,
               head_seed: Optional[int] = None, **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.dropout_rate = dropout_rate
    self.head_seed = head_seed
    self.head_dropout = tf_keras.layers.Dropout(dropout_rate, name="head_dropout")
    self.head = tf_keras.layers.Dense(
        head_units, kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02, seed=head_seed),
        name="head")

  def build_with_dummy_inputs(self):
    """Calls the model once so that every variable, the head's too, exists; returns the model."""
    self(dummy_inputs())
    return self

  def get_config(self):
    return dict(encoder=tf_keras.layers.serialize(self.encoder), dropout_rate=self.dropout_rate,
                head_seed=self.head_seed, name=self.name)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    config["encoder"] = tf_keras.layers.deserialize(config["encoder"], custom_objects=custom_objects)
    return cls(**config)
