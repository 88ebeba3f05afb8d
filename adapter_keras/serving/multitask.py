"""Many tasks on one frozen base encoder.

`MultiTaskModel` holds one pre-trained base encoder and any number of named task models
(models/: AdapterClassifier, AdapterRegressor, AdapterTokenClassifier), each with its own tuning method.
Each task owns what its method trains (for method "adapter": its adapters, LayerNorm parameters and head; for
LoRA its low-rank factors and head, ...), its labels and its tokenizer settings. A task's encoder is a plain
encoder whose frozen sublayers (embeddings, the attention and FFN projections, pooler) are the base's own layer
objects, inside blocks and attention layers of the task's own, with the task's method injected afterwards: a
method that wraps a projection (LoRA, IA3) or widens the attention (prefix tuning) wraps it in that task's layers
only. So the base weights exist once in memory and once in an exported SavedModel, training a task touches
only its own variables, and every earlier task keeps its predictions bit for bit. A method that trains the
base's own weights (full, top-k) cannot join: its tasks would change each other; nor can a task merge its
update into the kernels every task shares.

`predict_all` (and the export's `all` signature) gives every task's outputs for the same texts in one pass,
computing what the tasks share once: the tokenization, the embedding lookups and, where the tasks leave them as
the base's, the first blocks (serving/export.py: AllTasks; networks/shared_bottom.py).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from adapter_keras import _model_garden
from adapter_keras.encoder import build_encoder
from adapter_keras.layers.pooling import MeanPooling, pool
from adapter_keras.artifacts import method_of, read_manifest, resolve_artifact_dir
from adapter_keras.methods import get_method, mark_shares_base
from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.models import load_adapter, model_class
from adapter_keras.models.base import keras_name
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import PretrainedEncoder, base_fingerprint, load_encoder
from adapter_keras.serving.export import AllTasks, export_saved_model
from adapter_keras.serving.predict import Example, length_sorted_batches
from adapter_keras.tasks.data import TextExamples
from adapter_keras.train.classification import fit_task_model
from adapter_keras.train.config import TokenTrainConfig, TrainConfig
from adapter_keras.train.recipe import fit as fit_recipe
from adapter_keras.train.tagging import TokenRecipe
from adapter_keras.train.loop import seed_everything


def tie_to_base(task_encoder, base) -> None:
  """Makes `task_encoder` use the base's frozen sublayers; copies LayerNorms.

  Both encoders must be built and plain. Afterwards the task encoder computes exactly what the base does.
  """
  _model_garden.share_sublayers(task_encoder, base)


class MultiTaskModel:
  """A frozen base encoder plus named task models (add, activate, disable, remove, train, save, export)."""

  def __init__(self, base: PretrainedEncoder, encoder_spec: Optional[str] = None):
    if base.encoder.adapters():
      raise ValueError("the base encoder of a MultiTaskModel must have no adapters")
    self.base = base
    self.encoder_spec = encoder_spec or base.name
    self.fingerprint = base_fingerprint(base.encoder)
    for layer in _model_garden.all_sublayers(base.encoder):
      layer.trainable = False
    self._tasks: Dict[str, object] = {}
    self.active: Optional[str] = None
    self._all_tasks = None  # predict_all's traced function, with what it was traced for

  @classmethod
  def from_encoder(cls, spec: str) -> "MultiTaskModel":
    return cls(load_encoder(spec), spec)

  @property
  def task_names(self) -> List[str]:
    return list(self._tasks)

  def __getitem__(self, name: str):
    if name not in self._tasks:
      raise KeyError(f"no task {name!r}; tasks: {self.task_names}")
    return self._tasks[name]

  def _tied_base(self) -> PretrainedEncoder:
    """A new plain encoder sharing the base's frozen sublayers: what a task's method is injected into."""
    encoder = build_encoder(self.base.config)
    tie_to_base(encoder, self.base.encoder)
    return dataclasses.replace(self.base, encoder=encoder, name=self.encoder_spec)

  def _check_method(self, name: str, method: str) -> None:
    """Refuses, before anything is built, a method whose tasks could not share the base."""
    spec = get_method(method)
    if spec.fine_tunes_base or spec.wraps_shared_layers:
      what = "trains the base's own weights" if spec.fine_tunes_base else "changes layers the tasks share"
      raise ValueError(f"task {name}: method {method!r} {what}, which every task on one base shares; train it on "
                       "its own encoder instead")

  def _freeze_base(self) -> None:
    """The bank's invariant: every layer of the base is frozen, whatever a task's method set on it."""
    for layer in _model_garden.all_sublayers(self.base.encoder):
      _model_garden.unfreeze_variables(layer)
      layer.trainable = False

  def _join(self, name: str, model):
    """Adds a built task model after checking that it trains none of the shared base's variables."""
    shared = {id(v) for v in self.base.encoder.weights}
    trained_shared = [v.name for v in model.trainable_variables if id(v) in shared]
    if trained_shared:
      self._freeze_base()
      raise ValueError(f"task {name}: method {model.method!r} trains the base's own weights ({trained_shared[0]}, "
                       f"...), which every task on one base shares; train it on its own encoder instead")
    mark_shares_base(model)
    self._tasks[name] = model
    if self.active is None:
      self.active = name
    return model

  def add_task(self, name: str, task, adapter_config: AdapterConfig = AdapterConfig(),
               pooling: Optional[str] = None, max_seq_length: int = 128, dropout_rate: float = 0.1,
               seed: Optional[int] = None, method: str = "adapter", method_config=None):
    """Adds a task (a TaskSpec) with a fresh method (adapters by default), the base's LayerNorms and a new head."""
    if name in self._tasks:
      raise ValueError(f"task {name!r} already exists; remove it first")
    self._check_method(name, method)
    cls = model_class(task.task_type)
    # A token task (a TokenTask) reads every token: no pooling; its labels come with the task.
    own = dict(pooling=pooling, **cls.arguments_from_task(task)) if task.task_type != "token" else {}
    model = cls(self._tied_base(), task=task, **own, method=method, adapter=adapter_config,
                method_config=method_config, max_seq_length=max_seq_length, dropout_rate=dropout_rate, seed=seed,
                name=keras_name(name))
    return self._join(name, model)

  def add_artifact(self, artifact_dir: str, name: Optional[str] = None):
    """Adds a task saved by `train` (or `save_task`, or a task model's save_adapter): models.load_adapter on
    the shared base, which checks the artifact's fingerprint against it."""
    manifest = read_manifest(resolve_artifact_dir(artifact_dir))
    self._check_method(name or manifest["task"].get("name"), method_of(manifest)[0])
    model = load_adapter(artifact_dir, encoder=self._tied_base())
    name = name or model.task.name
    if name in self._tasks:
      raise ValueError(f"task {name!r} already exists; remove it first")
    return self._join(name, model)

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

  def predict(self, text, text_b=None, task: Optional[str] = None, logits: bool = False) -> np.ndarray:
    """Outputs of `task` (default: the active task) for raw strings: probabilities (classification; the
    head's logits with `logits=True`) or scores (regression), as the task model, the SavedModel and
    `adapter-keras predict` return them; the base's pooled embeddings when no task is active."""
    name = task or self.active
    if name is not None:
      model = self[name]
      inputs = list(text) if text_b is None else (list(text), list(text_b))
      if not logits:
        return model.predict(inputs)
      encoded = model.preprocessor([tf.constant(list(text))] + ([] if text_b is None else [tf.constant(list(text_b))]))
      return model(encoded, training=False).numpy()
    preprocessor = BertPreprocessor(self.base.vocab_file, self.base.lower_case)
    segments = [tf.constant(list(text))] + ([] if text_b is None else [tf.constant(list(text_b))])
    features = preprocessor(segments)
    outputs = self.base.encoder(features, training=False)
    return pool(self.base.default_pooling, outputs, features["input_mask"], MeanPooling()).numpy()

  def predict_all(self, text: Sequence[str], text_b: Optional[Sequence[str]] = None,
                  batch_size: int = 64) -> Dict[str, object]:
    """Every task's outputs for the same raw strings in one pass: {task: what `predict(text, text_b, task=task)`
    returns}: probabilities (classification), scores (regression), or per text its (word, tag) pairs (a token
    task, its words split on whitespace). What the tasks share is computed once (AllTasks: the tokenization, the
    embedding lookups, the first blocks where every task leaves them as the base's). `text_b`: the second texts,
    needed when a task is a pair task; single-sentence and token tasks ignore them. Length-sorted batches of
    `batch_size`, as the export's `all` signature computes them."""
    if not self._tasks:
      raise ValueError("predict_all: the bank has no tasks; add one with add_task or add_artifact")
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
      raise ValueError("predict_all: no texts given")
    everything = AllTasks(dict(self._tasks), self.base.encoder)
    pair_tasks = [name for name, server in zip(everything.task_names, everything.servers) if server.is_pair]
    if pair_tasks and text_b is None:
      raise ValueError(f"predict_all: task {pair_tasks[0]!r} is a sentence-pair task; give text_b, one second "
                       "text per text")
    texts_b = None if text_b is None else ([text_b] if isinstance(text_b, str) else list(text_b))
    if texts_b is not None and len(texts_b) != len(texts):
      raise ValueError(f"predict_all: {len(texts)} texts but {len(texts_b)} text_b; give one second text per text")
    if batch_size < 1:
      raise ValueError(f"predict_all: batch_size must be a positive integer, got {batch_size}")
    # One trace per set of tasks and shared depths (the depths are read from the variables' values).
    key = (tuple(everything.task_names), tuple(self._tasks.values()), tuple(everything.depths))
    if self._all_tasks is None or self._all_tasks[0] != key:
      self._all_tasks = (key, tf.function(everything.outputs, reduce_retracing=True))
    function = self._all_tasks[1]
    examples = [Example(t, None if texts_b is None else texts_b[i]) for i, t in enumerate(texts)]
    rows: Dict[str, list] = {name: [None] * len(texts) for name in everything.task_names}
    for batch in length_sorted_batches(examples, batch_size):
      batch_b = tf.constant([texts_b[i] for i in batch]) if pair_tasks else None
      outputs = function(tf.constant([texts[i] for i in batch]), batch_b)
      for name in everything.task_names:
        for i, row in zip(batch, _rows(self._tasks[name].task_type, outputs[name])):
          rows[name][i] = row
    return {name: values if self._tasks[name].task_type == "token" else np.stack(values)
            for name, values in rows.items()}

  def train(self, name: str, train: TextExamples, dev: Dict[str, TextExamples], config, verbose=True):
    """Trains task `name` in place (only what its method trains). A token task takes TaggedSentences
    (tasks/tagging.py) as `train` and a list of them (or {split: list}) as `dev`."""
    model = self[name]
    seed_everything(config.seed)
    if model.task_type == "token":
      return self._train_tokens(model, train, dev, config, verbose)
    result, examples = fit_task_model(model, model.preprocessor, model.task, train, dev, config, verbose=verbose)
    model.record_training(config, examples)
    return result

  @staticmethod
  def _train_tokens(model, train, dev, config, verbose):
    """A token task's training in place: train/tagging.py's recipe through train/recipe.py's fit, with the
    model's own windows and alignment (a TrainConfig's fields, the model's token settings)."""
    if not isinstance(config, TokenTrainConfig):
      fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)}
      config = TokenTrainConfig(**dict(fields, **model.token_settings))
    dev = [s for split in dev.values() for s in split] if isinstance(dev, dict) else list(dev or ())
    recipe = TokenRecipe(model.task, train, dev)
    recipe.prepare(model.preprocessor, config)
    result, _ = fit_recipe(recipe, model, config, verbose=verbose)
    model.record_training(config, recipe.num_train_examples)
    return result

  def save_task(self, name: str, out_dir: str, train_config=None, overwrite: bool = False) -> str:
    """Writes task `name` as an artifact (the task model's save_adapter)."""
    model = self[name]
    if train_config is not None:
      model.record_training(train_config, model.train_examples)
    return model.save_adapter(out_dir, overwrite=overwrite)

  def export(self, out_dir: str, tasks: Optional[List[str]] = None, overwrite: bool = False) -> str:
    """One SavedModel: a signature per task, plus `mixed` and `all` when there are several (serving/export.py).

    `out_dir` must be new or empty; `overwrite` lets it replace an earlier
    export (and nothing else: serving/signatures.py).
    """
    names = tasks or self.task_names
    return export_saved_model({n: self[n] for n in names}, out_dir, overwrite=overwrite, base=self.base.encoder)


def _rows(task_type: str, outputs: Dict[str, tf.Tensor]) -> list:
  """One batch's outputs of one task (AllTasks), one value per text, as the task model's predict gives them."""
  if task_type == "classification":
    return list(outputs["probabilities"].numpy())
  if task_type == "regression":
    return list(outputs["score"].numpy())
  words, tags = outputs["words"].numpy(), outputs["tags"].numpy()
  return [[(words[row, i].decode("utf-8"), tags[row, i].decode("utf-8")) for i in range(count)]
          for row, count in enumerate(outputs["num_words"].numpy())]
