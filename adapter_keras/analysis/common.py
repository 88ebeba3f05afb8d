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


def write_result(result: Dict, out_dir: str, name: str, plot: Callable[[Dict, str], str]) -> Dict:
  """Writes `<name>.json` and `<name>.png` under `out_dir`; returns the paths."""
  os.makedirs(out_dir, exist_ok=True)
  json_path = os.path.join(out_dir, f"{name}.json")
  png_path = os.path.join(out_dir, f"{name}.png")
  write_json_atomic(json_path, result)
  plot(result, png_path)
  return dict(json=json_path, png=png_path)
