"""Classification and regression task models that take raw strings: AdapterClassifier, AdapterRegressor.

    model = AdapterClassifier.from_pretrained("minilm-l6", num_classes=2)
    model.compile()                              # the paper's recipe
    model.fit(texts, labels, epochs=2)           # then predict / predict_labels / save_adapter / export

Both are networks/task_model.py's TaskModel (encoder -> pool -> dropout -> head) with models/base.py's
shared part; `adapter-keras train` builds and saves these very classes. Strings are tokenized once and
batched by train/inputs.py (length-grouped, padded per batch), the loss and metrics are
train/classification.py's, the SavedModel serving/export.py's.

Keras conventions: get_config returns the constructor's arguments (the encoder as its spec), so
from_config and tf_keras.models.clone_model rebuild the model on freshly loaded pre-trained weights
with a fresh method; the dtype policy is the global one when the model is built; the distribution
strategy is the one whose scope the model is built in (Keras's own rule, which `compile()` follows).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras.artifacts import ArtifactError, task_from_manifest
from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.models.base import (TaskModelBase, constructing, keras_name, loaded_encoder,
                                       method_and_config, recorded_config)
from adapter_keras.models.inputs import dataset_columns, is_text_input, split_texts, strings
from adapter_keras.models.keras3 import refuse_keras3_objects
from adapter_keras.networks import TaskModel
from adapter_keras.serving.export import export_saved_model
from adapter_keras.tasks.data import TextExamples
from adapter_keras.tasks.registry import TaskSpec, classification_task, regression_task
from adapter_keras.values import KERAS_PACKAGE
from adapter_keras.train.classification import ClassificationRecipe, compile_task_model
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.evaluation import predict_encoded
from adapter_keras.train.inputs import JIT_PAD_MULTIPLE, encode_examples, make_dataset

_RECIPE = TrainConfig()  # the command line's defaults, so both train alike unless told otherwise


def _checked_count(value, what: str, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
  return int(value)


class SequenceTaskModel(TaskModelBase, TaskModel):
  """What AdapterClassifier and AdapterRegressor share (the subclasses fix the task type)."""

  def __init__(self,
               encoder,
               num_outputs: int,
               adapter: Optional[Union[AdapterConfig, dict]] = AdapterConfig(),
               method: str = "adapter",
               pooling: Optional[str] = None,
               max_seq_length: int = _RECIPE.max_seq_length,
               labels: Optional[Sequence[str]] = None,
               is_pair: Optional[bool] = None,
               top_k: Optional[int] = None,
               dropout_rate: float = _RECIPE.dropout_rate,
               seed: int = _RECIPE.seed,
               method_config=None,
               task: Optional[Union[TaskSpec, dict]] = None,
               **kwargs):
    if isinstance(task, dict):
      task = TaskSpec.from_dict(task)
    if labels is not None:
      labels = tuple(str(n) for n in labels)
      if len(labels) != num_outputs or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be {num_outputs} distinct names (one per class), got {list(labels)}")
    method, settings = method_and_config(method, adapter, top_k, method_config)
    with constructing(encoder, seed):
      pretrained, settings = loaded_encoder(encoder, method, settings, seed, max_seq_length)
      super().__init__(pretrained.encoder, num_outputs=num_outputs, task_type=self.task_type,
                       pooling=pooling or pretrained.default_pooling, dropout_rate=dropout_rate, head_seed=seed,
                       **kwargs)
      self.labels = labels
      self.is_pair = is_pair
      self._task = task
      self._set_up(pretrained, method, settings, seed, max_seq_length, recorded_config(
          _RECIPE, pretrained, method, settings, max_seq_length=max_seq_length, seed=seed, pooling=self.pooling,
          dropout_rate=dropout_rate))

  @classmethod
  def for_run(cls, pretrained, task: TaskSpec, config: TrainConfig):
    """The model `adapter-keras train` trains for `task` (train/run.py: build_trainable_model)."""
    model = cls(pretrained, task=task, **cls.arguments_from_task(task), method=config.method,
                method_config=config.method_settings(), pooling=config.pooling, max_seq_length=config.max_seq_length,
                dropout_rate=config.dropout_rate, seed=config.seed, name=keras_name(task.name))
    model.record_training(config, 0)
    return model

  @property
  def task(self) -> TaskSpec:
    """The task this model is for (a command-line run's TaskSpec, or one made from the name and labels)."""
    if self._task is not None:
      return self._task
    if self.task_type == "regression":
      return regression_task(self.name, is_pair=bool(self.is_pair))
    return classification_task(self.name, self.labels, is_pair=bool(self.is_pair))

  # ---------------------------------------------------------------- Keras plumbing

  def call(self, inputs, training=None):
    if isinstance(inputs, (list, tuple)) and all(isinstance(t, (str, bytes)) for t in inputs):
      # A Python list holds texts; the preprocessor would read its items as the segments of one pair.
      inputs = tf.constant(strings(inputs))
    elif isinstance(inputs, tuple):
      inputs = list(inputs)  # (texts, texts_b): the preprocessor's two segments
    if not isinstance(inputs, dict):
      inputs = self.preprocessor(inputs)
    return super().call(inputs, training=training)

  def get_config(self):
    return dict(encoder=self.encoder_spec, **self._method_arguments(), pooling=self.pooling,
                max_seq_length=self.preprocessor.max_seq_length, labels=list(self.labels) if self.labels else None,
                is_pair=self.is_pair, dropout_rate=self.dropout_rate, seed=self.seed,
                task=self._task.to_dict() if self._task else None, name=self.name)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)

  # ---------------------------------------------------------------- fit / evaluate / predict

  def _compile_with(self, optimizer, **kwargs):
    compile_task_model(self, optimizer, **kwargs)

  def _examples(self, x, y=None, with_labels: bool = True) -> TextExamples:
    """Raw inputs (and labels) as TextExamples; labels are class ids (names are looked up)."""
    if isinstance(x, tf.data.Dataset):
      if y is not None:
        raise ValueError("give a dataset's labels inside it, as (text, label) elements, not as y")
      texts, texts_b, y = dataset_columns(x, with_labels)
      y = y if with_labels else None
    else:
      texts, texts_b = split_texts(x)
      if with_labels and y is None:
        raise ValueError("fit and evaluate need the labels: give y (class ids, label names or targets)")
    if not texts:
      raise ValueError("no examples: the inputs hold no text")
    if y is None:
      labels = np.zeros(len(texts), np.int32 if self.task_type == "classification" else np.float32)
    else:
      labels = self._label_ids(y)
      if len(labels) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(labels)} labels: give one label per text")
    examples = TextExamples(texts, labels, text_b=texts_b)
    if self.is_pair is not None and examples.is_pair != self.is_pair:
      raise ValueError(f"this model takes {'(texts, texts_b) pairs' if self.is_pair else 'single texts'}, "
                       f"got {'pairs' if examples.is_pair else 'single texts'}")
    return examples

  def _label_ids(self, y) -> np.ndarray:
    raise NotImplementedError  # each task type reads its own labels

  def _recipe_for(self, x, y, validation_data):
    train = self._examples(x, y)
    self.is_pair = train.is_pair
    dev = {}
    if validation_data is not None:
      if isinstance(validation_data, tuple) and len(validation_data) == 2:
        dev_examples = self._examples(*validation_data)
      elif isinstance(validation_data, tf.data.Dataset):
        dev_examples = self._examples(validation_data)
      else:
        raise ValueError("validation_data on raw inputs is (texts, labels), ((texts, texts_b), labels) or a "
                         "tf.data.Dataset of such elements")
      dev = {self.task.dev_splits[0]: dev_examples}
    return ClassificationRecipe(self.task, train, dev)

  def _dataset(self, encoded, batch_size: int):
    return make_dataset(encoded, batch_size,
                        pad_to_multiple=JIT_PAD_MULTIPLE if getattr(self, "jit_compile", False) else None)

  def evaluate(self, x=None, y=None, batch_size=None, callbacks=None, **kwargs):
    """Keras's evaluate (the loss and the compiled metrics); raw inputs are tokenized and batched first."""
    refuse_keras3_objects("evaluate", callbacks=callbacks)
    if not is_text_input(x):
      return super().evaluate(x, y, batch_size=batch_size, callbacks=callbacks, **kwargs)
    encoded = encode_examples(self.preprocessor, self._examples(x, y))
    return super().evaluate(self._dataset(encoded, batch_size or _RECIPE.batch_size), callbacks=callbacks,
                            **kwargs)

  def predict_step(self, data):
    return self._from_outputs(super().predict_step(data))

  def _from_outputs(self, outputs):
    raise NotImplementedError  # each task type says what predict returns

  def predict(self, x, batch_size=None, callbacks=None, **kwargs):
    """Probabilities (classification) or scores (regression), one row per input, in input order.

    Raw strings run in length-sorted batches (train/evaluation.py: predict_encoded)."""
    refuse_keras3_objects("predict", callbacks=callbacks)
    if not is_text_input(x):
      return super().predict(x, batch_size=batch_size, callbacks=callbacks, **kwargs)
    encoded = encode_examples(self.preprocessor, self._examples(x, with_labels=False))
    return predict_encoded(self, encoded, batch_size or _RECIPE.batch_size)

  # ---------------------------------------------------------------- artifacts, export

  @classmethod
  def arguments_from_task(cls, task: TaskSpec) -> dict:
    raise NotImplementedError  # each task type reads its own

  @classmethod
  def arguments_from_manifest(cls, manifest: dict, artifact_dir: str) -> dict:
    task = task_from_manifest(manifest)
    if task.task_type != cls.task_type:
      raise ArtifactError(f"artifact {artifact_dir} holds a {task.task_type} model, not a {cls.task_type} one: "
                          "load it with the matching class (or adapter_keras.load_adapter)")
    return dict(cls.arguments_from_task(task), task=task, pooling=manifest["pooling"])

  def export(self, out_dir: str, overwrite: bool = False, merge: bool = True) -> str:
    """A SavedModel that takes raw strings (serving/export.py): `serving_default(text[, text_b])`. `merge`: a
    method with a merge (LoRA, IA3) is folded into the base kernels in the graph (this model is left as it was)."""
    return export_saved_model({self.name: self}, out_dir, overwrite=overwrite, merge=merge)


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class AdapterClassifier(SequenceTaskModel):
  """A classifier on a pre-trained BERT with a tuning method (Houlsby adapters by default); raw strings in.

  Args:
    encoder: any spec `pretrained.load_encoder` accepts ("minilm-l6", a Hugging Face, TF Hub, TF1 or
      Model Garden directory, a TF Hub handle), or a loaded PretrainedEncoder (plain).
    num_classes: classes of the task.
    adapter: the adapters (AdapterConfig) of method "adapter".
    method: the tuning method (methods.get_method: adapter, full, top-k, layer-norm or a plugin's): which
      variables train; applied at construction, so summary() and count_params() show the split at once.
    pooling: "cls" or "mean" (None: the encoder's default).
    max_seq_length: tokens per example, special tokens included.
    labels: the class names `predict_labels` returns and `fit` accepts as labels ("0", "1", ... if None).
    is_pair: whether inputs are (texts, texts_b) pairs; None: the first fit decides.
    top_k: k of method "top-k".
    dropout_rate: dropout before the head.
    seed: the method's and the head's initialisers, dropout and the training order.
    method_config: the config (object or dict) of any other method.
    task: the TaskSpec (name, labels, metrics), as a command-line run has it; None: made from the name.
  """

  task_type = "classification"

  def __init__(self, encoder, num_classes: int = 2, labels: Optional[Sequence[str]] = None, **kwargs):
    task = kwargs.get("task")
    if isinstance(task, (TaskSpec, dict)):
      spec = TaskSpec.from_dict(task) if isinstance(task, dict) else task
      num_classes, labels = spec.num_outputs, labels or spec.label_names
    num_classes = _checked_count(num_classes, "num_classes", 2)
    super().__init__(encoder, num_classes, labels=labels or [str(i) for i in range(num_classes)], **kwargs)
    self.num_classes = num_classes

  @classmethod
  def from_pretrained(cls, encoder, num_classes: int = 2, adapter: Optional[AdapterConfig] = AdapterConfig(),
                      method: str = "adapter", pooling: Optional[str] = None, max_seq_length: int = 128,
                      labels: Optional[Sequence[str]] = None, **kwargs) -> "AdapterClassifier":
    """A classifier on `encoder`'s pre-trained weights, built, its trainable set chosen by `method`."""
    return cls(encoder, num_classes=num_classes, adapter=adapter, method=method, pooling=pooling,
               max_seq_length=max_seq_length, labels=labels, **kwargs)

  def get_config(self):
    return dict(super().get_config(), num_classes=self.num_classes)

  def _label_ids(self, y) -> np.ndarray:
    values = np.asarray(y).reshape(-1)
    if values.dtype.kind in "USO":  # label names
      names = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()]
      unknown = sorted(set(names) - set(self.labels))
      if unknown:
        raise ValueError(f"unknown label(s) {unknown[:5]}; this model's labels are {list(self.labels)}")
      return np.asarray([self.labels.index(n) for n in names], np.int32)
    if values.dtype.kind not in "iu" and not np.array_equal(values, np.round(values)):
      raise ValueError("classification labels must be class ids or label names")
    ids = values.astype(np.int32)
    if ids.size and (ids.min() < 0 or ids.max() >= self.num_classes):
      raise ValueError(f"class ids must be in [0, {self.num_classes}), got {int(ids.min())}..{int(ids.max())}")
    return ids

  def _from_outputs(self, outputs):
    return tf.nn.softmax(outputs, axis=-1)

  def predict_labels(self, x, batch_size=None) -> List[str]:
    """The most probable class's name for every input."""
    return [self.labels[i] for i in np.argmax(self.predict(x, batch_size=batch_size), axis=-1)]

  @classmethod
  def arguments_from_task(cls, task: TaskSpec) -> dict:
    return dict(num_classes=task.num_outputs, labels=list(task.label_names), is_pair=bool(task.is_pair))


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class AdapterRegressor(SequenceTaskModel):
  """A regressor (one score per input, like STS-B) on a pre-trained BERT with a tuning method; raw strings in.
  Arguments as AdapterClassifier's, without num_classes and labels."""

  task_type = "regression"

  def __init__(self, encoder, **kwargs):
    kwargs.pop("labels", None)  # a regressor has none; from_config passes the base's None through
    kwargs.pop("num_classes", None)
    super().__init__(encoder, 1, **kwargs)

  @classmethod
  def from_pretrained(cls, encoder, adapter: Optional[AdapterConfig] = AdapterConfig(),
                      method: str = "adapter", pooling: Optional[str] = None, max_seq_length: int = 128,
                      **kwargs) -> "AdapterRegressor":
    return cls(encoder, adapter=adapter, method=method, pooling=pooling, max_seq_length=max_seq_length,
               **kwargs)

  def _label_ids(self, y) -> np.ndarray:
    values = np.asarray(y, np.float32).reshape(-1)
    if not np.all(np.isfinite(values)):
      raise ValueError("regression targets must be finite numbers")
    return values

  def _from_outputs(self, outputs):
    return outputs[:, 0]

  @classmethod
  def arguments_from_task(cls, task: TaskSpec) -> dict:
    return dict(is_pair=bool(task.is_pair))
