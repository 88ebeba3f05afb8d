"""Task models: encoder -> pooling -> dropout -> head.

Classification heads output K logits, regression heads one score. Pooling is
"cls" (BERT's pooler: tanh(dense([CLS])), as in the paper) or "mean" (masked
mean of the last layer; the right choice for sentence-embedding encoders such
as all-MiniLM-L6-v2, whose pooler was never trained).

`SpanModel` is the extractive-QA variant: no pooling, a Dense(2) head on every
token giving start/end logits.
"""
from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf
import tf_keras

from adapter_keras.encoder import dummy_inputs

_PACKAGE = "AdapterKeras"
POOLINGS = ("cls", "mean")
TASK_TYPES = ("classification", "regression")


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class MeanPooling(tf_keras.layers.Layer):
  """Mean of the token vectors where the mask is 1."""

  def call(self, sequence_output, mask):
    mask = tf.cast(mask, sequence_output.dtype)[:, :, None]
    total = tf.reduce_sum(sequence_output * mask, axis=1)
    count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
    return total / count


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class TaskModel(tf_keras.Model):
  """A BERT encoder (with or without adapters) plus a task head.

  Args:
    encoder: an (Adapter)BertEncoderV2 returning sequence and pooled outputs.
    num_outputs: classes for classification, 1 for regression.
    task_type: "classification" or "regression".
    pooling: "cls" or "mean".
    dropout_rate: dropout before the head.
    head_seed: seed of the head's initializer.
  """

  def __init__(self,
               encoder: tf_keras.layers.Layer,
               num_outputs: int,
               task_type: str = "classification",
               pooling: str = "cls",
               dropout_rate: float = 0.1,
               head_seed: Optional[int] = None,
               **kwargs):
    super().__init__(**kwargs)
    if task_type not in TASK_TYPES:
      raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
    if pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if task_type == "classification" and num_outputs < 2:
      raise ValueError(f"classification needs at least 2 classes, got {num_outputs}")
    if task_type == "regression" and num_outputs != 1:
      raise ValueError(f"regression has one output, got num_outputs={num_outputs}")
    self.encoder = encoder
    self.num_outputs = num_outputs
    self.task_type = task_type
    self.pooling = pooling
    self.dropout_rate = dropout_rate
    self.head_seed = head_seed
    self.mean_pooling = MeanPooling(name="mean_pooling")
    self.head_dropout = tf_keras.layers.Dropout(dropout_rate, name="head_dropout")
    self.head = tf_keras.layers.Dense(
        num_outputs,
        kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02, seed=head_seed),
        name="head")

  def pool(self, inputs: Dict[str, tf.Tensor], training=None) -> tf.Tensor:
    outputs = self.encoder(inputs, training=training)
    if self.pooling == "cls":
      return outputs["pooled_output"]
    return self.mean_pooling(outputs["sequence_output"], inputs["input_mask"])

  def call(self, inputs, training=None):
    pooled = self.pool(inputs, training=training)
    output = self.head(self.head_dropout(pooled, training=training))
    return tf.cast(output, tf.float32)

  def build_with_dummy_inputs(self) -> "TaskModel":
    """Calls the model once so that every variable, the head's too, exists."""
    self(dummy_inputs())
    return self

  def get_config(self):
    return dict(
        encoder=tf_keras.layers.serialize(self.encoder),
        num_outputs=self.num_outputs,
        task_type=self.task_type,
        pooling=self.pooling,
        dropout_rate=self.dropout_rate,
        head_seed=self.head_seed,
        name=self.name)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    config["encoder"] = tf_keras.layers.deserialize(config["encoder"], custom_objects=custom_objects)
    return cls(**config)


# Logit given to padding positions: far below any real logit, yet finite so
# that softmax cross-entropy stays finite.
MASKED_LOGIT = -1e9


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class SpanModel(tf_keras.Model):
  """A BERT encoder plus a span head (extractive QA, e.g. SQuAD).

  The head is one Dense(2) over every token's last-layer vector, giving
  {"start_logits", "end_logits"}, each [batch, seq] float32; padding
  positions get MASKED_LOGIT. `task_type` is "span" so training code can tell
  it from a TaskModel; `pooling` is "none" because the head reads no pooled
  vector (tuning.apply_method then leaves the unused pooler frozen).

  Args:
    encoder: an (Adapter)BertEncoderV2 returning sequence outputs.
    dropout_rate: dropout before the head.
    head_seed: seed of the head's initializer.
  """

  task_type = "span"
  pooling = "none"

  def __init__(self,
               encoder: tf_keras.layers.Layer,
               dropout_rate: float = 0.1,
               head_seed: Optional[int] = None,
               **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.dropout_rate = dropout_rate
    self.head_seed = head_seed
    self.head_dropout = tf_keras.layers.Dropout(dropout_rate, name="head_dropout")
    self.head = tf_keras.layers.Dense(
        2,
        kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02, seed=head_seed),
        name="head")

  def call(self, inputs, training=None):
    sequence = self.encoder(inputs, training=training)["sequence_output"]
    logits = tf.cast(self.head(self.head_dropout(sequence, training=training)), tf.float32)
    is_token = tf.cast(inputs["input_mask"], tf.bool)
    masked = tf.fill(tf.shape(is_token), tf.constant(MASKED_LOGIT, tf.float32))
    return dict(start_logits=tf.where(is_token, logits[:, :, 0], masked),
                end_logits=tf.where(is_token, logits[:, :, 1], masked))

  def build_with_dummy_inputs(self) -> "SpanModel":
    """Calls the model once so that every variable, the head's too, exists."""
    self(dummy_inputs())
    return self

  def get_config(self):
    return dict(
        encoder=tf_keras.layers.serialize(self.encoder),
        dropout_rate=self.dropout_rate,
        head_seed=self.head_seed,
        name=self.name)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    config["encoder"] = tf_keras.layers.deserialize(config["encoder"], custom_objects=custom_objects)
    return cls(**config)
