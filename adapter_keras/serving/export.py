"""SavedModel export: raw strings in, labels out, one or many tasks.

One task: `serving_default(text[, text_b])` returns `label` (string) and
`probabilities` (classification) or `score` (regression).

Several tasks: one SavedModel storing the shared base once, a signature per
task as above (named after the task), and `mixed(text, text_b, task)` which
routes every example of one batch through its own task's adapters and head
and returns `label` and `score` per example (score = the predicted class's
probability, or the regression value). `mixed` is also `serving_default`.

Loading needs only TensorFlow and tensorflow-text (whose tokenizer ops the
graph uses): `tf.saved_model.load(path).signatures["serving_default"]`.
"""
from __future__ import annotations

import os
import re
from typing import Dict

import tensorflow as tf

from adapter_keras.io import atomic_directory
from adapter_keras.layers.pooling import head_outputs, pool


def signature_name(task_name: str) -> str:
  name = re.sub(r"[^A-Za-z0-9_]", "_", task_name)
  return name if name and name[0].isalpha() else f"task_{name}"


class _TaskServer(tf.Module):
  """Raw strings -> label/probabilities/score for one task."""

  def __init__(self, entry):
    super().__init__(name=signature_name(entry.name))
    # The model's layers, not the Keras model itself: the model also tracks
    # its optimizer, whose slot variables have no place in a serving model.
    self.encoder = entry.model.encoder
    self.mean_pooling = entry.model.mean_pooling
    self.head_dropout = entry.model.head_dropout
    self.head = entry.model.head
    self.pooling = entry.model.pooling
    self.preprocessor = entry.preprocessor
    self.is_pair = bool(entry.task.is_pair)
    self.is_regression = entry.task.task_type == "regression"
    names = entry.task.label_names or ()
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


class _ServingModule(tf.Module):

  def __init__(self, entries: Dict[str, object]):
    super().__init__(name="adapter_keras_serving")
    self.servers = [_TaskServer(e) for e in entries.values()]
    self.task_names = [e.name for e in entries.values()]

  def task_signature(self, server: _TaskServer):
    text_spec = tf.TensorSpec([None], tf.string, name="text")
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
    servers, names = self.servers, self.task_names

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


def check_writable_destination(out_dir: str) -> None:
  """Fails early, with a clear message, when `out_dir` cannot be created."""
  existing = os.path.dirname(os.path.abspath(out_dir))
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise NotADirectoryError(f"cannot export to {out_dir}: {existing} is a file, not a directory")
  if not os.access(existing, os.W_OK):
    raise PermissionError(f"cannot export to {out_dir}: {existing} is not writable")


def export_saved_model(entries: Dict[str, object], out_dir: str) -> str:
  """Writes a SavedModel for the given task entries (see module docstring), atomically."""
  if not entries:
    raise ValueError("nothing to export: no tasks given")
  module = _ServingModule(entries)
  signatures = {}
  for server in module.servers:
    signatures[signature_name(server.name) if len(entries) > 1 else "serving_default"] = (
        module.task_signature(server))
  if len(entries) > 1:
    signatures["mixed"] = module.mixed_signature()
    signatures["serving_default"] = signatures["mixed"]
  check_writable_destination(out_dir)
  with atomic_directory(out_dir) as tmp:
    tf.saved_model.save(module, tmp, signatures=signatures)
  return out_dir
