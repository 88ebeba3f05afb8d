"""Hyper-parameter sweeps with the paper's protocol, as a keras-tuner grid search.

The grid is learning rate x epochs x adapter size x seed. Each trial trains
one model with `train.classification.train_task` in its own run directory
`OUT/trials/<setting>` (metrics.json, TensorBoard logs and, while it runs, a
step checkpoint; no model artifact) and reports the dev score of its best
epoch. The keras-tuner project under `OUT/tuner` makes the sweep resumable
(re-running the same command skips finished trials and retries an
interrupted one, which then resumes from its step checkpoint) and
distributable with keras-tuner's chief/worker oracle (KERASTUNER_TUNER_ID,
KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT). keras-tuner itself imports
Keras 3, so the tuner overrides `run_trial` and never hands it a model.

Selection: the setting (lr, epochs, size) with the best mean dev score over
seeds; `best.json` also reports that setting's s.e.m. across seeds and the
best single trial.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from adapter_keras.io import write_json_atomic, write_text_atomic
from adapter_keras.methods import get_method
from adapter_keras.tasks.metrics import standard_error
from adapter_keras.train.classification import train_task
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.loop import DEFAULT_CHECKPOINT_EVERY_STEPS

PRESETS = {
    "paper-glue": dict(learning_rates=[3e-5, 3e-4, 3e-3], epochs=[3, 20], adapter_sizes=[8, 64, 256],
                       seeds=[0, 1, 2, 3, 4]),
    "paper-extra": dict(learning_rates=[1e-5, 3e-5, 1e-4, 3e-3], epochs=[20, 50, 100],
                        adapter_sizes=[2, 4, 8, 16, 32, 64], seeds=[0, 1, 2, 3, 4]),
}
SETTING_KEYS = ("learning_rate", "epochs", "adapter_size")


@dataclasses.dataclass
class SweepGrid:
  learning_rates: Sequence[float]
  epochs: Sequence[int]
  adapter_sizes: Sequence[int]
  seeds: Sequence[int]

  def __post_init__(self):
    for name in ("learning_rates", "epochs", "adapter_sizes", "seeds"):
      values = list(getattr(self, name))
      if not values:
        raise ValueError(f"the sweep grid needs at least one value for {name}")
      if len(set(values)) != len(values):
        raise ValueError(f"duplicate values in {name}: {values}")
    if any(not lr > 0 for lr in self.learning_rates):
      raise ValueError("learning rates must be > 0")
    if any(e < 1 for e in self.epochs) or any(s < 1 for s in self.adapter_sizes):
      raise ValueError("epochs and adapter sizes must be >= 1")

  @property
  def size(self) -> int:
    return len(self.learning_rates) * len(self.epochs) * len(self.adapter_sizes) * len(self.seeds)

  @classmethod
  def from_preset(cls, name: str, **overrides) -> "SweepGrid":
    if name not in PRESETS:
      raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    values.update({k: v for k, v in overrides.items() if v})
    return cls(**values)


def _hyperparameters(grid: SweepGrid, method: str):
  import keras_tuner  # pylint: disable=import-outside-toplevel
  hp = keras_tuner.HyperParameters()
  hp.Choice("learning_rate", [float(v) for v in grid.learning_rates])
  hp.Choice("epochs", [int(v) for v in grid.epochs])
  hp.Choice("adapter_size", [int(v) for v in grid.adapter_sizes] if get_method(method).uses_adapters else [0])
  hp.Choice("seed", [int(v) for v in grid.seeds])
  return hp


def _make_tuner_class():
  import keras_tuner  # pylint: disable=import-outside-toplevel

  class AdapterSweepTuner(keras_tuner.Tuner):
    """Runs one adapter_keras training per trial; no Keras 3 model involved."""

    def __init__(self, oracle, task, train, dev, base_config: TrainConfig, trials_dir: str,
                 prefix_cache_dir: Optional[str] = None,
                 checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS, **kwargs):
      super().__init__(oracle=oracle, hypermodel=None, **kwargs)
      self.task, self.train, self.dev, self.base_config = task, train, dev, base_config
      self.trials_dir = trials_dir
      self.prefix_cache_dir = prefix_cache_dir
      self.checkpoint_every_steps = checkpoint_every_steps

    def run_trial(self, trial, *args, **kwargs):
      hp = trial.hyperparameters
      config = dataclasses.replace(
          self.base_config, learning_rate=hp.get("learning_rate"), epochs=hp.get("epochs"),
          seed=hp.get("seed"))
      if get_method(config.method).uses_adapters:
        config = dataclasses.replace(config, adapter=dataclasses.replace(config.adapter,
                                                                         size=hp.get("adapter_size")))
      print(f"[sweep] trial {trial.trial_id}: " + ", ".join(f"{k}={v}" for k, v in hp.values.items()),
            flush=True)
      # Named by the setting, not the trial id, so a retried trial finds its checkpoint.
      run_dir = os.path.join(self.trials_dir, "-".join(f"{k}{v}" for k, v in sorted(hp.values.items())))
      result, _, _ = train_task(self.task, self.train, self.dev, config, out_dir=run_dir, verbose=False,
                                save_model=False, prefix_cache_dir=self.prefix_cache_dir,
                                checkpoint_every_steps=self.checkpoint_every_steps)
      print(f"[sweep] trial {trial.trial_id}: {self.task.primary_metric} {result.score:.4f} "
            f"(best epoch {result.best_epoch}, {result.seconds:.0f}s)", flush=True)
      metrics = {"score": result.score, "best_epoch": float(result.best_epoch),
                 "trained_params": float(result.trained_params), "seconds": result.seconds}
      metrics.update({f"dev_{k}": v for k, v in result.metrics.items()})
      return metrics

    def save_model(self, trial_id, model, step=0):
      pass  # a trial's result lives in its metrics; nothing to save per trial

  return AdapterSweepTuner


def trial_rows(oracle) -> List[Dict]:
  """One dict per completed trial: hyper-parameters and metrics."""
  rows = []
  for trial_id, trial in sorted(oracle.trials.items()):
    if trial.status != "COMPLETED" or not trial.metrics.exists("score"):
      continue
    row = dict(trial_id=trial_id, **trial.hyperparameters.values)
    for name in trial.metrics.metrics:
      row[name] = trial.metrics.get_last_value(name)
    rows.append(row)
  return rows


def select_best(rows: List[Dict]) -> Dict:
  """The setting with the best mean score over seeds, with its s.e.m."""
  if not rows:
    raise ValueError("no completed trials to select from")
  by_setting: Dict[tuple, List[Dict]] = {}
  for row in rows:
    by_setting.setdefault(tuple(row[k] for k in SETTING_KEYS), []).append(row)
  summaries = []
  for setting, group in by_setting.items():
    scores = np.array([r["score"] for r in group], dtype=np.float64)
    summaries.append(dict(zip(SETTING_KEYS, setting), mean=float(scores.mean()), sem=standard_error(scores),
                          n_seeds=len(scores), seeds=sorted(r["seed"] for r in group)))
  best = max(summaries, key=lambda s: s["mean"])
  best_trial = max(rows, key=lambda r: r["score"])
  return dict(best_setting=best, best_trial=best_trial,
              settings=sorted(summaries, key=lambda s: -s["mean"]))


def write_results(rows: List[Dict], out_dir: str, task, method: str) -> Dict:
  os.makedirs(out_dir, exist_ok=True)
  columns = ["trial_id", "learning_rate", "epochs", "adapter_size", "seed", "score", "best_epoch",
             "trained_params", "seconds"]
  columns += sorted({k for r in rows for k in r} - set(columns))
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=columns)
  writer.writeheader()
  writer.writerows(rows)
  write_text_atomic(os.path.join(out_dir, "results.csv"), table.getvalue(), newline="")
  best = dict(select_best(rows), task=task.name, method=method, primary_metric=task.primary_metric,
              trials=len(rows))
  write_json_atomic(os.path.join(out_dir, "best.json"), best)
  return best


def run_sweep(task, train, dev, base_config: TrainConfig, grid: SweepGrid, out_dir: str,
              prefix_cache_dir: Optional[str] = None,
              checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS) -> Optional[Dict]:
  """Runs (or resumes) the grid; returns best.json's content on the chief/single process.

  `prefix_cache_dir`: where a trial's prefix cache goes when too large for
  memory (with `base_config.prefix_cache`). `checkpoint_every_steps`: each
  trial's step-checkpoint interval (train_task).
  """
  import keras_tuner  # pylint: disable=import-outside-toplevel
  from keras_tuner.src.distribute import utils as dist_utils  # pylint: disable=import-outside-toplevel
  oracle = keras_tuner.oracles.GridSearchOracle(
      objective=keras_tuner.Objective("score", "max"), max_trials=grid.size,
      hyperparameters=_hyperparameters(grid, base_config.method), tune_new_entries=False)
  tuner = _make_tuner_class()(oracle, task, train, dev, base_config, os.path.join(out_dir, "trials"),
                              prefix_cache_dir, checkpoint_every_steps, directory=out_dir, project_name="tuner",
                              overwrite=False)
  done_before = len(trial_rows(tuner.oracle)) if not dist_utils.has_chief_oracle() else 0
  print(f"[sweep] {grid.size} trials in the grid; {done_before} already completed", flush=True)
  tuner.search()
  if dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle():
    return None  # workers only run trials; the chief writes the results
  return write_results(trial_rows(tuner.oracle), out_dir, task, base_config.method)
