"""Scoring model outputs for a task: the metrics GLUE defines, by name.

scikit-learn and scipy are imported on first use: they cost over a second at
import, and every loader (hence the CLI) imports the task registry.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")


def predictions_from_outputs(task, outputs: np.ndarray) -> np.ndarray:
  """Class ids (argmax of logits) or float scores from a task model's outputs."""
  outputs = np.asarray(outputs)
  if task.task_type == "regression":
    if outputs.ndim == 2 and outputs.shape[1] == 1:
      outputs = outputs[:, 0]
    if outputs.ndim != 1:
      raise ValueError(f"regression outputs must be [N] or [N, 1], got shape {outputs.shape}")
    return outputs.astype(np.float64)
  if outputs.ndim != 2 or outputs.shape[1] != task.num_outputs:
    raise ValueError(f"{task.name} outputs must be logits [N, {task.num_outputs}], "
                     f"got shape {outputs.shape}")
  return np.argmax(outputs, axis=1)


def compute_metrics(task, outputs: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  """Every metric in `task.metrics`, as python floats.

  Pearson/Spearman are NaN when predictions or labels are constant (the
  correlation is undefined there).
  """
  predictions = predictions_from_outputs(task, outputs)
  labels = np.asarray(labels)
  if labels.shape != predictions.shape:
    raise ValueError(f"{len(predictions)} predictions but labels of shape {labels.shape}")
  if len(labels) == 0:
    raise ValueError("cannot compute metrics on zero examples")
  if task.task_type == "regression":
    labels = labels.astype(np.float64)
    if np.isnan(labels).any():
      raise ValueError("labels contain NaN: unlabelled (test split) examples cannot be scored")
  else:
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= task.num_outputs:
      raise ValueError(f"labels must be class ids in [0, {task.num_outputs}); got values "
                       f"in [{labels.min()}, {labels.max()}] (-1 marks unlabelled test examples)")
  return {name: float(_METRIC_FUNCTIONS[name](labels, predictions, task.num_outputs))
          for name in task.metrics}


def _pearson(labels, predictions, _):
  from scipy import stats  # pylint: disable=import-outside-toplevel
  if np.ptp(labels) == 0 or np.ptp(predictions) == 0:
    return float("nan")
  return stats.pearsonr(predictions, labels)[0]


def _spearman(labels, predictions, _):
  from scipy import stats  # pylint: disable=import-outside-toplevel
  if np.ptp(labels) == 0 or np.ptp(predictions) == 0:
    return float("nan")
  return stats.spearmanr(predictions, labels)[0]


def _accuracy(labels, predictions, _):
  from sklearn import metrics  # pylint: disable=import-outside-toplevel
  return metrics.accuracy_score(labels, predictions)


def _binary_f1(labels, predictions, _):
  from sklearn import metrics  # pylint: disable=import-outside-toplevel
  return metrics.f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0)


def _macro_f1(labels, predictions, _):
  # Averaged over the classes present in labels or predictions (sklearn's
  # default): a class absent from both has no defined F1.
  from sklearn import metrics  # pylint: disable=import-outside-toplevel
  return metrics.f1_score(labels, predictions, average="macro", zero_division=0)


def _mcc(labels, predictions, _):
  from sklearn import metrics  # pylint: disable=import-outside-toplevel
  return metrics.matthews_corrcoef(labels, predictions)


_METRIC_FUNCTIONS = {
    "accuracy": _accuracy,
    "f1": _binary_f1,
    "macro_f1": _macro_f1,
    "mcc": _mcc,
    "pearson": _pearson,
    "spearman": _spearman,
}


def standard_error(values) -> float:
  """The standard error of the mean over runs (seeds): scipy.stats.sem, 0 for a single value."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  values = np.asarray(values, np.float64)
  return float(stats.sem(values)) if len(values) > 1 else 0.0
