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
`all(text[, text_b])` (text_b when any task is a pair task; single-sentence
tasks ignore it) returns every task's outputs for every text, token tasks'
too, under `<signature>/<output>` (e.g. `sentiment/probabilities`), as each
task's own signature returns them (`AllTasks`). It computes what the tasks
share once: the tokenization per vocabulary and casing, the packed inputs per
max_seq_length (and pairing), the embedding lookups and, where every task of a
group leaves them as the base's, the first blocks (networks/shared_bottom.py);
each task runs only the rest of its encoder and its head.

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
from adapter_keras.networks.frozen_bottom import frozen_bottom_layers
from adapter_keras.networks.shared_bottom import SharedBottom, own_top, shared_depth, untouched_layers
from adapter_keras.serving.signatures import (ALL_SIGNATURE, DEFAULT_SIGNATURE, EXPORT_MANIFEST, ROUTER_SIGNATURE,
                                              check_export_destination, export_manifest, signature_name,
                                              signature_names)


class _TaskServer(tf.Module):
  """Raw strings -> label/probabilities/score for one task."""

  def __init__(self, name: str, model):
    super().__init__(name=signature_name(name))
    self.untouched_layers = untouched_layers(model)  # how much of the base the method leaves (AllTasks)
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

  def group_key(self) -> tuple:
    """Tasks with equal keys get the same encoder inputs from the same texts (AllTasks)."""
    preprocessor = self.preprocessor
    return ("sentence", preprocessor.tokenization_key(), preprocessor.max_seq_length,
            preprocessor.pad_to_max_length, self.is_pair)

  def features(self, text, text_b, tokenized=None):
    """The encoder inputs. `tokenized(preprocessor, segment name, texts)`, when given, tokenizes a segment
    ("text", "text_b"): AllTasks tokenizes each once for the tasks that tokenize alike."""
    segments = dict(text=text, text_b=text_b) if self.is_pair else dict(text=text)
    if tokenized is None:
      return self.preprocessor(list(segments.values()))
    preprocessor = self.preprocessor
    return preprocessor.pad(*preprocessor.pack_tokens([tokenized(preprocessor, name, texts)
                                                       for name, texts in segments.items()]))

  def outputs(self, text, text_b):
    features = self.features(text, text_b)
    return self.finish(features, self.encoder(features, training=False))

  def finish(self, features, encoder_outputs):
    """The signature's outputs from the encoder's."""
    pooled = pool(self.pooling, encoder_outputs, features["input_mask"], self.mean_pooling)
    values = head_outputs(pooled, self.head_dropout, self.head, training=False)
    if self.is_regression:
      score = values[:, 0]
      return dict(label=tf.strings.as_string(score, precision=4), score=score)
    probabilities = tf.nn.softmax(values, axis=-1)
    return dict(label=tf.gather(self.label_names, tf.argmax(probabilities, axis=-1)),
                probabilities=probabilities, score=tf.reduce_max(probabilities, axis=-1))

  def signature_outputs(self, outputs):
    """What the task's signature returns: a single-sentence classifier's without the score (its probabilities
    hold it; `mixed` reads it)."""
    return {k: v for k, v in outputs.items() if not (k == "score" and "probabilities" in outputs and
                                                      not self.is_pair)}


class _TokenServer(tf.Module):
  """Raw strings -> per-word tags with character offsets for one token-classification task: words split on
  whitespace, cut into the training windows and scored once each, in the graph (tasks/token_windows.py:
  TokenFeaturizer.graph_windows, which gives AdapterTokenClassifier.predict's windows and tags)."""

  is_pair = False
  pooling = "none"

  def __init__(self, name: str, model):
    super().__init__(name=signature_name(name))
    self.untouched_layers = untouched_layers(model)
    self.encoder = model.encoder
    self.head_dropout = model.head_dropout
    self.head = model.head
    self.featurizer = model.featurizer
    self.tokenization_key = model.preprocessor.tokenization_key()
    self.label_names = tf.constant(list(model.labels), tf.string)

  def group_key(self) -> tuple:
    """Token tasks with equal keys cut the same windows from the same texts (AllTasks)."""
    return ("token", self.tokenization_key, self.featurizer.max_seq_length, self.featurizer.doc_stride)

  def features(self, text):
    """The windows (tasks/token_windows.py: graph_windows); their encoder inputs are under "inputs"."""
    return self.featurizer.graph_windows(text)

  def outputs(self, text):
    """words, tags, start, end (character offsets of each word in its text: text[start:end] is the word),
    score (the tag's probability), each [batch, most words] padded ("", -1, 0), and num_words [batch]."""
    windows = self.features(text)
    return self.finish(text, windows, self.encoder(windows["inputs"], training=False))

  def signature_outputs(self, outputs):
    return outputs

  def finish(self, text, windows, encoder_outputs):
    """The signature's outputs from the encoder's on the windows."""
    sequence = encoder_outputs["sequence_output"]
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


class AllTasks(tf.Module):
  """Every task's outputs for the same texts, computing what the tasks share once (the `all` signature and
  MultiTaskModel.predict_all).

  Tasks are grouped by what turns texts into their encoder inputs (vocabulary, casing, max_seq_length, a pair
  task's pairing; a token task's windows), and each text is tokenized once per vocabulary and casing. Per group,
  `networks.SharedBottom` computes with `base`'s own layers what its tasks share (the embedding sum; the first
  k blocks where every variable there is still the base's, `networks.shared_depth`), and each task runs its own
  top from there (`networks.own_top`), then its head as its own signature does. Without `base` (tasks not of
  one bank), the tasks whose embedding lookups are the first task's layers share those, and no block.

  Args:
    servers: {task name: its server}, in output order (the servers of `_server`, or task models).
    base: the bank's base encoder (MultiTaskModel.base.encoder), or None.
  """

  def __init__(self, servers: Dict[str, object], base=None):
    super().__init__(name="all_tasks")
    servers = {name: s if isinstance(s, (_TaskServer, _TokenServer)) else _server(name, s)
               for name, s in servers.items()}
    self.servers = list(servers.values())
    self.task_names = list(servers)
    reference = base if base is not None else self.servers[0].encoder
    # Depths are decided now, from the variables' values: a traced graph keeps them, so it serves the tasks
    # as they are when it is made (an export is a snapshot; predict_all makes a new one when they change).
    self.depths = [shared_depth(s.encoder, reference, s.untouched_layers if base is not None else 0)
                   for s in self.servers]
    # The embedding lookups are the tasks' own layers too; the base's blocks and LayerNorm are only read (and
    # saved) where a task shares them.
    deepest = max((d for d in self.depths if d is not None), default=0)
    self.shared_layers = frozen_bottom_layers(reference, deepest) if deepest else []
    groups: Dict[tuple, list] = {}
    for index, server in enumerate(self.servers):
      groups.setdefault(server.group_key(), []).append(index)
    self.groups = list(groups.values())
    self.bottoms = [SharedBottom(reference, [self.depths[i] for i in members]) for members in self.groups]
    self.takes_text_b = any(s.is_pair for s in self.servers)

  def outputs(self, text, text_b=None) -> Dict[str, Dict[str, tf.Tensor]]:
    """{task name: its server's outputs} (`finish`'s, before a signature drops any)."""
    tokens: Dict[tuple, tf.RaggedTensor] = {}

    def tokenized(preprocessor, segment, texts):  # one tokenization per (vocabulary and casing, segment)
      key = (preprocessor.tokenization_key(), segment)
      if key not in tokens:
        tokens[key] = preprocessor.tokenize(texts)
      return tokens[key]

    results: Dict[int, Dict[str, tf.Tensor]] = {}
    for members, bottom in zip(self.groups, self.bottoms):
      first = self.servers[members[0]]
      if isinstance(first, _TokenServer):
        windows = first.features(text)
        features = windows["inputs"]
      else:
        features = first.features(text, text_b, tokenized)
      shared = bottom(features) if bottom.depths else {}
      for index in members:
        server, depth = self.servers[index], self.depths[index]
        if depth is None:
          encoder_outputs = server.encoder(features, training=False)
        else:
          encoder_outputs = own_top(server.encoder, shared[depth], features["input_mask"], depth, server.pooling)
        if isinstance(server, _TokenServer):
          results[index] = server.finish(text, windows, encoder_outputs)
        else:
          results[index] = server.finish(features, encoder_outputs)
    return {name: results[index] for index, name in enumerate(self.task_names)}


class _ServingModule(tf.Module):

  def __init__(self, models: Dict[str, object], base=None):
    super().__init__(name="adapter_keras_serving")
    self.servers = [_server(name, model) for name, model in models.items()]
    self.task_names = list(models)
    if len(models) > 1:
      self.all_tasks = AllTasks(dict(zip(self.task_names, self.servers)), base)

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
      return server.signature_outputs(server.outputs(text, None))
    return serve

  def all_signature(self, names: Dict[str, str]):
    """`all`: every task's signature outputs under "<its signature>/<output>" (AllTasks)."""
    everything = self.all_tasks
    specs = [tf.TensorSpec([None], tf.string, name="text")]
    if everything.takes_text_b:
      specs.append(tf.TensorSpec([None], tf.string, name="text_b"))

    def collect(text, text_b):
      outputs = everything.outputs(text, text_b)
      return {f"{names[name]}/{key}": value for name, server in zip(self.task_names, self.servers)
              for key, value in server.signature_outputs(outputs[name]).items()}

    if everything.takes_text_b:
      return tf.function(collect, input_signature=specs)
    return tf.function(lambda text: collect(text, None), input_signature=specs)

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
                       merge: bool = False, base=None) -> str:
  """Writes a SavedModel for the given {task name: task model} (see module docstring), atomically.

  `out_dir` must be new or empty, or (with `overwrite`) hold an earlier export
  and nothing else (signatures.check_export_destination). `merge`: one task
  whose method has a merge is traced merged (`merged`); several tasks refuse it.
  `base`: the encoder several tasks share (a MultiTaskModel's), with whose layers
  the `all` signature computes the blocks they share (AllTasks).
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
  module = _ServingModule(entries, base)
  signatures = {names[name]: module.task_signature(server) for name, server in zip(entries, module.servers)}
  if routed:
    signatures[ROUTER_SIGNATURE] = module.mixed_signature()
    signatures[DEFAULT_SIGNATURE] = signatures[ROUTER_SIGNATURE]
  if multi:
    signatures[ALL_SIGNATURE] = module.all_signature(names)
  tasks = [dict(name=name, signature=names[name], is_pair=server.is_pair,
                task_type=entries[name].task.task_type, label_names=list(entries[name].task.label_names or ()))
           for name, server in zip(entries, module.servers)]
  with atomic_directory(out_dir) as tmp:
    # The wrappers read their merged flag when traced, i.e. inside save.
    with merged(next(iter(entries.values()))) if merge else contextlib.nullcontext():
      tf.saved_model.save(module, tmp, signatures=signatures)
    manifest = export_manifest(tasks, ROUTER_SIGNATURE if routed else None, tmp, adapter_keras.__version__,
                               all_tasks=ALL_SIGNATURE if multi else None)
    write_json_atomic(os.path.join(tmp, EXPORT_MANIFEST), manifest)
    # Saving takes seconds; check again so that files put into out_dir meanwhile are not replaced.
    check_export_destination(out_dir, overwrite)
  return out_dir
