"""Table-1-style summaries of training runs (`adapter-keras report`).

Rows are methods, columns tasks (primary dev metric x 100), then the mean
over tasks (WNLI excluded, as in the paper), the total parameters needed to
serve all the tasks as a multiple of the base model, and the trained
parameters per task as a percentage of the base. Full fine-tuning stores a
whole model per task; every other method stores the base once plus its
trained parameters per task.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from adapter_keras.methods import get_method


def collect_runs(run_dirs: Sequence[str]) -> List[Dict]:
  """metrics.json of every run directory given (or found one level below)."""
  runs = []
  for run_dir in run_dirs:
    candidates = [os.path.join(run_dir, "metrics.json")]
    if os.path.isdir(run_dir):
      candidates += [os.path.join(run_dir, d, "metrics.json") for d in sorted(os.listdir(run_dir))]
    found = [c for c in candidates if os.path.exists(c)]
    if not found:
      raise FileNotFoundError(f"{run_dir} holds no metrics.json (run `adapter-keras train --out` first)")
    for path in found:
      with open(path, encoding="utf-8") as f:
        runs.append(json.load(f))
  return runs


def method_label(run: Dict) -> str:
  """The run's row label: the method's label in tables (methods.py), e.g. "top-2"."""
  return get_method(run["method"]).label(run["config"].get("top_k"))


def _in_average(task_name: str) -> bool:
  from adapter_keras.tasks.registry import GLUE_TASKS  # pylint: disable=import-outside-toplevel
  spec = GLUE_TASKS.get(task_name)
  return spec.in_average if spec else True


def markdown_table(runs: List[Dict]) -> Tuple[str, Dict]:
  """(markdown, summary dict). Several runs of one method on one task (e.g.
  adapter sizes) count by their best dev score."""
  best: Dict[str, Dict[str, Dict]] = {}
  for run in runs:
    cell = best.setdefault(method_label(run), {})
    if run["task"] not in cell or run["score"] > cell[run["task"]]["score"]:
      cell[run["task"]] = run
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
    row = [label] + [f"{100 * cells[t]['score']:.1f}" if t in cells else "-" for t in tasks]
    row += [f"{mean:.1f}", f"{total:.2f}x", f"{per_task:.2f}%"]
    lines.append("| " + " | ".join(row) + " |")
    summary[label] = dict(scores={t: cells[t]["score"] for t in tasks if t in cells}, mean=mean / 100,
                          total_params_x_base=total, trained_percent_per_task=per_task,
                          tasks=len(scores))
  return "\n".join(lines), summary
