"""Token classification (NER, tagging) as a task model: AdapterTokenClassifier, words in, (word, tag) pairs out.

    tagger = AdapterTokenClassifier.from_pretrained("minilm-l6", labels=["O", "B-PER", "I-PER"])
    tagger.compile()
    tagger.fit([["Ada", "Lovelace", "wrote"]], [["B-PER", "I-PER", "O"]])   # or raw strings, split on whitespace
    tagger.predict(["Ada Lovelace wrote"])     # [[("Ada", "B-PER"), ("Lovelace", "I-PER"), ("wrote", "O")]]

It is networks/token_model.py's TokenModel with models/base.py's shared part; `adapter-keras train
--task-type token` builds and saves this very class. Its windows and word alignment are
tasks/token_windows.py's, its loss, dev scoring and prediction train/tagging.py's, its metrics (entity-level
precision/recall/F1 as conlleval counts them, word accuracy) tasks/tagging.py's.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple, Union

import tensorflow as tf
import tf_keras

from adapter_keras.artifacts import ArtifactError
from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.models.base import (TaskModelBase, constructing, keras_name, loaded_encoder, method_and_config,
                                       recorded_config)
from adapter_keras.models.inputs import is_text_input
from adapter_keras.networks import TokenModel
from adapter_keras.serving.export import export_saved_model
from adapter_keras.tasks.tagging import TaggedSentence, TokenTask, check_tags, sentences_from
from adapter_keras.tasks.token_windows import TokenFeaturizer
from adapter_keras.train.config import TokenTrainConfig
from adapter_keras.train.tagging import (EVAL_BATCH_SIZE, TokenRecipe, compile_token_model, predict_tags,
                                         score_sentences)
from adapter_keras.values import KERAS_PACKAGE

_TOKEN_RECIPE = TokenTrainConfig()  # `train --task-type token`'s defaults


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class AdapterTokenClassifier(TaskModelBase, TokenModel):
  """Token classification (NER, POS, slot filling) on a pre-trained BERT with any tuning method; words in,
  one tag per word out.

  Args:
    encoder, adapter, method, top_k, dropout_rate, seed, method_config: as AdapterClassifier's.
    labels: the tags, in class-id order (`adapter-keras train --task-type token` takes the training file's:
      "O" first, the others sorted).
    max_seq_length: sub-words per window, [CLS] and [SEP] included; longer sentences are cut into windows.
    doc_stride: sub-words between the starts of a long sentence's windows.
    label_all_subwords: train every sub-word of a word on its tag (default: the first sub-word only).
    task: the TokenTask a run trains for (default: one named after the model, with `labels`).
  """

  task_type = TokenModel.task_type
  default_train_config = _TOKEN_RECIPE

  def __init__(self,
               encoder,
               labels: Optional[Sequence[str]] = None,
               adapter: Optional[Union[AdapterConfig, dict]] = AdapterConfig(),
               method: str = "adapter",
               max_seq_length: int = _TOKEN_RECIPE.max_seq_length,
               doc_stride: int = _TOKEN_RECIPE.doc_stride,
               label_all_subwords: bool = _TOKEN_RECIPE.label_all_subwords,
               top_k: Optional[int] = None,
               dropout_rate: float = _TOKEN_RECIPE.dropout_rate,
               seed: int = _TOKEN_RECIPE.seed,
               method_config=None,
               task: Optional[Union[TokenTask, dict]] = None,
               **kwargs):
    if isinstance(task, dict):
      task = TokenTask.from_dict(task)
    if labels is None and task is None:
      raise ValueError("give the tags: labels=[...] (e.g. ['O', 'B-PER', 'I-PER'])")
    labels = tuple(str(label) for label in (labels if labels is not None else task.label_names))
    if len(labels) < 1 or len(set(labels)) != len(labels):
      raise ValueError(f"labels must be distinct tag names, got {list(labels)}")
    if task is not None and tuple(task.label_names) != labels:
      raise ValueError(f"labels {list(labels)} differ from the task's {list(task.label_names)}")
    method, settings = method_and_config(method, adapter, top_k, method_config)
    settings_of_run = dict(doc_stride=doc_stride, label_all_subwords=label_all_subwords)
    # Checked before the encoder loads: TokenTrainConfig refuses settings no run could use.
    dataclasses.replace(_TOKEN_RECIPE, max_seq_length=max_seq_length, **settings_of_run)
    with constructing(encoder, seed):
      pretrained, settings = loaded_encoder(encoder, method, settings, seed, max_seq_length)
      super().__init__(pretrained.encoder, num_labels=len(labels), dropout_rate=dropout_rate, head_seed=seed,
                       **kwargs)
      self.labels = labels
      self._task = task
      self._set_up(pretrained, method, settings, seed, max_seq_length, recorded_config(
          _TOKEN_RECIPE, pretrained, method, settings, max_seq_length=max_seq_length, seed=seed,
          dropout_rate=dropout_rate, **settings_of_run))
    self.featurizer = TokenFeaturizer.from_preprocessor(self.preprocessor, labels, **settings_of_run)

  @classmethod
  def for_run(cls, pretrained, task: TokenTask, config: TokenTrainConfig):
    """The model `adapter-keras train --task-type token` trains (train/run.py: build_trainable_model)."""
    model = cls(pretrained, task=task, method=config.method, method_config=config.method_settings(),
                max_seq_length=config.max_seq_length, dropout_rate=config.dropout_rate, seed=config.seed,
                name=keras_name(task.name), **config.token_settings())
    model.record_training(config, 0)
    return model

  @classmethod
  def arguments_from_task(cls, task: TokenTask) -> dict:
    """The constructor arguments a task gives (its labels travel in `task` itself)."""
    return {}

  @classmethod
  def from_pretrained(cls, encoder, labels: Sequence[str], adapter: Optional[AdapterConfig] = AdapterConfig(),
                      method: str = "adapter", max_seq_length: int = _TOKEN_RECIPE.max_seq_length,
                      **kwargs) -> "AdapterTokenClassifier":
    """A token classifier on `encoder`'s pre-trained weights, built, its trainable set chosen by `method`."""
    return cls(encoder, labels=labels, adapter=adapter, method=method, max_seq_length=max_seq_length, **kwargs)

  @property
  def task(self) -> TokenTask:
    return self._task if self._task is not None else TokenTask(self.name, self.labels)

  @property
  def token_settings(self) -> dict:
    """doc_stride and label_all_subwords (what the artifact records)."""
    return dict(doc_stride=self.featurizer.doc_stride, label_all_subwords=self.featurizer.label_all_subwords)

  # ---------------------------------------------------------------- Keras plumbing

  def call(self, inputs, training=None):
    if not isinstance(inputs, dict):
      raise TypeError("an AdapterTokenClassifier is called on windows (a dict of input_word_ids, input_mask, "
                      "input_type_ids); give sentences to predict, which cuts and aligns the windows")
    return super().call(inputs, training=training)

  def get_config(self):
    return dict(encoder=self.encoder_spec, labels=list(self.labels), **self._method_arguments(),
                max_seq_length=self.preprocessor.max_seq_length, **self.token_settings,
                dropout_rate=self.dropout_rate, seed=self.seed,
                task=self._task.to_dict() if self._task else None, name=self.name)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)

  # ---------------------------------------------------------------- fit / evaluate / predict

  def _compile_with(self, optimizer, **kwargs):
    compile_token_model(self, optimizer, **kwargs)

  def _sentences(self, x, y=None, with_tags: bool = True, what: str = "x") -> List[TaggedSentence]:
    """Sentences (lists of words, or strings split on whitespace) and their tags, checked against the labels."""
    if isinstance(x, tf.data.Dataset):
      raise ValueError("give token classification data as lists: sentences (lists of words or strings) and "
                       "their tag lists, not a tf.data.Dataset")
    if with_tags and y is None:
      raise ValueError("fit and evaluate need the tags: give y, one list of tags per sentence")
    sentences = sentences_from(x, y if with_tags else None, what)
    if with_tags:
      check_tags(sentences, self.labels, what)
    return sentences

  def _recipe_for(self, x, y, validation_data):
    train = self._sentences(x, y)
    dev = []
    if validation_data is not None:
      if not isinstance(validation_data, (list, tuple)) or len(validation_data) != 2:
        raise ValueError("validation_data is (sentences, tag lists)")
      dev = self._sentences(*validation_data, what="validation_data")
    return TokenRecipe(self.task, train, dev)

  def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
    """{"f1", "precision", "recall"} over entities (conlleval's counting, seqeval's default mode) and word
    "accuracy", as fractions. Window features (a dataset of (dict, label ids)) go to Keras's evaluate."""
    if not is_text_input(x):
      return super().evaluate(x, y, batch_size=batch_size, **kwargs)
    sentences = self._sentences(x, y)
    return score_sentences(sentences, self.predict_tags(sentences, batch_size))

  def predict(self, x, batch_size=None, **kwargs) -> List[List[Tuple[str, str]]]:
    """Per sentence (a list of words, or a string split on whitespace), its (word, tag) pairs in order.
    Window features (dicts of ids) go to Keras's predict (logits per position)."""
    if not is_text_input(x):
      return super().predict(x, batch_size=batch_size, **kwargs)
    sentences = self._sentences(x, with_tags=False)
    return [list(zip(s.words, tags)) for s, tags in zip(sentences, self.predict_tags(sentences, batch_size))]

  def predict_tags(self, sentences: Sequence[TaggedSentence], batch_size=None) -> List[List[str]]:
    """The tag of every word of TaggedSentences (tasks/tagging.py), in order."""
    return predict_tags(self, self.featurizer, sentences, batch_size or EVAL_BATCH_SIZE)

  # ---------------------------------------------------------------- artifacts

  def _manifest_extras(self) -> dict:
    return dict(token=self.token_settings)

  @classmethod
  def arguments_from_manifest(cls, manifest: dict, artifact_dir: str) -> dict:
    settings = manifest.get("token")
    if not isinstance(settings, dict):
      raise ArtifactError(f"artifact {artifact_dir} is a token model without its window settings (manifest "
                          "'token')")
    try:
      task = TokenTask.from_dict(manifest["task"])
    except (TypeError, ValueError) as e:
      raise ArtifactError(f"artifact {artifact_dir}: its token task is invalid: {e}") from None
    return dict(settings, task=task)

  def export(self, out_dir: str, overwrite: bool = False, merge: bool = True) -> str:
    """A SavedModel that takes raw strings (serving/export.py): `serving_default(text)` splits each on
    whitespace and returns per word its tag and character offsets, cutting and scoring the windows as predict
    does. `merge`: a method with a merge (LoRA, IA3) is folded into the base kernels in the graph."""
    return export_saved_model({self.name: self}, out_dir, overwrite=overwrite, merge=merge)


def evaluate_token_artifact(artifact_dir: str, sentences: Sequence[TaggedSentence], encoder=None):
  """(metrics, predicted tags) of a saved token model on tagged sentences (`adapter-keras evaluate`)."""
  model = AdapterTokenClassifier.load_adapter(artifact_dir, encoder)
  check_tags(sentences, model.labels)
  predicted = model.predict_tags(sentences)
  return score_sentences(sentences, predicted), predicted, model
