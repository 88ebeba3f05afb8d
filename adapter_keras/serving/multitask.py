"""Many tasks on one frozen base encoder.

`MultiTaskModel` holds one pre-trained base encoder and any number of named
tasks. Each task owns its adapters, its LayerNorm parameters, its head, its
label names, its AdapterConfig and its tokenizer settings. A task's encoder is
an AdapterBertEncoder whose frozen sublayers (embeddings, attention and FFN
projections, pooler) are the base's own layer objects, so the base weights
exist once in memory and once in an exported SavedModel; only LayerNorms and
adapters are per task. Training a task therefore touches only its own
variables, and every earlier task keeps its predictions bit for bit.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from adapter_keras import _model_garden
from adapter_keras.artifacts import (adapter_config_from_manifest, artifact_manifest, assign_weights,
                                     check_fingerprint, read_manifest, read_weights, resolve_artifact_dir,
                                     save_artifact, task_from_manifest)
from adapter_keras.config import AdapterConfig
from adapter_keras.encoder import AdapterBertEncoder, build_encoder
from adapter_keras.layers.pooling import MeanPooling, pool
from adapter_keras.methods import apply_method, get_method
from adapter_keras.models import TaskModel
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import (PretrainedEncoder, base_fingerprint, check_max_seq_length,
                                      load_encoder)
from adapter_keras.tasks.data import TextExamples
from adapter_keras.train.classification import fit_task_model
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.evaluation import predict_encoded
from adapter_keras.train.inputs import encode_examples
from adapter_keras.train.loop import seed_everything


def tie_to_base(task_encoder: AdapterBertEncoder, base: AdapterBertEncoder) -> None:
  """Makes `task_encoder` use the base's frozen sublayers; copies LayerNorms.

  Both encoders must be built. Afterwards the task encoder with its adapters
  disabled computes exactly what the base computes.
  """
  _model_garden.share_sublayers(task_encoder, base)


@dataclasses.dataclass
class TaskEntry:
  name: str
  task: object  # TaskSpec
  model: TaskModel
  preprocessor: BertPreprocessor
  adapter_config: AdapterConfig

  def outputs(self, text, text_b=None, batch_size: int = 64) -> np.ndarray:
    examples = TextExamples(list(text), np.zeros(len(text), np.int64),
                            text_b=None if text_b is None else list(text_b))
    encoded = encode_examples(self.preprocessor, examples)
    return predict_encoded(self.model, encoded, batch_size)


class MultiTaskModel:
  """A frozen base encoder plus named task adapters (add, activate, disable, remove)."""

  def __init__(self, base: PretrainedEncoder, encoder_spec: Optional[str] = None):
    if base.encoder.adapters():
      raise ValueError("the base encoder of a MultiTaskModel must have no adapters")
    self.base = base
    self.encoder_spec = encoder_spec or base.name
    self.fingerprint = base_fingerprint(base.encoder)
    for layer in _model_garden.all_sublayers(base.encoder):
      layer.trainable = False
    self._tasks: Dict[str, TaskEntry] = {}
    self.active: Optional[str] = None

  @classmethod
  def from_encoder(cls, spec: str) -> "MultiTaskModel":
    return cls(load_encoder(spec), spec)

  @property
  def task_names(self) -> List[str]:
    return list(self._tasks)

  def __getitem__(self, name: str) -> TaskEntry:
    if name not in self._tasks:
      raise KeyError(f"no task {name!r}; tasks: {self.task_names}")
    return self._tasks[name]

  def add_task(self, name: str, task, adapter_config: AdapterConfig = AdapterConfig(),
               pooling: Optional[str] = None, max_seq_length: int = 128, dropout_rate: float = 0.1,
               seed: Optional[int] = None) -> TaskEntry:
    """Adds a task with fresh adapters, base LayerNorms and a new head."""
    if name in self._tasks:
      raise ValueError(f"task {name!r} already exists; remove it first")
    check_max_seq_length(max_seq_length, self.base.config)
    encoder = build_encoder(self.base.config, adapter_config, adapter_seed=seed)
    tie_to_base(encoder, self.base.encoder)
    model = TaskModel(encoder, task.num_outputs, task_type=task.task_type,
                      pooling=pooling or self.base.default_pooling, dropout_rate=dropout_rate,
                      head_seed=seed, name="task_model").build_with_dummy_inputs()
    apply_method(model, "adapter")
    preprocessor = BertPreprocessor(self.base.vocab_file, self.base.lower_case, max_seq_length)
    entry = TaskEntry(name, task, model, preprocessor, adapter_config)
    self._tasks[name] = entry
    if self.active is None:
      self.active = name
    return entry

  def add_artifact(self, artifact_dir: str, name: Optional[str] = None) -> TaskEntry:
    """Adds a task saved by `train --method adapter` (or `save_task`)."""
    artifact_dir = resolve_artifact_dir(artifact_dir)
    manifest = read_manifest(artifact_dir)
    if not get_method(manifest["method"]).uses_adapters:
      raise ValueError(f"{artifact_dir} holds a {manifest['method']!r} model; only adapter artifacts "
                       "share a base")
    check_fingerprint(manifest, self.fingerprint, self.encoder_spec, artifact_dir)
    task = task_from_manifest(manifest)
    entry = self.add_task(name or task.name, task, adapter_config_from_manifest(manifest),
                          pooling=manifest["pooling"], max_seq_length=manifest["tokenizer"]["max_seq_length"],
                          dropout_rate=manifest.get("dropout_rate", 0.1))
    assign_weights(entry.model, read_weights(artifact_dir), artifact_dir)
    return entry

  def remove_task(self, name: str) -> None:
    self[name]  # pylint: disable=pointless-statement
    del self._tasks[name]
    if self.active == name:
      self.active = next(iter(self._tasks), None)

  def activate(self, name: str) -> None:
    self[name]  # pylint: disable=pointless-statement
    self.active = name

  def disable(self) -> None:
    """No task active: `predict` returns the pure base encoder's pooled outputs."""
    self.active = None

  def predict(self, text, text_b=None, task: Optional[str] = None) -> np.ndarray:
    """Outputs of `task` (default: the active task), or base embeddings when disabled."""
    name = task or self.active
    if name is not None:
      return self[name].outputs(text, text_b)
    preprocessor = BertPreprocessor(self.base.vocab_file, self.base.lower_case)
    segments = [tf.constant(list(text))] + ([] if text_b is None else [tf.constant(list(text_b))])
    features = preprocessor(segments)
    outputs = self.base.encoder(features, training=False)
    return pool(self.base.default_pooling, outputs, features["input_mask"], MeanPooling()).numpy()

  def train(self, name: str, train: TextExamples, dev: Dict[str, TextExamples], config, verbose=True):
    """Trains task `name` in place (its adapters, LayerNorms and head only)."""
    entry = self[name]
    seed_everything(config.seed)
    result, _ = fit_task_model(entry.model, entry.preprocessor, entry.task, train, dev, config,
                               verbose=verbose)
    return result

  def save_task(self, name: str, out_dir: str, train_config=None) -> str:
    """Writes task `name` as an adapter-only artifact."""
    entry = self[name]
    config = train_config or TrainConfig(encoder=self.encoder_spec, adapter=entry.adapter_config)
    manifest = artifact_manifest(entry.task, config, entry.model, entry.preprocessor, self.base.config,
                                 self.fingerprint, train_examples=0)
    return save_artifact(out_dir, entry.model, manifest)

  def export(self, out_dir: str, tasks: Optional[List[str]] = None, overwrite: bool = False) -> str:
    """One SavedModel: a signature per task, plus `mixed` when there are several.

    `out_dir` must be new or empty; `overwrite` lets it replace an earlier
    export (and nothing else: serving/signatures.py).
    """
    from adapter_keras.serving.export import export_saved_model  # pylint: disable=import-outside-toplevel
    names = tasks or self.task_names
    return export_saved_model({n: self[n] for n in names}, out_dir, overwrite=overwrite)
