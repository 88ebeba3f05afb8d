"""SavedModel export: raw strings in, labels out, one or many tasks.

One task: `serving_default(text[, text_b])` returns `label` (string) and
`probabilities` (classification) or `score` (regression); a token model's
`serving_default(text)` returns per-word `words`, `tags`, character offsets
`start`/`end`, `score` and `num_words` (`_TokenServer`); among several tasks
it has its own signature, and `mixed` routes the sentence-level tasks only.

Several tasks: one SavedModel storing the shared base once, a signature per
task as above (named after the task: serving/signatures.py, which refuses
names that collide or are reserved), and `mixed(text, text_b, task)` which
routes every example of one batch through its own task's adapters and head
and returns `label` and `score` per example (score = the predicted class's
probability, or the regression value). `mixed` is also `serving_default`.

A single task whose tuning method has a merge (LoRA, IA3: TuningMethod.can_merge) is exported merged by
default: its update is folded into the base kernels before the graph is traced, so the SavedModel computes
with the base's operations alone; the model in memory is put back exactly afterwards. Several tasks are never
merged: they share the base's kernels.

Loading needs only TensorFlow and tensorflow-text (whose tokenizer ops the
graph uses): `tf.saved_model.load(path).signatures["serving_default"]`.
Beside the SavedModel, `adapter_keras_export.json` names the tasks, their
signatures and every file written (serving/signatures.py), so that `predict`
can check its inputs and `--overwrite` can replace only an earlier export.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict

import tensorflow as tf

import adapter_keras
from adapter_keras.io import atomic_directory, write_json_atomic
from adapter_keras.layers.pooling import head_outputs, pool
from adapter_keras.methods import base_variables, find_encoder, get_method
from adapter_keras.serving.signatures import (DEFAULT_SIGNATURE, EXPORT_MANIFEST, ROUTER_SIGNATURE,
                                              check_export_destination, export_manifest, signature_name,
                                              signature_names)


class _TaskServer(tf.Module):
  """Raw strings -> label/probabilities/score for one task."""

  def __init__(self, name: str, model):
    super().__init__(name=signature_name(name))
    if model.task_type not in ("classification", "regression"):
      raise ValueError(f"task {name} is a {model.task_type} model; the serving SavedModel serves classification "
                       "and regression heads")
    # The model's layers, not the Keras model itself: the model also tracks
    # its optimizer, whose slot variables have no place in a serving model.
    self.encoder = model.encoder
    self.mean_pooling = model.mean_pooling
    self.head_dropout = model.head_dropout
    self.head = model.head
    self.pooling = model.pooling
    self.preprocessor = model.preprocessor
    self.is_pair = bool(model.task.is_pair)
    self.is_regression = model.task.task_type == "regression"
    names = model.task.label_names or ()
    self.label_names = tf.constant(list(names) if names else [""], tf.string)

  def outputs(self, text, text_b):
    segments = [text, text_b] if self.is_pair else [text]
    features = self.preprocessor(segments)
    pooled = pool(self.pooling, self.encoder(features, training=False), features["input_mask"],
                  self.mean_pooling)
    values = head_outputs(pooled, self.head_dropout, self.head, training=False)
    if self.is_regression:
      score = values[:, 0]
      return dict(label=tf.strings.as_string(score, precision=4), score=score)
    probabilities = tf.nn.softmax(values, axis=-1)
    return dict(label=tf.gather(self.label_names, tf.argmax(probabilities, axis=-1)),
                probabilities=probabilities, score=tf.reduce_max(probabilities, axis=-1))


class _TokenServer(tf.Module):
  """Raw strings -> per-word tags with character offsets for one token-classification task: words split on
  whitespace, cut into the training windows and scored once each, in the graph (tasks/token_windows.py:
  TokenFeaturizer.graph_windows, which gives AdapterTokenClassifier.predict's windows and tags)."""

  is_pair = False

  def __init__(self, name: str, model):
    super().__init__(name=signature_name(name))
    self.encoder = model.encoder
    self.head_dropout = model.head_dropout
    self.head = model.head
    self.featurizer = model.featurizer
    self.label_names = tf.constant(list(model.labels), tf.string)

  def outputs(self, text):
    """words, tags, start, end (character offsets of each word in its text: text[start:end] is the word),
    score (the tag's probability), each [batch, most words] padded ("", -1, 0), and num_words [batch]."""
    windows = self.featurizer.graph_windows(text)
    sequence = self.encoder(windows["inputs"], training=False)["sequence_output"]
    logits = head_outputs(sequence, self.head_dropout, self.head, training=False)
    probabilities = tf.nn.softmax(tf.gather_nd(logits, windows["scored_at"]), axis=-1)
    words = windows["words"]
    own_text = tf.gather(text, words.value_rowids())

    def characters(byte_offsets):  # UTF-8 byte offsets -> character offsets (what Python's str indexes)
      offsets = byte_offsets.flat_values
      return tf.strings.length(tf.strings.substr(own_text, tf.zeros_like(offsets), offsets), unit="UTF8_CHAR")

    per_word = dict(words=(words.flat_values, ""),
                    tags=(tf.gather(self.label_names, tf.argmax(probabilities, axis=-1)), ""),
                    start=(characters(windows["byte_start"]), -1), end=(characters(windows["byte_end"]), -1),
                    score=(tf.reduce_max(probabilities, axis=-1), 0.0))
    outputs = {name: words.with_flat_values(values).to_tensor(default_value=fill)
               for name, (values, fill) in per_word.items()}
    return dict(outputs, num_words=tf.cast(words.row_lengths(), tf.int32))


def _server(name: str, model):
  return _TokenServer(name, model) if model.task_type == "token" else _TaskServer(name, model)


class _ServingModule(tf.Module):

  def __init__(self, models: Dict[str, object]):
    super().__init__(name="adapter_keras_serving")
    self.servers = [_server(name, model) for name, model in models.items()]
    self.task_names = list(models)

  def task_signature(self, server):
    text_spec = tf.TensorSpec([None], tf.string, name="text")
    if isinstance(server, _TokenServer):
      @tf.function(input_signature=[text_spec])
      def tag(text):
        return server.outputs(text)
      return tag
    if server.is_pair:
      @tf.function(input_signature=[text_spec, tf.TensorSpec([None], tf.string, name="text_b")])
      def serve_pair(text, text_b):
        return server.outputs(text, text_b)
      return serve_pair

    @tf.function(input_signature=[text_spec])
    def serve(text):
      out = server.outputs(text, None)
      return {k: v for k, v in out.items() if not (k == "score" and "probabilities" in out)}
    return serve

  def mixed_signature(self):
    # The router returns one label per text: the sentence-level tasks (a token task has its own signature only).
    routed = [(name, server) for name, server in zip(self.task_names, self.servers)
              if not isinstance(server, _TokenServer)]
    names, servers = [name for name, _ in routed], [server for _, server in routed]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([None], tf.string, name="text_b"),
                                  tf.TensorSpec([None], tf.string, name="task")])
    def mixed(text, text_b, task):
      known = tf.reduce_any(tf.equal(task[:, None], tf.constant(names)[None, :]), axis=1)
      tf.debugging.assert_equal(tf.reduce_all(known), True,
                                message=f"every example's task must be one of {names}")
      positions, labels, scores = [], [], []
      for name, server in zip(names, servers):
        index = tf.cast(tf.where(tf.equal(task, name))[:, 0], tf.int32)

        def run(server=server, index=index):
          out = server.outputs(tf.gather(text, index), tf.gather(text_b, index))
          return out["label"], out["score"]

        def empty():
          return tf.zeros([0], tf.string), tf.zeros([0], tf.float32)

        label, score = tf.cond(tf.size(index) > 0, run, empty)
        positions.append(index)
        labels.append(label)
        scores.append(score)
      return dict(label=tf.dynamic_stitch(positions, labels),
                  score=tf.dynamic_stitch(positions, scores))
    return mixed


def can_merge(model) -> bool:
  """Whether `model`'s tuning method can fold its update into the base (methods: TuningMethod.can_merge)."""
  method = getattr(model, "method", None)
  return method is not None and get_method(method).can_merge


@contextlib.contextmanager
def merged(model):
  """`model` with its method's update merged into the base kernels (TuningMethod.merge) inside the block; on
  leaving it, even on an error, unmerged and every base variable put back to its exact value before (unmerge
  alone restores them within float error). Costs one copy of the base's weights in host memory meanwhile."""
  if not can_merge(model):
    yield model
    return
  method = get_method(model.method)
  variables = base_variables(find_encoder(model))
  before = [variable.numpy() for variable in variables]
  method.merge(model, model.method_config)
  try:
    yield model
  finally:
    method.unmerge(model, model.method_config)
    for variable, value in zip(variables, before):
      variable.assign(value)


def export_saved_model(entries: Dict[str, object], out_dir: str, overwrite: bool = False,
                       merge: bool = False) -> str:
  """Writes a SavedModel for the given {task name: task model} (see module docstring), atomically.

  `out_dir` must be new or empty, or (with `overwrite`) hold an earlier export
  and nothing else (signatures.check_export_destination). `merge`: one task
  whose method has a merge is traced merged (`merged`); several tasks refuse it.
  """
  if not entries:
    raise ValueError("nothing to export: no tasks given")
  multi = len(entries) > 1
  # `mixed` routes the sentence-level tasks (one label per text); token tasks have their signatures only.
  routed = multi and any(model.task_type != "token" for model in entries.values())
  if merge and multi:
    raise ValueError("merge folds one task's update into the base kernels, which several tasks share: export "
                     "several tasks with merge=False")
  names = signature_names(list(entries)) if multi else {n: DEFAULT_SIGNATURE for n in entries}
  check_export_destination(out_dir, overwrite)
  module = _ServingModule(entries)
  signatures = {names[name]: module.task_signature(server) for name, server in zip(entries, module.servers)}
  if routed:
    signatures[ROUTER_SIGNATURE] = module.mixed_signature()
    signatures[DEFAULT_SIGNATURE] = signatures[ROUTER_SIGNATURE]
  tasks = [dict(name=name, signature=names[name], is_pair=server.is_pair,
                task_type=entries[name].task.task_type, label_names=list(entries[name].task.label_names or ()))
           for name, server in zip(entries, module.servers)]
  with atomic_directory(out_dir) as tmp:
    # The wrappers read their merged flag when traced, i.e. inside save.
    with merged(next(iter(entries.values()))) if merge else contextlib.nullcontext():
      tf.saved_model.save(module, tmp, signatures=signatures)
    manifest = export_manifest(tasks, ROUTER_SIGNATURE if routed else None, tmp, adapter_keras.__version__)
    write_json_atomic(os.path.join(tmp, EXPORT_MANIFEST), manifest)
    # Saving takes seconds; check again so that files put into out_dir meanwhile are not replaced.
    check_export_destination(out_dir, overwrite)
  return out_dir
