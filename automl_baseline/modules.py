"""Text-embedding modules: the paper's TF Hub handles, their Keras layers, and
the offline builder behind `automl-baseline make-module`.

A module is a TF2 "reusable SavedModel" (the TF Hub text-embedding format):
`__call__` maps a `[None]` string tensor to `[batch, dim]`, and the object
carries `variables` and `trainable_variables` so that `hub.KerasLayer(...,
trainable=True)` can fine-tune it. The modules built here also have
`token_embeddings(texts) -> {"embeddings": [batch, tokens, dim], "mask":
[batch, tokens]}` for the convolutional deep tower; for modules without it (the
TF Hub ones) that tower embeds each whitespace token through `__call__`, which
for the NNLM and Wiki-words bag-of-words modules is exactly the word's vector.

Builders (all fine-tunable except the frozen encoder):
* a word table (`--vocab` + `--matrix`), whitespace-tokenised, optionally
  normalised like the TF Hub "-with-normalization" modules;
* the WordPiece embedding table of a BERT encoder (`--kind token-table`);
* a frozen, mean-pooled BERT encoder (`--kind sentence`).
"""
from __future__ import annotations

import os
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from adapter_keras.io import atomic_directory, require_new_or_empty_directory

_TFHUB = "https://tfhub.dev/google/"
# Table 6 of Houlsby et al. (2019) as printed: (ID, handle). All five are TF1 hub.Modules.
PAPER_TABLE6: Tuple[Tuple[str, str], ...] = (
    ("English-small", _TFHUB + "nnlm-en-dim50-with-normalization/1"),
    ("English-big", _TFHUB + "nnlm-en-dim128-with-normalization/1"),
    ("English-wiki-small", _TFHUB + "Wiki-words-250-with-normalization/1"),
    ("English-wiki-big", _TFHUB + "Wiki-words-500-with-normalization/1"),
    ("Universal-sentence-encoder", _TFHUB + "universal-sentence-encoder/2"),
)
# The default modules: Table 6, with each /1 word module swapped for its TF2 re-export (/2, the
# same embeddings), because TF2 can load a TF1 hub.Module only frozen and Table 5 row 2 fine-tunes
# them. USE has no TF2 export of version 2, so Table 6's own /2 stays and is searched frozen.
TABLE6_SUBSTITUTIONS: Dict[str, str] = {
    _TFHUB + "nnlm-en-dim50-with-normalization/1": _TFHUB + "nnlm-en-dim50-with-normalization/2",
    _TFHUB + "nnlm-en-dim128-with-normalization/1": _TFHUB + "nnlm-en-dim128-with-normalization/2",
    _TFHUB + "Wiki-words-250-with-normalization/1": _TFHUB + "Wiki-words-250-with-normalization/2",
    _TFHUB + "Wiki-words-500-with-normalization/1": _TFHUB + "Wiki-words-500-with-normalization/2",
}
TABLE6_MODULES: Tuple[str, ...] = tuple(TABLE6_SUBSTITUTIONS.get(h, h) for _, h in PAPER_TABLE6)
# Not in Table 6: the same word modules without normalisation (`search --with-non-normalized`).
NON_NORMALIZED_MODULES: Tuple[str, ...] = tuple(
    _TFHUB + name for name in ("nnlm-en-dim50/2", "nnlm-en-dim128/2", "Wiki-words-250/2",
                               "Wiki-words-500/2"))
# TF Hub handles known to be TF1 hub.Modules, so that a search knows them without downloading.
_TF1_HANDLES = frozenset([h for _, h in PAPER_TABLE6]
                         + [_TFHUB + f"universal-sentence-encoder/{v}" for v in (1, 2, 3)])
ENCODER_MODULE_KINDS = ("token-table", "sentence")
_STRINGS = tf.TensorSpec([None], tf.string, name="texts")


class ModuleError(ValueError):
  """An embedding module cannot be found, loaded or used as asked."""


# ------------------------------------------------------------------ loading


# A directory holding none of these is no module (TF2 SavedModel, its text form, TF1 hub.Module).
_MODULE_FILES = ("saved_model.pb", "saved_model.pbtxt", "tfhub_module.pb")


def resolve_module(handle: str) -> str:
  """The local directory of a module: a path as is, a TF Hub handle downloaded/cached."""
  if os.path.isdir(handle):
    if not any(os.path.isfile(os.path.join(handle, name)) for name in _MODULE_FILES):
      raise ModuleError(f"embedding module {handle!r} is a directory but not a SavedModel (it has no "
                        f"{' or '.join(_MODULE_FILES)}); build one with `automl-baseline make-module`")
    return os.path.abspath(handle)
  if os.path.exists(handle):
    raise ModuleError(f"embedding module {handle!r} is a file; expected a SavedModel directory")
  if "://" not in handle:
    raise ModuleError(f"embedding module {handle!r} is neither a directory nor a TF Hub handle")
  try:
    return hub.resolve(handle)
  except Exception as e:  # pylint: disable=broad-except
    # hub raises whatever the HTTP stack raises; all of it means "not available here".
    raise ModuleError(
        f"cannot fetch embedding module {handle} ({type(e).__name__}: {e}); without internet "
        "access, point TFHUB_CACHE_DIR at a cache that has it, pass a local directory, or "
        "build one with `automl-baseline make-module`") from None


def is_tf1_hub_format(module_dir: str) -> bool:
  """TF1 hub.Module format (TF Hub's "/1" text modules): has tfhub_module.pb."""
  return os.path.exists(os.path.join(module_dir, "tfhub_module.pb"))


def is_frozen_only(handle: str) -> bool:
  """Whether TF2 can use `handle` only frozen (a TF1 hub.Module), without fetching it.

  True for a directory holding a TF1 hub.Module and for the TF Hub handles
  known to be ones (Table 6's); other handles count as TF2 until fetched
  (`run_search` checks them again once they are).
  """
  if os.path.isdir(handle):
    return is_tf1_hub_format(handle)
  return handle.rstrip("/") in _TF1_HANDLES


def _register_text_ops() -> None:
  # Modules that tokenize with tensorflow-text ops (WordPiece ones) load only after this import.
  import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import


def check_fine_tunable(handle: str, module_dir: str) -> None:
  if is_tf1_hub_format(module_dir):
    raise ModuleError(
        f"embedding module {handle} is in the TF1 hub.Module format, which cannot be fine-tuned "
        "from TF2; use its TF2 version (e.g. the /2 handle) or search without fine-tuning "
        "(--no-fine-tune)")


def short_name(handle: str) -> str:
  """A readable name for progress lines: "nnlm-en-dim50/2" or a directory's basename."""
  if "://" in handle:
    parts = handle.rstrip("/").split("/")
    return "/".join(parts[-2:])
  return os.path.basename(os.path.normpath(handle))


def sentence_embedding_layer(handle: str, fine_tune: bool) -> hub.KerasLayer:
  """`hub.KerasLayer(handle, trainable=fine_tune)`: [batch] strings -> [batch, dim]."""
  module_dir = resolve_module(handle)
  if fine_tune:
    check_fine_tunable(handle, module_dir)
  _register_text_ops()
  layer = hub.KerasLayer(module_dir if os.path.isdir(handle) else handle, trainable=fine_tune)
  if fine_tune and not layer.trainable_weights:
    layer.trainable = False  # a frozen module (e.g. make-module's sentence kind) has nothing to tune
  return layer


def check_module(handle: str) -> None:
  """Loads `handle` and embeds one text; ModuleError unless it maps [batch] strings to [batch, dim] floats.

  A search calls this for every module before it writes anything, so that a
  module that cannot serve fails there rather than in its trials.
  """
  try:
    vectors = sentence_embedding_layer(handle, fine_tune=False)(tf.constant(["a probe sentence"]))
  except ModuleError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Loading runs the SavedModel's own graph: whatever it raises means "not a usable text embedding".
    reason = (str(e).strip().splitlines() or [""])[0][:200]
    raise ModuleError(f"embedding module {handle!r} cannot embed text ({type(e).__name__}: {reason})") from None
  if not (isinstance(vectors, tf.Tensor) and vectors.shape.rank == 2 and vectors.dtype.is_floating):
    got = {k: v.shape.as_list() for k, v in vectors.items()} if isinstance(vectors, dict) else vectors
    raise ModuleError(f"embedding module {handle!r} does not map a batch of strings to [batch, dim] vectors "
                      f"(it gives {str(got)[:200]}); is it a text-embedding module?")


class _TokenEmbeddingView(tf.Module):
  """A module's `token_embeddings` as a callable object with the module's variables.

  `hub.KerasLayer` accepts a callable in place of a handle and takes the
  weights it trains from the callable's `variables`/`trainable_variables`.
  Holding the loaded module as an attribute keeps its tables and variables
  tracked, so models using it still save as SavedModels.
  """

  def __init__(self, loaded):
    super().__init__(name="token_embedding_view")
    self.loaded = loaded

  @property
  def variables(self):
    return list(self.loaded.variables)

  @property
  def trainable_variables(self):
    return list(self.loaded.trainable_variables)

  def __call__(self, texts):
    return self.loaded.token_embeddings(texts)


class TokenEmbedding(tf_keras.layers.Layer):
  """[batch] strings -> (embeddings [batch, tokens, dim], mask [batch, tokens]).

  Uses the module's `token_embeddings` when it has one, otherwise embeds each
  whitespace token through the module's `__call__`. At most `max_tokens`
  tokens are kept, padded positions are zeros, and the token axis has length
  at least 1 so that convolutions always see a non-empty axis.
  """

  def __init__(self, handle: str, trainable: bool = False, max_tokens: int = 64, **kwargs):
    super().__init__(trainable=trainable, **kwargs)
    if max_tokens < 1:
      raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    self.handle = handle
    self.max_tokens = int(max_tokens)
    module_dir = resolve_module(handle)
    if trainable:
      check_fine_tunable(handle, module_dir)
    _register_text_ops()
    loaded = hub.load(module_dir)
    self.has_token_output = hasattr(loaded, "token_embeddings")
    callable_module = _TokenEmbeddingView(loaded) if self.has_token_output else loaded
    self.module_layer = hub.KerasLayer(callable_module, trainable=trainable)
    if trainable and not self.module_layer.trainable_weights:
      self.module_layer.trainable = False
      self.trainable = False

  def call(self, texts, training=None):
    texts = tf.reshape(texts, [-1])
    if self.has_token_output:
      outputs = self.module_layer(texts, training=training)
      embeddings, mask = outputs["embeddings"], tf.cast(outputs["mask"], tf.bool)
    else:
      tokens = tf.strings.split(texts)[:, :self.max_tokens]
      vectors = self.module_layer(tokens.flat_values, training=training)
      embeddings = tokens.with_flat_values(vectors).to_tensor()
      mask = tf.sequence_mask(tokens.row_lengths(), tf.shape(embeddings)[1])
    embeddings = embeddings[:, :self.max_tokens]
    mask = mask[:, :self.max_tokens]
    missing = tf.maximum(0, 1 - tf.shape(embeddings)[1])
    embeddings = tf.pad(embeddings, [[0, 0], [0, missing], [0, 0]])
    mask = tf.pad(mask, [[0, 0], [0, missing]])
    return embeddings * tf.cast(mask, embeddings.dtype)[:, :, None], mask

  def get_config(self):
    config = super().get_config()
    config.update(handle=self.handle, max_tokens=self.max_tokens)
    return config


# ------------------------------------------------------------------ building


class TextEmbeddingModule(tf.train.Checkpoint):
  """Base of the modules `make-module` writes: TF Hub's text-embedding interface.

  Subclasses implement `_token_vectors(texts) -> (ragged [batch, (tokens),
  dim], sentence [batch, dim])` and set `variables`, `trainable_variables` and
  `dim`. The `tf.train.Checkpoint` base (not `tf.Module`) is what lets
  `variables`/`trainable_variables` be plain saved attributes, as the reusable
  SavedModel format wants.
  """

  dim: int

  @tf.function(input_signature=[_STRINGS])
  def __call__(self, texts):
    _, sentence = self._token_vectors(texts)
    return tf.ensure_shape(sentence, [None, self.dim])

  @tf.function(input_signature=[_STRINGS])
  def token_embeddings(self, texts) -> Dict[str, tf.Tensor]:
    tokens, _ = self._token_vectors(texts)
    embeddings = tokens.to_tensor(shape=[None, None, self.dim])
    mask = tf.sequence_mask(tokens.row_lengths(), tf.shape(embeddings)[1])
    return {"embeddings": embeddings, "mask": mask}

  def _token_vectors(self, texts):
    raise NotImplementedError


def _sqrtn_pool(vectors: tf.RaggedTensor) -> tf.Tensor:
  """sum / sqrt(count) over each row: the combiner of TF Hub's bag-of-words modules."""
  counts = tf.cast(vectors.row_lengths(), vectors.flat_values.dtype)
  return tf.reduce_sum(vectors, axis=1) / tf.sqrt(tf.maximum(counts, 1.0))[:, None]


def _lookup_rows(table: tf.Variable, ids: tf.RaggedTensor) -> tf.RaggedTensor:
  # A gather gives the table a sparse (IndexedSlices) gradient: only looked-up rows.
  return ids.with_flat_values(tf.gather(table, ids.flat_values))


class WordTableModule(TextEmbeddingModule):
  """Whitespace tokens looked up in a trainable word table, sqrt(n)-pooled.

  Args:
    vocab_file: one token per line; row i of `matrix` is line i's vector.
    matrix: [vocab size, dim] float32.
    normalize: lower-case and drop punctuation first (the TF Hub
      "-with-normalization" modules).
    oov_buckets: rows appended (initialised to zero) for unknown tokens,
      which are hashed into them.
  """

  def __init__(self, vocab_file: str, matrix: np.ndarray, normalize: bool = False,
               oov_buckets: int = 1):
    super().__init__()
    if oov_buckets < 1:
      raise ValueError(f"oov_buckets must be >= 1, got {oov_buckets}")
    self.dim = int(matrix.shape[1])
    self.normalize = bool(normalize)
    self.vocab_asset = tf.saved_model.Asset(vocab_file)
    self.table = tf.lookup.StaticVocabularyTable(
        tf.lookup.TextFileInitializer(
            self.vocab_asset, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER),
        num_oov_buckets=oov_buckets)
    full = np.concatenate([matrix, np.zeros([oov_buckets, self.dim], np.float32)]).astype(np.float32)
    self.embeddings = tf.Variable(full, name="embeddings")
    self.variables = [self.embeddings]
    self.trainable_variables = [self.embeddings]

  def _token_vectors(self, texts):
    if self.normalize:
      texts = tf.strings.regex_replace(tf.strings.lower(texts, encoding="utf-8"), r"[[:punct:]]", " ")
    tokens = tf.strings.split(texts)
    vectors = _lookup_rows(self.embeddings, tf.ragged.map_flat_values(self.table.lookup, tokens))
    return vectors, _sqrtn_pool(vectors)


class WordPieceTableModule(TextEmbeddingModule):
  """A BERT encoder's WordPiece embedding table: wordpieces looked up, sqrt(n)-pooled."""

  def __init__(self, vocab: Sequence[str], matrix: np.ndarray, lower_case: bool):
    super().__init__()
    import tensorflow_text as tf_text  # pylint: disable=import-outside-toplevel
    self.dim = int(matrix.shape[1])
    self.tokenizer = tf_text.FastBertTokenizer(
        vocab=list(vocab), lower_case_nfd_strip_accents=bool(lower_case), token_out_type=tf.int64)
    self.embeddings = tf.Variable(np.asarray(matrix, np.float32), name="embeddings")
    self.variables = [self.embeddings]
    self.trainable_variables = [self.embeddings]

  def _token_vectors(self, texts):
    vectors = _lookup_rows(self.embeddings, self.tokenizer.tokenize(texts))
    return vectors, _sqrtn_pool(vectors)


class _Untracked:
  """A plain attribute bag: checkpoints and SavedModels do not follow it."""

  def __init__(self, **attributes):
    self.__dict__.update(attributes)


class EncoderSentenceModule(TextEmbeddingModule):
  """A frozen BERT encoder, mean-pooled over its tokens ([CLS] and [SEP] included).

  Frozen by design (empty `trainable_variables`): this is the no-BERT
  baseline, so a BERT-derived module may only serve as fixed features.
  """

  def __init__(self, encoder_spec: str, max_seq_length: int = 128):
    super().__init__()
    from adapter_keras.preprocessing import BertPreprocessor  # pylint: disable=import-outside-toplevel
    from adapter_keras.pretrained import load_encoder  # pylint: disable=import-outside-toplevel
    pretrained = load_encoder(encoder_spec)
    self.dim = int(pretrained.config.hidden_size)
    # The Keras layers are held untracked: the module serves only its two
    # functions, and tracking them would make tf.saved_model.save trace and
    # serialise every Keras layer too (slow, and nothing loads that part).
    # Their variables are all tracked through `variables`.
    self._keras_layers = _Untracked(
        preprocessor=BertPreprocessor(pretrained.vocab_file, pretrained.lower_case,
                                      max_seq_length=max_seq_length),
        encoder=pretrained.encoder)
    self.variables = list(pretrained.encoder.weights)
    self.trainable_variables = []

  def _token_vectors(self, texts):
    inputs = self._keras_layers.preprocessor(texts)
    sequence = self._keras_layers.encoder(inputs, training=False)["sequence_output"]
    lengths = tf.reduce_sum(inputs["input_mask"], axis=1)
    tokens = tf.RaggedTensor.from_tensor(sequence, lengths=lengths)
    mask = tf.cast(inputs["input_mask"], sequence.dtype)[:, :, None]
    sentence = tf.reduce_sum(sequence * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
    return tokens, sentence


def save_module(module: TextEmbeddingModule, out_dir: str) -> str:
  """Writes `module` as a SavedModel; "default" serves `__call__` (TF Hub convention)."""
  module(tf.constant(["warm up"]))  # fail on a broken module before writing anything
  tf.saved_model.save(module, out_dir, signatures={
      "default": module.__call__.get_concrete_function(),
      "token_embeddings": module.token_embeddings.get_concrete_function(),
  })
  return out_dir


def _read_vocab(vocab_file: str) -> List[str]:
  if not os.path.isfile(vocab_file):
    raise FileNotFoundError(f"vocabulary file {vocab_file} not found")
  with open(vocab_file, encoding="utf-8") as f:
    vocab = [line.rstrip("\n") for line in f]
  if not vocab:
    raise ValueError(f"vocabulary file {vocab_file} is empty")
  seen = set()
  for line_number, token in enumerate(vocab, 1):
    if not token or token != token.strip() or " " in token:
      raise ValueError(f"{vocab_file} line {line_number}: a token must be one non-blank word, "
                       f"got {token!r}")
    if token in seen:
      raise ValueError(f"{vocab_file} line {line_number}: duplicate token {token!r}")
    seen.add(token)
  return vocab


def _read_matrix(matrix_file: str, rows: int) -> np.ndarray:
  if not os.path.isfile(matrix_file):
    raise FileNotFoundError(f"matrix file {matrix_file} not found")
  try:
    matrix = np.load(matrix_file, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise ValueError(f"cannot read {matrix_file} as a .npy array: {e}") from None
  if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.number):
    raise ValueError(f"{matrix_file} must hold a 2-D numeric array, got {matrix.dtype} "
                     f"of shape {matrix.shape}")
  if matrix.shape[0] != rows:
    raise ValueError(f"{matrix_file} has {matrix.shape[0]} rows but the vocabulary has {rows} "
                     "tokens; row i must be the vector of token i")
  if not np.all(np.isfinite(matrix)):
    raise ValueError(f"{matrix_file} contains NaN or infinite values")
  return matrix.astype(np.float32)


def make_word_table_module(vocab_file: str, matrix_file: str, out_dir: str,
                           normalize: bool = False, oov_buckets: int = 1) -> dict:
  """Builds a WordTableModule from a vocabulary and a .npy matrix; returns a summary."""
  require_new_or_empty_directory(out_dir)  # before any work: a module is never overwritten
  vocab = _read_vocab(vocab_file)
  matrix = _read_matrix(matrix_file, len(vocab))
  with tempfile.TemporaryDirectory() as staging:
    # The table reads the vocabulary as a SavedModel asset; stage a clean copy to embed.
    staged_vocab = os.path.join(staging, "vocab.txt")
    with open(staged_vocab, "w", encoding="utf-8") as f:
      f.write("\n".join(vocab) + "\n")
    module = WordTableModule(staged_vocab, matrix, normalize=normalize, oov_buckets=oov_buckets)
    _save_fresh(module, out_dir)
  return dict(path=os.path.abspath(out_dir), kind="word-table", dim=module.dim,
              vocab_size=len(vocab), oov_buckets=oov_buckets, normalize=bool(normalize),
              trainable=True)


def make_encoder_module(encoder_spec: str, kind: str, out_dir: str,
                        max_seq_length: int = 128) -> dict:
  """Builds a module from a BERT encoder ("minilm-l6" or a directory); returns a summary."""
  require_new_or_empty_directory(out_dir)  # before loading the encoder: a module is never overwritten
  if kind == "token-table":
    from adapter_keras.pretrained import load_encoder  # pylint: disable=import-outside-toplevel
    from adapter_keras.preprocessing import read_vocab  # pylint: disable=import-outside-toplevel
    pretrained = load_encoder(encoder_spec)
    matrix = pretrained.encoder.get_embedding_table().numpy()
    module = WordPieceTableModule(read_vocab(pretrained.vocab_file), matrix, pretrained.lower_case)
    trainable = True
  elif kind == "sentence":
    module = EncoderSentenceModule(encoder_spec, max_seq_length=max_seq_length)
    trainable = False
  else:
    raise ValueError(f"unknown module kind {kind!r}; expected one of {', '.join(ENCODER_MODULE_KINDS)}")
  _save_fresh(module, out_dir)
  return dict(path=os.path.abspath(out_dir), kind=kind, dim=module.dim, encoder=encoder_spec,
              trainable=trainable)


def _save_fresh(module: TextEmbeddingModule, out_dir: str) -> None:
  """Saves into a sibling temp dir and renames, so a failure leaves no half module.

  Never overwrites a module: only a missing or empty `out_dir` is replaced
  (checked again here, as the save may have taken a while).
  """
  require_new_or_empty_directory(out_dir)
  with atomic_directory(out_dir) as staging:
    save_module(module, staging)


def write_tiny_word_module(out_dir: str, dim: int = 16, seed: int = 0) -> str:
  """A tiny fine-tunable word-table module over `adapter_keras.testing`'s words.

  For tests and the notebook's fast mode: built by the same path as
  `make-module --vocab --matrix --normalize`, from a seeded random matrix.
  """
  from adapter_keras.testing import TINY_WORDS  # pylint: disable=import-outside-toplevel
  words = [w for w in TINY_WORDS if w.isalpha()]
  matrix = (np.random.default_rng(seed).standard_normal([len(words), dim]) * 0.5).astype(np.float32)
  with tempfile.TemporaryDirectory() as staging:
    vocab_file = os.path.join(staging, "vocab.txt")
    matrix_file = os.path.join(staging, "matrix.npy")
    with open(vocab_file, "w", encoding="utf-8") as f:
      f.write("\n".join(words) + "\n")
    np.save(matrix_file, matrix)
    make_word_table_module(vocab_file, matrix_file, out_dir, normalize=True)
  return out_dir
