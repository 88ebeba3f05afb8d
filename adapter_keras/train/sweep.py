"""Hyper-parameter sweeps with the paper's protocol, as a keras-tuner grid search.

The grid is learning rate x epochs x adapter size (or, for method top-k, the
number of top layers) x seed. Each trial trains
one model with `train.run.train_task` (`train_token` for a token task) in its own run directory
`OUT/trials/<setting>` (metrics.json, TensorBoard logs and, while it runs, a
step checkpoint; with `save_artifacts` also the best epoch's model under
`artifact/`, which GLUE submissions and multi-seed ablations read) and reports
the dev score of its best epoch. The keras-tuner project under `OUT/tuner` makes the sweep resumable
(re-running the same command skips finished trials and retries an
interrupted one, which then resumes from its step checkpoint) and
distributable with keras-tuner's chief/worker oracle (KERASTUNER_TUNER_ID,
KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT). keras-tuner itself imports
Keras 3, so the tuner overrides `run_trial` and never hands it a model.

Selection (tasks/metrics.select_setting): "best-run", the paper's rule, takes the setting
of the single trial with the best dev score; "best-mean" the setting with the
best mean dev score over seeds. `best.json` holds both, each with its
setting's mean and s.e.m. over seeds, and which one was asked for.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from adapter_keras.io import write_json_atomic, write_text_atomic
from adapter_keras import _model_garden
from adapter_keras.methods import get_method
from adapter_keras.tasks.metrics import SELECTION_RULES, select_setting, standard_error
from adapter_keras.train.run import train_task, train_token
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.loop import DEFAULT_CHECKPOINT_EVERY_STEPS
from adapter_keras.values import is_integer

# §3.3's variable fine-tuning: the numbers of top layers tuned on BERT-base's 12.
PAPER_TOP_LAYERS = (1, 2, 3, 5, 7, 9, 11, 12)
PAPER_DEPTH = 12

PRESETS = {
    "paper-glue": dict(learning_rates=[3e-5, 3e-4, 3e-3], epochs=[3, 20], adapter_sizes=[8, 64, 256],
                       seeds=[0, 1, 2, 3, 4]),
    "paper-extra": dict(learning_rates=[1e-5, 3e-5, 1e-4, 3e-3], epochs=[20, 50, 100],
                        adapter_sizes=[2, 4, 8, 16, 32, 64], seeds=[0, 1, 2, 3, 4]),
    # §3.3 tunes the learning rate and epochs as §3.2 does; top_ks is mapped onto the encoder's depth.
    "paper-variable-ft": dict(learning_rates=[3e-5, 3e-4, 3e-3], epochs=[3, 20], adapter_sizes=[],
                              seeds=[0, 1, 2, 3, 4], top_ks=list(PAPER_TOP_LAYERS)),
}
SETTING_KEYS = ("learning_rate", "epochs", "adapter_size", "top_k")


def top_layers_for_depth(num_layers: int, paper_layers: Sequence[int] = PAPER_TOP_LAYERS) -> List[int]:
  """BERT-base's numbers of top layers scaled to an encoder of `num_layers` layers.

  n -> n * num_layers / 12 rounded half up, clipped to [1, num_layers],
  duplicates dropped: the same fractions of the depth (depth 12: the paper's
  values; 6: every depth 1..6; 2: 1 and 2). Half up rather than Python's
  round-half-even, which would skip depths 3 and 5 of a 6-layer encoder.
  """
  if not is_integer(num_layers) or num_layers < 1:
    raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
  return sorted({min(max((2 * n * num_layers + PAPER_DEPTH) // (2 * PAPER_DEPTH), 1), num_layers)
                 for n in paper_layers})


@dataclasses.dataclass
class SweepGrid:
  learning_rates: Sequence[float]
  epochs: Sequence[int]
  adapter_sizes: Sequence[int]
  seeds: Sequence[int]
  top_ks: Optional[Sequence[int]] = None  # method top-k's numbers of layers; then no adapter sizes

  def __post_init__(self):
    names = ["learning_rates", "epochs", "seeds"]
    names.append("top_ks" if self.top_ks is not None else "adapter_sizes")
    for name in names:
      values = list(getattr(self, name))
      if not values:
        raise ValueError(f"the sweep grid needs at least one value for {name}")
      if len(set(values)) != len(values):
        raise ValueError(f"duplicate values in {name}: {values}")
    if self.top_ks is not None and list(self.adapter_sizes):
      raise ValueError("a grid over top_ks (method top-k) trains no adapters: give no adapter sizes")
    if any(not lr > 0 for lr in self.learning_rates):
      raise ValueError("learning rates must be > 0")
    if any(e < 1 for e in self.epochs) or any(s < 1 for s in self.adapter_sizes):
      raise ValueError("epochs and adapter sizes must be >= 1")
    if any(k < 1 for k in self.top_ks or ()):
      raise ValueError("top_ks must be >= 1")

  @property
  def size(self) -> int:
    per_seed = len(self.top_ks) if self.top_ks is not None else len(self.adapter_sizes)
    return len(self.learning_rates) * len(self.epochs) * per_seed * len(self.seeds)

  @classmethod
  def from_preset(cls, name: str, num_layers: Optional[int] = None, **overrides) -> "SweepGrid":
    """The preset's grid, `overrides` replacing its lists; a preset over top_ks needs the
    encoder's `num_layers` (top_layers_for_depth)."""
    if name not in PRESETS:
      raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    values.update({k: v for k, v in overrides.items() if v})
    if values.get("top_ks") is not None:
      if num_layers is None:
        raise ValueError(f"preset {name} maps its numbers of layers onto the encoder's depth: give num_layers")
      values["top_ks"] = top_layers_for_depth(num_layers, values["top_ks"])
    return cls(**values)


def _hyperparameters(grid: SweepGrid, method: str):
  import keras_tuner  # pylint: disable=import-outside-toplevel
  hp = keras_tuner.HyperParameters()
  hp.Choice("learning_rate", [float(v) for v in grid.learning_rates])
  hp.Choice("epochs", [int(v) for v in grid.epochs])
  hp.Choice("adapter_size", [int(v) for v in grid.adapter_sizes] if get_method(method).uses_adapters else [0])
  if grid.top_ks is not None:
    if get_method(method).name != "top-k":
      raise ValueError(f"a grid over numbers of top layers needs method top-k, not {method}")
    hp.Choice("top_k", [int(v) for v in grid.top_ks])
  hp.Choice("seed", [int(v) for v in grid.seeds])
  return hp


def _grid_oracle(grid: SweepGrid, method: str):
  """keras-tuner's GridSearchOracle over the grid, made resumable.

  The oracle keeps its place in the grid only in memory (the trials in grid
  order and the ones whose successor is still to be tried); a reloaded oracle
  that has trials but no such list stops at once, so a sweep stopped between
  trials would end without running the rest (keras-tuner 1.4.8). Reloading
  here rebuilds both from the trials on disk.
  """
  import keras_tuner  # pylint: disable=import-outside-toplevel

  class ResumableGridSearchOracle(keras_tuner.oracles.GridSearchOracle):

    def set_state(self, state):
      super().set_state(state)
      _model_garden.restore_grid_position(self)

  return ResumableGridSearchOracle(objective=keras_tuner.Objective("score", "max"), max_trials=grid.size,
                                   hyperparameters=_hyperparameters(grid, method), tune_new_entries=False)


def _make_tuner_class():
  import keras_tuner  # pylint: disable=import-outside-toplevel

  class AdapterSweepTuner(keras_tuner.Tuner):
    """Runs one adapter_keras training per trial; no Keras 3 model involved."""

    def __init__(self, oracle, task, train, dev, base_config: TrainConfig, trials_dir: str,
                 prefix_cache_dir: Optional[str] = None,
                 checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
                 save_artifacts: bool = False, **kwargs):
      super().__init__(oracle=oracle, hypermodel=None, **kwargs)
      self.task, self.train, self.dev, self.base_config = task, train, dev, base_config
      self.trials_dir = trials_dir
      self.prefix_cache_dir = prefix_cache_dir
      self.checkpoint_every_steps = checkpoint_every_steps
      self.save_artifacts = save_artifacts

    def run_trial(self, trial, *args, **kwargs):
      hp = trial.hyperparameters
      config = dataclasses.replace(
          self.base_config, learning_rate=hp.get("learning_rate"), epochs=hp.get("epochs"),
          seed=hp.get("seed"))
      if get_method(config.method).uses_adapters:
        config = dataclasses.replace(config, adapter=dataclasses.replace(config.adapter,
                                                                         size=hp.get("adapter_size")))
      if "top_k" in hp.values:
        config = dataclasses.replace(config, top_k=hp.get("top_k"))
      print(f"[sweep] trial {trial.trial_id}: " + ", ".join(f"{k}={v}" for k, v in hp.values.items()),
            flush=True)
      run_dir = os.path.join(self.trials_dir, trial_dir_name(hp.values))
      if self.task.task_type == "token":  # a TokenTask: token classification's run (train/tagging.py)
        result, _ = train_token(self.task, self.train, self.dev, config, out_dir=run_dir, verbose=False,
                                checkpoint_every_steps=self.checkpoint_every_steps, save_model=self.save_artifacts)
      else:
        result, _ = train_task(self.task, self.train, self.dev, config, out_dir=run_dir, verbose=False,
                               save_model=self.save_artifacts, prefix_cache_dir=self.prefix_cache_dir,
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


def trial_dir_name(values: Dict) -> str:
  """A trial's run directory under OUT/trials: named by its setting, not its trial id, so that a
  retried trial finds its step checkpoint."""
  return "-".join(f"{k}{v}" for k, v in sorted(values.items()))


def trial_rows(oracle) -> List[Dict]:
  """One dict per completed trial: hyper-parameters, metrics and its run directory (relative to
  the sweep's OUT)."""
  rows = []
  for trial_id, trial in sorted(oracle.trials.items()):
    if trial.status != "COMPLETED" or not trial.metrics.exists("score"):
      continue
    row = dict(trial_id=trial_id, **trial.hyperparameters.values,
               run_dir=os.path.join("trials", trial_dir_name(trial.hyperparameters.values)))
    for name in trial.metrics.metrics:
      row[name] = trial.metrics.get_last_value(name)
    rows.append(row)
  return rows


def select_best(rows: List[Dict], select: str = "best-run") -> Dict:
  """Both rules' settings (metrics.select_setting), each with its mean and s.e.m. over seeds;
  `select` names the one in "best_setting"."""
  if select not in SELECTION_RULES:
    raise ValueError(f"unknown selection rule {select!r}; choose one of {', '.join(SELECTION_RULES)}")
  if not rows:
    raise ValueError("no completed trials to select from")
  runs = [(tuple(row.get(k) for k in SETTING_KEYS), row["score"]) for row in rows]
  by_setting: Dict[tuple, List[Dict]] = {}
  for (setting, _), row in zip(runs, rows):
    by_setting.setdefault(setting, []).append(row)
  summaries = []
  for setting, group in by_setting.items():
    scores = np.array([r["score"] for r in group], dtype=np.float64)
    summaries.append(dict(zip(SETTING_KEYS, setting), mean=float(scores.mean()), sem=standard_error(scores),
                          n_seeds=len(scores), seeds=sorted(r["seed"] for r in group)))
  rules, chosen_rows = {}, {}
  for rule in SELECTION_RULES:
    chosen = select_setting(runs, rule)
    chosen_rows[rule] = rows[chosen["run"]]
    rules[rule] = dict(zip(SETTING_KEYS, chosen["setting"]), score=chosen["score"], mean=chosen["mean"],
                       sem=chosen["sem"], n_seeds=chosen["n_seeds"],
                       seeds=sorted(r["seed"] for r in by_setting[chosen["setting"]]),
                       seed=chosen_rows[rule]["seed"], trial_id=chosen_rows[rule].get("trial_id"),
                       run_dir=chosen_rows[rule].get("run_dir"))
  return dict(select=select, best_setting=rules[select], rules=rules, best_trial=chosen_rows["best-run"],
              settings=sorted(summaries, key=lambda s: -s["mean"]))


def write_results(rows: List[Dict], out_dir: str, task, method: str, select: str = "best-run") -> Dict:
  os.makedirs(out_dir, exist_ok=True)
  columns = ["trial_id", "learning_rate", "epochs", "adapter_size"]
  columns += ["top_k"] if any("top_k" in r for r in rows) else []
  columns += ["seed", "score", "best_epoch", "trained_params", "seconds"]
  columns += sorted({k for r in rows for k in r} - set(columns))
  table = io.StringIO()
  writer = csv.DictWriter(table, fieldnames=columns)
  writer.writeheader()
  writer.writerows(rows)
  write_text_atomic(os.path.join(out_dir, "results.csv"), table.getvalue(), newline="")
  best = dict(select_best(rows, select), task=task.name, method=method, primary_metric=task.primary_metric,
              trials=len(rows))
  write_json_atomic(os.path.join(out_dir, "best.json"), best)
  return best


def run_sweep(task, train, dev, base_config: TrainConfig, grid: SweepGrid, out_dir: str,
              prefix_cache_dir: Optional[str] = None,
              checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
              select: str = "best-run", save_artifacts: bool = False) -> Optional[Dict]:
  """Runs (or resumes) the grid; returns best.json's content on the chief/single process.

  `select`: the rule whose setting best.json's "best_setting" holds (select_best).
  `prefix_cache_dir`: where a trial's prefix cache goes when too large for
  memory (with `base_config.prefix_cache`). `checkpoint_every_steps`: each
  trial's step-checkpoint interval (train_task). `save_artifacts`: each trial
  also writes its best epoch's model under its run directory's `artifact/`.
  """
  dist_utils = _model_garden.keras_tuner_distribution()
  oracle = _grid_oracle(grid, base_config.method)
  tuner = _make_tuner_class()(oracle, task, train, dev, base_config, os.path.join(out_dir, "trials"),
                              prefix_cache_dir, checkpoint_every_steps, save_artifacts, directory=out_dir,
                              project_name="tuner",
                              overwrite=False)
  done_before = len(trial_rows(tuner.oracle)) if not dist_utils.has_chief_oracle() else 0
  print(f"[sweep] {grid.size} trials in the grid; {done_before} already completed", flush=True)
  tuner.search()
  if dist_utils.has_chief_oracle() and not dist_utils.is_chief_oracle():
    return None  # workers only run trials; the chief writes the results
  return write_results(trial_rows(tuner.oracle), out_dir, task, base_config.method, select)
