"""SQuAD v1.1 runs: `train-squad` (train, keep the best epoch, save) and `evaluate-squad`.

`train_squad` is trainer.train_task for extractive QA. It loads the encoder,
builds a SpanModel, applies the tuning method, trains on SquadFeaturizer
windows with `model.fit` (Adam, 10% warm-up, linear decay), scores dev with the
official exact match and F1 after every epoch, keeps the weights of the best
epoch by F1 and, with an output directory, writes

  run.json          what makes the run this run (config + sha256 of the data);
                    a different run there is refused, the same finished run
                    re-invoked only reports (trainer.check_run_directory)
  metrics.json      task "squad", method, best-epoch EM/F1, history, config
  predictions.json  the best epoch's dev answers, {question id: text}, the
                    input of the official evaluate-v1.1.py
  artifact/         the trained variables and manifest (artifacts.py; for
                    method "adapter" only adapters, LayerNorms and the head),
                    whose "squad" entry holds the window settings that
                    `load_squad_artifact` needs to rebuild the same features
  logs/             TensorBoard
  checkpoint/       while training: the step checkpoint a re-run resumes from
                    (the best epoch's answers included), deleted at the end

What is the same as for GLUE tasks comes from trainer.py (TrainConfig and its
speed options but the prefix cache, TrainResult, the encoder loading and
method, the epoch loop with its best-epoch tracker, NaN stop, step
checkpoints and resume, the run identity check, the manifest); this module
owns what differs: windowed features, span decoding, and the EM/F1
evaluation. Like every metric in metrics.json, EM and F1 are fractions in [0, 1] (`report` shows them x 100, the official script's
percent).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tf_keras

from adapter_keras import checkpoints, squad, training
from adapter_keras.artifacts import (ArtifactError, SPAN_TASK_TYPE, is_span_manifest, load_artifact,
                                     read_manifest, resolve_artifact_dir, save_artifact, task_to_dict,
                                     write_json_atomic)
from adapter_keras.distribute import get_strategy
from adapter_keras.models import SpanModel
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import PretrainedEncoder
from adapter_keras.squad import SquadExample, SquadFeatures, SquadFeaturizer
from adapter_keras.trainer import (CHECKPOINT_DIR, DEFAULT_CHECKPOINT_EVERY_STEPS, RUN_FILE, TrainConfig,
                                   TrainResult, _BestEpochTracker, artifact_manifest, build_trainable_model,
                                   compile_for_training, finished_run, run_epochs)
from adapter_keras.tuning import parameter_report

PREDICTIONS_FILE = "predictions.json"
EVAL_BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class SquadTask:
  """What the manifest and run.json record as the task (TaskSpec's fields that apply)."""

  name: str = "squad"
  task_type: str = SPAN_TASK_TYPE
  primary_metric: str = "f1"
  metrics: Tuple[str, ...] = ("exact_match", "f1")
  dev_splits: Tuple[str, ...] = ("dev",)


SQUAD_TASK = SquadTask()


@dataclasses.dataclass
class SquadTrainConfig(TrainConfig):
  """TrainConfig plus the window and decoding settings (BERT's SQuAD defaults).

  `pooling` and `bucket_by_length` do not apply: the span head reads every
  token and every window is padded to max_seq_length.
  """

  max_seq_length: int = 384
  bucket_by_length: bool = False
  doc_stride: int = 128
  max_query_length: int = 64
  max_answer_length: int = 30
  n_best_size: int = 20

  def validate(self) -> None:
    super().validate()
    if self.prefix_cache:
      raise ValueError("the prefix cache is for classification and regression models, not SQuAD span models")
    for name in ("max_seq_length", "doc_stride", "max_query_length", "max_answer_length", "n_best_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

  def squad_settings(self) -> Dict:
    """What evaluation needs besides the tokenizer to score like training did."""
    return dict(doc_stride=self.doc_stride, max_query_length=self.max_query_length,
                max_answer_length=self.max_answer_length, n_best_size=self.n_best_size)


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


def _limit(examples: List[SquadExample], max_examples: Optional[int], seed: int) -> List[SquadExample]:
  # A seeded random subset in file order, as trainer._limit takes of TextExamples:
  # the first N questions of a SQuAD file would come from only a few articles.
  if not max_examples or max_examples >= len(examples):
    return list(examples)
  chosen = np.sort(np.random.default_rng(seed).permutation(len(examples))[:max_examples])
  return [examples[i] for i in chosen]


def run_identity(config: SquadTrainConfig, train: Sequence[SquadExample],
                 dev: Sequence[SquadExample]) -> Dict:
  """What makes a run the same run: task, config and a digest of the data (cf. trainer._run_identity)."""
  digest = hashlib.sha256()
  for examples in (train, dev):
    for e in examples:
      record = [e.id, e.question, e.context, [[a.text, a.answer_start] for a in e.answers]]
      digest.update(json.dumps(record).encode() + b"\n")
    digest.update(b"\x00")  # train/dev boundary
  return dict(task=task_to_dict(SQUAD_TASK), config=config.to_dict(), data_sha256=digest.hexdigest())


# ----------------------------------------------------------------------- model


def build_span_model(pretrained: PretrainedEncoder, dropout_rate: float = 0.1,
                     seed: Optional[int] = None) -> SpanModel:
  """A built SpanModel on a loaded encoder (also what load_artifact rebuilds)."""
  return SpanModel(pretrained.encoder, dropout_rate=dropout_rate, head_seed=seed,
                   name="span_model").build_with_dummy_inputs()


def predict_answers(model: tf_keras.Model, examples: Sequence[SquadExample], features: SquadFeatures,
                    max_answer_length: int = 30, n_best_size: int = 20,
                    batch_size: int = EVAL_BATCH_SIZE) -> Dict[str, str]:
  """Question id -> best answer text."""
  start, end = squad.predict_spans(model, features, batch_size)
  return squad.best_answers(squad.decode_spans(examples, features, start, end, n_best_size=n_best_size,
                                               max_answer_length=max_answer_length))


def score_answers(examples: Sequence[SquadExample], answers: Dict[str, str]) -> Dict[str, float]:
  """Official v1.1 {"exact_match", "f1"} as fractions (squad.evaluate gives percent)."""
  return {name: value / 100.0 for name, value in squad.evaluate(examples, answers).items()}


class _SquadBestEpochTracker(_BestEpochTracker):
  """trainer's tracker scoring dev by EM/F1; also keeps the best epoch's answers."""

  def __init__(self, examples: Sequence[SquadExample], features: SquadFeatures,
               config: SquadTrainConfig, log_dir: Optional[str], verbose: bool):
    super().__init__(SQUAD_TASK, {}, log_dir, verbose)
    self.examples, self.features, self.config = examples, features, config
    self.answers: Dict[str, str] = {}
    self.best_answers: Dict[str, str] = {}

  def evaluate(self) -> Tuple[float, Dict[str, float]]:
    self.answers = predict_answers(self.model, self.examples, self.features,
                                   self.config.max_answer_length, self.config.n_best_size)
    metrics = score_answers(self.examples, self.answers)
    return metrics["f1"], metrics

  def on_epoch_end(self, epoch, logs=None):
    super().on_epoch_end(epoch, logs)  # skips an epoch that ended in a NaN/Inf loss
    if self.best_epoch == epoch + 1:
      self.best_answers = self.answers

  def state(self) -> Dict:
    return dict(super().state(), best_answers=self.best_answers)  # a resumed run writes them too

  def load_state(self, state: Dict, best_weights) -> None:
    super().load_state(state, best_weights)
    self.best_answers = dict(state["best_answers"])


# -------------------------------------------------------------------- training


def fit_span_model(model: SpanModel, train_features: SquadFeatures, dev: Sequence[SquadExample],
                   dev_features: SquadFeatures, config: SquadTrainConfig, strategy=None,
                   verbose: bool = True, log_dir: Optional[str] = None,
                   checkpoint_dir: Optional[str] = None,
                   checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS,
                   fingerprint: Optional[str] = None):
  """Trains a built SpanModel whose trainable set is chosen, on featurized windows.

  The epoch loop, step checkpoints and resume are trainer.run_epochs';
  epoch e's window order is a numpy permutation seeded by (seed, e).

  Returns (TrainResult, the best epoch's dev answers); the result's `seconds`
  holds the training time spent before a resume (0 otherwise). The model
  ends up with the weights of its best dev epoch.
  """
  config.validate()
  strategy = strategy or get_strategy("default")
  report = parameter_report(model)
  epoch_batches = training.steps_per_epoch(len(train_features), config.batch_size)
  total_steps = epoch_batches * config.epochs
  if verbose:
    print(f"[train-squad] {len(set(train_features.example_index))} train questions "
          f"({len(train_features)} windows), "
          f"{len(dev)} dev questions ({len(dev_features)} windows); method {config.method}: "
          f"{report.trained_params:,} trained parameters ({100 * report.trained_fraction:.2f}% of base)",
          flush=True)
  compile_for_training(model, squad.compile_span_model, config, total_steps, strategy)
  tracker = _SquadBestEpochTracker(dev, dev_features, config, log_dir, verbose)

  def epoch_dataset(epoch: int):
    order = np.random.default_rng([config.seed % 2**64, epoch]).permutation(len(train_features))
    return squad.make_span_dataset(train_features, config.batch_size, order=order)

  seconds_before = run_epochs(model, epoch_dataset, epoch_batches, tracker, config, strategy, verbose=verbose,
                              log_dir=log_dir, checkpoint_dir=checkpoint_dir,
                              checkpoint_every_steps=checkpoint_every_steps, fingerprint=fingerprint,
                              log_prefix="[train-squad] ")
  result = TrainResult(
      task=SQUAD_TASK.name, method=config.method, metrics=tracker.best_metrics,
      primary_metric=SQUAD_TASK.primary_metric, score=float(tracker.best_score),
      best_epoch=tracker.best_epoch, history=tracker.history,
      trained_params=report.trained_params, trained_fraction=report.trained_fraction, seconds=seconds_before)
  return result, tracker.best_answers


def train_squad(train: Sequence[SquadExample],
                dev: Sequence[SquadExample],
                config: SquadTrainConfig,
                out_dir: Optional[str] = None,
                pretrained: Optional[PretrainedEncoder] = None,
                verbose: bool = True,
                checkpoint_every_steps: Optional[int] = DEFAULT_CHECKPOINT_EVERY_STEPS):
  """Loads the encoder, builds and trains a SpanModel: (TrainResult, model, featurizer).

  With `out_dir`, writes the files listed in the module docstring and, while
  training, a step checkpoint under `checkpoint/` (as trainer.train_task
  does): the same call after a crash resumes from it. When `out_dir` already
  holds this finished run, returns its metrics and (None, None) without
  training.
  """
  config.validate()
  start = time.perf_counter()
  if not train:
    raise ValueError("the training set holds no questions")
  if not dev:
    raise ValueError("the dev set holds no questions")
  if out_dir:
    identity = run_identity(config, train, dev)
    finished = finished_run(out_dir, identity, verbose, log_prefix="[train-squad] ")
    if finished is not None:
      return finished, None, None
  strategy = get_strategy(config.strategy)
  pretrained, model, fingerprint = build_trainable_model(
      config, lambda loaded: build_span_model(loaded, config.dropout_rate, config.seed), strategy, pretrained)
  preprocessor = BertPreprocessor(pretrained.vocab_file, pretrained.lower_case, config.max_seq_length)
  featurizer = SquadFeaturizer.from_preprocessor(preprocessor, config.doc_stride, config.max_query_length)
  train = _limit(train, config.max_train_examples, config.seed)
  # Before anything is written to out_dir, so that a question too long for
  # max_seq_length leaves no run behind.
  train_features, dev_features = featurizer.featurize(train), featurizer.featurize(dev)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, RUN_FILE), identity)
  result, answers = fit_span_model(
      model, train_features, dev, dev_features, config, strategy, verbose,
      log_dir=os.path.join(out_dir, "logs") if out_dir else None,
      checkpoint_dir=os.path.join(out_dir, CHECKPOINT_DIR) if out_dir else None,
      checkpoint_every_steps=checkpoint_every_steps, fingerprint=fingerprint)
  result.seconds += time.perf_counter() - start  # plus the time before a resume
  if out_dir:
    manifest = artifact_manifest(SQUAD_TASK, config, model, preprocessor, pretrained.config, fingerprint,
                                 len(train))
    manifest["squad"] = config.squad_settings()
    save_artifact(os.path.join(out_dir, "artifact"), model, manifest)
    write_json_atomic(os.path.join(out_dir, PREDICTIONS_FILE), answers)
    # metrics.json last: it marks the run finished.
    write_json_atomic(os.path.join(out_dir, "metrics.json"), dict(
        result.to_dict(), base_params=parameter_report(model).base_params, config=config.to_dict(),
        train_questions=len(train), train_windows=len(train_features), dev_questions=len(dev)))
    checkpoints.StepCheckpoint.remove(os.path.join(out_dir, CHECKPOINT_DIR))
  return result, model, featurizer


# ------------------------------------------------------------------ evaluation


def load_squad_artifact(artifact_dir: str, encoder_spec: Optional[str] = None):
  """(SpanModel, manifest, SquadFeaturizer) of a train-squad artifact or run directory.

  `encoder_spec` defaults to the encoder the artifact was trained with; the
  base fingerprint check refuses any other base either way.
  """
  artifact_dir = resolve_artifact_dir(artifact_dir)
  manifest = read_manifest(artifact_dir)
  if not is_span_manifest(manifest):
    raise ArtifactError(f"artifact {artifact_dir} holds a model for task {manifest['task'].get('name')!r}, "
                        "not a SQuAD span model; use `adapter-keras evaluate`")
  model, manifest, preprocessor = load_artifact(artifact_dir, encoder_spec or manifest["encoder"]["spec"])
  settings = manifest["squad"]
  featurizer = SquadFeaturizer.from_preprocessor(preprocessor, settings["doc_stride"],
                                                 settings["max_query_length"])
  return model, manifest, featurizer


def evaluate_squad_artifact(artifact_dir: str, dev: Sequence[SquadExample],
                            encoder_spec: Optional[str] = None) -> Tuple[Dict[str, float], Dict[str, str]]:
  """(EM/F1 as fractions, {question id: answer}) of a saved SQuAD model on `dev`."""
  if not dev:
    raise ValueError("the dev set holds no questions")
  model, manifest, featurizer = load_squad_artifact(artifact_dir, encoder_spec)
  settings = manifest["squad"]
  answers = predict_answers(model, dev, featurizer.featurize(dev), settings["max_answer_length"],
                            settings["n_best_size"])
  return score_answers(dev, answers), answers


def write_predictions(path: str, answers: Dict[str, str]) -> str:
  """{question id: answer text}, the prediction file the official evaluate-v1.1.py reads."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  write_json_atomic(path, answers)
  return path
