"""Token classification: the recipe of `adapter-keras train --task-type token` and of AdapterTokenClassifier.fit.

`TokenRecipe` is a TaskRecipe (train/recipe.py) over CoNLL sentences (tasks/tagging.py): it trains on
tasks/token_windows.py's windows with a masked cross-entropy (only the positions that carry a label: a word's
first sub-word, or each of its sub-words with label_all_subwords; never [CLS], [SEP] or padding), scores dev
by entity-level F1 (conlleval's counting, through seqeval) after every epoch, keeps the best epoch by F1 and,
with an output directory, writes besides the shared run files

  predictions.conll   the best epoch's dev tags, `word<TAB>gold<TAB>predicted` per line, blank lines between
                      sentences: the input of the CoNLL `conlleval` script

Training windows are padded to max_seq_length and each batch is trimmed to its longest window (under static
shapes nothing is trimmed and every batch is whole, as for SQuAD).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras.io import write_text_atomic
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.tasks.tagging import TaggedSentence, TokenTask, check_tagged, check_tags, score_tags
from adapter_keras.tasks.token_windows import TokenFeatures, TokenFeaturizer, word_logits
from adapter_keras.train.config import TokenTrainConfig
from adapter_keras.train.evaluation import fill_last_batch
from adapter_keras.train.recipe import WindowedRecipe
from adapter_keras.train.inputs import epoch_order
from adapter_keras.values import KERAS_PACKAGE

PREDICTIONS_FILE = "predictions.conll"
EVAL_BATCH_SIZE = 64


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class MaskedTokenLoss(tf_keras.losses.Loss):
  """Cross-entropy averaged over the positions whose label id is >= 0 (tasks/token_windows.IGNORED elsewhere).

  The mean is over labelled positions, not over every position of the batch, so that a batch's padding or
  its number of sub-words per word does not scale the loss (and with it the step size)."""

  def __init__(self, name: str = "masked_token_loss", **kwargs):
    super().__init__(name=name, **kwargs)

  def call(self, y_true, y_pred):
    labels = tf.cast(y_true, tf.int32)
    mask = tf.cast(labels >= 0, tf.float32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0),
                                                            logits=tf.cast(y_pred, tf.float32))
    return tf.reduce_sum(losses * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def compile_token_model(model: tf_keras.Model, optimizer, jit_compile: bool = False,
                        steps_per_execution: int = 1) -> tf_keras.Model:
  model.compile(optimizer=optimizer, loss=MaskedTokenLoss(), jit_compile=jit_compile,
                steps_per_execution=steps_per_execution)
  return model


def _trimmed(inputs, labels=None):
  """A batch cut to its longest window (windows are left-aligned, so nothing real is cut)."""
  length = tf.reduce_max(tf.reduce_sum(inputs["input_mask"], axis=1))
  inputs = {name: column[:, :length] for name, column in inputs.items()}
  return inputs if labels is None else (inputs, labels[:, :length])


def make_token_dataset(features: TokenFeatures, batch_size: int, order: Optional[np.ndarray] = None,
                       static_shapes: bool = False) -> tf.data.Dataset:
  """(inputs, label ids) batches in `order` (default 0..n-1); trimmed per batch unless `static_shapes`, where
  every batch is whole (the order must hold whole batches)."""
  order = np.arange(len(features)) if order is None else np.asarray(order, np.int64)
  columns = tf.nest.map_structure(tf.constant, (features.inputs(), features.label_ids))
  dataset = tf.data.Dataset.from_tensor_slices(order).map(
      lambda i: tf.nest.map_structure(lambda column: tf.gather(column, i), columns))
  dataset = dataset.batch(batch_size, drop_remainder=static_shapes)
  if not static_shapes:
    dataset = dataset.map(_trimmed)
  return dataset.prefetch(tf.data.AUTOTUNE)


def predict_token_logits(model: tf_keras.Model, features: TokenFeatures, batch_size: int = EVAL_BATCH_SIZE,
                         static_shapes: bool = False) -> np.ndarray:
  """Logits [windows, max_seq_length, labels] of every window, in order (each batch trimmed to its longest
  window and padded back; under `static_shapes` whole batches, the last filled with copies, as
  train/evaluation.py's fill_last_batch)."""
  count = len(features)
  order = fill_last_batch(np.arange(count), batch_size) if static_shapes else np.arange(count)
  inputs = {name: column[order] for name, column in features.inputs().items()}
  dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size, drop_remainder=static_shapes)
  if not static_shapes:
    dataset = dataset.map(_trimmed)
  outputs = []
  for batch in dataset:
    logits = np.asarray(model.predict_on_batch(batch))
    outputs.append(np.pad(logits, [(0, 0), (0, features.input_word_ids.shape[1] - logits.shape[1]), (0, 0)]))
  return np.concatenate(outputs)[:count]


def predict_tags(model: tf_keras.Model, featurizer: TokenFeaturizer, sentences: Sequence[TaggedSentence],
                 batch_size: int = EVAL_BATCH_SIZE, static_shapes: bool = False) -> List[List[str]]:
  """The predicted tag of every word of every sentence (its first sub-word's, in its max-context window)."""
  features = featurizer.featurize(sentences, with_labels=False)
  logits = predict_token_logits(model, features, batch_size, static_shapes)
  words = word_logits(features, logits, [len(s.words) for s in sentences])
  return [[featurizer.labels[i] for i in np.argmax(w, axis=-1)] for w in words]


def score_sentences(sentences: Sequence[TaggedSentence], predicted: Sequence[Sequence[str]]) -> Dict[str, float]:
  """seqeval/conlleval entity {"f1", "precision", "recall"} and word "accuracy" of predicted tags."""
  return score_tags([s.tags for s in sentences], predicted)


def tagging_sha256(train: Sequence[TaggedSentence], dev: Sequence[TaggedSentence]) -> str:
  """Digest of the train and dev sentences (words and tags)."""
  digest = hashlib.sha256()
  for sentences in (train, dev):
    for s in sentences:
      digest.update(json.dumps([list(s.words), list(s.tags or ())]).encode() + b"\n")
    digest.update(b"\x00")  # train/dev boundary
  return digest.hexdigest()


def conll_text(sentences: Sequence[TaggedSentence], predicted: Sequence[Sequence[str]]) -> str:
  """`word<TAB>gold<TAB>predicted` lines, a blank line after each sentence (conlleval's input)."""
  blocks = ["".join(f"{w}\t{g}\t{p}\n" for w, g, p in zip(s.words, s.tags, tags)) for s, tags in
            zip(sentences, predicted)]
  return "\n".join(blocks)


class TokenRecipe(WindowedRecipe):
  """A TaskRecipe (train/recipe.py) for token classification: windows in, entity F1 on dev, best tags kept."""

  log_prefix = "[train] "

  def __init__(self, task: TokenTask, train: Sequence[TaggedSentence], dev: Sequence[TaggedSentence]):
    check_tagged(train, "the training set")
    self.task = task
    self.train, self.dev = list(train), list(dev)  # dev may be empty: a front-door fit without validation data
    if self.dev:
      check_tagged(self.dev, "the dev set")
    for sentences, what in ((self.train, "the training set"), (self.dev, "the dev set")):
      if any(s.tags is None for s in sentences):
        raise ValueError(f"{what} needs a tag for every word")
      check_tags(sentences, task.label_names, what)
    self.config: Optional[TokenTrainConfig] = None
    self.featurizer: Optional[TokenFeaturizer] = None
    self.train_features: Optional[TokenFeatures] = None

  def data_sha256(self) -> str:
    return tagging_sha256(self.train, self.dev)

  def prepare(self, preprocessor: BertPreprocessor, config: TokenTrainConfig) -> None:
    self.featurizer = TokenFeaturizer.from_preprocessor(preprocessor, self.task.label_names, config.doc_stride,
                                                        config.label_all_subwords)
    self.featurize_train(config, self.train)

  def describe(self) -> str:
    dev = f"{len(self.dev)} dev sentences" if self.dev else "no dev"
    return f"{len(self.train)} train sentences ({len(self.train_features)} windows), {dev}"

  def compile_model(self, model, optimizer, jit_compile: bool = False, steps_per_execution: int = 1):
    return compile_token_model(model, optimizer, jit_compile=jit_compile, steps_per_execution=steps_per_execution)

  def epoch_dataset(self, epoch: int) -> tf.data.Dataset:
    static = bool(self.config.static_shapes)
    lengths = self.train_features.input_mask.sum(axis=1) if self.config.bucket_by_length else None
    order = epoch_order(len(self.train_features), self.config.seed, epoch, group_lengths=lengths,
                        batch_size=self.config.batch_size, drop_remainder=static)
    return make_token_dataset(self.train_features, self.config.batch_size, order, static_shapes=static)

  def evaluate(self, model) -> Optional[Tuple[float, Dict[str, float], List[List[str]]]]:
    if not self.dev:
      return None
    predicted = predict_tags(model, self.featurizer, self.dev, static_shapes=bool(self.config.static_shapes))
    metrics = score_sentences(self.dev, predicted)
    return metrics["f1"], metrics, predicted

  def metrics_extras(self) -> Dict:
    return dict(train_sentences=len(self.train), train_windows=len(self.train_features),
                dev_sentences=len(self.dev))

  def write_outputs(self, out_dir: str, best_outputs) -> None:
    if self.dev and best_outputs:
      write_text_atomic(os.path.join(out_dir, PREDICTIONS_FILE), conll_text(self.dev, best_outputs))
