"""The search: a keras-tuner Tuner for the tf_keras wide & deep models, and its reports.

keras-tuner's own Tuner builds Keras 3 models; `WideDeepTuner` overrides
`run_trial` to build, train and evaluate the tf_keras model of a trial itself
and returns its metrics, so the oracles (random, Bayesian, Hyperband), the
on-disk state that makes a search resumable (`overwrite=False` reloads the
project and skips completed trials) and the chief/worker protocol (the
KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT
environment variables) all work unchanged.

`run_search` is the whole job: it checks the data and the modules, searches,
writes `trials.csv`, re-trains the best trial's configuration and saves it as
a SavedModel taking raw strings (`best_model/`), and writes `best.json`.

Progress: every finished trial prints one line (trial number, validation
accuracy and the best so far, the trial's time, the search's elapsed time and
an ETA from the rate at which the oracle completes trials, then the trial's
hyperparameters), and `trials.csv` is re-written after every trial by the
process that owns the search directory (the chief, or the only process).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import shutil
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import keras_tuner
import numpy as np

from adapter_keras.io import atomic_directory, write_text_atomic
from automl_baseline import modules
from automl_baseline.export import EXPORT_INFO_FILE, export_saved_model, predict_exported
from automl_baseline.search_space import SearchSpace, SearchSpaceHyperModel, TrialConfig, space_signature
from automl_baseline.towers import ModelSettings
from automl_baseline.training import TrainingBudget, check_classification_labels, train_and_evaluate

ORACLES = ("random", "bayesian", "hyperband")
OBJECTIVE = "val_accuracy"
# Hyperband's "epochs" are shares of a trial's training budget: a trial given
# e of HYPERBAND_MAX_EPOCHS trains on e / HYPERBAND_MAX_EPOCHS of its samples.
# A configuration Hyperband promotes is trained again from scratch on its
# larger share (no checkpoint is carried over between rounds).
HYPERBAND_MAX_EPOCHS = 9
HYPERBAND_FACTOR = 3
PROJECT_NAME = "tuner"
SEARCH_CONFIG_FILE = "search_config.json"
TRIAL_METRICS = ("val_accuracy", "val_loss", "train_steps", "train_seconds", "trial_seconds")
_INTEGER_METRICS = ("train_steps",)


def make_oracle(name: str, max_trials: int, seed: int) -> keras_tuner.Oracle:
  """A keras-tuner oracle maximising validation accuracy, stopping after `max_trials`."""
  if max_trials < 1:
    raise ValueError(f"max_trials must be >= 1, got {max_trials}")
  objective = keras_tuner.Objective(OBJECTIVE, direction="max")
  # keras-tuner takes a falsy seed (0) as "no seed" and draws a random one.
  seed = seed % 2_147_483_646 + 1
  if name == "random":
    return keras_tuner.oracles.RandomSearchOracle(objective, max_trials=max_trials, seed=seed)
  if name == "bayesian":
    return keras_tuner.oracles.BayesianOptimizationOracle(objective, max_trials=max_trials,
                                                          seed=seed)
  if name == "hyperband":
    oracle = keras_tuner.oracles.HyperbandOracle(objective, max_epochs=HYPERBAND_MAX_EPOCHS,
                                                 factor=HYPERBAND_FACTOR, seed=seed)
    # Hyperband sizes its brackets itself; the base Oracle still honours max_trials.
    oracle.max_trials = max_trials
    return oracle
  raise ValueError(f"unknown oracle {name!r}; expected one of {', '.join(ORACLES)}")


def is_worker() -> bool:
  """A worker of a chief/worker search: it runs trials, the chief keeps the results."""
  return ("KERASTUNER_ORACLE_IP" in os.environ
          and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", ""))


def is_chief() -> bool:
  """The chief of a chief/worker search: it hosts the oracle and runs no trial."""
  return ("KERASTUNER_ORACLE_IP" in os.environ
          and "chief" in os.environ.get("KERASTUNER_TUNER_ID", ""))


def budget_fraction(values: Dict[str, Any]) -> float:
  """The share of the training budget a trial gets (below 1 only in Hyperband's early rounds)."""
  epochs = values.get("tuner/epochs")
  return 1.0 if epochs is None else float(epochs) / HYPERBAND_MAX_EPOCHS


def display_number(trial_id: str) -> str:
  """keras-tuner numbers trials from "0"; progress lines count from 1."""
  return str(int(trial_id) + 1) if trial_id.isdigit() else trial_id


def format_duration(seconds: float) -> str:
  """41s, 3m05s, 2h07m: short enough for a progress line, exact enough for an ETA."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def describe(config: TrialConfig) -> str:
  """One line naming a trial's architecture and optimisation settings."""
  parts = [modules.short_name(config.embedding_module) + (" fine-tuned" if config.fine_tune_module else "")]
  if config.use_convolution:
    parts.append(f"conv 1..{config.conv_max_ngram}-gram x{config.conv_filters} "
                 f"{config.conv_activation}{' bn' if config.conv_batch_norm else ''} "
                 f"drop {config.conv_dropout:g}")
  if config.hidden_layers:
    parts.append(f"hidden {config.hidden_layers}x{config.hidden_size} {config.hidden_activation} "
                 f"{config.hidden_normalization}-norm drop {config.hidden_dropout:g}")
  else:
    parts.append("no hidden")
  parts.append(f"{config.deep_optimizer} lr {config.deep_learning_rate:g} "
               f"l2 {config.deep_regularization:g} | wide lr {config.wide_learning_rate:g} "
               f"l2 {config.wide_regularization:g} | batch {config.train_batch_size} "
               f"samples {config.training_samples:,}")
  return ", ".join(parts)


class WideDeepTuner(keras_tuner.Tuner):
  """Runs each trial as: build the tf_keras wide & deep model, train, evaluate on dev.

  `trials_csv`: a path re-written after every trial this process ends (leave
  it None on a worker: the chief owns the search directory).
  """

  def __init__(self, oracle: keras_tuner.Oracle, space: SearchSpace, settings: ModelSettings,
               budget: TrainingBudget, directory: str, seed: int = 0, overwrite: bool = False,
               progress: Callable[[str], None] = print, trials_csv: Optional[str] = None):
    self.space = space
    self.settings = settings
    self.budget = budget
    self.seed = seed
    self.progress = progress
    self.trials_csv = trials_csv
    self.trials_run: List[str] = []  # trial ids this instance trained (resume skips the rest)
    self._metrics: Dict[str, Dict[str, float]] = {}  # a worker's oracle client cannot read them back
    self._clock_started = time.monotonic()
    self._completed_at_start = 0
    super().__init__(oracle=oracle, hypermodel=SearchSpaceHyperModel(space), directory=directory,
                     project_name=PROJECT_NAME, overwrite=overwrite)

  def start_clock(self) -> None:
    """Elapsed time and the ETA's rate count from here (trials done before do not count)."""
    self._clock_started = time.monotonic()
    self._completed_at_start = len(self.completed_trials())

  def on_search_begin(self):
    super().on_search_begin()
    self.start_clock()

  def run_trial(self, trial, train, dev, **kwargs) -> Dict[str, float]:  # pylint: disable=arguments-differ
    del kwargs  # search()'s verbose=...; progress is our own line per trial
    started = time.monotonic()
    config = self.hypermodel.build(trial.hyperparameters)
    try:
      result = train_and_evaluate(config, self.settings, train, dev, self.budget, seed=self.seed,
                                  budget_fraction=budget_fraction(trial.hyperparameters.values))
    except modules.ModuleError as e:
      # Every later trial with this module would fail the same way: stop the search.
      raise keras_tuner.errors.FatalError(str(e)) from e
    self.trials_run.append(trial.trial_id)
    metrics = {"val_accuracy": result.val_accuracy, "val_loss": result.val_loss,
               "train_steps": float(result.train_steps), "train_seconds": result.train_seconds,
               "trial_seconds": time.monotonic() - started}
    self._metrics[trial.trial_id] = metrics
    return metrics

  def on_trial_end(self, trial):
    failed = trial.status in (keras_tuner.engine.trial.TrialStatus.INVALID,
                              keras_tuner.engine.trial.TrialStatus.FAILED)
    if failed:  # before the oracle sees it: three failures in a row make end_trial raise
      self.progress(self.progress_line(trial.trial_id, trial.hyperparameters, None, trial.message))
    super().on_trial_end(trial)
    if self.trials_csv:
      write_trials_csv(self, self.trials_csv)
    if not failed:  # after the oracle has it, so that the counts include it
      self.progress(self.progress_line(trial.trial_id, trial.hyperparameters,
                                       self._metrics.get(trial.trial_id)))

  def progress_line(self, trial_id: str, hyperparameters, metrics: Optional[Dict[str, float]],
                    failure: Optional[str] = None) -> str:
    """trial N/M: its validation accuracy, the best so far, times and ETA, its hyperparameters."""
    max_trials = getattr(self.oracle, "max_trials", None)
    completed = self.completed_trials()
    elapsed = time.monotonic() - self._clock_started
    done_now = len(completed) - self._completed_at_start
    if max_trials and done_now > 0:
      eta = format_duration(max(0, max_trials - len(completed)) * elapsed / done_now)
    else:
      eta = "unknown"
    status = f"completed {len(completed)}, elapsed {format_duration(elapsed)}, ETA {eta}"
    name = f"trial {display_number(trial_id)}{f'/{max_trials}' if max_trials else ''}"
    if failure is not None:
      last_line = (failure or "").strip().splitlines()[-1:] or ["unknown error"]
      return f"{name} failed: {last_line[0]} | {status}"
    scores = [t.score for t in completed if t.score is not None]
    best = f" (best {max(scores):.4f})" if scores else ""
    try:
      described = describe(self.hypermodel.build(hyperparameters.copy()))
    except (KeyError, ValueError, TypeError):
      described = str(hyperparameters.values)
    if not metrics or "val_accuracy" not in metrics:
      return f"{name}: done | {status} [{described}]"
    return (f"{name}: val_accuracy {metrics['val_accuracy']:.4f}{best} in "
            f"{format_duration(metrics.get('trial_seconds', 0.0))} "
            f"({int(metrics.get('train_steps', 0))} steps) | {status} [{described}]")

  def completed_trials(self) -> list:
    trials = getattr(self.oracle, "trials", None)  # an OracleClient (worker) has no `trials`
    if trials is None:
      # get_best_trials pads with unfinished trials when asked for more than are completed.
      trials = {t.trial_id: t for t in self.oracle.get_best_trials(
          max(getattr(self.oracle, "max_trials", None) or 0, 10_000))}
    return [t for t in list(trials.values())
            if t.status == keras_tuner.engine.trial.TrialStatus.COMPLETED]


def _report_each_trial_on_the_chief(tuner: WideDeepTuner, trials_csv: str) -> None:
  """A chief runs no trial: its workers end theirs through the oracle server, in its threads.

  Wrapping this oracle's `end_trial` is the one place where the chief learns that a trial
  finished; the lock keeps two workers' reports from interleaving.
  """
  end_trial = tuner.oracle.end_trial
  lock = threading.Lock()

  def end_trial_and_report(trial):
    end_trial(trial)
    with lock:
      write_trials_csv(tuner, trials_csv)
      ended = tuner.oracle.trials[trial.trial_id]
      if ended.status == keras_tuner.engine.trial.TrialStatus.COMPLETED:
        metrics = {m: ended.metrics.get_last_value(m) for m in TRIAL_METRICS if ended.metrics.exists(m)}
        tuner.progress(tuner.progress_line(ended.trial_id, ended.hyperparameters, metrics))
      else:
        tuner.progress(tuner.progress_line(ended.trial_id, ended.hyperparameters, None,
                                           ended.message or ""))

  tuner.oracle.end_trial = end_trial_and_report


# ------------------------------------------------------------------ reports


def _trial_order(trial_id: str):
  # keras-tuner pads ids to the width of max_trials, which a resumed search may have changed.
  return (0, int(trial_id), "") if trial_id.isdigit() else (1, 0, trial_id)


def trial_rows(tuner: WideDeepTuner) -> List[Dict[str, Any]]:
  """One row per trial, in trial order: number, id, status, metrics and the active hyperparameters."""
  rows = []
  trials = dict(tuner.oracle.trials)  # a chief's server threads may add trials meanwhile
  for trial_id in sorted(trials, key=_trial_order):
    trial = trials[trial_id]
    row: Dict[str, Any] = {"trial": display_number(trial_id), "trial_id": trial_id,
                           "status": trial.status}
    for metric in TRIAL_METRICS:
      if trial.metrics.exists(metric):
        value = trial.metrics.get_last_value(metric)
        row[metric] = int(value) if metric in _INTEGER_METRICS else value
    try:
      row.update(tuner.hypermodel.build(trial.hyperparameters.copy()).active_hyperparameters())
    except (KeyError, ValueError, TypeError):
      row.update(trial.hyperparameters.values)  # a trial stopped before it had values
    row.update({k: v for k, v in trial.hyperparameters.values.items() if k.startswith("tuner/")})
    rows.append(row)
  return rows


def write_trials_csv(tuner: WideDeepTuner, path: str) -> None:
  """trials.csv: a header, one row per trial; numbers are plain numbers, so it sorts as numbers."""
  rows = trial_rows(tuner)
  columns: List[str] = ["trial", "trial_id", "status", *TRIAL_METRICS]
  for name in [p.name for p in tuner.oracle.get_space().space]:
    if name not in columns:
      columns.append(name)
  for row in rows:
    columns.extend(k for k in row if k not in columns)
  text = io.StringIO(newline="")  # csv writes its own "\r\n" line ends; keep them as they are
  writer = csv.DictWriter(text, fieldnames=columns)
  writer.writeheader()
  writer.writerows(rows)
  write_text_atomic(path, text.getvalue(), newline="")


def _write_json(path: str, value: dict) -> None:
  # Not adapter_keras.io.write_json_atomic: it sorts the keys, and best.json keeps
  # the order run_search gives it (hyperparameters and scores first), as it always had.
  write_text_atomic(path, json.dumps(value, indent=2) + "\n")


def _data_fingerprint(train, dev) -> str:
  digest = hashlib.sha256()
  for examples in (train, dev):
    for texts in (examples.text, examples.text_b or []):
      for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    digest.update(np.asarray(examples.labels).astype(np.float64).tobytes())
  return digest.hexdigest()


def _check_resumable(out_dir: str, search_config: dict, overwrite: bool) -> None:
  """A resumed search must be the same search, or its trials would not compare."""
  path = os.path.join(out_dir, SEARCH_CONFIG_FILE)
  if overwrite or not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    previous = json.load(f)
  changed = sorted(k for k in set(previous) | set(search_config)
                   if previous.get(k) != search_config.get(k))
  if changed:
    raise ValueError(f"{out_dir} holds a search with different {', '.join(changed)}; "
                     "resume with the same settings, or use a new --out or --overwrite")


def num_classes_of(train, dev) -> int:
  if train.label_names:
    return len(train.label_names)
  check_classification_labels(train, 10**9, "training")
  check_classification_labels(dev, 10**9, "validation")
  return int(max(np.max(train.labels), np.max(dev.labels) if len(dev) else 0)) + 1


def run_search(train, dev, out_dir: str,
               space: SearchSpace = SearchSpace(),
               oracle: str = "random",
               max_trials: int = 10,
               seed: int = 0,
               budget: TrainingBudget = TrainingBudget(),
               wide_buckets: int = 2**18,
               max_tokens: int = 64,
               overwrite: bool = False,
               progress: Callable[[str], None] = print,
               task=None) -> Dict[str, Any]:
  """Searches, reports, re-trains and exports the best configuration; returns best.json.

  Args:
    train, dev: `adapter_keras.tasks.data.TextExamples` with class-id labels.
    out_dir: gets tuner/ (keras-tuner state), trials.csv, best.json, best_model/.
    space: embedding modules and fine-tuning choices (Table 5 fixes the rest).
    oracle: "random", "bayesian" or "hyperband".
    max_trials: total trials, counting those of earlier runs in `out_dir`.
    budget: scales Table 5's training samples down for small machines.
    overwrite: start afresh instead of resuming what `out_dir` holds.
    task: an adapter_keras TaskSpec; best.json then also holds the exported
      best model's dev metrics under that task's definitions ("dev_metrics",
      "primary_metric": MCC for CoLA, F1 for MRPC...), which is what the
      adapter runs report. The search itself maximises validation accuracy.
  """
  if len(train) == 0 or len(dev) == 0:
    raise ValueError("the training and validation sets must not be empty")
  if train.is_pair != dev.is_pair:
    raise ValueError("training and validation sets must both be single texts or both pairs")
  if train.label_names and dev.label_names and list(train.label_names) != list(dev.label_names):
    raise ValueError(f"training labels {train.label_names} differ from validation labels "
                     f"{dev.label_names}")
  num_classes = num_classes_of(train, dev)
  check_classification_labels(train, num_classes, "training")
  check_classification_labels(dev, num_classes, "validation")
  settings = ModelSettings(num_classes=num_classes, is_pair=train.is_pair,
                           wide_buckets=wide_buckets, max_tokens=max_tokens)
  frozen = list(space.frozen_modules)
  for handle in space.embedding_modules:  # fetch and try every module now: fail before writing anything
    if modules.is_tf1_hub_format(modules.resolve_module(handle)) and handle not in frozen:
      frozen.append(handle)  # a TF Hub handle is known to be a TF1 hub.Module only once fetched
    modules.check_module(handle)
  space = dataclasses.replace(space, frozen_modules=tuple(frozen))

  search_config = dict(
      oracle=oracle, seed=seed, embedding_modules=list(space.embedding_modules),
      fine_tune_choices=list(space.fine_tune_choices),
      # Trials of a different space (another Table 5 transcription, other modules frozen)
      # do not compare, and keras-tuner would mix them.
      search_space=space_signature(space), settings=dataclasses.asdict(settings),
      budget=dataclasses.asdict(budget), data=dict(train_examples=len(train),
                                                   dev_examples=len(dev),
                                                   sha256=_data_fingerprint(train, dev)))
  os.makedirs(out_dir, exist_ok=True)
  _check_resumable(out_dir, search_config, overwrite)
  if overwrite:  # also drop the old reports, so nothing of the old search is reused
    for name in ("trials.csv", "best.json", SEARCH_CONFIG_FILE):
      if os.path.exists(os.path.join(out_dir, name)):
        os.remove(os.path.join(out_dir, name))
    shutil.rmtree(os.path.join(out_dir, "best_model"), ignore_errors=True)
  trials_csv = os.path.join(out_dir, "trials.csv")
  tuner = WideDeepTuner(make_oracle(oracle, max_trials, seed), space, settings, budget,
                        directory=out_dir, seed=seed, overwrite=overwrite, progress=progress,
                        trials_csv=None if is_worker() else trials_csv)
  if is_worker():
    tuner.search(train, dev, verbose=0)
    return dict(worker=tuner.tuner_id, trials_run=list(tuner.trials_run))
  _write_json(os.path.join(out_dir, SEARCH_CONFIG_FILE), search_config)
  # The oracle may have been reloaded with another max_trials; this run's flag wins.
  tuner.oracle.max_trials = max_trials
  done_before = len(tuner.completed_trials())
  if done_before:
    progress(f"resuming {out_dir}: {done_before} completed trial(s) kept")
  if is_chief():
    _report_each_trial_on_the_chief(tuner, trials_csv)
    tuner.start_clock()
  try:
    tuner.search(train, dev, verbose=0)
  except keras_tuner.errors.FatalError as e:
    if isinstance(e.__cause__, modules.ModuleError):
      raise e.__cause__ from None
    raise
  except RuntimeError as e:
    if "consecutive failures" not in str(e):
      raise
    # The oracle gives up after 3 failed trials in a row; the reasons are in trials.csv.
    raise ValueError(f"{str(e).splitlines()[0]}; the last failure: "
                     f"{(str(e).strip().splitlines() or [''])[-1]}") from None
  finally:
    write_trials_csv(tuner, trials_csv)
  completed = tuner.completed_trials()
  if not completed:
    raise ValueError(f"no trial completed; see the failures in {os.path.join(out_dir, 'trials.csv')}")
  # Ties go to the earliest trial, so a resumed search picks the same best trial.
  best_trial = min(completed, key=lambda t: (-t.metrics.get_last_value(OBJECTIVE),
                                             int(t.trial_id) if t.trial_id.isdigit() else 0,
                                             t.trial_id))
  best_config = tuner.hypermodel.build(best_trial.hyperparameters.copy())
  best = dict(
      hyperparameters=best_config.active_hyperparameters(),
      val_accuracy=float(best_trial.metrics.get_last_value(OBJECTIVE)),
      trial_id=best_trial.trial_id,
      budget_fraction=budget_fraction(best_trial.hyperparameters.values),
      oracle=oracle,
      trials_completed=len(completed),
      trials_run_now=len(tuner.trials_run),
      num_classes=num_classes,
      label_names=list(train.label_names) if train.label_names else None,
      is_pair=train.is_pair,
      seed=seed,
      model_dir=os.path.abspath(os.path.join(out_dir, "best_model")))
  best.update(_retrain_and_export(best_config, settings, train, dev, budget, seed, best, out_dir,
                                  progress))
  if task is not None:
    from adapter_keras.tasks import compute_metrics  # pylint: disable=import-outside-toplevel
    logits = predict_exported(best["model_dir"], list(dev.text),
                              list(dev.text_b) if dev.is_pair else None)["logits"]
    best.update(dev_metrics=compute_metrics(task, logits, np.asarray(dev.labels)),
                primary_metric=task.primary_metric, task=task.name)
    progress("best model on dev: " + " ".join(f"{k} {v:.4f}" for k, v in best["dev_metrics"].items()))
  _write_json(os.path.join(out_dir, "best.json"), best)
  return best


def _retrain_and_export(config: TrialConfig, settings: ModelSettings, train, dev,
                        budget: TrainingBudget, seed: int, best: dict, out_dir: str,
                        progress: Callable[[str], None]) -> dict:
  """Re-trains the best configuration and saves it, unless best_model/ already is that."""
  model_dir = best["model_dir"]
  previous_path = os.path.join(out_dir, "best.json")
  if os.path.exists(previous_path) and os.path.exists(os.path.join(model_dir, "saved_model.pb")):
    with open(previous_path, encoding="utf-8") as f:
      previous = json.load(f)
    if (previous.get("trial_id") == best["trial_id"]
        and previous.get("hyperparameters") == best["hyperparameters"]):
      return {k: previous[k] for k in ("retrained_val_accuracy", "retrained_train_steps")
              if k in previous}
  progress(f"re-training the best configuration (trial {display_number(best['trial_id'])}, "
           f"trial_id {best['trial_id']} in trials.csv)")
  result = train_and_evaluate(config, settings, train, dev, budget, seed=seed,
                              budget_fraction=best["budget_fraction"])
  # A failed export leaves the previous best_model/ in place; a successful one replaces it.
  with atomic_directory(model_dir) as staging:
    export_saved_model(result.model, staging, settings.is_pair, best["label_names"],
                       info=dict(hyperparameters=best["hyperparameters"],
                                 val_accuracy=result.val_accuracy))
  progress(f"saved {model_dir} (val_accuracy {result.val_accuracy:.4f}; serving signature "
           f"takes raw strings; see {EXPORT_INFO_FILE})")
  return dict(retrained_val_accuracy=result.val_accuracy, retrained_train_steps=result.train_steps)
