"""SQuAD v1.1: the extractive-QA recipe of `train-squad` and of AdapterSpanExtractor.fit, and its scoring.

`SquadRecipe` is the extractive-QA recipe of the shared run (train/recipe.py;
train/run.py: train_squad loads the encoder, builds an AdapterSpanExtractor,
applies the tuning method) and trains on SquadFeaturizer windows (Adam, 10% warm-up, linear decay),
scores dev with the official exact match and F1 after every epoch, keeps the
weights of the best epoch by F1 and, with an output directory, writes

  run.json          what makes the run this run (config + sha256 of the data);
                    a different run there is refused, the same finished run
                    re-invoked only reports (train/run_dir.py)
  metrics.json      task "squad", method, best-epoch EM/F1, history, config
  predictions.json  the best epoch's dev answers, {question id: text}, the
                    input of the official evaluate-v1.1.py
  artifact/         the trained variables and manifest (artifacts.py; for
                    method "adapter" only adapters, LayerNorms and the head),
                    whose "squad" entry holds the window settings that
                    models.load_adapter needs to rebuild the same features
  logs/             TensorBoard
  checkpoint/       while training: the step checkpoint a re-run resumes from
                    (the best epoch's answers included), deleted at the end

What is the same as for GLUE tasks comes from the shared run (TrainConfig and
its speed options but the frozen-bottom cache, TrainResult, the encoder loading and
method, the epoch loop with its best-epoch tracker, NaN stop, step
checkpoints and resume, the run identity check, the manifest); this module
owns what differs: windowed features, span decoding, and the EM/F1
evaluation (tasks/squad.py). Like every metric in metrics.json, EM and F1 are
fractions in [0, 1] (`report` shows them x 100, the official script's
percent). Under static shapes (train/inputs.py; config.static_shapes as
train/recipe.py's `fit` resolves it) training and dev batches hold exactly
`batch_size` windows (each epoch leaves its last partial batch out; dev fills
it); windows already have a single length, max_seq_length.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras.io import write_json_atomic
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.tasks import squad
from adapter_keras.tasks.squad import SQUAD_TASK, SquadExample, SquadFeatures, SquadFeaturizer
from adapter_keras.train.config import SquadTrainConfig
from adapter_keras.train.evaluation import fill_last_batch
from adapter_keras.train.recipe import WindowedRecipe
from adapter_keras.train.inputs import epoch_order

PREDICTIONS_FILE = "predictions.json"
EVAL_BATCH_SIZE = 64


# ------------------------------------------------------------------- the span model's data, loss, outputs


def make_span_dataset(features: SquadFeatures, batch_size: int, shuffle: bool = False,
                      seed: Optional[int] = None, order: Optional[np.ndarray] = None,
                      drop_remainder: bool = False) -> tf.data.Dataset:
  """(inputs, {"start_logits": start position, "end_logits": end position}) batches.

  `order`: the window indices to go through, in this order (one epoch's
  permutation), instead of 0..n-1; `shuffle` reshuffles on every pass.
  `drop_remainder`: every batch holds exactly `batch_size` windows, the last
  partial one is left out (static shapes: windows already have one length).
  """
  targets = dict(start_logits=features.start_positions, end_logits=features.end_positions)
  if order is None:
    dataset = tf.data.Dataset.from_tensor_slices((features.inputs(), targets))
  else:
    columns = tf.nest.map_structure(tf.constant, (features.inputs(), targets))
    dataset = tf.data.Dataset.from_tensor_slices(np.asarray(order, np.int64)).map(
        lambda i: tf.nest.map_structure(lambda column: tf.gather(column, i), columns))
  if shuffle:
    dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
  return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def compile_span_model(model: tf_keras.Model, optimizer, jit_compile: bool = False,
                       steps_per_execution: int = 1) -> tf_keras.Model:
  """Loss = mean of the start and end cross-entropies, as in BERT's SQuAD fine-tuning.
  `steps_per_execution` training steps run per call of the train function."""
  loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  model.compile(optimizer=optimizer,
                loss=dict(start_logits=loss, end_logits=loss),
                loss_weights=dict(start_logits=0.5, end_logits=0.5),
                jit_compile=jit_compile, steps_per_execution=steps_per_execution)
  return model


def predict_spans(model: tf_keras.Model, features: SquadFeatures, batch_size: int = 32,
                  static_shapes: bool = False) -> Tuple[np.ndarray, np.ndarray]:
  """(start_logits, end_logits), each [features, max_seq_length].

  `static_shapes`: every batch holds exactly `batch_size` windows (what TPUs
  need): the last batch is filled with copies of the last window, whose
  outputs are dropped, so every window is scored exactly once.
  """
  inputs = features.inputs()
  count = len(features)
  if static_shapes:
    filled = fill_last_batch(np.arange(count), batch_size)
    inputs = {name: column[filled] for name, column in inputs.items()}
  dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size, drop_remainder=static_shapes)
  outputs = model.predict(dataset, verbose=0)
  return np.asarray(outputs["start_logits"])[:count], np.asarray(outputs["end_logits"])[:count]


# ------------------------------------------------------------------------ data


def read_squad_file(path: str, flag: str = "--dev") -> List[SquadExample]:
  """The questions of a SQuAD v1.1 file; one-line errors name the flag."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{flag} {path} not found")
  if os.path.isdir(path):
    raise ValueError(f"{flag} {path} is a directory; give the SQuAD JSON file (e.g. dev-v1.1.json)")
  examples = squad.load_squad_json(path)
  if not examples:
    raise ValueError(f"{flag} {path} holds no questions")
  return examples


def squad_sha256(train: Sequence[SquadExample], dev: Sequence[SquadExample]) -> str:
  """Digest of the train and dev questions (ids, texts, answers)."""
  digest = hashlib.sha256()
  for examples in (train, dev):
    for e in examples:
      record = [e.id, e.question, e.context, [[a.text, a.answer_start] for a in e.answers]]
      digest.update(json.dumps(record).encode() + b"\n")
    digest.update(b"\x00")  # train/dev boundary
  return digest.hexdigest()


# ----------------------------------------------------------------------- the recipe


def predict_answers(model: tf_keras.Model, examples: Sequence[SquadExample], features: SquadFeatures,
                    max_answer_length: int = 30, n_best_size: int = 20,
                    batch_size: int = EVAL_BATCH_SIZE, static_shapes: bool = False) -> Dict[str, str]:
  """Question id -> best answer text (`static_shapes`: see squad.predict_spans)."""
  start, end = predict_spans(model, features, batch_size, static_shapes)
  return squad.best_answers(squad.decode_spans(examples, features, start, end, n_best_size=n_best_size,
                                               max_answer_length=max_answer_length))


def score_answers(examples: Sequence[SquadExample], answers: Dict[str, str]) -> Dict[str, float]:
  """Official v1.1 {"exact_match", "f1"} as fractions (squad.evaluate gives percent)."""
  return {name: value / 100.0 for name, value in squad.evaluate(examples, answers).items()}


class SquadRecipe(WindowedRecipe):
  """A TaskRecipe (train/recipe.py) for SQuAD v1.1: windows in, EM/F1 on dev, best answers kept."""

  log_prefix = "[train-squad] "
  task = SQUAD_TASK

  def __init__(self, train: Sequence[SquadExample], dev: Sequence[SquadExample]):
    if not train:
      raise ValueError("the training set holds no questions")
    self.train, self.dev = list(train), list(dev)  # dev may be empty: a front-door fit without validation data
    self.config: Optional[SquadTrainConfig] = None
    self.train_features: Optional[SquadFeatures] = None
    self.dev_features: Optional[SquadFeatures] = None
    self.featurizer: Optional[SquadFeaturizer] = None

  def data_sha256(self) -> str:
    return squad_sha256(self.train, self.dev)

  def prepare(self, preprocessor: BertPreprocessor, config: "SquadTrainConfig") -> None:
    self.featurizer = SquadFeaturizer.from_preprocessor(preprocessor, config.doc_stride, config.max_query_length)
    self.featurize_train(config, self.train)
    self.dev_features = self.featurizer.featurize(self.dev) if self.dev else None

  def describe(self) -> str:
    dev = f"{len(self.dev)} dev questions ({len(self.dev_features)} windows)" if self.dev else "no dev"
    return f"{len(set(self.train_features.example_index))} train questions ({len(self.train_features)} windows), {dev}"

  def compile_model(self, model, optimizer, jit_compile: bool = False, steps_per_execution: int = 1):
    return compile_span_model(model, optimizer, jit_compile=jit_compile,
                                    steps_per_execution=steps_per_execution)

  def epoch_dataset(self, epoch: int) -> tf.data.Dataset:
    # Every window is max_seq_length long: nothing to group by length, and
    # static shapes need only whole batches (the permutation's last windows sit out).
    order = epoch_order(len(self.train_features), self.config.seed, epoch)
    return make_span_dataset(self.train_features, self.config.batch_size, order=order,
                                   drop_remainder=bool(self.config.static_shapes))

  def evaluate(self, model) -> Optional[Tuple[float, Dict[str, float], Dict[str, str]]]:
    if not self.dev:
      return None
    answers = predict_answers(model, self.dev, self.dev_features, self.config.max_answer_length,
                              self.config.n_best_size, static_shapes=bool(self.config.static_shapes))
    metrics = score_answers(self.dev, answers)
    return metrics["f1"], metrics, answers

  def metrics_extras(self) -> Dict:
    return dict(train_questions=len(self.train), train_windows=len(self.train_features),
                dev_questions=len(self.dev))

  def write_outputs(self, out_dir: str, best_outputs) -> None:
    write_json_atomic(os.path.join(out_dir, PREDICTIONS_FILE), best_outputs or {})


def write_predictions(path: str, answers: Dict[str, str]) -> str:
  """{question id: answer text}, the prediction file the official evaluate-v1.1.py reads."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  write_json_atomic(path, answers)
  return path
