"""The classification and regression recipe (GLUE, CSV/TSV/JSONL tasks, a classifier's fit on raw strings).

`ClassificationRecipe` tokenizes every example once, orders each epoch by
(seed, epoch) with length grouping, evaluates every dev split after each
epoch with the task's metrics (the primary metric of the first split picks
the best epoch), and, with `config.prefix_cache`, trains a FrozenBottomModel
on the frozen bottom's cached outputs. With static shapes (config.static_shapes
as train/recipe.py's `fit` resolves it; train/inputs.py) every training and
dev batch holds `batch_size` examples padded to a fixed length, and each
epoch leaves its last partial batch out. Everything else is the shared run
(train/recipe.py, train/run.py): identity, resume, artifact, metrics.json.
"""
from __future__ import annotations

import hashlib
import time
from typing import Dict, Optional, Tuple

import tensorflow as tf
import tf_keras

from adapter_keras.methods import frozen_bottom_start_layer
from adapter_keras.networks import FrozenBottomModel
from adapter_keras.networks.frozen_bottom import freeze_bottom
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.tasks.data import TextExamples
from adapter_keras.train import recipe as recipes
from adapter_keras.train.config import TrainConfig, TrainResult
from adapter_keras.train.evaluation import evaluate_model, flatten_metrics
from adapter_keras.train.inputs import (JIT_PAD_MULTIPLE, EncodedExamples, encode_examples, epoch_order,
                                        limit_examples, make_dataset, static_batch_lengths, steps_per_epoch,
                                        uses_static_shapes)
from adapter_keras.train.loop import DEFAULT_CHECKPOINT_EVERY_STEPS
from adapter_keras.train.frozen_bottom_cache import FrozenBottomCache


def compile_task_model(model, optimizer, jit_compile: bool = False, steps_per_execution: int = 1):
  """Loss and metrics for the model's task type. `jit_compile` XLA-compiles the
  train and predict steps (feed them pad_to_multiple or static_lengths batches;
  see train/inputs.py); `steps_per_execution` steps run per call of the train function."""
  if model.task_type == "classification":
    loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    metrics = [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
  else:
    loss = tf_keras.losses.MeanSquaredError()
    metrics = [tf_keras.metrics.MeanAbsoluteError(name="mae")]
  model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile,
                steps_per_execution=steps_per_execution)
  return model


def examples_sha256(train: TextExamples, dev: Dict[str, TextExamples]) -> str:
  """Digest of the train examples and of every dev split (in split-name order)."""
  digest = hashlib.sha256()
  for examples in [train] + [dev[k] for k in sorted(dev)]:
    for i in range(len(examples)):
      digest.update(examples.text[i].encode())
      digest.update(b"\x00" + (examples.text_b[i].encode() if examples.text_b else b"") + b"\x00")
      digest.update(str(examples.labels[i]).encode() + b"\n")
  return digest.hexdigest()


class ClassificationRecipe:
  """A TaskRecipe (train/recipe.py) for classification and regression TaskSpecs.

  Args:
    task: the TaskSpec.
    train: training examples; dev: {split: examples} for exactly the task's dev splits, or {} (a front-door
      fit without validation data: every epoch trains, the last one is kept).
    prefix_cache_dir: where a frozen-bottom cache too large for memory goes.
  """

  log_prefix = "[train] "

  def __init__(self, task, train: TextExamples, dev: Dict[str, TextExamples],
               prefix_cache_dir: Optional[str] = None):
    if dev and set(dev) != set(task.dev_splits):
      raise ValueError(f"task {task.name} evaluates on {task.dev_splits}, got dev splits {sorted(dev)}")
    self.task, self.train, self.dev = task, train, dev
    self.prefix_cache_dir = prefix_cache_dir
    self.config: Optional[TrainConfig] = None
    self.train_encoded: Optional[EncodedExamples] = None
    self.dev_encoded: Dict[str, EncodedExamples] = {}
    self._cache: Optional[FrozenBottomCache] = None

  def data_sha256(self) -> str:
    return examples_sha256(self.train, self.dev)

  def prepare(self, preprocessor: BertPreprocessor, config: TrainConfig) -> None:
    self.config = config
    train = limit_examples(self.train, config.max_train_examples, config.seed)
    self.train_encoded = encode_examples(preprocessor, train)
    if uses_static_shapes(config):  # known without the strategy: refuse too few examples before a run writes
      steps_per_epoch(len(self.train_encoded), config.batch_size, drop_remainder=True)
    self.dev_encoded = {split: encode_examples(preprocessor, ex) for split, ex in self.dev.items()}

  def describe(self) -> str:
    dev = ", ".join(f"{s} {len(e)}" for s, e in self.dev_encoded.items())
    return f"task {self.task.name}: {len(self.train_encoded)} train examples, {dev}"

  @property
  def num_train_examples(self) -> int:
    return len(self.train_encoded)

  @property
  def static_lengths(self) -> Optional[Tuple[int, ...]]:
    """The fixed batch lengths under static shapes (config.static_shapes, resolved by recipe.fit), else None:
    config.static_lengths, or those with the least padding for the lengths of the train and dev examples."""
    if not self.config.static_shapes:
      return None
    return self.config.static_lengths or static_batch_lengths(
        self.config.max_seq_length, [self.train_encoded.lengths] + [e.lengths for e in self.dev_encoded.values()])

  @property
  def num_train_batches_per_epoch(self) -> int:
    return steps_per_epoch(len(self.train_encoded), self.config.batch_size,
                           drop_remainder=self.static_lengths is not None)

  def training_model(self, model, strategy: tf.distribute.Strategy, verbose: bool):
    """`model`, or with config.prefix_cache a FrozenBottomModel on its frozen bottom's cached outputs."""
    config = self.config
    if not config.prefix_cache:
      return model
    start = frozen_bottom_start_layer(config.method, len(model.encoder.transformer_layers),
                               config=config.method_settings())
    freeze_bottom(model, start)
    with strategy.scope():
      train_model = FrozenBottomModel(model, start)
    started = time.perf_counter()
    self._cache = FrozenBottomCache.build(train_model, self.train_encoded, cache_dir=self.prefix_cache_dir)
    if verbose:
      print(f"{self.log_prefix}frozen-bottom cache: embeddings and layers 0-{start - 1} run once over "
            f"{len(self.train_encoded)} examples in {time.perf_counter() - started:.1f}s, "
            f"{self._cache.nbytes / 2**20:.1f} MiB {'on disk' if self._cache.on_disk else 'in memory'}",
            flush=True)
    return train_model

  def compile_model(self, model, optimizer, jit_compile: bool = False, steps_per_execution: int = 1):
    return compile_task_model(model, optimizer, jit_compile=jit_compile, steps_per_execution=steps_per_execution)

  def epoch_dataset(self, epoch: int) -> tf.data.Dataset:
    config, encoded, static = self.config, self.train_encoded, self.static_lengths
    order = epoch_order(len(encoded), config.seed, epoch,
                        encoded.lengths if config.bucket_by_length else None, config.batch_size,
                        drop_remainder=static is not None)
    return make_dataset(encoded, config.batch_size, order=order,
                        pad_to_multiple=JIT_PAD_MULTIPLE if config.jit_compile and static is None else None,
                        prefix_cache=self._cache, static_lengths=static)

  def evaluate(self, model) -> Optional[Tuple[float, Dict[str, float], None]]:
    if not self.dev_encoded:
      return None
    per_split = evaluate_model(model, self.task, self.dev_encoded, static_lengths=self.static_lengths)
    return per_split[self.task.dev_splits[0]][self.task.primary_metric], flatten_metrics(per_split), None

  def release(self) -> None:
    if self._cache is not None:
      self._cache.close()  # frees the memory, or deletes the disk file, now
      self._cache = None

  def metrics_extras(self) -> Dict:
    return {}

  def write_outputs(self, out_dir: str, best_outputs) -> None:
    pass


def fit_task_model(model, preprocessor: BertPreprocessor, task, train: TextExamples,
                   dev: Dict[str, TextExamples], config: TrainConfig,
                   strategy: Optional[tf.distribute.Strategy] = None, verbose: bool = True,
                   log_dir: Optional[str] = None, checkpoint_dir: Optional[str] = None,
                   checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
                   fingerprint: Optional[str] = None,
                   prefix_cache_dir: Optional[str] = None) -> Tuple[TrainResult, int]:
  """Trains an already built model whose trainable set is chosen (recipe.fit on a ClassificationRecipe).

  `config.jit_compile` XLA-compiles the train and predict steps; the
  optimizer follows `config.mixed_precision` (the model must have been built
  under train.optim.precision_policy, as train_task does). With
  `config.prefix_cache` the frozen bottom is frozen here, its outputs are
  computed once over the training set (in memory, or in a temporary file
  under `prefix_cache_dir` when too large) and a FrozenBottomModel sharing
  `model`'s variables is what trains. See loop.run_epochs for `log_dir`,
  `checkpoint_dir` and resuming.

  Returns (TrainResult, number of training examples used). The model ends
  up with the weights of its best dev epoch.
  """
  recipe = ClassificationRecipe(task, train, dev, prefix_cache_dir)
  recipe.prepare(preprocessor, config)
  result, _ = recipes.fit(recipe, model, config, strategy, verbose, log_dir, checkpoint_dir,
                          checkpoint_every_steps, fingerprint)
  return result, recipe.num_train_examples
