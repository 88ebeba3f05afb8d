"""Training one point of the search space: its budget, its datasets, train-and-evaluate.

`train_and_evaluate` builds a trial's wide & deep model (`towers.build_model`),
trains it for the steps its `TrainingBudget` allows and evaluates it on the
validation set; labels must be class ids (`check_classification_labels`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from automl_baseline.search_space import TrialConfig
from automl_baseline.towers import ModelSettings, build_model


@dataclasses.dataclass(frozen=True)
class TrainingBudget:
  """How long a trial trains.

  A trial sees Table 5's `training_samples` examples (with repetition) times
  `sample_scale`, at most `max_epochs` passes over the training set; small
  machines scale both down. `fraction` is Hyperband's share of the budget.
  """

  sample_scale: float = 1.0
  max_epochs: Optional[float] = None

  def __post_init__(self):
    if not self.sample_scale > 0:
      raise ValueError(f"sample_scale must be > 0, got {self.sample_scale}")
    if self.max_epochs is not None and not self.max_epochs > 0:
      raise ValueError(f"max_epochs must be > 0, got {self.max_epochs}")

  def train_steps(self, training_samples: int, batch_size: int, num_train_examples: int,
                  fraction: float = 1.0) -> int:
    samples = training_samples * self.sample_scale * fraction
    if self.max_epochs is not None:
      samples = min(samples, self.max_epochs * num_train_examples)
    return max(1, math.ceil(samples / batch_size))


def check_classification_labels(examples, num_classes: int, what: str) -> np.ndarray:
  """The labels as int64 class ids, or a clear error (regression targets, out of range)."""
  labels = np.asarray(examples.labels)
  if labels.size and not np.all(np.equal(np.mod(labels, 1), 0)):
    raise ValueError(f"{what} labels are not class ids (regression targets?); the AutoML "
                     "baseline searches classifiers only")
  labels = labels.astype(np.int64)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"{what} labels must be class ids in [0, {num_classes}), got "
                     f"{labels.min()}..{labels.max()}")
  return labels


def make_dataset(examples, num_classes: int, batch_size: int, shuffle_seed: Optional[int] = None,
                 what: str = "training") -> tf.data.Dataset:
  """({"text"[, "text_b"]}, label) batches; with a seed, shuffled and repeated forever."""
  if len(examples) == 0:
    raise ValueError(f"the {what} set is empty")
  features = {"text": tf.constant(list(examples.text), tf.string)}
  if examples.text_b is not None:
    features["text_b"] = tf.constant(list(examples.text_b), tf.string)
  labels = check_classification_labels(examples, num_classes, what)
  dataset = tf.data.Dataset.from_tensor_slices((features, labels))
  if shuffle_seed is not None:
    dataset = dataset.shuffle(min(len(examples), 100_000), seed=shuffle_seed).repeat()
  return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class TrainResult:
  """A trained model and how it did on the validation set."""

  model: tf_keras.Model
  val_accuracy: float
  val_loss: float
  train_steps: int
  train_seconds: float


def train_and_evaluate(config: TrialConfig, settings: ModelSettings, train, dev,
                       budget: TrainingBudget = TrainingBudget(), seed: int = 0,
                       budget_fraction: float = 1.0) -> TrainResult:
  """Builds, trains (for the budget's steps) and evaluates one point of the space."""
  tf_keras.backend.clear_session()
  tf_keras.utils.set_random_seed(seed)
  model = build_model(config, settings)
  steps = budget.train_steps(config.training_samples, config.train_batch_size, len(train),
                             budget_fraction)
  start = time.time()
  model.fit(make_dataset(train, settings.num_classes, config.train_batch_size, shuffle_seed=seed),
            steps_per_epoch=steps, epochs=1, verbose=0)
  seconds = time.time() - start
  metrics = model.evaluate(make_dataset(dev, settings.num_classes, 256, what="validation"),
                           verbose=0, return_dict=True)
  return TrainResult(model, float(metrics["accuracy"]), float(metrics["loss"]), steps, seconds)
