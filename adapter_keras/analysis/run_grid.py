"""A benchmark's grid of learning rates x seeds, one training run per setting under a runs directory.

What benchmarks/method_comparison.py and benchmarks/token_classification.py share: the learning-rate text of
run directory names, the finished runs (their metrics.json, train/run_dir.py), which runs a cell has under
the two learning-rate searches, how many it has once complete, and a cell's summary by report.select_run's
two rules (the best single run; the mean +- s.e.m. over seeds at the learning rate with the best mean among
those trained with the most seeds).

  lr-search "grid":        every learning rate with every seed
  lr-search "first-seed":  every learning rate with the first seed; the other seeds only at the learning rate
                           whose first-seed run scored best (ties: the first rate listed), known once every
                           first-seed run has finished

The command line a benchmark's report quotes (`benchmark_command`) is here too: every benchmark writes one.
"""
from __future__ import annotations

import math
import os
import shlex
import sys
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from adapter_keras.analysis.report import collect_runs, select_run, setting_key

LR_SEARCHES = ("first-seed", "grid")


def benchmark_command(script: str, argv: Optional[Sequence[str]] = None) -> str:
  """"python benchmarks/<script's file name> ARGS" as a report quotes it; `argv` defaults to sys.argv[1:]."""
  args = list(sys.argv[1:] if argv is None else argv)
  return shlex.join(["python", f"benchmarks/{os.path.basename(script)}", *args])


def lr_text(lr: float) -> str:
  """3e-4 as "3e-4" (run directory names and progress lines)."""
  mantissa, exponent = f"{lr:.6e}".split("e")
  return f"{float(mantissa):g}e{int(exponent)}"


def parse_learning_rates(overrides: Sequence[str], known: Sequence[str],
                         rates: Mapping[str, Tuple[float, ...]],
                         flag: str = "--learning-rates") -> Dict[str, Tuple[float, ...]]:
  """`rates` with each "METHOD=LR[,LR...]" of `overrides` (the values of `flag`) in place of its method's;
  ValueError (one line naming `flag`) for a method not in `known` or a list that is not numbers."""
  rates = dict(rates)
  for value in overrides:
    name, _, listed = value.partition("=")
    if name not in known or not listed:
      raise ValueError(f"{flag} {value!r}: expected METHOD=LR[,LR...] with METHOD one of {', '.join(known)}")
    try:
      rates[name] = tuple(float(lr) for lr in listed.split(","))
    except ValueError:
      raise ValueError(f"{flag} {value!r}: {listed!r} is not a list of numbers") from None
  return rates


def finished_run(path: str) -> Optional[Dict]:
  """The run directory's metrics (report.read_metrics, "run_dir" included), or None while it is not finished."""
  return collect_runs([path])[0] if os.path.exists(os.path.join(path, "metrics.json")) else None


def rank(score: Optional[float]) -> float:
  """A score to rank by: a missing or NaN (diverged) score ranks last."""
  return -math.inf if score is None or math.isnan(score) else score


def planned_runs(rates: Sequence[float], seeds: Sequence[int], lr_search: str,
                 path_of: Callable[[float, int], str]) -> List[Tuple[float, int]]:
  """The (learning rate, seed) runs of one cell, as far as they are known (`path_of(lr, seed)`: the run's
  directory): under "first-seed" the other seeds' runs are known once every first-seed run has finished."""
  seeds = list(seeds)
  if lr_search == "grid" or len(seeds) == 1:
    return [(lr, seed) for lr in rates for seed in seeds]
  first = [(lr, seeds[0]) for lr in rates]
  scores = [finished_run(path_of(lr, seed)) for lr, seed in first]
  if any(s is None for s in scores):
    return first
  best = max(range(len(rates)), key=lambda i: rank(scores[i]["score"]))  # ties: the first rate
  return first + [(rates[best], seed) for seed in seeds[1:]]


def runs_expected(num_rates: int, seeds: Sequence[int], lr_search: str) -> int:
  """How many runs a cell has once complete."""
  if lr_search == "grid" or len(seeds) == 1:
    return num_rates * len(seeds)
  return num_rates + len(seeds) - 1


def status(done: int, expected: int) -> str:
  """A task's mark in the results: complete, partial or missing."""
  return "complete" if done >= expected else "missing" if done == 0 else "partial"


def setting_runs(runs: Sequence[Dict], chosen: Dict) -> List[Dict]:
  """The runs of `chosen`'s setting (its config less the seed), in seed order."""
  key = setting_key(chosen)
  return sorted((r for r in runs if setting_key(r) == key), key=lambda r: r["config"]["seed"])


def best_mean_run(runs: List[Dict]) -> Dict:
  """report.select_run's "best-mean" over the settings trained with the most seeds: the chosen setting's first
  run, with its mean score, s.e.m. and number of seeds (setting_runs gives all its runs)."""
  seeds_of: Dict[str, int] = {}
  for run in runs:
    seeds_of[setting_key(run)] = seeds_of.get(setting_key(run), 0) + 1
  most = max(seeds_of.values())
  return select_run([r for r in runs if seeds_of[setting_key(r)] == most], "best-mean")


def summarize(runs: List[Dict]) -> Dict:
  """A cell from its finished runs (dev scores): its best run (the paper's rule) and the mean +- s.e.m. over
  seeds at the learning rate with the best mean among those trained with the most seeds (report.select_run's
  two rules; under "first-seed" that is the first seed's best rate: a rate run with one seed is not compared
  on its one score against another's mean), with every run's score by learning rate and seed."""
  best = select_run(runs, "best-run")
  mean = best_mean_run(runs)
  by_lr = {}
  for run in sorted(runs, key=lambda r: (r["config"]["learning_rate"], r["config"]["seed"])):
    by_lr.setdefault(lr_text(run["config"]["learning_rate"]), {})[str(run["config"]["seed"])] = run["score"]
  return dict(best_run=dict(score=best["score"], learning_rate=best["config"]["learning_rate"],
                            seed=best["config"]["seed"]),
              mean=mean["score"], sem=mean["sem"], n_seeds=mean["n_seeds"],
              learning_rate=mean["config"]["learning_rate"],
              trained_params=int(np.mean([r["trained_params"] for r in runs])),
              seconds=sum(r["seconds"] for r in runs), runs=len(runs), by_learning_rate=by_lr)
