"""Table-1-style summaries of training runs (`adapter-keras report`).

Rows are methods, columns tasks (primary dev metric x 100), then the mean
over tasks (WNLI excluded, as in the paper), the total parameters needed to
serve all the tasks as a multiple of the base model, and the trained
parameters per task as a percentage of the base. Full fine-tuning stores a
whole model per task; every other method stores the base once plus its
trained parameters per task.

Several runs of one method on one task (a sweep) fill their cell by a
selection rule: "best-run", the paper's, takes the single run with the best
dev score; "best-mean" the setting (the run's config less its seed) with the
best mean over seeds. Either way the cell shows the chosen setting's s.e.m.
over seeds when it has several.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from adapter_keras.io import read_json_object
from adapter_keras.methods import method_label as methods_label
from adapter_keras.tasks.metrics import select_setting


def collect_runs(run_dirs: Sequence[str]) -> List[Dict]:
  """metrics.json of every run directory given (or found one level below, or in a sweep's trials/)."""
  runs = []
  for run_dir in run_dirs:
    candidates = [os.path.join(run_dir, "metrics.json")]
    for folder in (run_dir, os.path.join(run_dir, "trials")):
      if os.path.isdir(folder):
        candidates += [os.path.join(folder, d, "metrics.json") for d in sorted(os.listdir(folder))]
    found = [c for c in candidates if os.path.exists(c)]
    if not found:
      raise FileNotFoundError(f"{run_dir} holds no metrics.json (run `adapter-keras train --out` first)")
    runs.extend(read_metrics(path) for path in found)
  return runs


# What the report and the trade-off plot read of a metrics.json (train/recipe.py writes them all).
_REPORTED_FIELDS = ("task", "method", "score", "primary_metric", "base_params", "trained_params",
                    "trained_fraction", "config")


def read_metrics(path: str) -> Dict:
  """A finished run's metrics.json, with "run_dir" its directory; ValueError naming the file when it is
  not one the table can use."""
  run = read_json_object(path, "a run's metrics object")
  missing = [k for k in _REPORTED_FIELDS if k not in run]
  if missing:
    raise ValueError(f"{path} is not a finished run's metrics.json: it lacks {', '.join(missing)}")
  if not isinstance(run["config"], dict) or not isinstance(run["score"], (int, float)):
    raise ValueError(f"{path}: config must be an object and score a number")
  try:
    method_label(run)
  except ValueError as e:
    raise ValueError(f"{path}: {e}") from None
  return dict(run, run_dir=os.path.dirname(path))


def method_label(run: Dict) -> str:
  """The run's row label: the method's label in tables (methods.py), e.g. "top-2"."""
  return methods_label(run["method"], run["config"].get("top_k"))


def _in_average(task_name: str) -> bool:
  from adapter_keras.tasks.registry import GLUE_TASKS  # pylint: disable=import-outside-toplevel
  spec = GLUE_TASKS.get(task_name)
  return spec.in_average if spec else True


def setting_key(run: Dict) -> str:
  """The run's setting: its config less the seed, as a string that groups a setting's seeds."""
  return json.dumps({k: v for k, v in run["config"].items() if k != "seed"}, sort_keys=True)


def select_run(runs: List[Dict], select: str = "best-run") -> Dict:
  """The run filling one cell, with "score" the cell's value and "sem"/"n_seeds" its setting's
  spread over seeds (tasks/metrics.select_setting)."""
  chosen = select_setting([(setting_key(run), run["score"]) for run in runs], select)
  return dict(runs[chosen["run"]], score=chosen["score"],
              sem=chosen["sem"] if chosen["n_seeds"] > 1 else None, n_seeds=chosen["n_seeds"])


def markdown_table(runs: List[Dict], select: str = "best-run") -> Tuple[str, Dict]:
  """(markdown, summary dict). Several runs of one method on one task (adapter sizes, seeds, a
  sweep's grid) fill the cell by the `select` rule (module docstring)."""
  grouped: Dict[str, Dict[str, List[Dict]]] = {}
  for run in runs:
    grouped.setdefault(method_label(run), {}).setdefault(run["task"], []).append(run)
  best = {label: {task: select_run(cell_runs, select) for task, cell_runs in cells.items()}
          for label, cells in grouped.items()}
  tasks = sorted({run["task"] for run in runs})
  header = ["method"] + tasks + ["mean", "total params (x base)", "trained params / task"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  summary = {}
  for label, cells in sorted(best.items()):
    scores = [100 * cells[t]["score"] for t in tasks if t in cells]
    averaged = [100 * cells[t]["score"] for t in tasks if t in cells and _in_average(t)]
    base = next(iter(cells.values()))["base_params"]
    trained = [cells[t]["trained_params"] for t in tasks if t in cells]
    if label == "full":  # every task keeps a whole copy of the model (the only method training all of it)
      total = sum(max(p, base) for p in trained) / base
    else:
      total = (base + sum(trained)) / base
    per_task = 100 * float(np.mean([cells[t]["trained_fraction"] for t in tasks if t in cells]))
    mean = float(np.mean(averaged)) if averaged else float("nan")
    row = [label] + [_cell(cells[t]) if t in cells else "-" for t in tasks]
    row += [f"{mean:.1f}", f"{total:.2f}x", f"{per_task:.2f}%"]
    lines.append("| " + " | ".join(row) + " |")
    summary[label] = dict(scores={t: cells[t]["score"] for t in tasks if t in cells}, mean=mean / 100,
                          sem={t: cells[t]["sem"] for t in tasks if t in cells}, select=select,
                          total_params_x_base=total, trained_percent_per_task=per_task,
                          tasks=len(scores))
  return "\n".join(lines), summary


def _cell(run: Dict) -> str:
  text = f"{100 * run['score']:.1f}"
  return text if run["sem"] is None else f"{text} ± {100 * run['sem']:.1f}"
