"""Size / parameter trade-off (paper Figs. 3 and 4): adapters of several sizes, top-k fine-tuning for
several k and LayerNorm-only tuning, each a point (trained parameters, validation metric). With several
tasks the scores are differences from full fine-tuning, summarised by their 20/50/80th percentiles
across tasks, as in the paper.

A point (task, method, setting) may hold runs at several learning rates (and epochs) and seeds: as in
the paper's Fig. 4, its learning rate is tuned on dev, taking the one with the best mean score over
seeds, and the point is that mean with its standard error. Full fine-tuning's reference is chosen the
same way; several tasks are summarised on these seed means."""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from adapter_keras.analysis import common
from adapter_keras.analysis.report import read_metrics
from adapter_keras.methods import get_method
from adapter_keras.tasks.data import TextExamples
from adapter_keras.tasks.metrics import standard_error
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
  # Full and LayerNorm-only runs train the bottom layer: no frozen bottom to cache.
  return dataclasses.replace(config, method=method.name, top_k=setting.value, learning_rate=learning_rate,
                             prefix_cache=config.prefix_cache and method.prefix_start is not None)


def tradeoff_study(task_data: Dict[str, Tuple[object, TextExamples, Dict[str, TextExamples]]],
                   config: TrainConfig, adapter_sizes: Sequence[int] = (), top_ks: Sequence[int] = (),
                   layer_norm: bool = False, full: Optional[bool] = None,
                   fine_tune_learning_rate: Optional[float] = None, out_dir: str = ".",
                   verbose: bool = True, learning_rates: Optional[Sequence[float]] = None,
                   seeds: Optional[Sequence[int]] = None) -> Dict:
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
    learning_rates: train every setting at each of these (replacing
      config's and `fine_tune_learning_rate`); each point then takes the
      one with the best mean dev score over seeds.
    seeds: train every setting with each of these seeds (default: config's).
      With `learning_rates` or `seeds` the recorded runs under
      `<out_dir>/runs/` are named with their learning rate and seed.

  Returns:
    {"tasks", "metrics": {task: metric}, "normalised": bool, "runs": [...],
    "full": {task: score} (if trained), "curves": {method: [points]}}
    (summarise_tradeoff).
  """
  if not task_data:
    raise ValueError("give at least one task")
  several = len(task_data) > 1
  full = several if full is None else full
  if several and not full:
    raise ValueError("several tasks are normalised by full fine-tuning, which must be trained")
  settings = tradeoff_settings(adapter_sizes, top_ks, layer_norm, full)
  fine_tune_learning_rate = fine_tune_learning_rate or config.learning_rate
  # Single runs keep their historical record names, so studies recorded before resume.
  grid = learning_rates is not None or seeds is not None
  runs = []
  for name, (task, train, dev) in task_data.items():
    for setting in settings:
      setting_config = setting_train_config(config, setting, fine_tune_learning_rate)
      for lr in learning_rates or [setting_config.learning_rate]:
        for seed in seeds or [config.seed]:
          run_config = dataclasses.replace(setting_config, learning_rate=lr, seed=seed)
          key = f"{name}-{setting.key}" + (f"-lr{lr:g}-seed{seed}" if grid else "")
          record = common.cached_run(os.path.join(out_dir, "runs"), key, task, train, dev, run_config,
                                     verbose=False)
          common.log(verbose, f"[tradeoff] {key}: {record['trained_params']:,} trained, "
                              f"{task.primary_metric} {record['score']}")
          runs.append(dict(task=name, method=setting.method, setting=setting.value,
                           trained_params=record["trained_params"], score=record["score"],
                           learning_rate=lr, epochs=run_config.epochs, seed=seed))
  metrics = {name: task.primary_metric for name, (task, _, _) in task_data.items()}
  return summarise_tradeoff(runs, metrics)


def tradeoff_from_runs(run_dirs: Sequence[str]) -> Dict:
  """The trade-off summary of finished `train` runs or sweep trials (each dir holds metrics.json).

  Lets runs made for another purpose (a reproduction table, a sweep's
  trials) be plotted without retraining. Runs of one (task, method, size)
  may differ in learning rate, epochs and seed (summarise_tradeoff tunes
  the first two per point and averages over seeds); two runs that agree on
  all of these are refused.
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
               else config.get("top_k") if spec.name == "top-k" else None)
    lr, epochs, seed = config.get("learning_rate"), config.get("epochs"), config.get("seed")
    key = (record["task"], method, setting, lr, epochs, seed)
    if key in origin:
      raise ValueError(f"{run_dir} and {origin[key]} are both {record['task']} {method}"
                       f"{'' if setting is None else f' {setting}'} at lr {lr}, {epochs} epochs, seed {seed}; "
                       "keep one")
    origin[key] = run_dir
    metrics.setdefault(record["task"], record["primary_metric"])
    runs.append(dict(task=record["task"], method=method, setting=setting,
                     trained_params=record["trained_params"], score=common.finite_or_none(record["score"]),
                     learning_rate=lr, epochs=epochs, seed=seed))
  if not runs:
    raise ValueError("give at least one run directory")
  return summarise_tradeoff(runs, metrics)


def _sort_key(value) -> Tuple:
  return (value is None, value if value is not None else 0)


def select_learning_rate(runs: Sequence[Dict]) -> Dict:
  """The runs of one (task, method, setting) reduced to the learning rate (and epochs) with the
  best mean dev score over seeds.

  A candidate with a diverged run (score None) has no mean and is chosen
  only when every candidate has one; ties go to the smaller learning rate.

  Returns {"learning_rate", "epochs", "n_seeds", "seeds", "scores", "mean",
  "sem", "by_learning_rate": [{"learning_rate", "epochs", "n_seeds",
  "mean", "sem"} for every candidate]} (the chosen candidate's seeds, their
  scores, mean and s.e.m.).
  """
  groups: Dict[Tuple, List[Dict]] = {}
  for run in runs:
    groups.setdefault((run.get("learning_rate"), run.get("epochs")), []).append(run)
  candidates = []
  for (lr, epochs) in sorted(groups, key=lambda k: (_sort_key(k[0]), _sort_key(k[1]))):
    group = sorted(groups[(lr, epochs)], key=lambda r: _sort_key(r.get("seed")))
    scores = [r["score"] for r in group]
    complete = all(score is not None for score in scores)
    candidates.append(dict(learning_rate=lr, epochs=epochs, n_seeds=len(group),
                           seeds=[r.get("seed") for r in group], scores=scores,
                           mean=float(np.mean(scores)) if complete else None,
                           sem=standard_error(scores) if complete else None))
  chosen = max(candidates, key=lambda c: -np.inf if c["mean"] is None else c["mean"])
  return dict(chosen, by_learning_rate=[{k: c[k] for k in ("learning_rate", "epochs", "n_seeds", "mean", "sem")}
                                        for c in candidates])


def summarise_tradeoff(runs: Sequence[Dict], metrics: Dict[str, str]) -> Dict:
  """Curves from trade-off runs ({"task", "method", "setting", "trained_params", "score"} and,
  optionally, "learning_rate", "epochs", "seed").

  The runs of each (task, method, setting) are reduced to the learning rate
  (and epochs) with the best mean over seeds (select_learning_rate). One
  task: each point carries that selection, with "score" its mean. Several
  tasks: each point carries the 20/50/80th percentiles over tasks of (mean
  - the task's full fine-tuning mean, selected the same way), which the
  runs must then include, and the per-task selections under "per_task".
  Points are placed at the mean trained-parameter count over tasks (heads
  differ by task). "full" maps each task to its full fine-tuning mean and
  "full_selection" to its selection.
  """
  tasks = list(metrics)
  several = len(tasks) > 1
  selections: Dict[Tuple, Dict] = {}
  members: Dict[Tuple, List[Dict]] = {}
  for run in runs:
    members.setdefault((run["task"], run["method"], run["setting"]), []).append(run)
  for key, group in members.items():
    selections[key] = select_learning_rate(group)
  full_selection = {task: selection for (task, method, _), selection in selections.items() if method == "full"}
  full_scores = {task: selection["mean"] for task, selection in full_selection.items()}
  if several and set(full_scores) != set(tasks):
    raise ValueError(f"normalising several tasks needs a full fine-tuning run of each; missing "
                     f"{sorted(set(tasks) - set(full_scores))}")
  settings = []
  for run in runs:
    if run["method"] != "full" and (run["method"], run["setting"]) not in settings:
      settings.append((run["method"], run["setting"]))
  curves: Dict[str, List[Dict]] = {}
  for method, value in settings:
    chosen = {task: selections[(task, m, v)] for (task, m, v) in selections if (m, v) == (method, value)}
    params = [r["trained_params"] for task in chosen for r in members[(task, method, value)]]
    point = dict(setting=value, trained_params=float(np.mean(params)))
    if several:
      deltas = [selection["mean"] - full_scores[task] for task, selection in chosen.items()
                if selection["mean"] is not None and full_scores[task] is not None]
      for q in PERCENTILES:
        point[f"p{q}"] = float(np.percentile(deltas, q)) if deltas else None
      point["per_task"] = chosen
    else:
      (selection,) = chosen.values()
      point.update(score=selection["mean"], **{k: v for k, v in selection.items() if k != "mean"})
    curves.setdefault(method, []).append(point)
  for points in curves.values():
    points.sort(key=lambda p: p["trained_params"])
  result = dict(tasks=tasks, metrics=dict(metrics), normalised=several, runs=list(runs), curves=curves)
  if full_scores:
    result["full"] = full_scores
    result["full_selection"] = full_selection
  return result


def _seed_counts(result: Dict) -> List[int]:
  selections = list(result.get("full_selection", {}).values())
  for points in result["curves"].values():
    for point in points:
      selections.extend(point["per_task"].values() if "per_task" in point else [point])
  return sorted({s["n_seeds"] for s in selections})


def _tuned_learning_rates(result: Dict) -> bool:
  return any(len({(r.get("learning_rate"), r.get("epochs")) for r in result["runs"]
                  if (r["task"], r["method"], r["setting"]) == key}) > 1
             for key in {(r["task"], r["method"], r["setting"]) for r in result["runs"]})


def plot_tradeoff(result: Dict, path: str) -> str:
  """Metric (or its percentiles vs. full fine-tuning) vs. trained parameters, log x; for one task
  over several seeds, the seed means with s.e.m. error bars."""
  plt = common.pyplot()
  seed_counts = _seed_counts(result)
  several_seeds = bool(seed_counts) and seed_counts[-1] > 1
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
      if several_seeds:
        sem = np.array([np.nan if p.get("sem") is None else p["sem"] for p in points], float)
        ax.errorbar(x, y, yerr=sem, marker=marker, color=color, label=label, capsize=3)
      else:
        ax.plot(x, y, marker=marker, color=color, label=label)
  ax.set_xscale("log")
  ax.set_xlabel("trained parameters per task")
  # Runs lost to a crash can leave points with fewer seeds than others: say so.
  counts = (f"{seed_counts[0]}-{seed_counts[-1]}" if several_seeds and seed_counts[0] != seed_counts[-1]
            else str(seed_counts[-1]) if several_seeds else "")
  tuned = "lr tuned per point on dev" if _tuned_learning_rates(result) else ""
  if result["normalised"]:
    ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--", label="full fine-tuning")
    ax.set_ylabel("score - full fine-tuning score")
    notes = [p for p in (f"on means over {counts} seeds" if several_seeds else "", tuned) if p]
    ax.set_title(f"{len(result['tasks'])} tasks: median, band = 20th-80th percentile"
                 + (f"\n({', '.join(notes)})" if notes else ""), fontsize=9)
  else:
    task = result["tasks"][0]
    full = result.get("full_selection", {}).get(task)
    if full is not None and full["mean"] is not None:
      ax.axhline(full["mean"], color="black", linewidth=0.8, linestyle="--", label="full fine-tuning")
      if several_seeds and full["sem"]:
        ax.axhspan(full["mean"] - full["sem"], full["mean"] + full["sem"], color="black", alpha=0.08,
                   linewidth=0)
    ax.set_ylabel(f"dev {result['metrics'][task]}")
    notes = [p for p in (f"mean ± s.e.m. over {counts} seeds" if several_seeds else "", tuned) if p]
    ax.set_title(task + (": " + ", ".join(notes) if notes else ""), fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
