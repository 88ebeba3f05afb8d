"""The epoch loop every trainer shares: fit, evaluate, keep the best epoch, checkpoint, resume, stop on NaN.

`run_epochs` drives `model.fit` one epoch at a time with the callbacks below;
with a checkpoint directory it writes a step checkpoint (train/checkpoints.py)
every N steps and at every epoch end, and resumes from the newest one. Each
epoch's data order is a function of (seed, epoch) alone (train/inputs.py), so
a resumed epoch rebuilds its dataset and skips the batches already done; with
the dropout generators and the epoch's running metric sums restored too, a
resumed run ends with the same metrics as an uninterrupted one.

With `steps_per_execution` N (compile_for_training), Keras runs N steps per
call of the train function and calls the batch-end callbacks once per call,
with the index of the call's last step (fewer than N steps for an epoch's
last call: fit is given the exact steps per epoch). The callbacks here count
steps from that index, not from the number of calls; a step checkpoint is
written at the first call ending at or after each multiple of its interval.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras import _model_garden
from adapter_keras.train import checkpoints
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.optim import create_optimizer

DEFAULT_CHECKPOINT_EVERY_STEPS = 200


def seed_everything(seed: Optional[int]) -> None:
  if seed is not None:
    tf_keras.utils.set_random_seed(seed)


class ProgressLogger(tf_keras.callbacks.Callback):
  """One line every `every_seconds`: step, loss/metrics, examples/s, ETA.

  Works the same in a terminal and in a CI log (Keras's bar does not).
  `initial_step`: steps done before this process (a resumed run); the rate
  and ETA count only the steps done here.
  """

  def __init__(self, total_steps: int, batch_size: int, every_seconds: float = 15.0,
               stream=None, prefix: str = "", initial_step: int = 0):
    super().__init__()
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.every_seconds = every_seconds
    self.stream = stream or sys.stdout
    self.prefix = prefix
    self._step = self._initial_step = self._step_before_fit = initial_step
    self._start = None
    self._last_print = 0.0
    self._epoch = 0

  def on_train_begin(self, logs=None):
    self._start = time.perf_counter()
    self._last_print = self._start

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch
    self._step_before_fit = self._step

  def on_train_batch_end(self, batch, logs=None):
    # `batch`: the fit call's index of the last step run (see the module docstring).
    self._step = self._step_before_fit + batch + 1
    now = time.perf_counter()
    if now - self._last_print >= self.every_seconds or self._step == self.total_steps:
      self._last_print = now
      elapsed = now - self._start
      done_here = self._step - self._initial_step
      rate = done_here * self.batch_size / max(elapsed, 1e-9)
      eta = (self.total_steps - self._step) * elapsed / max(done_here, 1)
      metrics = " ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
      print(f"{self.prefix}epoch {self._epoch + 1} step {self._step}/{self.total_steps} {metrics} "
            f"{rate:.1f} ex/s elapsed {elapsed:.0f}s eta {eta:.0f}s", file=self.stream, flush=True)


class NonFiniteLossError(ValueError):
  """Training produced a NaN or infinite loss."""


# Prevents: a run resumed mid-epoch after a crash ending with other metrics or weights than an uninterrupted
# one (the epoch's running loss/metric sums and the batches already done are restored, not restarted).
class _RunProgress(tf_keras.callbacks.Callback):
  """Counts steps across the per-epoch `fit` calls; stops at the first NaN/Inf batch loss.

  It comes first among the callbacks: on the first batch after a mid-epoch
  resume it adds the epoch's saved loss/metric sums into the model's metrics
  and corrects that batch's logs, so every later callback sees the running
  values an uninterrupted run would show. With steps_per_execution > 1 that
  first call of the train function runs one step only: the sums then add up
  in the uninterrupted run's order (float addition is not associative).
  `step_before` is the global step before the latest call (global_step - 1
  unless steps_per_execution > 1); a NaN/Inf loss is known to lie in steps
  step_before + 1 .. bad_step.
  """

  def __init__(self, global_step: int = 0, epoch: int = 0, step_in_epoch: int = 0,
               carried_sums: Optional[Dict[str, List[float]]] = None):
    super().__init__()
    self.global_step = self.step_before = global_step
    self.epoch = epoch
    self.step_in_epoch = step_in_epoch
    self.carried_sums = carried_sums
    self.bad_step = None
    self._fit_start = (global_step, step_in_epoch)
    self._steps_per_execution_after_resume = None

  def on_train_end(self, logs=None):
    self._restore_steps_per_execution()

  def _restore_steps_per_execution(self):
    if self._steps_per_execution_after_resume is not None:
      self.model.steps_per_execution = self._steps_per_execution_after_resume
      self._steps_per_execution_after_resume = None

  def on_epoch_begin(self, epoch, logs=None):
    self._fit_start = (self.global_step, self.step_in_epoch)
    if self.carried_sums and self.model.steps_per_execution is not None:
      # Here, not earlier: fit has built its train function (one step per call
      # when this variable is 1 then), and Keras reads the variable before
      # every call from now on.
      self._steps_per_execution_after_resume = int(self.model.steps_per_execution.numpy())
      self.model.steps_per_execution = 1

  def on_train_batch_end(self, batch, logs=None):
    # `batch`: the fit call's index of the last step run (see the module docstring).
    global_start, epoch_start = self._fit_start
    self.step_before = self.global_step
    self.global_step = global_start + batch + 1
    self.step_in_epoch = epoch_start + batch + 1
    if self.carried_sums:
      checkpoints.add_metric_sums(self.model, self.carried_sums)
      self.carried_sums = None
      self._restore_steps_per_execution()
      if logs is not None:
        logs.update({m.name: float(m.result()) for m in self.model.metrics if m.name in logs})
    loss = (logs or {}).get("loss")
    if loss is not None and not np.isfinite(loss):
      self.bad_step = self.global_step
      self.model.stop_training = True

  def on_epoch_end(self, epoch, logs=None):
    if self.bad_step is None:
      self.epoch, self.step_in_epoch = epoch + 1, 0


class BestEpochTracker(tf_keras.callbacks.Callback):
  """Evaluates dev after each epoch through `evaluate(model)`; remembers the best epoch.

  `evaluate(model)` returns (primary score, flat dev metrics, outputs): the
  recipe's evaluation (train/recipe.py), or None without dev data (then the
  last epoch is kept). `outputs` (JSON-able, e.g. SQuAD's
  answers, or None) of the best epoch are kept with its weights and metrics.
  """

  def __init__(self, evaluate: Callable[[tf_keras.Model], Tuple[float, Dict[str, float], Any]],
               log_dir: Optional[str], verbose: bool):
    super().__init__()
    self.evaluate = evaluate
    self.verbose = verbose
    self.history: List[Dict[str, float]] = []
    self.best_score = -np.inf
    self.best_epoch = 0
    self.best_metrics: Dict[str, float] = {}
    self.best_weights = None
    self.best_outputs = None
    self._writer = tf.summary.create_file_writer(os.path.join(log_dir, "dev")) if log_dir else None

  def on_epoch_end(self, epoch, logs=None):
    if not np.isfinite((logs or {}).get("loss", 0.0)):
      # Stopped at a NaN/Inf loss: such weights can still score (argmax of NaN
      # logits is class 0) but must never become the best epoch.
      return
    outcome = self.evaluate(self.model)
    if outcome is None:  # no dev data: the latest epoch is the one kept, no copy of its weights needed
      self.history.append(dict(epoch=epoch + 1, loss=float((logs or {}).get("loss", np.nan))))
      self.best_epoch = epoch + 1
      return
    score, flat, outputs = outcome
    self.history.append(dict(flat, epoch=epoch + 1, loss=float((logs or {}).get("loss", np.nan))))
    if logs is not None:  # the callbacks after this one (a user's EarlyStopping, History) see the dev metrics
      logs.update({f"val_{name}": value for name, value in flat.items()})
    if self._writer:
      with self._writer.as_default(step=epoch + 1):
        for name, value in flat.items():
          tf.summary.scalar(name, value)
    if score > self.best_score:
      self.best_score, self.best_epoch, self.best_metrics = score, epoch + 1, flat
      self.best_weights = [v.numpy() for v in checkpoints.trained_variables(self.model)]
      self.best_outputs = outputs
    if self.verbose:
      shown = " ".join(f"{k} {v:.4f}" for k, v in flat.items())
      print(f"[train] epoch {epoch + 1} dev: {shown}", flush=True)

  def restore_best(self):
    if self.best_weights is not None:
      for variable, value in zip(checkpoints.trained_variables(self.model), self.best_weights):
        variable.assign(value)

  def state(self) -> Dict:
    """What a checkpoint records (the best weights go to a file of their own)."""
    return dict(history=self.history, best_epoch=self.best_epoch, best_metrics=self.best_metrics,
                best_score=float(self.best_score) if np.isfinite(self.best_score) else None,
                best_outputs=self.best_outputs)

  def load_state(self, state: Dict, best_weights: Optional[List[np.ndarray]]) -> None:
    self.history = list(state["history"])
    self.best_epoch, self.best_metrics = state["best_epoch"], dict(state["best_metrics"])
    self.best_score = -np.inf if state["best_score"] is None else state["best_score"]
    self.best_weights = best_weights
    # "best_answers": what SQuAD checkpoints of adapter_keras 0.1.0 called it.
    self.best_outputs = state.get("best_outputs", state.get("best_answers"))


class _Checkpointer(tf_keras.callbacks.Callback):
  """Writes a step checkpoint every `every_steps` steps and after each epoch's dev evaluation.

  Never after a NaN/Inf loss, so the newest checkpoint is always a good one.
  A mid-epoch checkpoint is skipped on an epoch's last batch: the end-of-epoch
  one follows right after. With steps_per_execution > 1 the checkpoints come
  at the first batch end at or after each multiple of `every_steps`.
  """

  def __init__(self, checkpoint: checkpoints.StepCheckpoint, progress: _RunProgress,
               tracker: BestEpochTracker, every_steps: Optional[int], epoch_batches: int,
               seconds_before: float):
    super().__init__()
    self.checkpoint = checkpoint
    self.progress = progress
    self.tracker = tracker
    self.every_steps = every_steps
    self.epoch_batches = epoch_batches
    self.seconds_before = seconds_before
    self._start = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    p = self.progress
    if (p.bad_step is None and self.every_steps
        and p.global_step // self.every_steps > p.step_before // self.every_steps
        and p.step_in_epoch < self.epoch_batches):
      self._save(checkpoints.metric_sums(self.model))

  def on_epoch_end(self, epoch, logs=None):
    if self.progress.bad_step is None:
      self._save({})

  def _save(self, metric_sums):
    p = self.progress
    self.checkpoint.save(
        dict(global_step=p.global_step, epoch=p.epoch, step_in_epoch=p.step_in_epoch,
             epoch_batches=self.epoch_batches, metric_sums=metric_sums, tracker=self.tracker.state(),
             seconds=self.seconds_before + time.perf_counter() - self._start),
        self.tracker.best_epoch, self.tracker.best_weights)


class _OneRun(tf_keras.callbacks.CallbackList):
  """The callbacks of the per-epoch `model.fit` calls, presented as one training run.

  Keras calls on_train_begin/end on every `fit`; TensorBoard would reopen its
  writers and ProgressLogger restart its clock each epoch. Here they get those
  once, from `begin()` and `end()`. (`fit` uses a CallbackList it is given as
  it is: no set_model per call either.) Keras's warning about slow batch hooks
  is off: a checkpoint written at a batch end is slow by design.
  """

  def __init__(self, callbacks, model):
    super().__init__(callbacks, model=model)
    _model_garden.disable_batch_hook_timing(self)

  def on_train_begin(self, logs=None):
    pass

  def on_train_end(self, logs=None):
    pass

  def begin(self):
    super().on_train_begin()

  def end(self):
    super().on_train_end()


def compile_for_training(model: tf_keras.Model, compile_model: Callable, config: TrainConfig, total_steps: int,
                         strategy: tf.distribute.Strategy) -> None:
  """`compile_model(model, optimizer, jit_compile=..., steps_per_execution=...)` with the paper's optimizer
  for `total_steps`, under `strategy`, following config.mixed_precision, jit_compile and steps_per_execution."""
  with strategy.scope():
    compile_model(model, create_optimizer(config.learning_rate, total_steps, config.warmup_fraction,
                                          mixed_precision=config.mixed_precision),
                  jit_compile=config.jit_compile, steps_per_execution=config.steps_per_execution)
    # Built now rather than at the first step, so that a checkpoint can be read into its moments.
    model.optimizer.build(model.trainable_variables)
  # The batch-end loss/metrics are already reduced over every replica; tf_keras's "auto" would then
  # sum them over the workers of a MultiWorkerMirroredStrategy (N workers: N times the loss).
  model.distribute_reduction_method = "first"


def run_epochs(train_model: tf_keras.Model,
               make_epoch_dataset: Callable[[int], tf.data.Dataset],
               epoch_batches: int,
               tracker: BestEpochTracker,
               config: TrainConfig,
               strategy: tf.distribute.Strategy,
               verbose: bool = True,
               log_dir: Optional[str] = None,
               checkpoint_dir: Optional[str] = None,
               checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
               fingerprint: Optional[str] = None,
               log_prefix: str = "[train] ",
               callbacks: Sequence[tf_keras.callbacks.Callback] = ()) -> float:
  """The epoch loop every trainer shares: fit, evaluate, keep the best epoch, checkpoint, resume.

  `train_model` is compiled, its optimizer built; `make_epoch_dataset(e)`
  gives epoch e's `epoch_batches` batches, the same in any process (so a
  resumed epoch can skip the batches done). `tracker` evaluates after every
  epoch and keeps the best weights. With `checkpoint_dir` a step checkpoint
  is written every `checkpoint_every_steps` steps (None or 0: only at epoch
  ends) and after every epoch, and the run resumes from the newest one there;
  `fingerprint` (of the frozen base) is recorded and checked on resume.
  `callbacks` (a user's, given to a task model's fit) run after the library's.

  Returns the training seconds spent before a resume (0 otherwise); the model
  ends with its best epoch's weights. Raises NonFiniteLossError at a NaN/Inf
  loss (the model then keeps its best epoch's, or last checkpoint's, weights).
  """
  if checkpoint_every_steps is not None and checkpoint_every_steps < 0:
    raise ValueError(f"checkpoint_every_steps must be >= 0, got {checkpoint_every_steps}")
  total_steps = epoch_batches * config.epochs
  progress = _RunProgress()
  checkpoint, seconds_before = None, 0.0
  if checkpoint_dir:
    with strategy.scope():
      checkpoint = checkpoints.StepCheckpoint(checkpoint_dir, train_model, fingerprint)
    restored = checkpoint.restore()
    if restored is not None:
      if restored["epoch_batches"] != epoch_batches:
        raise checkpoints.CheckpointError(
            f"{checkpoint_dir} was written for {restored['epoch_batches']} batches per epoch, this run has "
            f"{epoch_batches}; delete {checkpoint_dir} to start the run over")
      tracker.load_state(restored["tracker"], restored["best_weights"])
      progress = _RunProgress(restored["global_step"], restored["epoch"], restored["step_in_epoch"],
                              restored["metric_sums"])
      seconds_before = restored["seconds"]
      print(f"{log_prefix}resuming from step {progress.global_step} of {total_steps} "
            f"(epoch {min(progress.epoch + 1, config.epochs)}) in {checkpoint_dir}", flush=True)
  run_callbacks = [progress, tracker]
  if checkpoint:
    run_callbacks.append(_Checkpointer(checkpoint, progress, tracker, checkpoint_every_steps, epoch_batches,
                                   seconds_before))
  if verbose:
    run_callbacks.append(ProgressLogger(total_steps, config.batch_size, prefix=log_prefix,
                                             initial_step=progress.global_step))
  if log_dir:
    run_callbacks.append(tf_keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
  run = _OneRun(run_callbacks + list(callbacks), train_model)
  run.begin()
  for epoch in range(progress.epoch, config.epochs):
    dataset = make_epoch_dataset(epoch)
    if progress.step_in_epoch:
      dataset = dataset.skip(progress.step_in_epoch)
    # With the step count given, Keras never calls the train function past the
    # data's end, a call that would still add 1 to the optimizer's iterations.
    train_model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1,
                    steps_per_epoch=epoch_batches - progress.step_in_epoch, verbose=0, callbacks=run)
    if progress.bad_step is not None or train_model.stop_training:  # NaN, or a user's callback said stop
      break
  run.end()
  if progress.bad_step is not None:
    if tracker.best_weights is not None:
      tracker.restore_best()
      kept = f"the model keeps its best epoch's (epoch {tracker.best_epoch}) weights"
    elif checkpoint and checkpoint.last_step is not None:
      checkpoint.restore()
      kept = f"the model keeps the weights of step {checkpoint.last_step}"
    else:
      kept = "no epoch ended before it, so no good weights were kept"
    if checkpoint and checkpoint.last_step is not None:
      kept += f"; the last good checkpoint, step {checkpoint.last_step}, stays in {checkpoint_dir}"
    # With steps_per_execution > 1 only the range of steps of that call is known.
    where = (f"step {progress.bad_step}" if progress.step_before + 1 == progress.bad_step
             else f"one of steps {progress.step_before + 1}-{progress.bad_step}")
    raise NonFiniteLossError(
        f"the training loss became NaN/Inf at {where} of {total_steps}; "
        f"lower the learning rate or check the labels ({kept})")
  tracker.restore_best()
  return seconds_before
