"""The wide & deep classifier for one point of the search space: its two towers and their model.

* Wide tower: a linear model over hashed word n-grams (punctuation split off),
  i.e. a [buckets, classes] table summed over the n-grams of the text; a pair's
  second text hashes with its own prefix.
* Deep tower: the embedding module's sentence vector, or (with convolution)
  its token vectors, through Conv1D filters of widths 1..max n-gram, masked
  max-pooled, then dropout; then the hidden layers and a linear output. Pairs are encoded
  one text at a time and combined as [u, v, |u - v|, u * v].
* Both are summed into logits by tf_keras's `WideDeepModel` (`build_model`),
  whose train step applies each tower's gradients with that tower's own
  optimizer (FTRL for the wide tower, Adagrad or LazyAdam for the deep one);
  the deep tower's L2 weight is a kernel regulariser, the wide one FTRL's L2
  strength.

Inputs are raw strings: a [batch] string tensor, or {"text": ..., "text_b": ...}.
Training lives in `training`, the SavedModel export in `export`.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple, Union

import tensorflow as tf
import tf_keras

from automl_baseline import KERAS_PACKAGE, modules
from automl_baseline.optimizers import deep_optimizer, wide_optimizer
from automl_baseline.search_space import TrialConfig

TextInputs = Union[tf.Tensor, Dict[str, tf.Tensor]]

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


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
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
    values, row_ids = ids.flat_values, ids.value_rowids()
    if text_b is not None:
      ids_b = hashed_ngram_ids(text_b, self.settings.wide_buckets, self.settings.wide_ngram, "b:")
      # Joined flat rather than by a ragged concat along axis 1, which runs an integer Transpose
      # that oneDNN builds of TensorFlow log as an E line (issue 17, item 12). Each row still adds
      # its a: terms, then its b: terms, in the same order.
      values = tf.concat([values, ids_b.flat_values], axis=0)
      row_ids = tf.concat([row_ids, ids_b.value_rowids()], axis=0)
    # A gather, not a dense matmul: the table's gradient is sparse in the n-grams seen.
    rows = tf.gather(self.hashed_weights, values)
    return tf.math.unsorted_segment_sum(rows, row_ids, ids.nrows()) + self.bias

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
