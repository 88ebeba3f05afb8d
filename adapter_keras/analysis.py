"""The paper's analyses of adapters: layer ablation, initialisation scale, size trade-off.

* Ablation (paper Fig. 5): a trained adapter model is evaluated with the
  adapters of layers i..j switched off, for every span i <= j, through the
  adapters' `enabled` gates (no retraining, no copy of the model).
* Initialisation scale (Fig. 6): adapters trained from truncated normals of
  several standard deviations, a few seeds each; mean and s.e.m. per std.
* Size / parameter trade-off (Figs. 3 and 4): adapters of several sizes,
  top-k fine-tuning for several k and LayerNorm-only tuning, each a point
  (trained parameters, validation metric). With several tasks the scores are
  differences from full fine-tuning, summarised by their 20/50/80th
  percentiles across tasks, as in the paper.

Each study returns a JSON-able dict and has a plot function writing a PNG
(matplotlib, Agg backend). Training studies keep every finished run under
`<out>/runs/`, so an interrupted study resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from adapter_keras import training
from adapter_keras.artifacts import write_json_atomic
from adapter_keras.data import TextExamples
from adapter_keras.trainer import TrainConfig, train_task

# Percentiles across tasks that the paper's Fig. 3 draws (line and band).
PERCENTILES = (20, 50, 80)
# Order and colours of the trade-off plot's methods.
TRADEOFF_METHODS = ("adapter", "top-k", "layer-norm")
_METHOD_STYLE = {"adapter": ("tab:orange", "o", "Adapters"),
                 "top-k": ("tab:blue", "s", "Fine-tune top layers"),
                 "layer-norm": ("tab:green", "D", "LayerNorm only")}


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _finite_or_none(value: float) -> Optional[float]:
  return None if value is None or not math.isfinite(value) else float(value)


# ---------------------------------------------------------------- ablation


def majority_class_score(task, label_source: np.ndarray, eval_labels: np.ndarray) -> Optional[float]:
  """The primary metric of always predicting the most frequent class of
  `label_source`, scored on `eval_labels`; None for regression tasks, where
  a constant prediction has no defined correlation."""
  from adapter_keras.tasks import compute_metrics  # pylint: disable=import-outside-toplevel
  if task.task_type != "classification":
    return None
  majority = int(np.argmax(np.bincount(np.asarray(label_source, np.int64), minlength=task.num_outputs)))
  logits = np.zeros((len(eval_labels), task.num_outputs), np.float32)
  logits[:, majority] = 1.0
  return float(compute_metrics(task, logits, eval_labels)[task.primary_metric])


def ablation_study(model, task, dev: training.EncodedExamples,
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
        matrix[first][last] = _finite_or_none(score(f"layers {first}..{last} removed") - baseline)
        encoder.set_adapters_enabled(True, layers=range(first, last + 1))
    encoder.set_adapters_enabled(False)
    all_removed = score("all adapters removed")
  finally:
    for adapter, enabled in initially_enabled:
      adapter.set_enabled(enabled)
  if majority_labels is None:
    majority_labels, majority_source = dev.labels, "dev"
  majority = majority_class_score(task, majority_labels, dev.labels)
  return dict(layers=num_layers, metric=task.primary_metric, baseline=_finite_or_none(baseline),
              matrix=matrix, all_removed=_finite_or_none(all_removed), majority_class=majority,
              majority_source=majority_source if majority is not None else None, task=task.name)


def evaluate_model_on(model, task, encoded: training.EncodedExamples, batch_size: int = 64) -> float:
  """The task's primary metric of `model` on encoded examples."""
  from adapter_keras.tasks import compute_metrics  # pylint: disable=import-outside-toplevel
  outputs = training.predict_encoded(model, encoded, batch_size)
  return compute_metrics(task, outputs, encoded.labels)[task.primary_metric]


def plot_ablation(result: Dict, path: str) -> str:
  """Heatmap of the ablation matrix: x = first ablated layer, y = last."""
  plt = _pyplot()
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


# ---------------------------------------------------------------- runs shared by the training studies


def _cached_run(runs_dir: str, key: str, task, train: TextExamples, dev: Dict[str, TextExamples],
                config: TrainConfig, verbose: bool) -> Dict:
  """A finished run's record from `runs_dir`, or a new run (then recorded).

  A record is reused only when it was made with the same TrainConfig and task.
  """
  os.makedirs(runs_dir, exist_ok=True)
  path = os.path.join(runs_dir, f"{key}.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
    if record.get("config") == config.to_dict() and record.get("task") == task.name:
      return record
  result, _, _ = train_task(task, train, dev, config, verbose=verbose)
  record = dict(task=task.name, config=config.to_dict(), score=_finite_or_none(result.score),
                primary_metric=result.primary_metric, metrics=result.metrics,
                trained_params=result.trained_params, trained_fraction=result.trained_fraction,
                best_epoch=result.best_epoch, seconds=result.seconds)
  write_json_atomic(path, record)
  return record


def _sem(values: Sequence[float]) -> float:
  """Standard error of the mean (0 for a single value)."""
  values = np.asarray(values, float)
  if len(values) < 2:
    return 0.0
  return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def _log(verbose: bool, message: str) -> None:
  if verbose:
    print(message, flush=True)


# ---------------------------------------------------------------- initialisation scale


def init_scale_study(task, train: TextExamples, dev: Dict[str, TextExamples], config: TrainConfig,
                     stds: Sequence[float], seeds: Sequence[int], out_dir: str,
                     verbose: bool = True) -> Dict:
  """Trains adapters for every (init std, seed); the dev metric per std.

  `config` gives everything but AdapterConfig.init_std and the seed; its
  method must be "adapter".

  Returns {"task", "metric", "stds", "seeds", "scores": [per std: per seed],
  "mean", "sem"}; a diverged run scores None and is left out of its mean.
  """
  if config.method != "adapter":
    raise ValueError(f"the init-scale study trains adapters, not method {config.method!r}")
  if not stds or any(not s > 0 for s in stds):
    raise ValueError(f"init stds must be > 0, got {list(stds)}")
  if not seeds:
    raise ValueError("give at least one seed")
  stds = sorted(float(s) for s in stds)
  scores: List[List[Optional[float]]] = []
  for std in stds:
    row = []
    for seed in seeds:
      run_config = dataclasses.replace(
          config, seed=int(seed), adapter=dataclasses.replace(config.adapter, init_std=std))
      record = _cached_run(os.path.join(out_dir, "runs"), f"std{std:g}-seed{seed}", task, train, dev,
                           run_config, verbose=False)
      _log(verbose, f"[init-scale] std {std:g} seed {seed}: {task.primary_metric} {record['score']}")
      row.append(record["score"])
    scores.append(row)
  return summarise_init_scale(task.name, task.primary_metric, stds, seeds, scores)


def summarise_init_scale(task_name: str, metric: str, stds: Sequence[float], seeds: Sequence[int],
                         scores: Sequence[Sequence[Optional[float]]]) -> Dict:
  """Mean and s.e.m. over seeds per std; None scores (diverged runs) are left out."""
  means, sems = [], []
  for row in scores:
    finite = [s for s in row if s is not None]
    means.append(float(np.mean(finite)) if finite else None)
    sems.append(_sem(finite) if finite else None)
  return dict(task=task_name, metric=metric, stds=[float(s) for s in stds], seeds=[int(s) for s in seeds],
              scores=[list(row) for row in scores], mean=means, sem=sems)


def plot_init_scale(result: Dict, path: str) -> str:
  """Dev metric vs. init std (log x), error bars = s.e.m. over seeds."""
  plt = _pyplot()
  points = [(s, m, e) for s, m, e in zip(result["stds"], result["mean"], result["sem"]) if m is not None]
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  if points:
    stds, means, sems = zip(*points)
    ax.errorbar(stds, means, yerr=sems, marker="o", capsize=3, color="tab:orange")
  ax.set_xscale("log")
  ax.set_xlabel("adapter initialisation std")
  ax.set_ylabel(f"dev {result['metric']}")
  ax.set_title(f"{result['task']}: mean +- s.e.m. over {len(result['seeds'])} seed(s)", fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


# ---------------------------------------------------------------- size / parameter trade-off


@dataclasses.dataclass(frozen=True)
class TradeoffSetting:
  """One point of a trade-off curve: a method and its size knob."""

  method: str  # "adapter", "top-k", "layer-norm" or "full"
  value: Optional[int] = None  # adapter size m or k; None for layer-norm / full

  @property
  def key(self) -> str:
    return self.method if self.value is None else f"{self.method}-{self.value}"


def tradeoff_settings(adapter_sizes: Sequence[int], top_ks: Sequence[int], layer_norm: bool,
                      full: bool) -> List[TradeoffSetting]:
  settings = [TradeoffSetting("adapter", int(m)) for m in sorted(set(adapter_sizes))]
  settings += [TradeoffSetting("top-k", int(k)) for k in sorted(set(top_ks))]
  if layer_norm:
    settings.append(TradeoffSetting("layer-norm"))
  if full:
    settings.append(TradeoffSetting("full"))
  if not any(s.method != "full" for s in settings):
    raise ValueError("nothing to compare: give --adapter-sizes, --top-k and/or --layer-norm")
  return settings


def setting_train_config(config: TrainConfig, setting: TradeoffSetting,
                         fine_tune_learning_rate: float) -> TrainConfig:
  """`config` turned into the run of one trade-off setting."""
  if setting.method == "adapter":
    return dataclasses.replace(config, method="adapter", top_k=None,
                               adapter=dataclasses.replace(config.adapter, size=setting.value))
  learning_rate = fine_tune_learning_rate if setting.method in ("top-k", "full") else config.learning_rate
  # Full and LayerNorm-only runs train the bottom layer: no frozen prefix to cache.
  return dataclasses.replace(config, method=setting.method, top_k=setting.value, learning_rate=learning_rate,
                             prefix_cache=config.prefix_cache and setting.method == "top-k")


def tradeoff_study(task_data: Dict[str, Tuple[object, TextExamples, Dict[str, TextExamples]]],
                   config: TrainConfig, adapter_sizes: Sequence[int] = (), top_ks: Sequence[int] = (),
                   layer_norm: bool = False, full: Optional[bool] = None,
                   fine_tune_learning_rate: Optional[float] = None, out_dir: str = ".",
                   verbose: bool = True) -> Dict:
  """Validation metric vs. trained parameters for adapters, top-k and LayerNorm tuning.

  Args:
    task_data: task name -> (TaskSpec, train, dev splits).
    config: the shared training settings; its AdapterConfig (all but size)
      is the adapters' architecture and its learning rate is used for the
      adapter and LayerNorm runs.
    full: also train full fine-tuning; default (None): when there are
      several tasks, where scores are normalised by it.
    fine_tune_learning_rate: learning rate of the top-k and full runs
      (default: config's).

  Returns:
    {"tasks", "metrics": {task: metric}, "normalised": bool, "runs": [...],
    "full": {task: score} (if trained), "curves": {method: [points]}}. A
    point holds "setting", "trained_params" (mean over tasks) and, for one
    task, its "score"; for several, "p20", "p50", "p80" of the score minus
    the task's full fine-tuning score.
  """
  if not task_data:
    raise ValueError("give at least one task")
  several = len(task_data) > 1
  full = several if full is None else full
  if several and not full:
    raise ValueError("several tasks are normalised by full fine-tuning, which must be trained")
  settings = tradeoff_settings(adapter_sizes, top_ks, layer_norm, full)
  fine_tune_learning_rate = fine_tune_learning_rate or config.learning_rate
  runs = []
  for name, (task, train, dev) in task_data.items():
    for setting in settings:
      run_config = setting_train_config(config, setting, fine_tune_learning_rate)
      record = _cached_run(os.path.join(out_dir, "runs"), f"{name}-{setting.key}", task, train, dev,
                           run_config, verbose=False)
      _log(verbose, f"[tradeoff] {name} {setting.key}: {record['trained_params']:,} trained, "
                    f"{task.primary_metric} {record['score']}")
      runs.append(dict(task=name, method=setting.method, setting=setting.value,
                       trained_params=record["trained_params"], score=record["score"]))
  metrics = {name: task.primary_metric for name, (task, _, _) in task_data.items()}
  return summarise_tradeoff(runs, metrics)


def tradeoff_from_runs(run_dirs: Sequence[str]) -> Dict:
  """The trade-off summary of finished `train` runs (each dir holds metrics.json).

  Lets runs made for another purpose (a reproduction table, a sweep's best
  runs) be plotted without retraining. A (task, method, size) may appear once.
  """
  runs, metrics, origin = [], {}, {}
  for run_dir in run_dirs:
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{run_dir} holds no metrics.json; give directories of finished train runs")
    with open(path, encoding="utf-8") as f:
      record = json.load(f)
    config = record.get("config") or {}
    method = record.get("method")
    if method not in TRADEOFF_METHODS + ("full",):
      raise ValueError(f"{path}: unknown method {method!r}")
    setting = {"adapter": (config.get("adapter") or {}).get("size"), "top-k": config.get("top_k")}.get(method)
    key = (record["task"], method, setting)
    if key in origin:
      raise ValueError(f"{run_dir} and {origin[key]} are both {record['task']} {method}"
                       f"{'' if setting is None else f' {setting}'}; keep one")
    origin[key] = run_dir
    metrics.setdefault(record["task"], record["primary_metric"])
    runs.append(dict(task=record["task"], method=method, setting=setting,
                     trained_params=record["trained_params"], score=_finite_or_none(record["score"])))
  if not runs:
    raise ValueError("give at least one run directory")
  return summarise_tradeoff(runs, metrics)


def summarise_tradeoff(runs: Sequence[Dict], metrics: Dict[str, str]) -> Dict:
  """Curves from trade-off runs ({"task", "method", "setting", "trained_params", "score"}).

  One task: each point carries its score. Several tasks: each point carries
  the 20/50/80th percentiles over tasks of (score - the task's full
  fine-tuning score), which the runs must then include. Points are placed at
  the mean trained-parameter count over tasks (heads differ by task).
  """
  tasks = list(metrics)
  several = len(tasks) > 1
  full_scores = {r["task"]: r["score"] for r in runs if r["method"] == "full"}
  if several and set(full_scores) != set(tasks):
    raise ValueError(f"normalising several tasks needs a full fine-tuning run of each; missing "
                     f"{sorted(set(tasks) - set(full_scores))}")
  settings = []
  for run in runs:
    if run["method"] != "full" and (run["method"], run["setting"]) not in settings:
      settings.append((run["method"], run["setting"]))
  curves: Dict[str, List[Dict]] = {}
  for method, value in settings:
    chosen = [r for r in runs if r["method"] == method and r["setting"] == value]
    point = dict(setting=value, trained_params=float(np.mean([r["trained_params"] for r in chosen])))
    if several:
      deltas = [r["score"] - full_scores[r["task"]] for r in chosen
                if r["score"] is not None and full_scores[r["task"]] is not None]
      for q in PERCENTILES:
        point[f"p{q}"] = float(np.percentile(deltas, q)) if deltas else None
    else:
      point["score"] = chosen[0]["score"]
    curves.setdefault(method, []).append(point)
  for points in curves.values():
    points.sort(key=lambda p: p["trained_params"])
  result = dict(tasks=tasks, metrics=dict(metrics), normalised=several, runs=list(runs), curves=curves)
  if full_scores:
    result["full"] = full_scores
  return result


def plot_tradeoff(result: Dict, path: str) -> str:
  """Metric (or its percentiles vs. full fine-tuning) vs. trained parameters, log x."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.0, 4.0))
  for method in TRADEOFF_METHODS:
    points = result["curves"].get(method)
    if not points:
      continue
    color, marker, label = _METHOD_STYLE[method]
    x = np.array([p["trained_params"] for p in points], float)
    if result["normalised"]:
      mid = np.array([np.nan if p["p50"] is None else p["p50"] for p in points], float)
      low = np.array([np.nan if p["p20"] is None else p["p20"] for p in points], float)
      high = np.array([np.nan if p["p80"] is None else p["p80"] for p in points], float)
      ax.plot(x, mid, marker=marker, color=color, label=label)
      ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
      if len(x) == 1:  # a band needs two points; show the spread as an error bar
        ax.errorbar(x, mid, yerr=[mid - low, high - mid], color=color, capsize=3)
    else:
      y = np.array([np.nan if p["score"] is None else p["score"] for p in points], float)
      ax.plot(x, y, marker=marker, color=color, label=label)
  ax.set_xscale("log")
  ax.set_xlabel("trained parameters per task")
  if result["normalised"]:
    ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--", label="full fine-tuning")
    ax.set_ylabel("score - full fine-tuning score")
    ax.set_title(f"{len(result['tasks'])} tasks: median, band = 20th-80th percentile", fontsize=9)
  else:
    task = result["tasks"][0]
    if result.get("full", {}).get(task) is not None:
      ax.axhline(result["full"][task], color="black", linewidth=0.8, linestyle="--",
                 label="full fine-tuning")
    ax.set_ylabel(f"dev {result['metrics'][task]}")
    ax.set_title(task, fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


# ---------------------------------------------------------------- writing results


def write_result(result: Dict, out_dir: str, name: str, plot: Callable[[Dict, str], str]) -> Dict:
  """Writes `<name>.json` and `<name>.png` under `out_dir`; returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  json_path = os.path.join(out_dir, f"{name}.json")
  png_path = os.path.join(out_dir, f"{name}.png")
  write_json_atomic(json_path, result)
  plot(result, png_path)
  return dict(json=json_path, png=png_path)

