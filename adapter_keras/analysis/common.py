"""What the analyses share: their training runs (recorded per setting, so an interrupted study resumes),
matplotlib, result files."""
from __future__ import annotations

import json
import math
import os
from typing import Callable, Dict, Optional

from adapter_keras.io import write_json_atomic
from adapter_keras.tasks.data import TextExamples
from adapter_keras.train.run import train_task
from adapter_keras.train.config import TrainConfig


def pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def finite_or_none(value: float) -> Optional[float]:
  return None if value is None or not math.isfinite(value) else float(value)


def cached_run(runs_dir: str, key: str, task, train: TextExamples, dev: Dict[str, TextExamples],
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
  result, _ = train_task(task, train, dev, config, verbose=verbose)
  record = dict(task=task.name, config=config.to_dict(), score=finite_or_none(result.score),
                primary_metric=result.primary_metric, metrics=result.metrics,
                trained_params=result.trained_params, trained_fraction=result.trained_fraction,
                best_epoch=result.best_epoch, seconds=result.seconds)
  write_json_atomic(path, record)
  return record


def log(verbose: bool, message: str) -> None:
  if verbose:
    print(message, flush=True)


def result_paths(out_dir: str, name: str) -> Dict[str, str]:
  return dict(json=os.path.join(out_dir, f"{name}.json"), png=os.path.join(out_dir, f"{name}.png"))


def check_result_destination(out_dir: str, name: str, overwrite: bool = False) -> None:
  """Refuses, before any work, an `out_dir` already holding `<name>.json` or `<name>.png`, unless `overwrite`."""
  existing = [os.path.basename(path) for path in result_paths(out_dir, name).values() if os.path.exists(path)]
  if existing and not overwrite:
    raise FileExistsError(f"--out {out_dir} holds {' and '.join(existing)} already; pass --overwrite to replace "
                          f"them, or give another --out")


def write_result(result: Dict, out_dir: str, name: str, plot: Callable[[Dict, str], str],
                 overwrite: bool = False) -> Dict:
  """Writes `<name>.json` and `<name>.png` under `out_dir` (an earlier pair only with `overwrite`); returns
  the paths."""
  check_result_destination(out_dir, name, overwrite)
  os.makedirs(out_dir, exist_ok=True)
  paths = result_paths(out_dir, name)
  write_json_atomic(paths["json"], result)
  plot(result, paths["png"])
  return paths
