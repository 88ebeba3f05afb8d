"""Ablation (paper Fig. 5): a trained adapter model evaluated with the adapters of layers i..j
switched off, for every span i <= j, through the adapters' `enabled` gates (no retraining, no copy of
the model); with the majority-class baseline for reference.

The paper draws one model per task; `ablation_over_runs` averages the ablations of several models
(seeds) into a mean heatmap with its s.e.m. per cell, and `best_mean_sweep_artifacts` picks those
models from a sweep: the trials of one adapter size at the setting with the best mean dev score over
seeds."""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from adapter_keras.analysis import common
from adapter_keras.analysis.report import read_metrics, setting_key
from adapter_keras.methods import get_method
from adapter_keras.tasks.metrics import compute_metrics, select_setting, standard_error
from adapter_keras.train.evaluation import predict_encoded
from adapter_keras.train.inputs import EncodedExamples


def check_one_task_and_base(items: Sequence[str], manifests: Sequence[Dict]) -> None:
  """Refuses (ValueError naming the artifact) to average ablations over artifacts of different tasks or
  base encoders: the manifests of `items` must agree with the first one's."""
  first_task, first_base = manifests[0]["task"].get("name"), manifests[0]["base_fingerprint"]
  for item, manifest in zip(items[1:], manifests[1:]):
    if manifest["task"].get("name") != first_task:
      raise ValueError(f"artifact {item} was trained for task {manifest['task'].get('name')!r}, not "
                       f"{first_task!r} like {items[0]}; average artifacts of one task")
    if manifest["base_fingerprint"] != first_base:
      raise ValueError(f"artifact {item} was trained on another base encoder "
                       f"({manifest['encoder'].get('spec')!r}) than {items[0]}; average artifacts of one base")


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


def _mean_and_sem(values: Sequence[Optional[float]]) -> Tuple[Optional[float], Optional[float]]:
  """Over the runs that gave a finite value; (None, None) when none did."""
  finite = [v for v in values if v is not None]
  if not finite:
    return None, None
  return float(np.mean(finite)), standard_error(finite)


def ablation_over_runs(runs: Sequence[Dict]) -> Dict:
  """The ablations of several models of one task (seeds), averaged.

  Args:
    runs: `ablation_study` results of models trained for the same task on
      the same base, each with "artifact" (its path) and "seed" (None when
      unknown) added.

  Returns:
    {"layers", "metric", "task", "majority_class", "majority_source",
    "n_runs", "per_run": [{"artifact", "seed", "matrix", "baseline",
    "all_removed"}], "mean" and "sem": {"matrix", "baseline",
    "all_removed"}}: per cell, baseline and all_removed the mean over runs
    and its standard error (ddof 1 / sqrt(n), 0 for one run), computed over
    the runs whose value is finite.
  """
  if not runs:
    raise ValueError("give at least one ablation to average")
  first = runs[0]
  for run in runs[1:]:
    if (run["task"], run["layers"], run["metric"]) != (first["task"], first["layers"], first["metric"]):
      raise ValueError(f"ablation of {run.get('artifact')} ({run['task']}, {run['layers']} layers) does not "
                       f"match that of {first.get('artifact')} ({first['task']}, {first['layers']} layers)")
  num_layers = first["layers"]
  mean: Dict = dict(matrix=[[None] * num_layers for _ in range(num_layers)])
  sem: Dict = dict(matrix=[[None] * num_layers for _ in range(num_layers)])
  for row in range(num_layers):
    for column in range(row, num_layers):
      mean["matrix"][row][column], sem["matrix"][row][column] = _mean_and_sem(
          [run["matrix"][row][column] for run in runs])
  for name in ("baseline", "all_removed"):
    mean[name], sem[name] = _mean_and_sem([run[name] for run in runs])
  per_run = [{k: run.get(k) for k in ("artifact", "seed", "matrix", "baseline", "all_removed")} for run in runs]
  return dict(layers=num_layers, metric=first["metric"], task=first["task"],
              majority_class=first["majority_class"], majority_source=first["majority_source"],
              n_runs=len(runs), per_run=per_run, mean=mean, sem=sem)


def best_mean_sweep_artifacts(sweep_dir: str, adapter_size: int) -> Tuple[List[str], Dict]:
  """The artifacts of a sweep's adapter trials of size `adapter_size` at the setting (learning
  rate, epochs, ...: the trial's config less its seed) with the best mean dev score over seeds.

  Returns (the trial run directories holding `artifact/`, ordered by seed;
  {"sweep", "adapter_size", "learning_rate", "epochs", "mean", "sem",
  "n_seeds", "seeds"}), the latter for the record.
  """
  trials_dir = os.path.join(sweep_dir, "trials")
  if not os.path.isdir(trials_dir):
    raise FileNotFoundError(f"{sweep_dir} holds no trials/ directory; give the --out of an adapter sweep")
  trials = []
  for name in sorted(os.listdir(trials_dir)):
    path = os.path.join(trials_dir, name, "metrics.json")
    if not os.path.exists(path):
      continue  # an unfinished trial
    record = read_metrics(path)
    config = record["config"]
    if get_method(record["method"]).uses_adapters and (config.get("adapter") or {}).get("size") == adapter_size:
      trials.append((os.path.join(trials_dir, name), record))
  if not trials:
    raise ValueError(f"{sweep_dir} has no finished adapter trial of size {adapter_size}")
  settings = [setting_key(r) for _, r in trials]
  scores = [np.nan if r["score"] is None else r["score"] for _, r in trials]
  chosen = select_setting(list(zip(settings, scores)), "best-mean")
  group = sorted((t for t, s in zip(trials, settings) if s == chosen["setting"]),
                 key=lambda t: t[1]["config"].get("seed", 0))
  missing = [d for d, _ in group if not os.path.isdir(os.path.join(d, "artifact"))]
  if missing:
    raise FileNotFoundError(f"trial {missing[0]} saved no artifact/; run the sweep with its artifacts kept")
  config = group[0][1]["config"]
  return [d for d, _ in group], dict(
      sweep=sweep_dir, adapter_size=adapter_size, learning_rate=config.get("learning_rate"),
      epochs=config.get("epochs"), mean=common.finite_or_none(chosen["mean"]),
      sem=common.finite_or_none(chosen["sem"]), n_seeds=chosen["n_seeds"],
      seeds=[r["config"].get("seed") for _, r in group])


def plot_ablation(result: Dict, path: str) -> str:
  """Heatmap of the ablation matrix: x = first ablated layer, y = last. For an average over runs
  (`ablation_over_runs`) the mean, each cell annotated with its s.e.m."""
  plt = common.pyplot()
  num_layers = result["layers"]
  averaged = "mean" in result
  summary = result["mean"] if averaged else result
  values = np.array([[np.nan if v is None else v for v in row] for row in summary["matrix"]], float)
  sems = (np.array([[np.nan if v is None else v for v in row] for row in result["sem"]["matrix"]], float)
          if averaged else None)
  # Transposed so that rows are the last ablated layer (y) and columns the first (x).
  shown = np.ma.masked_invalid(values.T)
  limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
  limit = limit or 1e-6  # an all-zero matrix still needs a non-empty colour range
  cell = 0.8 if averaged else 0.55  # room for the two-line "mean / ±sem" labels
  fig, ax = plt.subplots(figsize=(1.0 + cell * num_layers + 2.0, 1.0 + cell * num_layers + 1.0))
  image = ax.imshow(shown, origin="lower", cmap="RdBu", vmin=-limit, vmax=limit)
  ax.set_xlabel("first ablated layer")
  ax.set_ylabel("last ablated layer")
  ax.set_xticks(range(num_layers))
  ax.set_yticks(range(num_layers))
  if num_layers <= 12:
    for first in range(num_layers):
      for last in range(first, num_layers):
        if not np.isfinite(values[first, last]):
          continue
        if averaged:  # seed-level differences are often below 0.01: three decimals
          label = f"{values[first, last]:.3f}"
          if np.isfinite(sems[first, last]):
            label += f"\n±{sems[first, last]:.3f}"
        else:
          label = f"{values[first, last]:.2f}"
        # Dark cells (the strongest changes) need light text to stay legible.
        colour = "white" if abs(values[first, last]) > 0.6 * limit else "black"
        ax.text(first, last, label, ha="center", va="center", fontsize=7, color=colour)
  bar = fig.colorbar(image, ax=ax)
  bar.set_label(f"{result['metric']} change vs. all adapters" + (" (mean)" if averaged else ""))

  def shown_value(name: str) -> Optional[str]:
    if summary[name] is None:
      return None
    return f"{summary[name]:.3f}" + (f"±{result['sem'][name]:.3f}" if averaged else "")

  parts = [f"baseline {shown_value('baseline') or 'n/a'}",
           f"all removed {shown_value('all_removed')}" if summary["all_removed"] is not None else ""]
  if result.get("majority_class") is not None:
    parts.append(f"majority ({result['majority_source']}) {result['majority_class']:.3f}")
  heading = f"{result.get('task', '')} adapter ablation"
  if averaged:
    heading += f", mean ± s.e.m. over {result['n_runs']} seed{'s' if result['n_runs'] != 1 else ''}"
  ax.set_title(heading + "\n" + ", ".join(p for p in parts if p), fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
