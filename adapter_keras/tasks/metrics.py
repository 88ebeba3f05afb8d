"""Scoring model outputs for a task: the metrics GLUE defines, by name.

scikit-learn and scipy are imported on first use: they cost over a second at
import, and every loader (hence the CLI) imports the task registry.
"""
from __future__ import annotations

from typing import Dict, Hashable, List, Sequence, Tuple

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


# How a sweep's best.json and `report` pick one setting from runs over seeds (the paper's rule first).
SELECTION_RULES = ("best-run", "best-mean")


def select_setting(runs: Sequence[Tuple[Hashable, float]], rule: str = "best-run") -> Dict:
  """The setting `rule` picks from (setting, dev score) runs, several settings each over seeds.

  best-run (the paper's): the setting of the single best run, reported with
  that run's score; best-mean: the setting with the best mean over its runs,
  reported with that mean. Returns {setting, score, mean, sem, n_seeds, run}:
  the setting's mean and s.e.m. over its runs, and the index in `runs` of the
  chosen run (best-mean: the setting's best). Ties go to the earlier run.
  """
  if rule not in SELECTION_RULES:
    raise ValueError(f"unknown selection rule {rule!r}; choose one of {', '.join(SELECTION_RULES)}")
  if not runs:
    raise ValueError("no runs to select from")
  members: Dict[Hashable, List[int]] = {}
  for i, (setting, _) in enumerate(runs):
    members.setdefault(setting, []).append(i)
  scores = np.asarray([score for _, score in runs], np.float64)
  means = {setting: float(scores[indices].mean()) for setting, indices in members.items()}
  # A diverged run (NaN score) never wins, whatever its place.
  ranked = np.where(np.isnan(scores), -np.inf, scores)
  if rule == "best-run":
    chosen_run = int(np.argmax(ranked))
    setting = runs[chosen_run][0]
    score = float(scores[chosen_run])
  else:
    setting = max(means, key=lambda s: -np.inf if np.isnan(means[s]) else means[s])
    chosen_run = max(members[setting], key=lambda i: ranked[i])
    score = means[setting]
  group = scores[members[setting]]
  return dict(setting=setting, score=score, mean=means[setting], sem=standard_error(group),
              n_seeds=len(group), run=chosen_run)
