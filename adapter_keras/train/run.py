"""A training run: `run(recipe, config, out_dir)`, the one path of `train`, `train-squad`, sweep trials and
the analyses, and `train_task` / `train_squad` / `train_token`, its task-type entries.

  run identity -> finished-run check -> encoder + the task type's model (models/) + method
  -> tokenize / featurize (before anything is written) -> run.json
  -> recipe.fit: compile, epoch loop (train/loop.py: best epoch, step checkpoints, resume, NaN stop)
  -> artifact (the model's save_adapter) -> the recipe's own outputs -> metrics.json -> checkpoint deleted

It sits above models/ (it builds task models) while the recipes and `fit` sit below them (a task model's
`fit` on raw strings uses them), so that the command line and the Keras front door train alike.
"""
from __future__ import annotations

import os
import time
from typing import Optional, Sequence

import tensorflow as tf

from adapter_keras.methods import parameter_report, frozen_bottom_start_layer, validate_method
from adapter_keras.models import build_for_task
from adapter_keras.pretrained import PretrainedEncoder, check_max_seq_length, load_encoder
from adapter_keras.tasks.data import TextExamples
from adapter_keras.tasks.squad import SquadExample
from adapter_keras.tasks.tagging import TaggedSentence, TokenTask
from adapter_keras.train import checkpoints, run_dir
from adapter_keras.train.classification import ClassificationRecipe
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.distribute import get_strategy, wait_for_all_workers, will_be_chief, worker_scratch
from adapter_keras.train.loop import DEFAULT_CHECKPOINT_EVERY_STEPS, seed_everything
from adapter_keras.train.optim import check_compute_dtype, precision_policy
from adapter_keras.train.recipe import TaskRecipe, fit
from adapter_keras.train.squad import SquadRecipe
from adapter_keras.train.tagging import TokenRecipe


def build_trainable_model(config: TrainConfig, task, strategy: tf.distribute.Strategy,
                          pretrained: Optional[PretrainedEncoder] = None):
  """The task type's model (models.build_for_task) for `task` on the encoder (loaded unless given, plain),
  its method injected and its trainable set chosen by `config`.

  Everything is created under `strategy`, the dtype policy of
  `config.mixed_precision` (a given `pretrained` must compute in it) and
  `checkpoints.resumable_randomness()`, so that dropout draws from
  checkpointable generators with or without an output directory and a run
  gives the same result whether it was checkpointed or not. Every config
  error that needs the encoder is raised here, before a run writes anything.
  The order (seed, load, build) is the one a task model built from an encoder
  spec follows (models/base.py), so both start from the same weights.
  """
  seed_everything(config.seed)
  with strategy.scope(), checkpoints.resumable_randomness(), precision_policy(config.mixed_precision):
    if pretrained is None:
      pretrained = load_encoder(config.encoder)
    check_compute_dtype(pretrained.encoder.transformer_layers[0], config.mixed_precision)
    num_layers = pretrained.config.num_hidden_layers
    validate_method(config.method, config.top_k, num_layers, config.method_settings())
    if config.prefix_cache:
      frozen_bottom_start_layer(config.method, num_layers, config=config.method_settings())
    check_max_seq_length(config.max_seq_length, pretrained.config)
    return build_for_task(task, pretrained, config)


def run(recipe: TaskRecipe, config: TrainConfig, out_dir: Optional[str] = None,
        pretrained: Optional[PretrainedEncoder] = None, verbose: bool = True,
        checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
        save_model: bool = True):
  """Loads the encoder, builds the task type's model, prepares and trains: (TrainResult, model).

  With `out_dir` (a run directory, train/run_dir.py) it writes run.json,
  TensorBoard logs under `logs/`, the model under `artifact/` (unless not
  `save_model`; adapter-only for method "adapter"), the recipe's outputs and
  metrics.json, and keeps a step checkpoint under `checkpoint/` while it
  trains: the same call after a crash resumes from it. When `out_dir`
  already holds this finished run it returns its result and None.
  Resuming is exact unless `pretrained` is given (its encoder's dropout was
  built elsewhere); a given `pretrained` must have been built under
  `config.mixed_precision`'s dtype policy.

  Under `--strategy multi-worker` every worker runs this same call with the
  same `out_dir`: only the chief writes there; the others make the very same
  writes (saving may take collective ops) into a temporary directory they
  delete, and all of them resume from the chief's checkpoint.
  """
  start = time.perf_counter()
  # The chief holds --out's lock for the whole run: a second run on it fails at once (run_dir.locked).
  with run_dir.locked(out_dir, chief=will_be_chief(config.strategy)):
    if out_dir:
      identity = run_dir.identity(recipe.task.to_dict(), config, recipe.data_sha256())
      # Before the strategy: a multi-worker strategy waits for every worker, and
      # all of them see the finished run in the chief's directory and return.
      finished = run_dir.finished_run(out_dir, identity, verbose, log_prefix=recipe.log_prefix,
                                      chief=will_be_chief(config.strategy), with_artifact=save_model)
      if finished is not None:
        return finished, None
    strategy = get_strategy(config.strategy, config.tpu, config.worker_timeout)
    model = build_trainable_model(config, recipe.task, strategy, pretrained)
    recipe.prepare(model.preprocessor, config)
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
          checkpoint_every_steps=checkpoint_every_steps, fingerprint=model.base_fingerprint)
      result.seconds += time.perf_counter() - start  # plus the time before a resume
      model.record_training(config, recipe.num_train_examples)
      if write_dir:
        if save_model:
          model.save_adapter(os.path.join(write_dir, run_dir.ARTIFACT_DIR))
        recipe.write_outputs(write_dir, best_outputs)
        run_dir.finish(write_dir, dict(result.to_dict(), base_params=parameter_report(model).base_params,
                                       config=config.to_dict(), **recipe.metrics_extras()))
    wait_for_all_workers(strategy)
    return result, model


def train_task(task, train: TextExamples, dev, config: TrainConfig, out_dir: Optional[str] = None,
               pretrained: Optional[PretrainedEncoder] = None, verbose: bool = True,
               checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
               save_model: bool = True, prefix_cache_dir: Optional[str] = None):
  """Loads the encoder, builds and trains a classification/regression model: (TrainResult, model).

  The shared run: with `out_dir` it writes run.json, metrics.json,
  TensorBoard logs under `logs/` and (unless not `save_model`) the model
  under `artifact/`, keeps a step checkpoint while it trains and resumes from
  it when called again after a crash. `prefix_cache_dir`: where a frozen-bottom
  cache too large for memory goes (train/classification.py).
  """
  return run(ClassificationRecipe(task, train, dev, prefix_cache_dir), config, out_dir, pretrained, verbose,
             checkpoint_every_steps, save_model)


def train_squad(train: Sequence[SquadExample], dev: Sequence[SquadExample], config, out_dir: Optional[str] = None,
                pretrained: Optional[PretrainedEncoder] = None, verbose: bool = True,
                checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS):
  """Loads the encoder, builds and trains an AdapterSpanExtractor on SQuAD v1.1 (train/squad.py's recipe):
  (TrainResult, model). With `out_dir` it also writes predictions.json (the best epoch's dev answers)."""
  return run(SquadRecipe(train, dev), config, out_dir, pretrained, verbose, checkpoint_every_steps)


def train_token(task: TokenTask, train: Sequence[TaggedSentence], dev: Sequence[TaggedSentence], config,
                out_dir: Optional[str] = None, pretrained: Optional[PretrainedEncoder] = None, verbose: bool = True,
                checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS, save_model: bool = True):
  """Loads the encoder, builds and trains an AdapterTokenClassifier (train/tagging.py's recipe; `config` a
  TokenTrainConfig): (TrainResult, model). With `out_dir` it also writes predictions.conll (the best epoch's
  dev tags beside the gold ones, conlleval's input)."""
  return run(TokenRecipe(task, train, dev), config, out_dir, pretrained, verbose, checkpoint_every_steps,
             save_model)
