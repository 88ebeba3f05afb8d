"""One training run for any task type: a `TaskRecipe` says what differs, `run` and `fit` do the rest.

`run(recipe, config, out_dir)` is the run every trainer shares:

  run identity -> finished-run check -> encoder + model + method
  -> tokenize / featurize (before anything is written) -> run.json
  -> `fit`: compile, epoch loop (train/loop.py: best epoch, step checkpoints, resume, NaN stop)
  -> artifact -> the recipe's own outputs -> metrics.json -> checkpoint deleted

A recipe owns what is specific to its task type: the data and its digest,
the model it builds, the loss it compiles, the epoch datasets, the dev
evaluation, and extra manifest/metrics entries. Classification and
regression (train/classification.py) and SQuAD spans (train/squad.py) are
the two recipes; a new task type is a new recipe, nothing else.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

import tensorflow as tf
import tf_keras

from adapter_keras.artifacts import artifact_manifest, save_artifact
from adapter_keras.methods import apply_method, get_method, parameter_report, prefix_start_layer, validate_method
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import PretrainedEncoder, base_fingerprint, check_max_seq_length, load_encoder
from adapter_keras.train import checkpoints, run_dir
from adapter_keras.train.config import TrainConfig, TrainResult
from adapter_keras.train.distribute import get_strategy, wait_for_all_workers, will_be_chief, worker_scratch
from adapter_keras.train.inputs import uses_static_shapes
from adapter_keras.train.loop import (DEFAULT_CHECKPOINT_EVERY_STEPS, BestEpochTracker, compile_for_training,
                                      run_epochs, seed_everything)
from adapter_keras.train.optim import check_compute_dtype, precision_policy


class TaskRecipe(Protocol):
  """What one task type adds to the shared run (see the module docstring).

  Attributes:
    task: the task record stored in run.json and the manifest (a TaskSpec,
      or any object with `name`, `primary_metric` and `to_dict()`).
    log_prefix: the prefix of progress lines ("[train] ").
    config: the TrainConfig `prepare` was given; `fit` replaces its
      static_shapes by the run's decision, True or False
      (train/inputs.uses_static_shapes), before asking for any batch.
  """

  task: Any
  log_prefix: str
  config: TrainConfig

  def data_sha256(self) -> str:
    """Digest of the train and dev data: with the task and config, what makes a run the same run."""

  def build_model(self, pretrained: PretrainedEncoder, config: TrainConfig) -> tf_keras.Model:
    """A built (not yet frozen) model on the loaded encoder."""

  def prepare(self, preprocessor: BertPreprocessor, config: TrainConfig) -> None:
    """Tokenizes / featurizes the data (bad data fails here, before the run writes anything)."""

  def describe(self) -> str:
    """The data part of the first progress line ("48 train examples, dev 16")."""

  @property
  def num_train_examples(self) -> int:
    """Training examples used (after max_train_examples), as the manifest records them."""

  @property
  def num_train_batches_per_epoch(self) -> int:
    """Batches per epoch."""

  def training_model(self, model: tf_keras.Model, strategy: tf.distribute.Strategy,
                     verbose: bool) -> tf_keras.Model:
    """The model `fit` trains: `model` itself, or one sharing its variables (the prefix cache)."""

  def compile_model(self, model: tf_keras.Model, optimizer, jit_compile: bool = False,
                    steps_per_execution: int = 1) -> tf_keras.Model:
    """Loss and metrics for this task type, compiled with these two options."""

  def epoch_dataset(self, epoch: int) -> tf.data.Dataset:
    """Epoch `epoch`'s training batches, the same in any process."""

  def evaluate(self, model: tf_keras.Model) -> Tuple[float, Dict[str, float], Any]:
    """(primary dev score, flat dev metrics, JSON-able outputs worth keeping for the best epoch or None)."""

  def release(self) -> None:
    """Frees what `prepare`/`training_model` held (a prefix cache's memory or disk file)."""

  def manifest_extras(self) -> Dict:
    """Entries the artifact manifest gets besides the shared ones."""

  def metrics_extras(self) -> Dict:
    """Entries metrics.json gets besides the result, base_params and config."""

  def write_outputs(self, out_dir: str, best_outputs: Any) -> None:
    """Files of its own the run writes into `out_dir` before metrics.json."""


def build_trainable_model(config: TrainConfig, build: Callable[[PretrainedEncoder], tf_keras.Model],
                          strategy: tf.distribute.Strategy, pretrained: Optional[PretrainedEncoder] = None):
  """(pretrained, model, base fingerprint): the encoder loaded (unless given), `build(pretrained)`'s
  model built and its trainable set chosen by `config.method`.

  Everything is created under `strategy`, the dtype policy of
  `config.mixed_precision` (a given `pretrained` must compute in it) and
  `checkpoints.resumable_randomness()`, so that dropout draws from
  checkpointable generators with or without an output directory and a run
  gives the same result whether it was checkpointed or not. Every config
  error that needs the encoder is raised here, before a run writes anything.
  """
  seed_everything(config.seed)
  adapter_config = config.adapter if get_method(config.method).uses_adapters else None
  with strategy.scope(), checkpoints.resumable_randomness(), precision_policy(config.mixed_precision):
    if pretrained is None:
      pretrained = load_encoder(config.encoder, adapter_config, adapter_seed=config.seed)
    check_compute_dtype(pretrained.encoder.transformer_layers[0], config.mixed_precision)
    num_layers = pretrained.config.num_hidden_layers
    validate_method(config.method, config.top_k, num_layers)
    if config.prefix_cache:
      prefix_start_layer(config.method, num_layers, config.adapter, config.top_k)
    check_max_seq_length(config.max_seq_length, pretrained.config)
    fingerprint = base_fingerprint(pretrained.encoder)
    model = build(pretrained)
    apply_method(model, config.method, config.top_k)
  return pretrained, model, fingerprint


def fit(recipe: TaskRecipe, model: tf_keras.Model, config: TrainConfig,
        strategy: Optional[tf.distribute.Strategy] = None, verbose: bool = True,
        log_dir: Optional[str] = None, checkpoint_dir: Optional[str] = None,
        checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
        fingerprint: Optional[str] = None) -> Tuple[TrainResult, Any]:
  """Trains a built model whose trainable set is chosen, on a prepared recipe.

  Returns (TrainResult, the best epoch's recipe outputs); the result's
  `seconds` holds the training time spent before a resume (0 otherwise).
  The model ends up with the weights of its best dev epoch. See
  loop.run_epochs for `log_dir`, `checkpoint_dir` and resuming.
  """
  strategy = strategy or tf.distribute.get_strategy()
  # Static shapes or not is decided once per run, here where the strategy is known.
  recipe.config = dataclasses.replace(recipe.config, static_shapes=uses_static_shapes(recipe.config, strategy))
  train_model = recipe.training_model(model, strategy, verbose)
  report = parameter_report(model)
  epoch_batches = recipe.num_train_batches_per_epoch
  total_steps = epoch_batches * config.epochs
  if verbose:
    print(f"{recipe.log_prefix}{recipe.describe()}; method {config.method}: {report.trained_params:,} "
          f"trained parameters ({100 * report.trained_fraction:.2f}% of base)", flush=True)
  compile_for_training(train_model, recipe.compile_model, config, total_steps, strategy)
  tracker = BestEpochTracker(recipe.evaluate, log_dir, verbose)
  try:
    seconds_before = run_epochs(
        train_model, recipe.epoch_dataset, epoch_batches, tracker, config, strategy, verbose=verbose,
        log_dir=log_dir, checkpoint_dir=checkpoint_dir, checkpoint_every_steps=checkpoint_every_steps,
        fingerprint=fingerprint, log_prefix=recipe.log_prefix)
  finally:
    recipe.release()
  result = TrainResult(
      task=recipe.task.name, method=config.method, metrics=tracker.best_metrics,
      primary_metric=recipe.task.primary_metric, score=float(tracker.best_score),
      best_epoch=tracker.best_epoch, history=tracker.history,
      trained_params=report.trained_params, trained_fraction=report.trained_fraction,
      seconds=seconds_before)
  return result, tracker.best_outputs


def run(recipe: TaskRecipe, config: TrainConfig, out_dir: Optional[str] = None,
        pretrained: Optional[PretrainedEncoder] = None, verbose: bool = True,
        checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
        save_model: bool = True):
  """Loads the encoder, builds, prepares and trains: (TrainResult, model, preprocessor).

  With `out_dir` (a run directory, train/run_dir.py) it writes run.json,
  TensorBoard logs under `logs/`, the model under `artifact/` (unless not
  `save_model`; adapter-only for method "adapter"), the recipe's outputs and
  metrics.json, and keeps a step checkpoint under `checkpoint/` while it
  trains: the same call after a crash resumes from it. When `out_dir`
  already holds this finished run it returns its result and (None, None).
  Resuming is exact unless `pretrained` is given (its encoder's dropout was
  built elsewhere); a given `pretrained` must have been built under
  `config.mixed_precision`'s dtype policy.

  Under `--strategy multi-worker` every worker runs this same call with the
  same `out_dir`: only the chief writes there; the others make the very same
  writes (saving may take collective ops) into a temporary directory they
  delete, and all of them resume from the chief's checkpoint.
  """
  start = time.perf_counter()
  if out_dir:
    identity = run_dir.identity(recipe.task.to_dict(), config, recipe.data_sha256())
    # Before the strategy: a multi-worker strategy waits for every worker, and
    # all of them see the finished run in the chief's directory and return.
    finished = run_dir.finished_run(out_dir, identity, verbose, log_prefix=recipe.log_prefix,
                                    chief=will_be_chief(config.strategy), with_artifact=save_model)
    if finished is not None:
      return finished, None, None
  strategy = get_strategy(config.strategy, config.tpu)
  pretrained, model, fingerprint = build_trainable_model(
      config, lambda loaded: recipe.build_model(loaded, config), strategy, pretrained)
  preprocessor = BertPreprocessor(pretrained.vocab_file, pretrained.lower_case, config.max_seq_length)
  recipe.prepare(preprocessor, config)
  # `write_dir`: out_dir on the chief (and in any single-process run), a temporary directory elsewhere.
  with worker_scratch(out_dir, strategy) as write_dir:
    if write_dir:
      run_dir.write_run_file(write_dir, identity)
    result, best_outputs = fit(
        recipe, model, config, strategy, verbose,
        log_dir=os.path.join(write_dir, run_dir.LOGS_DIR) if write_dir else None,
        # The run's own directory on every worker: the StepCheckpoint restores
        # the chief's checkpoint from it and writes a non-chief's saves elsewhere.
        checkpoint_dir=os.path.join(out_dir, run_dir.CHECKPOINT_DIR) if out_dir else None,
        checkpoint_every_steps=checkpoint_every_steps, fingerprint=fingerprint)
    result.seconds += time.perf_counter() - start  # plus the time before a resume
    if write_dir:
      if save_model:
        manifest = artifact_manifest(recipe.task, config, model, preprocessor, pretrained.config, fingerprint,
                                     recipe.num_train_examples)
        save_artifact(os.path.join(write_dir, run_dir.ARTIFACT_DIR), model,
                      dict(manifest, **recipe.manifest_extras()))
      recipe.write_outputs(write_dir, best_outputs)
      run_dir.finish(write_dir, dict(result.to_dict(), base_params=parameter_report(model).base_params,
                                     config=config.to_dict(), **recipe.metrics_extras()))
  wait_for_all_workers(strategy)
  return result, model, preprocessor
