"""The classification recipe trained on training records (`adapter-keras train --train-records DIR`):
`RecordsClassificationRecipe`, and which worker of a multi-worker job reads which shards (`worker_layout`).
The records format and its streamed epoch are train/records.py's."""
from __future__ import annotations

import hashlib
import json
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.tasks.data import TextExamples
from adapter_keras.train.classification import ClassificationRecipe, examples_sha256
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.distribute import worker_identity
from adapter_keras.train.inputs import (JIT_PAD_MULTIPLE, encode_examples, static_batch_lengths, uses_static_shapes)
from adapter_keras.train.records import (DEFAULT_SHUFFLE_WINDOW, TrainingRecords, records_batches_per_epoch,
                                         records_dataset)
from adapter_keras.values import is_integer


def worker_layout(strategy: tf.distribute.Strategy) -> Tuple[int, int]:
  """(this worker's index, number of workers) of `strategy`'s cluster, numbered as tf.distribute's input
  pipelines are (the chief first); (0, 1) outside a multi-worker cluster."""
  identity = worker_identity(strategy)
  if identity is None:
    return 0, 1
  task_type, task_id = identity
  cluster = strategy.cluster_resolver.cluster_spec().as_dict()
  chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
  if task_type == "chief":
    return task_id, chiefs + workers
  if task_type == "worker":
    return chiefs + task_id, chiefs + workers
  raise ValueError(f"a {task_type} task reads no training records; only the chief and the workers train")


# ----------------------------------------------------------------------------- the recipe


_NO_EXAMPLES = TextExamples([], np.zeros(0, np.int64))


class RecordsClassificationRecipe(ClassificationRecipe):
  """The classification recipe with its training examples streamed from records (`train --train-records`).

  Args:
    records: the opened records (their task is the run's task).
    dev: {split: examples} for exactly the task's dev splits, encoded in
      memory by `prepare`.
    shuffle_window: examples per shuffle window (module docstring); part
      of the run's identity, since it decides the order.

  The frozen-bottom cache (which needs every training example in memory) and
  max_train_examples (a subset is chosen when preprocessing) are refused.
  """

  def __init__(self, records: TrainingRecords, dev: Dict[str, TextExamples],
               shuffle_window: int = DEFAULT_SHUFFLE_WINDOW):
    super().__init__(records.task, None, dev)
    if not is_integer(shuffle_window) or shuffle_window < 1:
      raise ValueError(f"shuffle_window must be an integer >= 1, got {shuffle_window!r}")
    self.records = records
    self.shuffle_window = shuffle_window
    self.worker_index, self.num_workers = 0, 1

  def data_sha256(self) -> str:
    """Digest of the records' spec (every shard's sha256), the shuffle window and the dev examples."""
    identity = dict(records=self.records.digest(), shuffle_window=self.shuffle_window,
                    dev=examples_sha256(_NO_EXAMPLES, self.dev))
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

  def prepare(self, preprocessor: BertPreprocessor, config: TrainConfig) -> None:
    if config.prefix_cache:
      raise ValueError("--prefix-cache needs every training example in memory; it does not work with "
                       "--train-records (train from --train/--task data instead)")
    if config.max_train_examples:
      raise ValueError("--max-train-examples applies when preprocessing (adapter-keras preprocess "
                       f"--max-train-examples N); the records in {self.records.directory} are used whole")
    self.records.check_tokenizer(preprocessor)
    self.config = config
    if uses_static_shapes(config):  # refuse too few examples before a run writes anything
      records_batches_per_epoch(self.records, config.batch_size, drop_remainder=True)
    self.dev_encoded = {split: encode_examples(preprocessor, ex) for split, ex in self.dev.items()}

  @property
  def static_lengths(self) -> Optional[Tuple[int, ...]]:
    """Under static shapes config.static_lengths, or the powers of two up to max_seq_length: the training
    lengths are on disk, not in memory, to choose from (train/inputs.py: static_batch_lengths)."""
    if not self.config.static_shapes:
      return None
    return self.config.static_lengths or static_batch_lengths(self.config.max_seq_length)

  def describe(self) -> str:
    dev = ", ".join(f"{s} {len(e)}" for s, e in self.dev_encoded.items())
    workers = f", worker {self.worker_index + 1} of {self.num_workers}" if self.num_workers > 1 else ""
    return (f"task {self.task.name}: {self.records.num_examples} train examples streamed from "
            f"{self.records.num_shards} shards in {self.records.directory}{workers}, {dev}")

  @property
  def num_train_examples(self) -> int:
    return self.records.num_examples

  @property
  def num_train_batches_per_epoch(self) -> int:
    """Steps per epoch of the loop's `fit`. With several workers and the global batch (Keras
    distributes each worker's dataset itself, rebatching a global batch over every replica), a
    worker's batch lasts num_workers steps."""
    drop_remainder = self.static_lengths is not None
    batches = records_batches_per_epoch(self.records, self.config.batch_size, self.num_workers, drop_remainder)
    return batches * self.num_workers

  def training_model(self, model, strategy: tf.distribute.Strategy, verbose: bool):
    """`model` itself (the frozen-bottom cache is refused); notes this process's worker for `epoch_dataset`."""
    if self.config.prefix_cache:
      raise ValueError("--prefix-cache does not work with --train-records")
    self.worker_index, self.num_workers = worker_layout(strategy)
    return model

  def epoch_dataset(self, epoch: int, input_context: Optional[tf.distribute.InputContext] = None
                    ) -> tf.data.Dataset:
    """Epoch `epoch`'s batches for this worker: from `input_context` (distribute_datasets_from_function:
    its input pipeline's shards, its per-replica batch size; the loop's steps per epoch are then
    records_batches_per_epoch at that batch size over the replicas per worker), else the worker
    `training_model` noted (one worker by default) with the global batch."""
    config, static = self.config, self.static_lengths
    batch_size, worker_index, num_workers = config.batch_size, self.worker_index, self.num_workers
    if input_context is not None:
      batch_size = input_context.get_per_replica_batch_size(config.batch_size)
      worker_index, num_workers = input_context.input_pipeline_id, input_context.num_input_pipelines
    return records_dataset(self.records, batch_size, config.seed, epoch, worker_index, num_workers,
                           shuffle_window=self.shuffle_window, bucket_by_length=config.bucket_by_length,
                           pad_to_multiple=JIT_PAD_MULTIPLE if config.jit_compile and static is None else None,
                           static_lengths=static)

  def metrics_extras(self) -> Dict:
    return dict(train_records=dict(directory=self.records.directory, sha256=self.records.digest(),
                                   num_examples=self.records.num_examples, num_shards=self.records.num_shards,
                                   shuffle_window=self.shuffle_window))
