"""The classification/regression model: encoder -> pooling -> dropout -> head.

Classification heads output K logits, regression heads one score. Pooling
and the pooled -> dropout -> head path are layers/pooling.py's, shared with
the prefix-cached model and the serving graph. `build_task_model` is how
training and artifact loading make one on a loaded encoder.
"""
from __future__ import annotations

from typing import Dict, Optional

import tensorflow as tf
import tf_keras

from adapter_keras.encoder import dummy_inputs
from adapter_keras.layers.pooling import POOLINGS, MeanPooling, head_outputs, pool

_PACKAGE = "AdapterKeras"
TASK_TYPES = ("classification", "regression")


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
    """The pooled vector the head reads."""
    return pool(self.pooling, self.encoder(inputs, training=training), inputs["input_mask"],
                self.mean_pooling)

  def call(self, inputs, training=None):
    return head_outputs(self.pool(inputs, training=training), self.head_dropout, self.head, training)

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


def build_task_model(pretrained, task, pooling: Optional[str] = None, dropout_rate: float = 0.1,
                     seed: Optional[int] = None) -> TaskModel:
  """A built TaskModel for `task` (a TaskSpec) on a loaded encoder (pretrained.PretrainedEncoder)."""
  model = TaskModel(pretrained.encoder, num_outputs=task.num_outputs, task_type=task.task_type,
                    pooling=pooling or pretrained.default_pooling, dropout_rate=dropout_rate,
                    head_seed=seed, name="task_model")
  return model.build_with_dummy_inputs()
