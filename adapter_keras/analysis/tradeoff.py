"""Size / parameter trade-off (paper Figs. 3 and 4): adapters of several sizes, top-k fine-tuning for
several k and LayerNorm-only tuning, each a point (trained parameters, validation metric). With several
tasks the scores are differences from full fine-tuning, summarised by their 20/50/80th percentiles
across tasks, as in the paper."""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from adapter_keras.analysis import common
from adapter_keras.analysis.report import read_metrics
from adapter_keras.methods import get_method
from adapter_keras.tasks.data import TextExamples
from adapter_keras.train.config import TrainConfig

# Percentiles across tasks that the paper's Fig. 3 draws (line and band).
PERCENTILES = (20, 50, 80)
# Order and colours of the trade-off plot's methods.
TRADEOFF_METHODS = ("adapter", "top-k", "layer-norm")
_METHOD_STYLE = {"adapter": ("tab:orange", "o", "Adapters"),
                 "top-k": ("tab:blue", "s", "Fine-tune top layers"),
                 "layer-norm": ("tab:green", "D", "LayerNorm only")}


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
  method = get_method(setting.method)
  if method.uses_adapters:
    return dataclasses.replace(config, method=method.name, top_k=None,
                               adapter=dataclasses.replace(config.adapter, size=setting.value))
  learning_rate = fine_tune_learning_rate if method.fine_tunes_base else config.learning_rate
  # Full and LayerNorm-only runs train the bottom layer: no frozen prefix to cache.
  return dataclasses.replace(config, method=method.name, top_k=setting.value, learning_rate=learning_rate,
                             prefix_cache=config.prefix_cache and method.prefix_start is not None)


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
      record = common.cached_run(os.path.join(out_dir, "runs"), f"{name}-{setting.key}", task, train, dev,
                           run_config, verbose=False)
      common.log(verbose, f"[tradeoff] {name} {setting.key}: {record['trained_params']:,} trained, "
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
    record = read_metrics(path)
    config = record["config"]
    method = record.get("method")
    if method not in TRADEOFF_METHODS + ("full",):
      raise ValueError(f"{path}: unknown method {method!r}")
    spec = get_method(method)
    setting = ((config.get("adapter") or {}).get("size") if spec.uses_adapters
               else config.get("top_k") if spec.needs_top_k else None)
    key = (record["task"], method, setting)
    if key in origin:
      raise ValueError(f"{run_dir} and {origin[key]} are both {record['task']} {method}"
                       f"{'' if setting is None else f' {setting}'}; keep one")
    origin[key] = run_dir
    metrics.setdefault(record["task"], record["primary_metric"])
    runs.append(dict(task=record["task"], method=method, setting=setting,
                     trained_params=record["trained_params"], score=common.finite_or_none(record["score"])))
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
  plt = common.pyplot()
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
