"""Extractive question answering (SQuAD v1.1) as a task model: AdapterSpanExtractor, raw strings in, answers out.

    qa = AdapterSpanExtractor.from_pretrained("minilm-l6")
    qa.compile()
    qa.fit((questions, contexts), answers)     # a {"text", "answer_start"} dict per question
    qa.predict((questions, contexts))          # answer strings; evaluate: exact match and F1

It is networks/span_model.py's SpanModel with models/base.py's shared part; `adapter-keras train-squad`
builds and saves this very class. Its windows are tasks/squad.py's SquadFeaturizer's, its loss, decoding and
EM/F1 train/squad.py's (compile_span_model, predict_answers, score_answers); the serving SavedModel has no
span head, so it has no `export`.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Union

import tensorflow as tf
import tf_keras

from adapter_keras.artifacts import ArtifactError
from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.models.base import (TaskModelBase, constructing, keras_name, loaded_encoder,
                                       method_and_config, recorded_config)
from adapter_keras.models.inputs import is_pair_input, is_text_input, span_dataset_columns, squad_answers, strings
from adapter_keras.networks import SPAN_TASK_TYPE, SpanModel
from adapter_keras.tasks.squad import SQUAD_TASK, SquadExample, SquadFeaturizer
from adapter_keras.values import KERAS_PACKAGE
from adapter_keras.train.squad import (EVAL_BATCH_SIZE, SquadRecipe, SquadTrainConfig, compile_span_model,
                                       predict_answers, predict_spans, score_answers)

_SQUAD_RECIPE = SquadTrainConfig()  # train-squad's window, decoding and training defaults


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class AdapterSpanExtractor(TaskModelBase, SpanModel):
  """Extractive question answering (SQuAD v1.1) on a pre-trained BERT with adapters; raw strings in,
  answer strings out.

  Questions and contexts are cut into train-squad's windows (tasks/squad.py: SquadFeaturizer, `doc_stride`
  tokens apart), once per fit/evaluate/predict call; a question's answer is the best span over its
  windows (tasks/squad.py: decode_spans) and evaluate scores it with the official SQuAD v1.1 exact match
  and F1. The model is a SpanModel, so its artifact is the one `adapter-keras evaluate-squad` reads.

  Args:
    encoder, adapter, method, top_k, dropout_rate, seed, method_config: as AdapterClassifier's.
    max_seq_length: tokens per window, [CLS]/[SEP] and the question included.
    doc_stride: tokens between the starts of a context's windows.
    max_query_length: question tokens kept.
    max_answer_length: longest answer, in tokens.
    n_best_size: start and end candidates per window the decoding considers.
  """

  task_type = SPAN_TASK_TYPE
  default_train_config = _SQUAD_RECIPE

  def __init__(self,
               encoder,
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
               method_config=None,
               **kwargs):
    kwargs.pop("task", None)  # always SQuAD's
    method, settings = method_and_config(method, adapter, top_k, method_config)
    windows = dict(max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length,
                   max_answer_length=max_answer_length, n_best_size=n_best_size)
    # Checked before the encoder loads: SquadTrainConfig refuses window settings no run could use.
    dataclasses.replace(_SQUAD_RECIPE, **windows)
    with constructing(encoder, seed):
      pretrained, settings = loaded_encoder(encoder, method, settings, seed, max_seq_length)
      super().__init__(pretrained.encoder, dropout_rate=dropout_rate, head_seed=seed, **kwargs)
      self._set_up(pretrained, method, settings, seed, max_seq_length, recorded_config(
          _SQUAD_RECIPE, pretrained, method, settings, seed=seed, dropout_rate=dropout_rate, **windows))
    self.featurizer = SquadFeaturizer.from_preprocessor(self.preprocessor, doc_stride, max_query_length)

  @classmethod
  def for_run(cls, pretrained, task, config):
    """The model `adapter-keras train-squad` trains (train/run.py: build_trainable_model)."""
    model = cls(pretrained, method=config.method, method_config=config.method_settings(),
                max_seq_length=config.max_seq_length, dropout_rate=config.dropout_rate, seed=config.seed,
                name=keras_name(task.name), **config.squad_settings())
    model.record_training(config, 0)
    return model

  @property
  def task(self):
    return SQUAD_TASK

  @classmethod
  def from_pretrained(cls, encoder, adapter: Optional[AdapterConfig] = AdapterConfig(),
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
    return self.train_config.squad_settings()

  # ---------------------------------------------------------------- Keras plumbing

  def call(self, inputs, training=None):
    if not isinstance(inputs, dict):
      raise TypeError("an AdapterSpanExtractor is called on windows (a dict of input_word_ids, input_mask, "
                      "input_type_ids); give (questions, contexts) to predict, which cuts the windows")
    return super().call(inputs, training=training)

  def get_config(self):
    return dict(encoder=self.encoder_spec, **self._method_arguments(), max_seq_length=self.preprocessor.max_seq_length,
                **self.squad_settings, dropout_rate=self.dropout_rate, seed=self.seed, name=self.name)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)

  # ---------------------------------------------------------------- fit / evaluate / predict

  def _compile_with(self, optimizer, **kwargs):
    compile_span_model(self, optimizer, **kwargs)

  def _examples(self, x, y=None, with_answers: bool = True) -> List[SquadExample]:
    """(questions, contexts) and answers as SquadExamples, their ids the input positions."""
    if isinstance(x, tf.data.Dataset):
      if y is not None:
        raise ValueError("give a dataset's answers inside it, as ((question, context), answer) elements, "
                         "not as y")
      questions, contexts, y = span_dataset_columns(x, with_answers)
    else:
      if isinstance(x, tuple) and len(x) == 2 and all(isinstance(part, (str, bytes)) for part in x):
        x = ([x[0]], [x[1]])  # one question and its context
        y = [y] if isinstance(y, dict) else y
      if not is_pair_input(x):
        raise ValueError("give the questions and their contexts as a pair (questions, contexts) of two "
                         "equally long lists")
      questions, contexts = strings(x[0]), strings(x[1])
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
      answers = [squad_answers(a, c, i) for i, (a, c) in enumerate(zip(y, contexts))]
      empty = [i for i, a in enumerate(answers) if not a]
      if empty:
        raise ValueError(f"question {empty[0]} has no answer: give one {{'text', 'answer_start'}} at least")
    else:
      answers = [()] * len(questions)
    return [SquadExample(str(i), q, c, a) for i, (q, c, a) in enumerate(zip(questions, contexts, answers))]

  def _recipe_for(self, x, y, validation_data):
    """SQuAD's recipe (train/squad.py) over (questions, contexts) with answers: windows without the answer
    are trained to point at [CLS]; of several answers per question the first is trained on."""
    train = self._examples(x, y)
    dev = []
    if validation_data is not None:
      dev = (self._examples(validation_data) if isinstance(validation_data, tf.data.Dataset)
             else self._examples(*validation_data))
    return SquadRecipe(train, dev)

  def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
    """The official SQuAD v1.1 {"exact_match", "f1"}, as fractions in [0, 1] like train-squad's
    metrics.json, each question scored against the best of its answers. Window features (a dataset of
    dicts) go to Keras's evaluate (the span loss)."""
    if not is_text_input(x):
      return super().evaluate(x, y, batch_size=batch_size, **kwargs)
    examples = self._examples(x, y)
    return score_answers(examples, self.answer_examples(examples, batch_size))

  def predict(self, x, batch_size=None, **kwargs):
    """The best answer string for every question of (questions, contexts) (or a dataset of
    (question, context)), in input order; "" where no window holds a valid span."""
    if not is_text_input(x):
      return super().predict(x, batch_size=batch_size, **kwargs)
    examples = self._examples(x, with_answers=False)
    answers = self.answer_examples(examples, batch_size)
    return [answers[e.id] for e in examples]

  def answer_examples(self, examples: List[SquadExample], batch_size=None):
    """{question id: best answer text} of SquadExamples (their windows cut here)."""
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

  def _manifest_extras(self) -> dict:
    return dict(squad=self.squad_settings)

  @classmethod
  def arguments_from_manifest(cls, manifest: dict, artifact_dir: str) -> dict:
    settings = manifest.get("squad")
    if not isinstance(settings, dict):
      raise ArtifactError(f"artifact {artifact_dir} is a span model without its SQuAD window settings "
                          "(manifest 'squad')")
    return dict(settings)

  _save_alternative = ""

  def export(self, out_dir: str, overwrite: bool = False) -> str:
    raise ValueError("the serving SavedModel (serving/export.py) serves classification and regression heads; "
                     "it cannot cut contexts into windows or decode spans. Save the span extractor with "
                     "save_adapter(dir) and serve it with AdapterSpanExtractor.load_adapter(dir).predict, or "
                     "score it with `adapter-keras evaluate-squad --artifact dir`")


def evaluate_squad_artifact(artifact_dir: str, dev: List[SquadExample], encoder=None):
  """(EM/F1 as fractions, {question id: answer}) of a saved span model on `dev` (`adapter-keras evaluate-squad`)."""
  if not dev:
    raise ValueError("the dev set holds no questions")
  model = AdapterSpanExtractor.load_adapter(artifact_dir, encoder)
  answers = model.answer_examples(dev)
  return score_answers(dev, answers), answers
