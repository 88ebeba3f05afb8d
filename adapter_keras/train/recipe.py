"""What one task type adds to training (`TaskRecipe`), and `fit`: training a built model on a recipe.

`fit` is what every training shares: compile with the paper's optimizer, the
epoch loop (train/loop.py: best epoch, step checkpoints, resume, NaN stop),
the TrainResult. `adapter-keras train` reaches it through train/run.py's
`run` (identity, artifact, metrics.json around it); a task model's `fit` on
raw inputs (models/) reaches it directly, so both train alike.

A recipe owns what is specific to its task type: the data and its digest,
the loss it compiles, the epoch datasets, the dev evaluation, and extra
manifest/metrics entries. Classification and regression
(train/classification.py), SQuAD spans (train/squad.py) and token tags
(train/tagging.py) are the recipes; the last two train on windows of their
examples (`WindowedRecipe`); the model a run builds is the task type's model
class (models/).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Protocol, Sequence, Tuple

import tensorflow as tf
import tf_keras

from adapter_keras.methods import parameter_report
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.train.config import TrainConfig, TrainResult
from adapter_keras.train.inputs import limit_examples, steps_per_epoch, uses_static_shapes
from adapter_keras.train.loop import DEFAULT_CHECKPOINT_EVERY_STEPS, BestEpochTracker, compile_for_training, run_epochs


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
    """The model `fit` trains: `model` itself, or one sharing its variables (the frozen-bottom cache)."""

  def compile_model(self, model: tf_keras.Model, optimizer, jit_compile: bool = False,
                    steps_per_execution: int = 1) -> tf_keras.Model:
    """Loss and metrics for this task type, compiled with these two options."""

  def epoch_dataset(self, epoch: int) -> tf.data.Dataset:
    """Epoch `epoch`'s training batches, the same in any process."""

  def evaluate(self, model: tf_keras.Model) -> Optional[Tuple[float, Dict[str, float], Any]]:
    """(primary dev score, flat dev metrics, JSON-able outputs worth keeping for the best epoch or None);
    None when the recipe has no dev data (a front-door fit without validation_data): the last epoch is kept."""

  def release(self) -> None:
    """Frees what `prepare`/`training_model` held (a frozen-bottom cache's memory or disk file)."""

  def metrics_extras(self) -> Dict:
    """Entries metrics.json gets besides the result, base_params and config."""

  def write_outputs(self, out_dir: str, best_outputs: Any) -> None:
    """Files of its own the run writes into `out_dir` before metrics.json."""


class WindowedRecipe:
  """What the recipes that train on windows of their examples share (SQuAD's questions over long contexts,
  token tagging's long sentences): the windows featurized once in `prepare`, batches of windows, the model
  trained as built. Subclasses set `featurizer` and call `featurize_train` in their `prepare`."""

  config = None
  train_features = None

  def featurize_train(self, config, train) -> None:
    """Featurizes the (subsampled) training examples into windows; under static shapes, refuses too few windows
    for one batch before a run writes anything (known without the strategy)."""
    self.config = config
    self.train = limit_examples(train, config.max_train_examples, config.seed)
    self.train_features = self.featurizer.featurize(self.train)
    if uses_static_shapes(config):
      steps_per_epoch(len(self.train_features), config.batch_size, drop_remainder=True)

  @property
  def num_train_examples(self) -> int:
    return len(self.train)

  @property
  def num_train_batches_per_epoch(self) -> int:
    return steps_per_epoch(len(self.train_features), self.config.batch_size,
                           drop_remainder=bool(self.config.static_shapes))

  def training_model(self, model, strategy: tf.distribute.Strategy, verbose: bool):
    del strategy, verbose
    return model

  def release(self) -> None:
    pass


def fit(recipe: TaskRecipe, model: tf_keras.Model, config: TrainConfig,
        strategy: Optional[tf.distribute.Strategy] = None, verbose: bool = True,
        log_dir: Optional[str] = None, checkpoint_dir: Optional[str] = None,
        checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
        fingerprint: Optional[str] = None, callbacks: Sequence[tf_keras.callbacks.Callback] = (),
        compile_model: bool = True) -> Tuple[TrainResult, Any]:
  """Trains a built model whose trainable set is chosen, on a prepared recipe: what `adapter-keras train`
  (through train/run.py: run) and the task models' `fit` on raw inputs (models/) both do.

  Returns (TrainResult, the best epoch's recipe outputs); the result's
  `seconds` holds the training time spent before a resume (0 otherwise).
  The model ends up with the weights of its best dev epoch. See
  loop.run_epochs for `log_dir`, `checkpoint_dir`, resuming and `callbacks`
  (a user's, run after the library's). `compile_model=False` keeps the
  optimizer, loss and metrics the model was compiled with.
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
  if compile_model:
    compile_for_training(train_model, recipe.compile_model, config, total_steps, strategy)
  tracker = BestEpochTracker(recipe.evaluate, log_dir, verbose)
  try:
    seconds_before = run_epochs(
        train_model, recipe.epoch_dataset, epoch_batches, tracker, config, strategy, verbose=verbose,
        log_dir=log_dir, checkpoint_dir=checkpoint_dir, checkpoint_every_steps=checkpoint_every_steps,
        fingerprint=fingerprint, log_prefix=recipe.log_prefix, callbacks=callbacks)
  finally:
    recipe.release()
  result = TrainResult(
      task=recipe.task.name, method=config.method, metrics=tracker.best_metrics,
      primary_metric=recipe.task.primary_metric,
      score=float(tracker.best_score) if tracker.best_metrics else float("nan"),
      best_epoch=tracker.best_epoch, history=tracker.history,
      trained_params=report.trained_params, trained_fraction=report.trained_fraction,
      seconds=seconds_before)
  return result, tracker.best_outputs
