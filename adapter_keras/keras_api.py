"""The Keras-native front door: an adapter model that takes raw strings, in three lines.

    model = AdapterClassifier.from_pretrained("minilm-l6", num_classes=2)
    model.compile()                              # the paper's recipe
    model.fit(texts, labels, epochs=2)           # then predict / predict_labels / save_adapter / export

`AdapterClassifier` and `AdapterRegressor` are TaskModels (models/task_model.py) that carry their
BertPreprocessor and their encoder's spec. Nothing here is a second implementation: strings are
tokenized once and batched by train/inputs.py (length-grouped, padded per batch, as the command line
does), `compile()` builds train/optim.py's optimizer and train/classification.py's loss and metrics,
the trainable set is methods.apply_method's, artifacts are artifacts.py's and the SavedModel is
serving/export.py's.

`AdapterSpanExtractor` is extractive QA (SQuAD v1.1) the same way, a SpanModel (models/span_model.py):

    qa = AdapterSpanExtractor.from_pretrained("minilm-l6")
    qa.compile()
    qa.fit((questions, contexts), answers)     # a {"text", "answer_start"} dict per question
    qa.predict((questions, contexts))          # answer strings; evaluate: exact match and F1

its windows are tasks/squad.py's SquadFeaturizer's, its loss, decoding and EM/F1 train/squad.py's
(compile_span_model, predict_answers, score_answers), its artifact the one `evaluate-squad` reads; the
serving SavedModel has no span head, so it has no `export`. `add_adapters` puts a user's own Model
Garden BertEncoderV2 behind adapters with pretrained/directory.py's strict copy.

Keras conventions: get_config returns the constructor's arguments (the encoder as its spec), so
from_config and tf_keras.models.clone_model rebuild the model on freshly loaded pre-trained weights
with new adapters; the dtype policy is the global one when the model is built; the distribution
strategy is the one whose scope the model is built in (Keras's own rule, which `compile()` follows).
"""
from __future__ import annotations

import dataclasses
import re
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras.artifacts import (ArtifactError, adapter_config_from_manifest, artifact_manifest,
                                     assign_weights, check_fingerprint, is_span_manifest, read_manifest,
                                     read_weights, resolve_artifact_dir, save_artifact, task_from_manifest)
from adapter_keras.config import AdapterConfig
from adapter_keras.encoder import AdapterBertEncoder, approximate_gelu, dummy_inputs
from adapter_keras.methods import apply_method, get_method, mark_only_adapters_trainable, parameter_report
from adapter_keras.models import SpanModel, TaskModel
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import base_fingerprint, check_max_seq_length, load_encoder
from adapter_keras.pretrained.directory import assign_strictly, model_garden_targets
from adapter_keras.serving.export import export_saved_model
from adapter_keras.serving.multitask import TaskEntry
from adapter_keras.tasks.data import TextExamples
from adapter_keras.tasks.registry import classification_task, regression_task
from adapter_keras.tasks.squad import SQUAD_TASK, SquadAnswer, SquadExample, SquadFeaturizer
from adapter_keras.train.classification import compile_task_model
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.evaluation import predict_encoded
from adapter_keras.train.inputs import JIT_PAD_MULTIPLE, encode_examples, make_dataset, steps_per_epoch
from adapter_keras.train.optim import MIXED_PRECISION_POLICIES, create_optimizer
from adapter_keras.train.squad import (EVAL_BATCH_SIZE, SquadTrainConfig, compile_span_model, make_span_dataset,
                                       predict_answers, predict_spans, score_answers)

__all__ = ["AdapterClassifier", "AdapterRegressor", "AdapterSpanExtractor", "add_adapters",
           "mark_only_adapters_trainable"]

_PACKAGE = "AdapterKeras"
# The recipe's defaults are the command line's (TrainConfig), so both train alike unless told otherwise.
_RECIPE = TrainConfig()
_SQUAD_RECIPE = SquadTrainConfig()  # and train-squad's window and decoding settings
# What TensorFlow accepts as a name scope, hence as a Keras model's name.
_KERAS_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\-]*")

def _is_text_input(x) -> bool:
  """Whether `x` holds raw strings (which this module tokenizes) rather than encoder features
  (dicts of ids, which go to Keras unchanged, so that train/evaluation.py's helpers keep working)."""
  if isinstance(x, tf.data.Dataset):
    spec = x.element_spec
    first = spec[0] if isinstance(spec, tuple) else spec
    return not isinstance(first, dict)
  return not isinstance(x, dict)


def _strings(values) -> List[str]:
  values = np.asarray(values, dtype=object).reshape(-1)
  texts = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values.tolist()]
  for text in texts:
    if not isinstance(text, str):
      raise TypeError(f"texts must be strings, got {type(text).__name__} {text!r}")
  return texts


def _is_pair_input(x) -> bool:
  # A tuple of two sequences is (texts, texts_b); a tuple of strings is just texts.
  return (isinstance(x, tuple) and len(x) == 2
          and all(not isinstance(part, (str, bytes)) and hasattr(part, "__len__") for part in x))


def _split_texts(x):
  """(texts, texts_b or None) of a list, a (texts, texts_b) pair, or one string."""
  if isinstance(x, (str, bytes)):
    return _strings([x]), None
  if _is_pair_input(x):
    return _strings(x[0]), _strings(x[1])
  return _strings(x), None


def _dataset_columns(dataset: tf.data.Dataset, with_labels: bool):
  """(texts, texts_b, labels) of a dataset of strings, batched or not, read once (fit tokenizes every
  example once). With labels (fit, evaluate) its elements are (text, label) or ((text, text_b), label);
  without (predict) text or (text, text_b), and a numeric second part is a label, left out."""
  spec = dataset.element_spec
  is_two = isinstance(spec, tuple) and len(spec) == 2
  if with_labels and not is_two:
    raise ValueError("a dataset to train or evaluate on holds (text, label) or ((text, text_b), label) elements")
  has_labels = is_two and (with_labels or isinstance(spec[0], tuple) or spec[1].dtype != tf.string)
  texts, texts_b, labels = [], [], []
  for element in dataset.as_numpy_iterator():
    x, y = element if has_labels else (element, None)
    if isinstance(x, tuple):
      texts += _strings(x[0])
      texts_b += _strings(x[1])
    else:
      texts += _strings(x)
    if y is not None:
      labels += np.asarray(y).reshape(-1).tolist()
  return texts, (texts_b or None), (labels if has_labels else None)


def _mixed_precision_of(layer) -> Optional[str]:
  """The train/optim.py name of the layer's mixed policy (None: float32)."""
  for name, policy in MIXED_PRECISION_POLICIES.items():
    if layer.dtype_policy.name == policy:
      return name
  return None


def _pretrained_encoder(encoder, adapter, method: str, max_seq_length: int, seed: int):
  """(the loaded PretrainedEncoder, the AdapterConfig or None) of a front-door model's arguments."""
  if not isinstance(encoder, str):
    raise TypeError(f"encoder must be an encoder spec (a name such as 'minilm-l6' or a directory; see "
                    f"pretrained.load_encoder), got {type(encoder).__name__}; to put adapters into a "
                    "BertEncoderV2 object use adapter_keras.add_adapters")
  if isinstance(adapter, dict):
    adapter = AdapterConfig.from_dict(adapter)
  if adapter is not None and not isinstance(adapter, AdapterConfig):
    raise TypeError(f"adapter must be an AdapterConfig or None, got {type(adapter).__name__}")
  tuning = get_method(method)
  if tuning.uses_adapters and adapter is None:
    raise ValueError(f"method {method!r} trains adapters: give an AdapterConfig (adapter=None is for "
                     "methods without adapters: full, top-k, layer-norm)")
  pretrained = load_encoder(encoder, adapter if tuning.uses_adapters else None, adapter_seed=seed)
  check_max_seq_length(max_seq_length, pretrained.config)
  return pretrained, adapter


class _FrontDoor:
  """What every front-door model shares, whatever its head: the encoder spec and its preprocessor, the
  method applied at construction, the deferred recipe of `compile()`, artifacts and the refused `save`.

  A mixin before the Keras model class (TaskModel, SpanModel); each subclass says how the recipe
  compiles it (`_compile_with`), what its artifact records (`task_spec`, `_manifest_extras`) and
  which constructor arguments an artifact gives back (`_arguments_from_manifest`).
  """

  def _set_up(self, pretrained, encoder: str, adapter, method: str, top_k, seed: int, max_seq_length: int,
              train_config: TrainConfig):
    self.encoder_spec = encoder
    self.adapter_config = adapter
    self.method = method
    self.top_k = top_k
    self.seed = seed
    self.bert_config = pretrained.config
    self.preprocessor = BertPreprocessor(pretrained.vocab_file, pretrained.lower_case, max_seq_length,
                                         name="preprocessor")
    # Before any training: an artifact is tied to the base as it was loaded (method "full" changes it).
    self.base_fingerprint = base_fingerprint(pretrained.encoder)
    self.build_with_dummy_inputs()
    apply_method(self, method, top_k)
    self._recipe = None  # the deferred recipe of a no-argument compile(): fit knows the step count
    # What save_adapter records as the run (manifest train_config, train_examples); fit adds its recipe.
    self._train_config = train_config
    self.train_examples = 0

  def save(self, filepath, *args, **kwargs):
    raise NotImplementedError(
        f"{type(self).__name__} is not saved as a whole Keras model: that would copy the frozen base into "
        "every file and could not check it against the base on loading. Use save_adapter(dir) (the trained "
        f"variables only; {type(self).__name__}.load_adapter(dir, encoder=...) reloads them bit for bit)"
        + self._save_alternative)

  _save_alternative = " or export(dir) (a SavedModel that takes raw strings)"

  # ---------------------------------------------------------------- compile / fit

  _fit_batch_size = _RECIPE.batch_size

  def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
          validation_data=None, shuffle=True, initial_epoch=0, **kwargs):
    """Keras's fit. Raw strings (texts, (texts, texts_b) pairs, (questions, contexts) for spans, or a
    tf.data.Dataset of them with their labels) are encoded once here (`_fit_units`) and batched
    (`_dataset`: by length, each batch padded to its longest example); validation_data alike.

    After a no-argument compile() every fit makes the recipe's optimizer anew, its schedule spanning
    that fit's steps. With `shuffle` every epoch draws a new order from the model's seed.
    """
    if not _is_text_input(x):
      return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                         validation_data=validation_data, shuffle=shuffle, initial_epoch=initial_epoch,
                         **kwargs)
    batch_size = batch_size or self._fit_batch_size
    units, num_examples = self._fit_units(x, y)
    if isinstance(validation_data, tuple) and _is_text_input(validation_data[0]):
      validation_data = self._dataset(self._fit_units(*validation_data)[0], batch_size)
    elif isinstance(validation_data, tf.data.Dataset) and _is_text_input(validation_data):
      validation_data = self._dataset(self._fit_units(validation_data)[0], batch_size)
    self._prepare_fit(len(units), batch_size, epochs, initial_epoch)
    self.train_examples = num_examples
    return super().fit(self._dataset(units, batch_size, shuffle=shuffle, seed=self.seed), epochs=epochs,
                       verbose=verbose, callbacks=callbacks, validation_data=validation_data,
                       initial_epoch=initial_epoch, **kwargs)

  def _fit_units(self, x, y=None):
    """(what fit batches, the number of examples it came from)."""
    raise NotImplementedError  # each head encodes its own inputs

  def _dataset(self, units, batch_size: int, shuffle: bool = False, seed: int = 0):
    raise NotImplementedError  # each head batches its own units

  def compile(self, optimizer=None, loss=None, metrics=None, *, learning_rate: Optional[float] = None,
              warmup_fraction: Optional[float] = None, **kwargs):
    """With no optimizer, loss or metrics: the paper's recipe, Adam with a linear warm-up over the
    first `warmup_fraction` of the steps and linear decay to 0 at the end of `fit`, and the task's
    loss and metrics (train/classification.py; train/squad.py for spans). Otherwise Keras's compile."""
    if optimizer is None and loss is None and metrics is None:
      lr = _RECIPE.learning_rate if learning_rate is None else learning_rate
      warmup = _RECIPE.warmup_fraction if warmup_fraction is None else warmup_fraction
      TrainConfig(learning_rate=lr, warmup_fraction=warmup)  # refuses a rate or fraction no run could use
      # One step stands in until fit knows the step count, so that evaluate works right away.
      self._compile_recipe(lr, warmup, 1, kwargs)
      self._recipe = (lr, warmup, kwargs)
      return
    if learning_rate is not None or warmup_fraction is not None:
      raise ValueError("learning_rate and warmup_fraction set the recipe's optimizer; give them without "
                       "an optimizer, or put them into your own optimizer")
    self._recipe = None
    super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

  def _compile_recipe(self, learning_rate, warmup_fraction, total_steps, kwargs):
    with self.distribute_strategy.scope():
      optimizer = create_optimizer(learning_rate, total_steps, warmup_fraction,
                                   mixed_precision=_mixed_precision_of(self.encoder))
      self._compile_with(optimizer, kwargs)

  def _compile_with(self, optimizer, kwargs):
    raise NotImplementedError  # each head has its own loss and metrics

  def _prepare_fit(self, num_batched: int, batch_size: int, epochs: int, initial_epoch: int):
    """Before a fit on `num_batched` examples (or windows): after a no-argument compile() the recipe's
    optimizer anew, its schedule spanning this fit's steps; and the run save_adapter records."""
    run_epochs = max(1, epochs - initial_epoch)
    recorded = dict(epochs=run_epochs, batch_size=batch_size)
    if self._recipe is not None:
      learning_rate, warmup, compile_kwargs = self._recipe
      self._compile_recipe(learning_rate, warmup, steps_per_epoch(num_batched, batch_size) * run_epochs,
                           compile_kwargs)
      recorded.update(learning_rate=learning_rate, warmup_fraction=warmup)
    self._train_config = dataclasses.replace(self._train_config, **recorded)

  # ---------------------------------------------------------------- reports and artifacts

  def parameter_report(self):
    """methods.parameter_report: base, adapter, LayerNorm and head parameters, and what trains."""
    return parameter_report(self)

  def task_spec(self):
    raise NotImplementedError  # each task type is its own TaskSpec

  def _manifest_extras(self) -> dict:
    return {}

  def save_adapter(self, out_dir: str) -> str:
    """An adapter_keras artifact (artifacts.py): the trained variables only, tied to this base's
    fingerprint; `load_adapter` and the command line's evaluate/export read it."""
    manifest = artifact_manifest(self.task_spec(), self._train_config, self, self.preprocessor,
                                 self.bert_config, self.base_fingerprint, self.train_examples)
    return save_artifact(out_dir, self, dict(manifest, **self._manifest_extras()))

  @classmethod
  def load_adapter(cls, artifact_dir: str, encoder: Optional[str] = None, **kwargs):
    """The model an artifact holds, rebuilt on `encoder` (default: the spec it was trained with).

    Refuses (ArtifactError) an artifact of another task type, an edited one, and a base encoder
    whose fingerprint differs from the one it was trained on. `kwargs` go to the constructor (name).
    """
    artifact_dir = resolve_artifact_dir(artifact_dir)
    manifest = read_manifest(artifact_dir)
    tensors = read_weights(artifact_dir, manifest)
    arguments, name = cls._arguments_from_manifest(manifest, artifact_dir)
    encoder = encoder or manifest["encoder"]["spec"]
    if name and _KERAS_NAME.fullmatch(name):  # the task keeps its name through save_adapter / export
      kwargs.setdefault("name", name)
    model = cls(encoder, adapter=adapter_config_from_manifest(manifest), method=manifest["method"],
                max_seq_length=manifest["tokenizer"]["max_seq_length"], top_k=manifest.get("top_k"),
                dropout_rate=manifest.get("dropout_rate", _RECIPE.dropout_rate), **arguments, **kwargs)
    check_fingerprint(manifest, model.base_fingerprint, encoder, artifact_dir)
    if manifest["tokenizer"]["lower_case"] != model.preprocessor.lower_case:
      raise ArtifactError(f"artifact {artifact_dir} was trained with lower_case="
                          f"{manifest['tokenizer']['lower_case']}, encoder {encoder!r} tokenizes with "
                          f"lower_case={model.preprocessor.lower_case}")
    assign_weights(model, tensors, artifact_dir)
    model.train_examples = int(manifest.get("train_examples") or 0)
    return model

  @classmethod
  def _arguments_from_manifest(cls, manifest: dict, artifact_dir: str):
    """(constructor arguments of this task type, the task's name or None); refuses another task type."""
    raise NotImplementedError


class _AdapterTaskModel(_FrontDoor, TaskModel):
  """What AdapterClassifier and AdapterRegressor share (the subclasses fix the task type)."""

  task_type_of_class = "classification"

  def __init__(self,
               encoder: str,
               num_outputs: int,
               adapter: Optional[Union[AdapterConfig, dict]] = AdapterConfig(),
               method: str = "adapter",
               pooling: Optional[str] = None,
               max_seq_length: int = 128,
               labels: Optional[Sequence[str]] = None,
               is_pair: Optional[bool] = None,
               top_k: Optional[int] = None,
               dropout_rate: float = _RECIPE.dropout_rate,
               seed: int = _RECIPE.seed,
               **kwargs):
    if labels is not None:
      labels = tuple(str(n) for n in labels)
      if len(labels) != num_outputs or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be {num_outputs} distinct names, got {list(labels)}")
    pretrained, adapter = _pretrained_encoder(encoder, adapter, method, max_seq_length, seed)
    super().__init__(pretrained.encoder, num_outputs=num_outputs, task_type=self.task_type_of_class,
                     pooling=pooling or pretrained.default_pooling, dropout_rate=dropout_rate,
                     head_seed=seed, **kwargs)
    self.labels = labels
    self.is_pair = is_pair
    self._set_up(pretrained, encoder, adapter, method, top_k, seed, max_seq_length, dataclasses.replace(
        _RECIPE, encoder=encoder, method=method, top_k=top_k, adapter=adapter or _RECIPE.adapter,
        max_seq_length=max_seq_length, seed=seed, pooling=self.pooling, dropout_rate=dropout_rate))

  # ---------------------------------------------------------------- Keras plumbing

  def call(self, inputs, training=None):
    if isinstance(inputs, (list, tuple)) and all(isinstance(t, (str, bytes)) for t in inputs):
      # A Python list holds texts; the preprocessor would read its items as the segments of one pair.
      inputs = tf.constant(_strings(inputs))
    elif isinstance(inputs, tuple):
      inputs = list(inputs)  # (texts, texts_b): the preprocessor's two segments
    if not isinstance(inputs, dict):
      inputs = self.preprocessor(inputs)
    return super().call(inputs, training=training)

  def get_config(self):
    return dict(encoder=self.encoder_spec, adapter=self.adapter_config.to_dict() if self.adapter_config else None,
                method=self.method, pooling=self.pooling, max_seq_length=self.preprocessor.max_seq_length,
                labels=list(self.labels) if self.labels else None, is_pair=self.is_pair, top_k=self.top_k,
                dropout_rate=self.dropout_rate, seed=self.seed, name=self.name)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)

  # ---------------------------------------------------------------- fit / evaluate / predict

  def _compile_with(self, optimizer, kwargs):
    compile_task_model(self, optimizer, **kwargs)

  def _examples(self, x, y=None, with_labels: bool = True) -> TextExamples:
    """Raw inputs (and labels) as TextExamples; labels are class ids (names are looked up)."""
    if isinstance(x, tf.data.Dataset):
      if y is not None:
        raise ValueError("give a dataset's labels inside it, as (text, label) elements, not as y")
      texts, texts_b, y = _dataset_columns(x, with_labels)
      y = y if with_labels else None
    else:
      texts, texts_b = _split_texts(x)
      if with_labels and y is None:
        raise ValueError("fit and evaluate need the labels: give y (class ids, label names or targets)")
    if y is None:
      labels = np.zeros(len(texts), np.int32 if self.task_type == "classification" else np.float32)
    else:
      labels = self._label_ids(y)
    if not texts:
      raise ValueError("no examples: the inputs hold no text")
    return TextExamples(texts, labels, text_b=texts_b)

  def _label_ids(self, y) -> np.ndarray:
    raise NotImplementedError  # each task type reads its own labels

  def _encode(self, x, y=None, with_labels: bool = True):
    examples = self._examples(x, y, with_labels)
    if self.is_pair is not None and examples.is_pair != self.is_pair:
      raise ValueError(f"this model takes {'(texts, texts_b) pairs' if self.is_pair else 'single texts'}, "
                       f"got {'pairs' if examples.is_pair else 'single texts'}")
    return encode_examples(self.preprocessor, examples), examples.is_pair

  def _dataset(self, encoded, batch_size: int, shuffle: bool = False, seed: int = 0):
    return make_dataset(encoded, batch_size, shuffle=shuffle, seed=seed, bucket_by_length=shuffle,
                        pad_to_multiple=JIT_PAD_MULTIPLE if getattr(self, "jit_compile", False) else None)

  def _fit_units(self, x, y=None):
    """Training texts as encoded examples, tokenized once; each is one batched unit."""
    encoded, self.is_pair = self._encode(x, y)
    return encoded, len(encoded)

  def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
    if not _is_text_input(x):
      return super().evaluate(x, y, batch_size=batch_size, **kwargs)
    encoded, _ = self._encode(x, y)
    return super().evaluate(self._dataset(encoded, batch_size or _RECIPE.batch_size), **kwargs)

  def predict_step(self, data):
    return self._from_outputs(super().predict_step(data))

  def _from_outputs(self, outputs):
    raise NotImplementedError  # each task type says what predict returns

  def predict(self, x, batch_size=None, **kwargs):
    """Probabilities (classification) or scores (regression), one row per input, in input order.

    Raw strings run in length-sorted batches (train/evaluation.py: predict_encoded)."""
    if not _is_text_input(x):
      return super().predict(x, batch_size=batch_size, **kwargs)
    encoded, _ = self._encode(x, with_labels=False)
    return predict_encoded(self, encoded, batch_size or _RECIPE.batch_size)

  # ---------------------------------------------------------------- artifacts, export

  @classmethod
  def _arguments_from_manifest(cls, manifest: dict, artifact_dir: str):
    task = task_from_manifest(manifest)
    if task.task_type != cls.task_type_of_class:
      raise ArtifactError(f"artifact {artifact_dir} holds a {task.task_type} model, not a "
                          f"{cls.task_type_of_class} one: load it with the matching class")
    return dict(cls._task_arguments(task), pooling=manifest["pooling"], is_pair=bool(task.is_pair)), task.name

  @classmethod
  def _task_arguments(cls, task) -> dict:
    raise NotImplementedError  # each task type reads its own

  def export(self, out_dir: str, overwrite: bool = False) -> str:
    """A SavedModel that takes raw strings (serving/export.py): `serving_default(text[, text_b])`."""
    entry = TaskEntry(self.name, self.task_spec(), self, self.preprocessor, self.adapter_config)
    return export_saved_model({self.name: entry}, out_dir, overwrite=overwrite)


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class AdapterClassifier(_AdapterTaskModel):
  """A classifier on a pre-trained BERT with adapters that takes raw strings.

  Args:
    encoder: any spec `pretrained.load_encoder` accepts ("minilm-l6", a Hugging Face, TF Hub, TF1 or
      Model Garden directory, a TF Hub handle).
    num_classes: classes of the task.
    adapter: the adapters (AdapterConfig; None for methods without adapters).
    method: the tuning method (methods.METHODS): which variables train; applied at construction, so
      summary() and count_params() show the trained split at once.
    pooling: "cls" or "mean" (None: the encoder's default).
    max_seq_length: tokens per example, special tokens included.
    labels: the class names `predict_labels` returns and `fit` accepts as labels ("0", "1", ... if None).
    is_pair: whether inputs are (texts, texts_b) pairs; None: the first fit decides.
    top_k: k of method "top-k".
    dropout_rate: dropout before the head.
    seed: the adapters' and the head's initialisers and the training order.
  """

  task_type_of_class = "classification"

  def __init__(self, encoder: str, num_classes: int = 2, labels: Optional[Sequence[str]] = None, **kwargs):
    super().__init__(encoder, num_classes, labels=labels or [str(i) for i in range(num_classes)], **kwargs)
    self.num_classes = num_classes

  @classmethod
  def from_pretrained(cls, encoder: str, num_classes: int = 2, adapter: Optional[AdapterConfig] = AdapterConfig(),
                      method: str = "adapter", pooling: Optional[str] = None, max_seq_length: int = 128,
                      labels: Optional[Sequence[str]] = None, **kwargs) -> "AdapterClassifier":
    """A classifier on `encoder`'s pre-trained weights, built, its trainable set chosen by `method`."""
    return cls(encoder, num_classes=num_classes, adapter=adapter, method=method, pooling=pooling,
               max_seq_length=max_seq_length, labels=labels, **kwargs)

  def get_config(self):
    config = super().get_config()
    config["num_classes"] = self.num_classes
    return config

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

  def task_spec(self):
    return classification_task(self.name, self.labels, is_pair=bool(self.is_pair))

  @classmethod
  def _task_arguments(cls, task) -> dict:
    return dict(num_classes=task.num_outputs, labels=list(task.label_names))


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class AdapterRegressor(_AdapterTaskModel):
  """A regressor (one score per input, like STS-B) on a pre-trained BERT with adapters; raw strings in.
  Arguments as AdapterClassifier's, without num_classes and labels."""

  task_type_of_class = "regression"

  def __init__(self, encoder: str, **kwargs):
    kwargs.pop("labels", None)  # a regressor has none; from_config passes the base's None through
    super().__init__(encoder, 1, **kwargs)

  @classmethod
  def from_pretrained(cls, encoder: str, adapter: Optional[AdapterConfig] = AdapterConfig(),
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

  def task_spec(self):
    return regression_task(self.name, is_pair=bool(self.is_pair))

  @classmethod
  def _task_arguments(cls, task) -> dict:
    return {}


def _squad_answers(answer, context: str, index: int) -> Tuple[SquadAnswer, ...]:
  """One question's answers: {"text", "answer_start"}, a list of such dicts (SQuAD dev has several), or
  the Hugging Face `squad` form {"text": [...], "answer_start": [...]}; each checked against its context."""
  if isinstance(answer, dict):
    texts, starts = answer.get("text"), answer.get("answer_start")
    if isinstance(texts, (str, bytes)):
      answer = [dict(text=texts, answer_start=starts)]
    elif texts is not None and starts is not None and hasattr(texts, "__len__") and hasattr(starts, "__len__"):
      answer = [dict(text=t, answer_start=s) for t, s in zip(texts, starts)]
  if not isinstance(answer, (list, tuple)) or not all(isinstance(a, dict) for a in answer):
    raise ValueError(f"answer {index} must be a dict {{'text': str, 'answer_start': int}} or a list of such "
                     f"dicts, got {type(answer).__name__}")
  answers = []
  for a in answer:
    if set(a) != {"text", "answer_start"}:
      raise ValueError(f"answer {index} must have exactly the keys 'text' and 'answer_start', got {sorted(a)}")
    text = a["text"].decode("utf-8") if isinstance(a["text"], bytes) else a["text"]
    start = a["answer_start"]
    if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, (int, np.integer)):
      raise ValueError(f"answer {index}: 'text' must be a string and 'answer_start' an integer, got "
                       f"{a['text']!r} and {start!r}")
    start = int(start)
    if not text or start < 0 or context[start:start + len(text)] != text:
      raise ValueError(f"answer {index}: {text!r} is not at character {start} of its context (which reads "
                       f"{context[max(start, 0):max(start, 0) + len(text)]!r} there); answer_start is the "
                       "offset of the answer's first character in the context")
    answers.append(SquadAnswer(text, start))
  return tuple(answers)


def _span_dataset_columns(dataset: tf.data.Dataset, with_answers: bool):
  """(questions, contexts, answers or None) of a dataset of ((question, context), answer) elements, or
  of (question, context) elements for predict; batched or not, read once."""
  spec = dataset.element_spec
  has_answers = isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], tuple)
  if not (has_answers or (isinstance(spec, tuple) and len(spec) == 2)) or (with_answers and not has_answers):
    raise ValueError("a dataset for AdapterSpanExtractor holds ((question, context), answer) elements, the "
                     "answer a {'text', 'answer_start'} dict (predict also takes (question, context))")
  questions, contexts, answers = [], [], []
  for element in dataset.as_numpy_iterator():
    (question, context), answer = element if has_answers else (element, None)
    questions += _strings(question)
    contexts += _strings(context)
    if with_answers:
      if not isinstance(answer, dict):
        raise ValueError("a dataset's answers must be {'text', 'answer_start'} dicts")
      starts = np.asarray(answer.get("answer_start")).reshape(-1).tolist()
      answers += [dict(text=t, answer_start=s) for t, s in zip(_strings(answer.get("text")), starts)]
  return questions, contexts, (answers if with_answers else None)


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class AdapterSpanExtractor(_FrontDoor, SpanModel):
  """Extractive question answering (SQuAD v1.1) on a pre-trained BERT with adapters; raw strings in,
  answer strings out.

  Questions and contexts are cut into train-squad's windows (tasks/squad.py: SquadFeaturizer, `doc_stride`
  tokens apart), once per fit/evaluate/predict call; a question's answer is the best span over its
  windows (tasks/squad.py: decode_spans) and evaluate scores it with the official SQuAD v1.1 exact match
  and F1. The model is a SpanModel, so its artifact is the one `adapter-keras evaluate-squad` reads.

  Args:
    encoder, adapter, method, top_k, dropout_rate, seed: as AdapterClassifier's.
    max_seq_length: tokens per window, [CLS]/[SEP] and the question included.
    doc_stride: tokens between the starts of a context's windows.
    max_query_length: question tokens kept.
    max_answer_length: longest answer, in tokens.
    n_best_size: start and end candidates per window the decoding considers.
  """

  def __init__(self,
               encoder: str,
               adapter: Optional[Union[AdapterConfig, dict]] = AdapterConfig(),
               method: str = "adapter",
               max_seq_length: int = _SQUAD_RECIPE.max_seq_length,
               doc_stride: int = _SQUAD_RECIPE.doc_stride,
               max_query_length: int = _SQUAD_RECIPE.max_query_length,
               max_answer_length: int = _SQUAD_RECIPE.max_answer_length,
               n_best_size: int = _SQUAD_RECIPE.n_best_size,
               top_k: Optional[int] = None,
               dropout_rate: float = _SQUAD_RECIPE.dropout_rate,
               seed: int = _SQUAD_RECIPE.seed,
               **kwargs):
    # Checked before the encoder loads: SquadTrainConfig refuses window settings no run could use.
    train_config = dataclasses.replace(
        _SQUAD_RECIPE, encoder=encoder if isinstance(encoder, str) else "", method=method, top_k=top_k,
        adapter=adapter if isinstance(adapter, AdapterConfig) else _SQUAD_RECIPE.adapter,
        max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length,
        max_answer_length=max_answer_length, n_best_size=n_best_size, seed=seed, dropout_rate=dropout_rate)
    pretrained, adapter = _pretrained_encoder(encoder, adapter, method, max_seq_length, seed)
    super().__init__(pretrained.encoder, dropout_rate=dropout_rate, head_seed=seed, **kwargs)
    self._set_up(pretrained, encoder, adapter, method, top_k, seed, max_seq_length,
                 dataclasses.replace(train_config, adapter=adapter or _SQUAD_RECIPE.adapter))
    self.featurizer = SquadFeaturizer.from_preprocessor(self.preprocessor, doc_stride, max_query_length)

  @classmethod
  def from_pretrained(cls, encoder: str, adapter: Optional[AdapterConfig] = AdapterConfig(),
                      method: str = "adapter", max_seq_length: int = _SQUAD_RECIPE.max_seq_length,
                      doc_stride: int = _SQUAD_RECIPE.doc_stride,
                      max_query_length: int = _SQUAD_RECIPE.max_query_length,
                      **kwargs) -> "AdapterSpanExtractor":
    """A span extractor on `encoder`'s pre-trained weights, built, its trainable set chosen by `method`."""
    return cls(encoder, adapter=adapter, method=method, max_seq_length=max_seq_length, doc_stride=doc_stride,
               max_query_length=max_query_length, **kwargs)

  @property
  def squad_settings(self) -> dict:
    """doc_stride, max_query_length, max_answer_length, n_best_size (what the artifact records)."""
    return self._train_config.squad_settings()

  # ---------------------------------------------------------------- Keras plumbing

  def call(self, inputs, training=None):
    if not isinstance(inputs, dict):
      raise TypeError("an AdapterSpanExtractor is called on windows (a dict of input_word_ids, input_mask, "
                      "input_type_ids); give (questions, contexts) to predict, which cuts the windows")
    return super().call(inputs, training=training)

  def get_config(self):
    return dict(encoder=self.encoder_spec, adapter=self.adapter_config.to_dict() if self.adapter_config else None,
                method=self.method, max_seq_length=self.preprocessor.max_seq_length, **self.squad_settings,
                top_k=self.top_k, dropout_rate=self.dropout_rate, seed=self.seed, name=self.name)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)

  # ---------------------------------------------------------------- fit / evaluate / predict

  def _compile_with(self, optimizer, kwargs):
    compile_span_model(self, optimizer, **kwargs)

  def _examples(self, x, y=None, with_answers: bool = True) -> List[SquadExample]:
    """(questions, contexts) and answers as SquadExamples, their ids the input positions."""
    if isinstance(x, tf.data.Dataset):
      if y is not None:
        raise ValueError("give a dataset's answers inside it, as ((question, context), answer) elements, "
                         "not as y")
      questions, contexts, y = _span_dataset_columns(x, with_answers)
    else:
      if isinstance(x, tuple) and len(x) == 2 and all(isinstance(part, (str, bytes)) for part in x):
        x = ([x[0]], [x[1]])  # one question and its context
        y = [y] if isinstance(y, dict) else y
      if not _is_pair_input(x):
        raise ValueError("give the questions and their contexts as a pair (questions, contexts) of two "
                         "equally long lists")
      questions, contexts = _strings(x[0]), _strings(x[1])
      if with_answers and y is None:
        raise ValueError("fit and evaluate need the answers: give y, one {'text': str, 'answer_start': int} "
                         "dict (or a list of them) per question")
    if len(questions) != len(contexts):
      raise ValueError(f"got {len(questions)} questions but {len(contexts)} contexts: give one context per "
                       "question")
    if not questions:
      raise ValueError("no examples: the inputs hold no question")
    if with_answers:
      y = list(y)
      if len(y) != len(questions):
        raise ValueError(f"got {len(y)} answers for {len(questions)} questions: give one answer (or list of "
                         "answers) per question")
      answers = [_squad_answers(a, c, i) for i, (a, c) in enumerate(zip(y, contexts))]
      empty = [i for i, a in enumerate(answers) if not a]
      if empty:
        raise ValueError(f"question {empty[0]} has no answer: give one {{'text', 'answer_start'}} at least")
    else:
      answers = [()] * len(questions)
    return [SquadExample(str(i), q, c, a) for i, (q, c, a) in enumerate(zip(questions, contexts, answers))]

  _fit_batch_size = _SQUAD_RECIPE.batch_size

  def _fit_units(self, x, y=None):
    """(questions, contexts) with answers, or a dataset of them, cut into windows once: the batched
    units. Windows without the answer are trained to point at [CLS]; of several answers per question
    the first is trained on, as train-squad does."""
    examples = self._examples(x, y)
    return self.featurizer.featurize(examples), len(examples)

  def _dataset(self, features, batch_size: int, shuffle: bool = False, seed: int = 0):
    return make_span_dataset(features, batch_size, shuffle=shuffle, seed=seed)

  def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
    """The official SQuAD v1.1 {"exact_match", "f1"}, as fractions in [0, 1] like train-squad's
    metrics.json, each question scored against the best of its answers. Window features (a dataset of
    dicts) go to Keras's evaluate (the span loss)."""
    if not _is_text_input(x):
      return super().evaluate(x, y, batch_size=batch_size, **kwargs)
    examples = self._examples(x, y)
    return score_answers(examples, self._answers(examples, batch_size))

  def predict(self, x, batch_size=None, **kwargs):
    """The best answer string for every question of (questions, contexts) (or a dataset of
    (question, context)), in input order; "" where no window holds a valid span."""
    if not _is_text_input(x):
      return super().predict(x, batch_size=batch_size, **kwargs)
    examples = self._examples(x, with_answers=False)
    answers = self._answers(examples, batch_size)
    return [answers[e.id] for e in examples]

  def _answers(self, examples: List[SquadExample], batch_size=None):
    settings = self.squad_settings
    return predict_answers(self, examples, self.featurizer.featurize(examples), settings["max_answer_length"],
                           settings["n_best_size"], batch_size or EVAL_BATCH_SIZE)

  def predict_logits(self, x, batch_size=None) -> dict:
    """Per window of (questions, contexts): {"start_logits", "end_logits"} ([windows, max_seq_length])
    and "question_index" ([windows], the window's question)."""
    features = self.featurizer.featurize(self._examples(x, with_answers=False))
    start, end = predict_spans(self, features, batch_size or EVAL_BATCH_SIZE)
    return dict(start_logits=start, end_logits=end, question_index=features.example_index)

  # ---------------------------------------------------------------- artifacts

  def task_spec(self):
    return SQUAD_TASK

  def _manifest_extras(self) -> dict:
    return dict(squad=self.squad_settings)

  @classmethod
  def _arguments_from_manifest(cls, manifest: dict, artifact_dir: str):
    if not is_span_manifest(manifest):
      raise ArtifactError(f"artifact {artifact_dir} holds a {manifest['task'].get('task_type')} model, not a "
                          "span one: load it with AdapterClassifier or AdapterRegressor")
    settings = manifest.get("squad")
    if not isinstance(settings, dict):
      raise ArtifactError(f"artifact {artifact_dir} is a span model without its SQuAD window settings "
                          "(manifest 'squad')")
    return dict(settings), None

  _save_alternative = ""

  def export(self, out_dir: str, overwrite: bool = False) -> str:
    raise ValueError("the serving SavedModel (serving/export.py) serves classification and regression heads; "
                     "it cannot cut contexts into windows or decode spans. Save the span extractor with "
                     "save_adapter(dir) and serve it with AdapterSpanExtractor.load_adapter(dir).predict, or "
                     "score it with `adapter-keras evaluate-squad --artifact dir`")


def add_adapters(encoder: tf_keras.layers.Layer, adapter_config: AdapterConfig = AdapterConfig(),
                 adapter_seed: Optional[int] = None) -> AdapterBertEncoder:
  """An AdapterBertEncoder with `encoder`'s weights (a Model Garden BertEncoderV2) and adapters.

  Every pre-trained tensor is copied and checked by name and shape (pretrained/directory.py:
  assign_strictly), so a mismatch names the tensor instead of leaving a random weight. The new encoder
  with its adapters disabled (`set_adapters_enabled(False)`) computes exactly what `encoder` does.
  Choose what trains on the task model built on it: `mark_only_adapters_trainable(model)`.
  """
  if not isinstance(adapter_config, AdapterConfig):
    raise TypeError(f"adapter_config must be an AdapterConfig, got {type(adapter_config).__name__}")
  if isinstance(encoder, AdapterBertEncoder) and encoder.adapters():
    raise ValueError(f"encoder {encoder.name} already has adapters")
  if not encoder.built:
    encoder(dummy_inputs())
  config = {k: v for k, v in encoder.get_config().items() if k not in ("adapter_config", "adapter_seed")}
  config["inner_activation"] = _rebuildable_activation(encoder, config.get("inner_activation"))
  adapted = AdapterBertEncoder(adapter_config=adapter_config, adapter_seed=adapter_seed, **config)
  adapted(dummy_inputs())
  scope = encoder.name + "/"
  tensors = {}
  for variable in encoder.weights:
    name = variable.name[:-len(":0")] if variable.name.endswith(":0") else variable.name
    tensors[name[len(scope):] if name.startswith(scope) else name] = variable.numpy()
  assign_strictly(model_garden_targets(adapted), tensors, f"encoder {encoder.name}")
  return adapted


# Activations a block may use that Keras can rebuild by name (approximate_gelu is registered).
_KNOWN_ACTIVATIONS = (approximate_gelu, "gelu", "relu", "swish", "tanh")


def _rebuildable_activation(encoder, serialized):
  """The encoder's FFN activation in a form its config can rebuild.

  Model Garden's default activation is a lambda (approximate GELU), whose config reads '<lambda>' and
  cannot be rebuilt; it is recognised by its values instead.
  """
  try:
    tf_keras.activations.get(serialized)
    return serialized
  except ValueError:
    pass
  used = [layer.activation for layer in encoder.transformer_layers[0].submodules
          if isinstance(layer, tf_keras.layers.Activation)]
  probe = tf.linspace(-6.0, 6.0, 121)
  for candidate in _KNOWN_ACTIVATIONS:
    if used and np.array_equal(tf_keras.activations.get(candidate)(probe).numpy(), used[0](probe).numpy()):
      return candidate
  raise ValueError(f"encoder {encoder.name}'s activation {serialized!r} is none of approximate GELU, "
                   "GELU, ReLU, swish or tanh: build it with a named (or registered) activation")
