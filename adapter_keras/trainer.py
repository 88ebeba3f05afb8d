"""The trainer: one task, one method, the paper's recipe, best epoch on dev.

`train_task` loads the encoder, builds the task model, applies the tuning
method, trains with `model.fit` (Adam, 10% warm-up, linear decay), evaluates
every dev split after each epoch, keeps the weights of the best epoch by the
task's primary metric, and optionally saves an artifact, `metrics.json` and
TensorBoard logs under an output directory.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras import training
from adapter_keras.artifacts import adapter_statistics, save_artifact, task_to_dict, write_json_atomic
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
    outputs = training.predict_outputs(model, training.make_dataset(encoded, batch_size))
    results[split] = compute_metrics(task, outputs, encoded.labels)
  return results


class NonFiniteLossError(ValueError):
  """Training produced a NaN or infinite loss."""


class _StopOnNonFiniteLoss(tf_keras.callbacks.Callback):
  """Stops at the first NaN/Inf batch loss and says at which step."""

  def __init__(self):
    super().__init__()
    self.step = 0
    self.bad_step = None

  def on_train_batch_end(self, batch, logs=None):
    self.step += 1
    loss = (logs or {}).get("loss")
    if loss is not None and not np.isfinite(loss):
      self.bad_step = self.step
      self.model.stop_training = True


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

  def on_epoch_end(self, epoch, logs=None):
    per_split = evaluate_model(self.model, self.task, self.dev)
    score = per_split[self.task.dev_splits[0]][self.task.primary_metric]
    flat = _flatten_metrics(per_split)
    self.history.append(dict(flat, epoch=epoch + 1, loss=float((logs or {}).get("loss", np.nan))))
    if self._writer:
      with self._writer.as_default(step=epoch + 1):
        for name, value in flat.items():
          tf.summary.scalar(name, value)
    if score > self.best_score:
      self.best_score, self.best_epoch, self.best_metrics = score, epoch + 1, flat
      self.best_weights = [v.numpy() for v in self._tracked_variables()]
    if self.verbose:
      shown = " ".join(f"{k} {v:.4f}" for k, v in flat.items())
      print(f"[train] epoch {epoch + 1} dev: {shown}", flush=True)

  def _tracked_variables(self):
    return list(self.model.trainable_variables) + adapter_statistics(self.model)

  def restore_best(self):
    if self.best_weights is not None:
      for variable, value in zip(self._tracked_variables(), self.best_weights):
        variable.assign(value)


def _limit(examples: TextExamples, max_examples: Optional[int], seed: int) -> TextExamples:
  if not max_examples or max_examples >= len(examples):
    return examples
  chosen = np.sort(np.random.default_rng(seed).permutation(len(examples))[:max_examples])
  return examples.take(chosen)


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


def fit_task_model(model: TaskModel,
                   preprocessor: BertPreprocessor,
                   task,
                   train: TextExamples,
                   dev: Dict[str, TextExamples],
                   config: TrainConfig,
                   strategy: Optional[tf.distribute.Strategy] = None,
                   verbose: bool = True,
                   log_dir: Optional[str] = None):
  """Trains an already built model whose trainable set is chosen.

  TensorBoard logs go to `log_dir` when given.

  Returns (TrainResult without timing, number of training examples used);
  the model ends up with the weights of its best dev epoch.
  """
  config.validate()
  if set(dev) != set(task.dev_splits):
    raise ValueError(f"task {task.name} evaluates on {task.dev_splits}, got dev splits {sorted(dev)}")
  strategy = strategy or tf.distribute.get_strategy()
  report = parameter_report(model)
  train = _limit(train, config.max_train_examples, config.seed)
  train_encoded = training.encode_examples(preprocessor, train)
  dev_encoded = {split: training.encode_examples(preprocessor, ex) for split, ex in dev.items()}
  steps_per_epoch = training.steps_per_epoch(len(train_encoded), config.batch_size)
  total_steps = steps_per_epoch * config.epochs
  if verbose:
    print(f"[train] task {task.name}: {len(train_encoded)} train examples, "
          f"{', '.join(f'{s} {len(e)}' for s, e in dev_encoded.items())}; method {config.method}: "
          f"{report.trained_params:,} trained parameters ({100 * report.trained_fraction:.2f}% of base)",
          flush=True)
  with strategy.scope():
    training.compile_task_model(
        model, training.create_optimizer(config.learning_rate, total_steps, config.warmup_fraction))
  tracker = _BestEpochTracker(task, dev_encoded, log_dir, verbose)
  non_finite = _StopOnNonFiniteLoss()
  callbacks = [non_finite, tracker]
  if verbose:
    callbacks.append(training.ProgressLogger(total_steps, config.batch_size, prefix="[train] "))
  if log_dir:
    callbacks.append(tf_keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
  dataset = training.make_dataset(train_encoded, config.batch_size, shuffle=True, seed=config.seed,
                                  bucket_by_length=config.bucket_by_length)
  model.fit(dataset, epochs=config.epochs, verbose=0, callbacks=callbacks)
  if non_finite.bad_step is not None:
    tracker.restore_best()
    raise NonFiniteLossError(
        f"the training loss became NaN/Inf at step {non_finite.bad_step} of {total_steps}; "
        "lower the learning rate or check the labels (the model keeps its last good epoch's weights)")
  tracker.restore_best()
  result = TrainResult(
      task=task.name, method=config.method, metrics=tracker.best_metrics,
      primary_metric=task.primary_metric, score=float(tracker.best_score),
      best_epoch=tracker.best_epoch, history=tracker.history,
      trained_params=report.trained_params, trained_fraction=report.trained_fraction, seconds=0.0)
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


def train_task(task,
               train: TextExamples,
               dev: Dict[str, TextExamples],
               config: TrainConfig,
               out_dir: Optional[str] = None,
               pretrained: Optional[PretrainedEncoder] = None,
               verbose: bool = True):
  """Loads the encoder, builds and trains a model: (TrainResult, model, preprocessor).

  With `out_dir`, writes `metrics.json`, TensorBoard logs under `logs/` and
  the trained model under `artifact/` (adapter-only for method "adapter").
  """
  config.validate()
  start = time.perf_counter()
  if out_dir:
    identity = _run_identity(task, config, train, dev)
    finished = check_run_directory(out_dir, identity)
    if finished is not None:
      if verbose:
        print(f"[train] {out_dir} already holds this finished run; reporting it", flush=True)
      fields = {f.name for f in dataclasses.fields(TrainResult)}
      return TrainResult(**{k: v for k, v in finished.items() if k in fields}), None, None
  training.seed_everything(config.seed)
  strategy = get_strategy(config.strategy)
  adapter_config = config.adapter if config.method == "adapter" else None
  with strategy.scope():
    if pretrained is None:
      pretrained = load_encoder(config.encoder, adapter_config, adapter_seed=config.seed)
    validate_method(config.method, config.top_k, pretrained.config.num_hidden_layers)
    check_max_seq_length(config.max_seq_length, pretrained.config)
    fingerprint = base_fingerprint(pretrained.encoder)
    model = build_model(pretrained, task, config.pooling, config.dropout_rate, config.seed)
    apply_method(model, config.method, config.top_k)
  preprocessor = BertPreprocessor(pretrained.vocab_file, pretrained.lower_case, config.max_seq_length)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, RUN_FILE), identity)
  result, n_train = fit_task_model(model, preprocessor, task, train, dev, config, strategy, verbose,
                                   log_dir=os.path.join(out_dir, "logs") if out_dir else None)
  result.seconds = time.perf_counter() - start
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    manifest = artifact_manifest(task, config, model, preprocessor, pretrained.config, fingerprint, n_train)
    save_artifact(os.path.join(out_dir, "artifact"), model, manifest)
    write_json_atomic(os.path.join(out_dir, "metrics.json"), dict(
        result.to_dict(), base_params=parameter_report(model).base_params, config=config.to_dict()))
  return result, model, preprocessor
