"""The trainer: one task, one method, the paper's recipe, best epoch on dev.

`train_task` loads the encoder, builds the task model, applies the tuning
method, trains with `model.fit` (Adam, 10% warm-up, linear decay), evaluates
every dev split after each epoch, keeps the weights of the best epoch by the
task's primary metric, and optionally saves an artifact, `metrics.json` and
TensorBoard logs under an output directory.

With an output directory the run is resumable: `fit_task_model` writes a step
checkpoint (checkpoints.py) every `checkpoint_every_steps` steps and at every
epoch end, and the same `train_task` call after a crash or `kill -9` resumes
from the newest one. Each epoch's data order is a function of (seed, epoch)
alone, so a resumed epoch rebuilds its dataset and skips the batches already
done; with the dropout generators and the epoch's running metric sums restored
too, a resumed run ends with the same metrics as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras import checkpoints, prefix_cache, training
from adapter_keras.artifacts import save_artifact, task_to_dict, write_json_atomic
from adapter_keras.config import AdapterConfig
from adapter_keras.data import TextExamples
from adapter_keras.distribute import get_strategy
from adapter_keras.models import TaskModel
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import (PretrainedEncoder, base_fingerprint, check_max_seq_length,
                                      load_encoder)
from adapter_keras.tuning import apply_method, parameter_report, validate_method


@dataclasses.dataclass
class TrainConfig:
  """Everything a training run needs besides the data."""

  encoder: str = "minilm-l6"
  method: str = "adapter"
  top_k: Optional[int] = None
  adapter: AdapterConfig = dataclasses.field(default_factory=AdapterConfig)
  learning_rate: float = 3e-4
  epochs: int = 3
  batch_size: int = 32
  max_seq_length: int = 128
  seed: int = 0
  max_train_examples: Optional[int] = None
  pooling: Optional[str] = None  # None: the encoder's default
  dropout_rate: float = 0.1
  warmup_fraction: float = 0.1
  strategy: str = "default"
  bucket_by_length: bool = True
  # Speed options (docs/performance.md).
  jit_compile: bool = False
  mixed_precision: Optional[str] = None  # None (float32), "bfloat16" or "float16"
  prefix_cache: bool = False

  def validate(self) -> None:
    if not self.learning_rate > 0:
      raise ValueError(f"learning rate must be > 0, got {self.learning_rate}")
    for name in ("epochs", "batch_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if self.max_train_examples is not None and self.max_train_examples < 1:
      raise ValueError(f"max_train_examples must be >= 1, got {self.max_train_examples}")
    if not 0 <= self.warmup_fraction < 1:
      raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
    validate_method(self.method, self.top_k, num_layers=10**6)
    training.check_mixed_precision(self.mixed_precision)
    if self.prefix_cache and self.method not in prefix_cache.PREFIX_METHODS:
      raise ValueError(f"the prefix cache applies to methods {' and '.join(prefix_cache.PREFIX_METHODS)}, "
                       f"not {self.method!r}: it trains the bottom layer, so no frozen prefix is left to cache")

  def to_dict(self) -> Dict:
    d = dataclasses.asdict(self)
    d["adapter"] = self.adapter.to_dict()
    return d

  @classmethod
  def from_dict(cls, d: Dict) -> "TrainConfig":
    d = dict(d)
    d["adapter"] = AdapterConfig.from_dict(d["adapter"])
    return cls(**d)


@dataclasses.dataclass
class TrainResult:
  task: str
  method: str
  metrics: Dict[str, float]
  primary_metric: str
  score: float
  best_epoch: int
  history: List[Dict[str, float]]
  trained_params: int
  trained_fraction: float
  seconds: float

  def to_dict(self) -> Dict:
    return dataclasses.asdict(self)

  def summary(self, out_dir: Optional[str]) -> Dict:
    """What the train commands print as their --json result."""
    return dict(task=self.task, method=self.method, metrics=self.metrics, primary_metric=self.primary_metric,
                score=self.score, trained_params=self.trained_params, trained_fraction=self.trained_fraction,
                best_epoch=self.best_epoch, out=out_dir)


def build_model(pretrained: PretrainedEncoder, task, pooling: Optional[str] = None,
                dropout_rate: float = 0.1, seed: Optional[int] = None) -> TaskModel:
  """A built TaskModel for `task` on a loaded encoder."""
  model = TaskModel(pretrained.encoder, num_outputs=task.num_outputs, task_type=task.task_type,
                    pooling=pooling or pretrained.default_pooling, dropout_rate=dropout_rate,
                    head_seed=seed, name="task_model")
  return model.build_with_dummy_inputs()


def _flatten_metrics(per_split: Dict[str, Dict[str, float]]) -> Dict[str, float]:
  if len(per_split) == 1:
    return dict(next(iter(per_split.values())))
  return {f"{split}/{name}": value for split, metrics in per_split.items()
          for name, value in metrics.items()}


def evaluate_model(model: TaskModel, task, encoded_splits: Dict[str, training.EncodedExamples],
                   batch_size: int = 64) -> Dict[str, Dict[str, float]]:
  """Task metrics of `model` on every encoded split."""
  from adapter_keras.tasks import compute_metrics  # pylint: disable=import-outside-toplevel
  results = {}
  for split, encoded in encoded_splits.items():
    results[split] = compute_metrics(task, training.predict_encoded(model, encoded, batch_size), encoded.labels)
  return results


class NonFiniteLossError(ValueError):
  """Training produced a NaN or infinite loss."""


DEFAULT_CHECKPOINT_EVERY_STEPS = 200
CHECKPOINT_DIR = "checkpoint"


class _RunProgress(tf_keras.callbacks.Callback):
  """Counts steps across the per-epoch `fit` calls; stops at the first NaN/Inf batch loss.

  It comes first among the callbacks: on the first batch after a mid-epoch
  resume it adds the epoch's saved loss/metric sums into the model's metrics
  and corrects that batch's logs, so every later callback sees the running
  values an uninterrupted run would show.
  """

  def __init__(self, global_step: int = 0, epoch: int = 0, step_in_epoch: int = 0,
               carried_sums: Optional[Dict[str, List[float]]] = None):
    super().__init__()
    self.global_step = global_step
    self.epoch = epoch
    self.step_in_epoch = step_in_epoch
    self.carried_sums = carried_sums
    self.bad_step = None

  def on_train_batch_end(self, batch, logs=None):
    self.global_step += 1
    self.step_in_epoch += 1
    if self.carried_sums:
      checkpoints.add_metric_sums(self.model, self.carried_sums)
      self.carried_sums = None
      if logs is not None:
        logs.update({m.name: float(m.result()) for m in self.model.metrics if m.name in logs})
    loss = (logs or {}).get("loss")
    if loss is not None and not np.isfinite(loss):
      self.bad_step = self.global_step
      self.model.stop_training = True

  def on_epoch_end(self, epoch, logs=None):
    if self.bad_step is None:
      self.epoch, self.step_in_epoch = epoch + 1, 0


class _BestEpochTracker(tf_keras.callbacks.Callback):
  """Evaluates dev after each epoch; remembers the best epoch's trained weights."""

  def __init__(self, task, dev: Dict[str, training.EncodedExamples], log_dir: Optional[str],
               verbose: bool):
    super().__init__()
    self.task = task
    self.dev = dev
    self.verbose = verbose
    self.history: List[Dict[str, float]] = []
    self.best_score = -np.inf
    self.best_epoch = 0
    self.best_metrics: Dict[str, float] = {}
    self.best_weights = None
    self._writer = tf.summary.create_file_writer(os.path.join(log_dir, "dev")) if log_dir else None

  def evaluate(self) -> tuple[float, Dict[str, float]]:
    """(primary score, flat dev metrics) of the model; squad_trainer overrides it for span models."""
    per_split = evaluate_model(self.model, self.task, self.dev)
    return per_split[self.task.dev_splits[0]][self.task.primary_metric], _flatten_metrics(per_split)

  def on_epoch_end(self, epoch, logs=None):
    if not np.isfinite((logs or {}).get("loss", 0.0)):
      # Stopped at a NaN/Inf loss: such weights can still score (argmax of NaN
      # logits is class 0) but must never become the best epoch.
      return
    score, flat = self.evaluate()
    self.history.append(dict(flat, epoch=epoch + 1, loss=float((logs or {}).get("loss", np.nan))))
    if self._writer:
      with self._writer.as_default(step=epoch + 1):
        for name, value in flat.items():
          tf.summary.scalar(name, value)
    if score > self.best_score:
      self.best_score, self.best_epoch, self.best_metrics = score, epoch + 1, flat
      self.best_weights = [v.numpy() for v in checkpoints.trained_variables(self.model)]
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
                best_score=float(self.best_score) if np.isfinite(self.best_score) else None)

  def load_state(self, state: Dict, best_weights: Optional[List[np.ndarray]]) -> None:
    self.history = list(state["history"])
    self.best_epoch, self.best_metrics = state["best_epoch"], dict(state["best_metrics"])
    self.best_score = -np.inf if state["best_score"] is None else state["best_score"]
    self.best_weights = best_weights


class _Checkpointer(tf_keras.callbacks.Callback):
  """Writes a step checkpoint every `every_steps` steps and after each epoch's dev evaluation.

  Never after a NaN/Inf loss, so the newest checkpoint is always a good one.
  A mid-epoch checkpoint is skipped on an epoch's last batch: the end-of-epoch
  one follows right after.
  """

  def __init__(self, checkpoint: checkpoints.StepCheckpoint, progress: _RunProgress,
               tracker: _BestEpochTracker, every_steps: Optional[int], epoch_batches: int,
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
    if (p.bad_step is None and self.every_steps and p.global_step % self.every_steps == 0
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
    self._check_timing = False

  def on_train_begin(self, logs=None):
    pass

  def on_train_end(self, logs=None):
    pass

  def begin(self):
    super().on_train_begin()

  def end(self):
    super().on_train_end()


def _limit(examples: TextExamples, max_examples: Optional[int], seed: int) -> TextExamples:
  if not max_examples or max_examples >= len(examples):
    return examples
  chosen = np.sort(np.random.default_rng(seed).permutation(len(examples))[:max_examples])
  return examples.take(chosen)


def epoch_order(encoded: training.EncodedExamples, config: "TrainConfig", epoch: int) -> np.ndarray:
  """The example order of `epoch` (0-based), drawn from (seed, epoch) alone.

  A numpy permutation, not tf.data's shuffle, whose order also depends on the
  global TF seed and on how many iterators were made of the dataset; this
  way any epoch can be rebuilt exactly, in any process. With
  `config.bucket_by_length` it is grouped by length
  (training.length_grouped_order): every `batch_size` consecutive examples
  are one batch.
  """
  rng = np.random.default_rng([config.seed % 2**64, epoch])
  order = rng.permutation(len(encoded))
  if config.bucket_by_length:
    order = training.length_grouped_order(order, encoded.lengths, config.batch_size, rng)
  return order


def epoch_dataset(encoded: training.EncodedExamples, config: "TrainConfig", epoch: int,
                  **dataset_options) -> tf.data.Dataset:
  """The training batches of `epoch` (0-based), in `epoch_order`.

  `dataset_options` go to training.make_dataset (pad_to_multiple, prefix_cache...).
  """
  return training.make_dataset(encoded, config.batch_size, order=epoch_order(encoded, config, epoch),
                               **dataset_options)


def artifact_manifest(task, config: TrainConfig, model: TaskModel, preprocessor: BertPreprocessor,
                      encoder_config, fingerprint: str, train_examples: int) -> Dict:
  """What an artifact records besides its weights (see artifacts.py)."""
  adapter_config = model.encoder.adapter_config
  return dict(
      task=task_to_dict(task), method=config.method, top_k=config.top_k,
      adapter_config=adapter_config.to_dict() if adapter_config else None,
      pooling=model.pooling, dropout_rate=model.dropout_rate,
      tokenizer=preprocessor.settings(), encoder=dict(spec=config.encoder, config=encoder_config.to_dict()),
      base_fingerprint=fingerprint, train_config=config.to_dict(), train_examples=train_examples)


def compile_for_training(model: tf_keras.Model, compile_model: Callable, config: "TrainConfig", total_steps: int,
                         strategy: tf.distribute.Strategy) -> None:
  """`compile_model(model, optimizer, jit_compile=...)` with the paper's optimizer for `total_steps`,
  under `strategy`, following config.mixed_precision and config.jit_compile."""
  with strategy.scope():
    compile_model(model, training.create_optimizer(config.learning_rate, total_steps, config.warmup_fraction,
                                                   mixed_precision=config.mixed_precision),
                  jit_compile=config.jit_compile)
    # Built now rather than at the first step, so that a checkpoint can be read into its moments.
    model.optimizer.build(model.trainable_variables)


def run_epochs(train_model: tf_keras.Model,
               make_epoch_dataset: Callable[[int], tf.data.Dataset],
               epoch_batches: int,
               tracker: "_BestEpochTracker",
               config: "TrainConfig",
               strategy: tf.distribute.Strategy,
               verbose: bool = True,
               log_dir: Optional[str] = None,
               checkpoint_dir: Optional[str] = None,
               checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
               fingerprint: Optional[str] = None,
               log_prefix: str = "[train] ") -> float:
  """The epoch loop every trainer shares: fit, evaluate, keep the best epoch, checkpoint, resume.

  `train_model` is compiled, its optimizer built; `make_epoch_dataset(e)`
  gives epoch e's `epoch_batches` batches, the same in any process (so a
  resumed epoch can skip the batches done). `tracker` evaluates after every
  epoch and keeps the best weights. With `checkpoint_dir` a step checkpoint
  is written every `checkpoint_every_steps` steps (None or 0: only at epoch
  ends) and after every epoch, and the run resumes from the newest one there;
  `fingerprint` (of the frozen base) is recorded and checked on resume.

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
  callbacks = [progress, tracker]
  if checkpoint:
    callbacks.append(_Checkpointer(checkpoint, progress, tracker, checkpoint_every_steps, epoch_batches,
                                   seconds_before))
  if verbose:
    callbacks.append(training.ProgressLogger(total_steps, config.batch_size, prefix=log_prefix,
                                             initial_step=progress.global_step))
  if log_dir:
    callbacks.append(tf_keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
  run = _OneRun(callbacks, train_model)
  run.begin()
  for epoch in range(progress.epoch, config.epochs):
    dataset = make_epoch_dataset(epoch)
    if progress.step_in_epoch:
      dataset = dataset.skip(progress.step_in_epoch)
    # With the step count given, Keras never calls the train function past the
    # data's end, a call that would still add 1 to the optimizer's iterations.
    train_model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1,
                    steps_per_epoch=epoch_batches - progress.step_in_epoch, verbose=0, callbacks=run)
    if progress.bad_step is not None:
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
    raise NonFiniteLossError(
        f"the training loss became NaN/Inf at step {progress.bad_step} of {total_steps}; "
        f"lower the learning rate or check the labels ({kept})")
  tracker.restore_best()
  return seconds_before


def fit_task_model(model: TaskModel,
                   preprocessor: BertPreprocessor,
                   task,
                   train: TextExamples,
                   dev: Dict[str, TextExamples],
                   config: TrainConfig,
                   strategy: Optional[tf.distribute.Strategy] = None,
                   verbose: bool = True,
                   log_dir: Optional[str] = None,
                   checkpoint_dir: Optional[str] = None,
                   checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
                   fingerprint: Optional[str] = None,
                   prefix_cache_dir: Optional[str] = None):
  """Trains an already built model whose trainable set is chosen.

  TensorBoard logs go to `log_dir` when given. With `checkpoint_dir`, a step
  checkpoint is written there every `checkpoint_every_steps` steps (None or 0:
  only at epoch ends) and after every epoch, and training resumes from the
  newest one found there; `fingerprint` (of the frozen base) is recorded and
  checked on resume. Resuming is exact when the model's dropout layers were
  built inside `checkpoints.resumable_randomness()` (as `train_task` does).

  `config.jit_compile` XLA-compiles the train and predict steps (batches
  padded to multiples of training.JIT_PAD_MULTIPLE); the optimizer follows
  `config.mixed_precision` (the model must have been built under
  training.precision_policy, as train_task does). With `config.prefix_cache`
  the frozen prefix (prefix_cache.py) is frozen here, its outputs are
  computed once over the training set (kept in memory, or in a temporary
  file under `prefix_cache_dir` when too large) and a PrefixCachedModel
  sharing `model`'s variables is what trains.

  Returns (TrainResult, number of training examples used); the result's
  `seconds` holds the training time spent before a resume (0 otherwise). The
  model ends up with the weights of its best dev epoch.
  """
  config.validate()
  if set(dev) != set(task.dev_splits):
    raise ValueError(f"task {task.name} evaluates on {task.dev_splits}, got dev splits {sorted(dev)}")
  strategy = strategy or tf.distribute.get_strategy()
  prefix_start = None
  if config.prefix_cache:
    prefix_start = prefix_cache.prefix_start_layer(config.method, len(model.encoder.transformer_layers),
                                                   config.adapter, config.top_k)
    prefix_cache.freeze_prefix(model, prefix_start)
  report = parameter_report(model)
  train = _limit(train, config.max_train_examples, config.seed)
  train_encoded = training.encode_examples(preprocessor, train)
  dev_encoded = {split: training.encode_examples(preprocessor, ex) for split, ex in dev.items()}
  epoch_batches = training.steps_per_epoch(len(train_encoded), config.batch_size)
  total_steps = epoch_batches * config.epochs
  if verbose:
    print(f"[train] task {task.name}: {len(train_encoded)} train examples, "
          f"{', '.join(f'{s} {len(e)}' for s, e in dev_encoded.items())}; method {config.method}: "
          f"{report.trained_params:,} trained parameters ({100 * report.trained_fraction:.2f}% of base)",
          flush=True)
  dataset_options = dict(pad_to_multiple=training.JIT_PAD_MULTIPLE if config.jit_compile else None)
  train_model = model
  if prefix_start is not None:
    with strategy.scope():
      train_model = prefix_cache.PrefixCachedModel(model, prefix_start)
    started = time.perf_counter()
    cache = prefix_cache.PrefixCache.build(train_model, train_encoded, cache_dir=prefix_cache_dir)
    dataset_options["prefix_cache"] = cache
    if verbose:
      print(f"[train] prefix cache: embeddings and layers 0-{prefix_start - 1} run once over "
            f"{len(train_encoded)} examples in {time.perf_counter() - started:.1f}s, "
            f"{cache.nbytes / 2**20:.1f} MiB {'on disk' if cache.on_disk else 'in memory'}", flush=True)
  compile_for_training(train_model, training.compile_task_model, config, total_steps, strategy)
  tracker = _BestEpochTracker(task, dev_encoded, log_dir, verbose)
  try:
    seconds_before = run_epochs(
        train_model, lambda epoch: epoch_dataset(train_encoded, config, epoch, **dataset_options),
        epoch_batches, tracker, config, strategy, verbose=verbose, log_dir=log_dir,
        checkpoint_dir=checkpoint_dir, checkpoint_every_steps=checkpoint_every_steps, fingerprint=fingerprint)
  finally:
    if "prefix_cache" in dataset_options:
      dataset_options["prefix_cache"].close()  # frees the memory, or deletes the disk file, now
  result = TrainResult(
      task=task.name, method=config.method, metrics=tracker.best_metrics,
      primary_metric=task.primary_metric, score=float(tracker.best_score),
      best_epoch=tracker.best_epoch, history=tracker.history,
      trained_params=report.trained_params, trained_fraction=report.trained_fraction,
      seconds=seconds_before)
  return result, len(train_encoded)


RUN_FILE = "run.json"


def _run_identity(task, config: TrainConfig, train: TextExamples, dev: Dict[str, TextExamples]) -> Dict:
  """What makes a run the same run: task, config and a digest of the data."""
  import hashlib  # pylint: disable=import-outside-toplevel
  digest = hashlib.sha256()
  for examples in [train] + [dev[k] for k in sorted(dev)]:
    for i in range(len(examples)):
      digest.update(examples.text[i].encode())
      digest.update(b"\x00" + (examples.text_b[i].encode() if examples.text_b else b"") + b"\x00")
      digest.update(str(examples.labels[i]).encode() + b"\n")
  return dict(task=task_to_dict(task), config=config.to_dict(), data_sha256=digest.hexdigest())


def check_run_directory(out_dir: str, identity: Dict) -> Optional[Dict]:
  """Returns the finished run's metrics if `out_dir` holds this very run.

  Raises FileExistsError if it holds another run (or unrelated files).
  """
  import json  # pylint: disable=import-outside-toplevel
  if not os.path.exists(out_dir):
    return None
  if not os.path.isdir(out_dir):
    raise FileExistsError(f"--out {out_dir} is a file; choose a directory")
  run_file = os.path.join(out_dir, RUN_FILE)
  if not os.path.exists(run_file):
    if os.listdir(out_dir):
      raise FileExistsError(f"--out {out_dir} exists and holds other files; choose an empty or new directory")
    return None
  with open(run_file, encoding="utf-8") as f:
    previous = json.load(f)
  if previous != json.loads(json.dumps(identity)):
    changed = sorted(k for k in identity if previous.get(k) != json.loads(json.dumps(identity[k])))
    raise FileExistsError(f"--out {out_dir} holds a different run (differs in {', '.join(changed)}); "
                          "choose another --out or delete it")
  metrics_file = os.path.join(out_dir, "metrics.json")
  if os.path.exists(metrics_file):
    with open(metrics_file, encoding="utf-8") as f:
      return json.load(f)
  return None


def finished_run(out_dir: str, identity: Dict, verbose: bool = True,
                 log_prefix: str = "[train] ") -> Optional[TrainResult]:
  """The result of the finished run `out_dir` holds, if it is this run (`identity`); None to train.

  Raises FileExistsError when `out_dir` holds another run (check_run_directory).
  """
  finished = check_run_directory(out_dir, identity)
  if finished is None:
    return None
  if verbose:
    print(f"{log_prefix}{out_dir} already holds this finished run; reporting it", flush=True)
  # Left only by a kill between writing metrics.json and deleting it.
  checkpoints.StepCheckpoint.remove(os.path.join(out_dir, CHECKPOINT_DIR))
  fields = {f.name for f in dataclasses.fields(TrainResult)}
  return TrainResult(**{k: v for k, v in finished.items() if k in fields})


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
  training.seed_everything(config.seed)
  adapter_config = config.adapter if config.method == "adapter" else None
  with strategy.scope(), checkpoints.resumable_randomness(), training.precision_policy(config.mixed_precision):
    if pretrained is None:
      pretrained = load_encoder(config.encoder, adapter_config, adapter_seed=config.seed)
    training.check_compute_dtype(pretrained.encoder.transformer_layers[0], config.mixed_precision)
    num_layers = pretrained.config.num_hidden_layers
    validate_method(config.method, config.top_k, num_layers)
    if config.prefix_cache:
      prefix_cache.prefix_start_layer(config.method, num_layers, config.adapter, config.top_k)
    check_max_seq_length(config.max_seq_length, pretrained.config)
    fingerprint = base_fingerprint(pretrained.encoder)
    model = build(pretrained)
    apply_method(model, config.method, config.top_k)
  return pretrained, model, fingerprint


def train_task(task,
               train: TextExamples,
               dev: Dict[str, TextExamples],
               config: TrainConfig,
               out_dir: Optional[str] = None,
               pretrained: Optional[PretrainedEncoder] = None,
               verbose: bool = True,
               checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
               save_model: bool = True,
               prefix_cache_dir: Optional[str] = None):
  """Loads the encoder, builds and trains a model: (TrainResult, model, preprocessor).

  With `out_dir`, writes `metrics.json`, TensorBoard logs under `logs/` and
  (unless not `save_model`) the trained model under `artifact/` (adapter-only
  for method "adapter"). While training it keeps a step checkpoint under
  `checkpoint/` (every `checkpoint_every_steps` steps and at each epoch end)
  and resumes from it when called again after a crash; a finished run's
  checkpoint is deleted once `metrics.json` is written. Resuming is exact
  unless `pretrained` is given (its encoder's dropout was built elsewhere).
  The encoder and model are built under `config.mixed_precision`'s dtype
  policy; a given `pretrained` must have been built under the same one.
  `prefix_cache_dir`: see fit_task_model.
  """
  config.validate()
  start = time.perf_counter()
  if out_dir:
    identity = _run_identity(task, config, train, dev)
    finished = finished_run(out_dir, identity, verbose)
    if finished is not None:
      return finished, None, None
  strategy = get_strategy(config.strategy)
  pretrained, model, fingerprint = build_trainable_model(
      config, lambda loaded: build_model(loaded, task, config.pooling, config.dropout_rate, config.seed),
      strategy, pretrained)
  preprocessor = BertPreprocessor(pretrained.vocab_file, pretrained.lower_case, config.max_seq_length)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, RUN_FILE), identity)
  result, n_train = fit_task_model(model, preprocessor, task, train, dev, config, strategy, verbose,
                                   log_dir=os.path.join(out_dir, "logs") if out_dir else None,
                                   checkpoint_dir=os.path.join(out_dir, CHECKPOINT_DIR) if out_dir else None,
                                   checkpoint_every_steps=checkpoint_every_steps, fingerprint=fingerprint,
                                   prefix_cache_dir=prefix_cache_dir)
  result.seconds += time.perf_counter() - start  # plus the time before a resume
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    if save_model:
      manifest = artifact_manifest(task, config, model, preprocessor, pretrained.config, fingerprint, n_train)
      save_artifact(os.path.join(out_dir, "artifact"), model, manifest)
    write_json_atomic(os.path.join(out_dir, "metrics.json"), dict(
        result.to_dict(), base_params=parameter_report(model).base_params, config=config.to_dict()))
    # metrics.json marks the run finished; the checkpoint is no longer needed.
    checkpoints.StepCheckpoint.remove(os.path.join(out_dir, CHECKPOINT_DIR))
  return result, model, preprocessor
