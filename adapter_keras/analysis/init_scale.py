"""Initialisation scale (paper Fig. 6): adapters trained from truncated normals of several standard
deviations, a few seeds each; mean and s.e.m. per std."""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from adapter_keras.analysis import common
from adapter_keras.methods import get_method
from adapter_keras.tasks.data import TextExamples
from adapter_keras.tasks.metrics import standard_error
from adapter_keras.train.config import TrainConfig


def init_scale_study(task, train: TextExamples, dev: Dict[str, TextExamples], config: TrainConfig,
                     stds: Sequence[float], seeds: Sequence[int], out_dir: str,
                     verbose: bool = True) -> Dict:
  """Trains adapters for every (init std, seed); the dev metric per std.

  `config` gives everything but AdapterConfig.init_std and the seed; its
  method must be "adapter".

  Returns {"task", "metric", "stds", "seeds", "scores": [per std: per seed],
  "mean", "sem"}; a diverged run scores None and is left out of its mean.
  """
  if not get_method(config.method).uses_adapters:
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
      record = common.cached_run(os.path.join(out_dir, "runs"), f"std{std:g}-seed{seed}", task, train, dev,
                           run_config, verbose=False)
      common.log(verbose, f"[init-scale] std {std:g} seed {seed}: {task.primary_metric} {record['score']}")
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
    sems.append(standard_error(finite) if finite else None)
  return dict(task=task_name, metric=metric, stds=[float(s) for s in stds], seeds=[int(s) for s in seeds],
              scores=[list(row) for row in scores], mean=means, sem=sems)


def plot_init_scale(result: Dict, path: str) -> str:
  """Dev metric vs. init std (log x), error bars = s.e.m. over seeds."""
  plt = common.pyplot()
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
