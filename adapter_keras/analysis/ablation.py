"""Ablation (paper Fig. 5): a trained adapter model evaluated with the adapters of layers i..j
switched off, for every span i <= j, through the adapters' `enabled` gates (no retraining, no copy of
the model); with the majority-class baseline for reference."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from adapter_keras.analysis import common
from adapter_keras.tasks.metrics import compute_metrics
from adapter_keras.train.evaluation import predict_encoded
from adapter_keras.train.inputs import EncodedExamples


def majority_class_score(task, label_source: np.ndarray, eval_labels: np.ndarray) -> Optional[float]:
  """The primary metric of always predicting the most frequent class of
  `label_source`, scored on `eval_labels`; None for regression tasks, where
  a constant prediction has no defined correlation."""
  if task.task_type != "classification":
    return None
  majority = int(np.argmax(np.bincount(np.asarray(label_source, np.int64), minlength=task.num_outputs)))
  logits = np.zeros((len(eval_labels), task.num_outputs), np.float32)
  logits[:, majority] = 1.0
  return float(compute_metrics(task, logits, eval_labels)[task.primary_metric])


def ablation_study(model, task, dev: EncodedExamples,
                   majority_labels: Optional[np.ndarray] = None,
                   majority_source: Optional[str] = None,
                   batch_size: int = 64,
                   progress: Optional[Callable[[str], None]] = None) -> Dict:
  """Metric of `model` on `dev` with the adapters of every layer span removed.

  The baseline has every adapter on. Adapters are switched off through their
  gates, and each gate gets its original value back afterwards (also on
  errors), so `model` ends as it started.

  Args:
    model: a built TaskModel whose encoder is an AdapterBertEncoder.
    task: its TaskSpec (primary metric, task type).
    dev: the encoded evaluation split.
    majority_labels: labels whose most frequent class defines the majority
      baseline (the train labels; None: dev's own).
    majority_source: what `majority_labels` are ("train", ...), for the record.
    progress: called with a line after each of the L(L+1)/2 + 2 evaluations.

  Returns:
    {"layers": L, "metric", "baseline", "matrix": L x L (row i = first
    ablated layer, column j = last; value = metric with layers i..j removed
    minus baseline; None below the diagonal), "all_removed",
    "majority_class", "majority_source", "task"}. baseline, all_removed and
    majority_class are absolute metric values.
  """
  encoder = model.encoder
  num_layers = encoder.num_layers
  if not encoder.adapters():
    raise ValueError("the model has no adapters to ablate (was it trained with --method adapter?)")
  evaluations = num_layers * (num_layers + 1) // 2 + 2
  done = []

  def score(what: str) -> float:
    value = float(evaluate_model_on(model, task, dev, batch_size))
    done.append(what)
    if progress:
      progress(f"[ablation] {len(done)}/{evaluations} {what}: {task.primary_metric} {value:.4f}")
    return value

  matrix: List[List[Optional[float]]] = [[None] * num_layers for _ in range(num_layers)]
  initially_enabled = [(adapter, adapter.is_enabled) for adapter in encoder.adapters()]
  try:
    encoder.set_adapters_enabled(True)
    baseline = score("all adapters on")
    for first in range(num_layers):
      for last in range(first, num_layers):
        encoder.set_adapters_enabled(False, layers=range(first, last + 1))
        matrix[first][last] = common.finite_or_none(score(f"layers {first}..{last} removed") - baseline)
        encoder.set_adapters_enabled(True, layers=range(first, last + 1))
    encoder.set_adapters_enabled(False)
    all_removed = score("all adapters removed")
  finally:
    for adapter, enabled in initially_enabled:
      adapter.set_enabled(enabled)
  if majority_labels is None:
    majority_labels, majority_source = dev.labels, "dev"
  majority = majority_class_score(task, majority_labels, dev.labels)
  return dict(layers=num_layers, metric=task.primary_metric, baseline=common.finite_or_none(baseline),
              matrix=matrix, all_removed=common.finite_or_none(all_removed), majority_class=majority,
              majority_source=majority_source if majority is not None else None, task=task.name)


def evaluate_model_on(model, task, encoded: EncodedExamples, batch_size: int = 64) -> float:
  """The task's primary metric of `model` on encoded examples."""
  outputs = predict_encoded(model, encoded, batch_size)
  return compute_metrics(task, outputs, encoded.labels)[task.primary_metric]


def plot_ablation(result: Dict, path: str) -> str:
  """Heatmap of the ablation matrix: x = first ablated layer, y = last."""
  plt = common.pyplot()
  num_layers = result["layers"]
  values = np.array([[np.nan if v is None else v for v in row] for row in result["matrix"]], float)
  # Transposed so that rows are the last ablated layer (y) and columns the first (x).
  shown = np.ma.masked_invalid(values.T)
  limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
  limit = limit or 1e-6  # an all-zero matrix still needs a non-empty colour range
  fig, ax = plt.subplots(figsize=(1.0 + 0.55 * num_layers + 2.0, 1.0 + 0.55 * num_layers + 1.0))
  image = ax.imshow(shown, origin="lower", cmap="RdBu", vmin=-limit, vmax=limit)
  ax.set_xlabel("first ablated layer")
  ax.set_ylabel("last ablated layer")
  ax.set_xticks(range(num_layers))
  ax.set_yticks(range(num_layers))
  if num_layers <= 12:
    for first in range(num_layers):
      for last in range(first, num_layers):
        if np.isfinite(values[first, last]):
          ax.text(first, last, f"{values[first, last]:.2f}", ha="center", va="center", fontsize=7)
  bar = fig.colorbar(image, ax=ax)
  bar.set_label(f"{result['metric']} change vs. all adapters")
  parts = [f"baseline {result['baseline']:.3f}" if result["baseline"] is not None else "baseline n/a",
           f"all removed {result['all_removed']:.3f}" if result["all_removed"] is not None else ""]
  if result.get("majority_class") is not None:
    parts.append(f"majority ({result['majority_source']}) {result['majority_class']:.3f}")
  ax.set_title(f"{result.get('task', '')} adapter ablation\n" + ", ".join(p for p in parts if p),
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
