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

from adapter_keras.layers.pooling import POOLINGS, MeanPooling, head_outputs, pool
from adapter_keras.networks.base import EncoderHeadModel
from adapter_keras.tasks.registry import TASK_TYPES
from adapter_keras.values import KERAS_PACKAGE



@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class TaskModel(EncoderHeadModel):
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
    if task_type not in TASK_TYPES:
      raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}")
    if pooling not in POOLINGS:
      raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if task_type == "classification" and num_outputs < 2:
      raise ValueError(f"classification needs at least 2 classes, got {num_outputs}")
    if task_type == "regression" and num_outputs != 1:
      raise ValueError(f"regression has one output, got num_outputs={num_outputs}")
    super().__init__(encoder, num_outputs, dropout_rate, head_seed, **kwargs)
    self.num_outputs = num_outputs
    self.task_type = task_type
    self.pooling = pooling
    self.mean_pooling = MeanPooling(name="mean_pooling")

  def pool(self, inputs: Dict[str, tf.Tensor], training=None) -> tf.Tensor:
    """The pooled vector the head reads."""
    return pool(self.pooling, self.encoder(inputs, training=training), inputs["input_mask"],
                self.mean_pooling)

  def call(self, inputs, training=None):
    return head_outputs(self.pool(inputs, training=training), self.head_dropout, self.head, training)

  def get_config(self):
    return dict(super().get_config(), num_outputs=self.num_outputs, task_type=self.task_type,
                pooling=self.pooling)


def build_task_model(pretrained, task, pooling: Optional[str] = None, dropout_rate: float = 0.1,
                     seed: Optional[int] = None) -> TaskModel:
  """A built TaskModel for `task` (a TaskSpec) on a loaded encoder (pretrained.PretrainedEncoder)."""
  model = TaskModel(pretrained.encoder, num_outputs=task.num_outputs, task_type=task.task_type,
                    pooling=pooling or pretrained.default_pooling, dropout_rate=dropout_rate,
                    head_seed=seed, name="task_model")
  return model.build_with_dummy_inputs()
