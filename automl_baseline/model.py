"""The wide & deep classifier for one point of the search space, its training and export.

* Wide tower: a linear model over hashed word n-grams (lower-cased, punctuation
  split off), i.e. a [buckets, classes] table summed over the n-grams of the
  text; a pair's second text hashes with its own prefix.
* Deep tower: the embedding module's sentence vector, or (with convolution)
  its token vectors through Conv1D filters of widths 1..max n-gram, masked
  max-pooled; then the hidden layers and a linear output. Pairs are encoded
  one text at a time and combined as [u, v, |u - v|, u * v].
* Both are summed into logits by tf_keras's `WideDeepModel`, whose train step
  applies each tower's gradients with that tower's own optimizer (FTRL for the
  wide tower, Adagrad or LazyAdam for the deep one); the deep tower's L2
  weight is a kernel regulariser, the wide one FTRL's L2 strength.

Inputs are raw strings: a [batch] string tensor, or {"text": ..., "text_b": ...}.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
import tf_keras

from automl_baseline import modules
from automl_baseline.optimizers import deep_optimizer, wide_optimizer
from automl_baseline.search_space import TrialConfig

_PACKAGE = "AutoMLBaseline"
TextInputs = Union[tf.Tensor, Dict[str, tf.Tensor]]
EXPORT_INFO_FILE = "automl_baseline.json"

_ACTIVATION_FUNCTIONS = {
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "leaky_relu": tf.nn.leaky_relu,
    "swish": tf.nn.silu,
    "sigmoid": tf.sigmoid,
    "tanh": tf.tanh,
}


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  """What the task and the machine fix for every trial.

  Args:
    num_classes: number of labels.
    is_pair: inputs are text pairs ({"text", "text_b"}).
    wide_buckets: hash buckets of the wide tower's n-gram features.
    wide_ngram: the wide tower uses word n-grams of lengths 1..wide_ngram.
    max_tokens: tokens per text kept for the convolutional deep tower.
  """

  num_classes: int
  is_pair: bool = False
  wide_buckets: int = 2**18
  wide_ngram: int = 2
  max_tokens: int = 64

  def __post_init__(self):
    if self.num_classes < 2:
      raise ValueError(f"a classifier needs at least 2 classes, got {self.num_classes}")
    for name in ("wide_buckets", "wide_ngram", "max_tokens"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class TrainingBudget:
  """How long a trial trains.

  A trial sees Table 5's `training_samples` examples (with repetition) times
  `sample_scale`, at most `max_epochs` passes over the training set; small
  machines scale both down. `fraction` is Hyperband's share of the budget.
  """

  sample_scale: float = 1.0
  max_epochs: Optional[float] = None

  def __post_init__(self):
    if not self.sample_scale > 0:
      raise ValueError(f"sample_scale must be > 0, got {self.sample_scale}")
    if self.max_epochs is not None and not self.max_epochs > 0:
      raise ValueError(f"max_epochs must be > 0, got {self.max_epochs}")

  def train_steps(self, training_samples: int, batch_size: int, num_train_examples: int,
                  fraction: float = 1.0) -> int:
    samples = training_samples * self.sample_scale * fraction
    if self.max_epochs is not None:
      samples = min(samples, self.max_epochs * num_train_examples)
    return max(1, math.ceil(samples / batch_size))


def split_text_inputs(inputs: TextInputs) -> Tuple[tf.Tensor, Optional[tf.Tensor]]:
  """(text [batch], text_b [batch] or None) from a string tensor or a dict."""
  if isinstance(inputs, dict):
    text, text_b = inputs["text"], inputs.get("text_b")
  else:
    text, text_b = inputs, None
  text = tf.reshape(tf.convert_to_tensor(text, tf.string), [-1])
  if text_b is not None:
    text_b = tf.reshape(tf.convert_to_tensor(text_b, tf.string), [-1])
  return text, text_b


@tf_keras.utils.register_keras_serializable(package=_PACKAGE)
class NamedActivation(tf_keras.layers.Layer):
  """An activation from Table 5 by name (relu6 and leaky_relu are not tf_keras names)."""

  def __init__(self, activation: str, **kwargs):
    super().__init__(**kwargs)
    if activation not in _ACTIVATION_FUNCTIONS:
      raise ValueError(f"unknown activation {activation!r}; expected one of "
                       f"{', '.join(_ACTIVATION_FUNCTIONS)}")
    self.activation = activation

  def call(self, inputs):
    return _ACTIVATION_FUNCTIONS[self.activation](inputs)

  def get_config(self):
    return dict(super().get_config(), activation=self.activation)


def hashed_ngram_ids(texts: tf.Tensor, num_buckets: int, max_ngram: int,
                     prefix: str = "") -> tf.RaggedTensor:
  """[batch] strings -> [batch, (n-grams)] bucket ids of word n-grams of lengths 1..max_ngram."""
  texts = tf.strings.lower(texts, encoding="utf-8")
  texts = tf.strings.regex_replace(texts, r"([[:punct:]])", r" \1 ")
  tokens = tf.strings.split(texts)
  grams = tf.strings.ngrams(tokens, ngram_width=list(range(1, max_ngram + 1)), separator=" ")
  return tf.ragged.map_flat_values(
      lambda g: tf.strings.to_hash_bucket_fast(prefix + g, num_buckets), grams)


class WideTower(tf_keras.Model):
  """Linear model over hashed n-grams: logits = bias + sum of the n-grams' weight rows."""

  def __init__(self, settings: ModelSettings, **kwargs):
    super().__init__(name="wide_tower", **kwargs)
    self.settings = settings
    self.hashed_weights = self.add_weight(
        name="hashed_weights", shape=[settings.wide_buckets, settings.num_classes],
        initializer="zeros")
    self.bias = self.add_weight(name="bias", shape=[settings.num_classes], initializer="zeros")

  def call(self, inputs: TextInputs) -> tf.Tensor:
    text, text_b = split_text_inputs(inputs)
    ids = hashed_ngram_ids(text, self.settings.wide_buckets, self.settings.wide_ngram, "a:")
    if text_b is not None:
      ids_b = hashed_ngram_ids(text_b, self.settings.wide_buckets, self.settings.wide_ngram, "b:")
      ids = tf.concat([ids, ids_b], axis=1)
    # A gather, not a dense matmul: the table's gradient is sparse in the n-grams seen.
    rows = tf.gather(self.hashed_weights, ids.flat_values)
    return tf.math.unsorted_segment_sum(rows, ids.value_rowids(), ids.nrows()) + self.bias

  def get_config(self):
    return {"settings": dataclasses.asdict(self.settings)}

  @classmethod
  def from_config(cls, config):
    return cls(ModelSettings(**config["settings"]))


class DeepTower(tf_keras.Model):
  """Embedding module (+ n-gram convolutions) -> hidden layers -> logits."""

  def __init__(self, config: TrialConfig, settings: ModelSettings, **kwargs):
    super().__init__(name="deep_tower", **kwargs)
    self.config = config
    self.settings = settings
    regularizer = tf_keras.regularizers.L2(config.deep_regularization)
    if config.use_convolution:
      self.token_embedding = modules.TokenEmbedding(
          config.embedding_module, trainable=config.fine_tune_module,
          max_tokens=settings.max_tokens)
      widths = range(1, config.conv_max_ngram + 1)
      self.convolutions = [
          tf_keras.layers.Conv1D(config.conv_filters, width, padding="same",
                                 use_bias=not config.conv_batch_norm,
                                 kernel_regularizer=regularizer, name=f"conv_{width}gram")
          for width in widths]
      self.conv_norms = ([tf_keras.layers.BatchNormalization(name=f"conv_{w}gram_norm")
                          for w in widths] if config.conv_batch_norm else [])
      self.conv_activation = NamedActivation(config.conv_activation)
      self.conv_dropout = tf_keras.layers.Dropout(config.conv_dropout)
    else:
      self.sentence_embedding = modules.sentence_embedding_layer(
          config.embedding_module, config.fine_tune_module)
    self.hidden = []
    for i in range(config.hidden_layers):
      self.hidden.append(tf_keras.layers.Dense(config.hidden_size, kernel_regularizer=regularizer,
                                               name=f"hidden_{i}"))
      if config.hidden_normalization == "batch":
        self.hidden.append(tf_keras.layers.BatchNormalization(name=f"hidden_{i}_batch_norm"))
      elif config.hidden_normalization == "layer":
        self.hidden.append(tf_keras.layers.LayerNormalization(name=f"hidden_{i}_layer_norm"))
      self.hidden.append(NamedActivation(config.hidden_activation, name=f"hidden_{i}_activation"))
      self.hidden.append(tf_keras.layers.Dropout(config.hidden_dropout, name=f"hidden_{i}_dropout"))
    self.logits = tf_keras.layers.Dense(settings.num_classes, kernel_regularizer=regularizer,
                                        name="logits")

  def _encode(self, texts: tf.Tensor, training) -> tf.Tensor:
    if not self.config.use_convolution:
      return self.sentence_embedding(texts, training=training)
    embeddings, mask = self.token_embedding(texts, training=training)
    pooled = []
    for i, convolution in enumerate(self.convolutions):
      h = convolution(embeddings)
      if self.conv_norms:
        h = self.conv_norms[i](h, training=training)
      h = self.conv_activation(h)
      h = tf.where(mask[:, :, None], h, h.dtype.min)  # padding never wins the max
      pooled.append(tf.reduce_max(h, axis=1))
    features = tf.concat(pooled, axis=-1)
    # A text without tokens has only padding: give it zeros, not the float minimum.
    features = tf.where(tf.reduce_any(mask, axis=1)[:, None], features, 0.0)
    return self.conv_dropout(features, training=training)

  def call(self, inputs: TextInputs, training=None) -> tf.Tensor:
    text, text_b = split_text_inputs(inputs)
    features = self._encode(text, training)
    if text_b is not None:
      features_b = self._encode(text_b, training)
      features = tf.concat([features, features_b, tf.abs(features - features_b),
                            features * features_b], axis=-1)
    for layer in self.hidden:
      features = layer(features, training=training)
    return self.logits(features)

  def get_config(self):
    return {"config": dataclasses.asdict(self.config), "settings": dataclasses.asdict(self.settings)}

  @classmethod
  def from_config(cls, config):
    return cls(TrialConfig(**config["config"]), ModelSettings(**config["settings"]))


def build_model(config: TrialConfig, settings: ModelSettings) -> tf_keras.Model:
  """The compiled wide & deep model: optimizer[0] trains the wide tower, [1] the deep one."""
  model = tf_keras.experimental.WideDeepModel(WideTower(settings), DeepTower(config, settings))
  model.compile(
      optimizer=[wide_optimizer(config.wide_learning_rate, config.wide_regularization),
                 deep_optimizer(config.deep_optimizer, config.deep_learning_rate)],
      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
  return model


def check_classification_labels(examples, num_classes: int, what: str) -> np.ndarray:
  """The labels as int64 class ids, or a clear error (regression targets, out of range)."""
  labels = np.asarray(examples.labels)
  if labels.size and not np.all(np.equal(np.mod(labels, 1), 0)):
    raise ValueError(f"{what} labels are not class ids (regression targets?); the AutoML "
                     "baseline searches classifiers only")
  labels = labels.astype(np.int64)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"{what} labels must be class ids in [0, {num_classes}), got "
                     f"{labels.min()}..{labels.max()}")
  return labels


def make_dataset(examples, num_classes: int, batch_size: int, shuffle_seed: Optional[int] = None,
                 what: str = "training") -> tf.data.Dataset:
  """({"text"[, "text_b"]}, label) batches; with a seed, shuffled and repeated forever."""
  if len(examples) == 0:
    raise ValueError(f"the {what} set is empty")
  features = {"text": tf.constant(list(examples.text), tf.string)}
  if examples.text_b is not None:
    features["text_b"] = tf.constant(list(examples.text_b), tf.string)
  labels = check_classification_labels(examples, num_classes, what)
  dataset = tf.data.Dataset.from_tensor_slices((features, labels))
  if shuffle_seed is not None:
    dataset = dataset.shuffle(min(len(examples), 100_000), seed=shuffle_seed).repeat()
  return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class TrainResult:
  """A trained model and how it did on the validation set."""

  model: tf_keras.Model
  val_accuracy: float
  val_loss: float
  train_steps: int
  train_seconds: float


def train_and_evaluate(config: TrialConfig, settings: ModelSettings, train, dev,
                       budget: TrainingBudget = TrainingBudget(), seed: int = 0,
                       budget_fraction: float = 1.0) -> TrainResult:
  """Builds, trains (for the budget's steps) and evaluates one point of the space."""
  tf_keras.backend.clear_session()
  tf_keras.utils.set_random_seed(seed)
  model = build_model(config, settings)
  steps = budget.train_steps(config.training_samples, config.batch_size, len(train),
                             budget_fraction)
  start = time.time()
  model.fit(make_dataset(train, settings.num_classes, config.batch_size, shuffle_seed=seed),
            steps_per_epoch=steps, epochs=1, verbose=0)
  seconds = time.time() - start
  metrics = model.evaluate(make_dataset(dev, settings.num_classes, 256, what="validation"),
                           verbose=0, return_dict=True)
  return TrainResult(model, float(metrics["accuracy"]), float(metrics["loss"]), steps, seconds)


def export_saved_model(model: tf_keras.Model, out_dir: str, is_pair: bool,
                       label_names: Optional[Sequence[str]] = None,
                       info: Optional[dict] = None) -> str:
  """Saves the model as a SavedModel whose serving signature takes raw strings.

  `serving_default(text[, text_b])` returns logits, probabilities, class_ids
  and labels (the label names). Loading it needs `import tensorflow_text`
  when the embedding module uses its ops (WordPiece modules).
  """
  num_classes = int(model.linear_model.settings.num_classes)
  names = list(label_names) if label_names else [str(i) for i in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} label names for {num_classes} classes")
  names_tensor = tf.constant(names)

  def outputs(logits: tf.Tensor) -> Dict[str, tf.Tensor]:
    class_ids = tf.argmax(logits, axis=-1)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits), "class_ids": class_ids,
            "labels": tf.gather(names_tensor, class_ids)}

  strings = tf.TensorSpec([None], tf.string)
  if is_pair:
    @tf.function(input_signature=[strings, strings])
    def serve(text, text_b):
      return outputs(model({"text": text, "text_b": text_b}, training=False))
  else:
    @tf.function(input_signature=[strings])
    def serve(text):
      return outputs(model({"text": text}, training=False))

  model.save(out_dir, save_format="tf", include_optimizer=False,
             signatures={"serving_default": serve.get_concrete_function()})
  with open(os.path.join(out_dir, EXPORT_INFO_FILE), "w", encoding="utf-8") as f:
    json.dump(dict(info or {}, label_names=names, is_pair=is_pair,
                   signature_inputs=["text", "text_b"] if is_pair else ["text"]), f, indent=2)
  return out_dir


def load_exported(path: str):
  """`tf.saved_model.load` of an exported model, with the ops its modules may need."""
  import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  return tf.saved_model.load(path)


def predict_exported(path: str, texts: List[str], texts_b: Optional[List[str]] = None,
                     batch_size: int = 256) -> Dict[str, np.ndarray]:
  """The serving outputs (logits, probabilities, class_ids, labels) of an exported model."""
  serve = load_exported(path).signatures["serving_default"]
  parts: Dict[str, List[np.ndarray]] = {}
  for start in range(0, len(texts), batch_size):
    kwargs = {"text": tf.constant(texts[start:start + batch_size])}
    if texts_b is not None:
      kwargs["text_b"] = tf.constant(texts_b[start:start + batch_size])
    for name, value in serve(**kwargs).items():
      parts.setdefault(name, []).append(value.numpy())
  return {name: np.concatenate(values) for name, values in parts.items()}


def predict_labels(path: str, texts: List[str], texts_b: Optional[List[str]] = None) -> List[str]:
  """Label names predicted by an exported model (a convenience for users and tests)."""
  return [label.decode("utf-8") for label in predict_exported(path, texts, texts_b)["labels"]]
