"""Streaming training data: tokenized examples in sharded TFRecord files, written once, read every epoch.

This module owns the training-records format, which `adapter-keras preprocess`
writes and `adapter-keras train --train-records DIR` reads (in the spirit of
Model Garden's fine-tuning data tools, official/nlp/data/*):

  DIR/records.json                    the spec (SPEC_FILE): format and version, the task
                                      (TaskSpec.to_dict()), the tokenizer (vocab size and
                                      sha256, lower_case, max_seq_length), the encoder named,
                                      the example count, the longest example, the subset
                                      taken, and per shard: file, examples, sha256
  DIR/train-00000-of-00008.tfrecord   one tf.train.Example per training example:
                                      input_word_ids, input_type_ids (int64 lists, unpadded),
                                      label_ids (int64 class id, or float for regression),
                                      example_index (its place in the training set)

* `write_training_records`: tokenizes in chunks (inputs.encode_examples) and
  writes shard by shard into a temporary directory that becomes DIR only
  when complete (io.atomic_directory); a non-empty DIR is refused.
* `open_training_records`: reads and checks the spec (each entry's type, shards
  that are file names of DIR); every shard's sha256 is verified and its
  records counted against the spec. `TrainingRecords.check_tokenizer` refuses records tokenized
  differently from the encoder being trained (vocabulary, case,
  max_seq_length). Every error is one line naming the problem.
* `records_dataset`: one epoch's batches, streamed (see below).
* `RecordsClassificationRecipe` (train/records_recipe.py): the classification
  recipe with its training data read from records.

An epoch's order. Examples are written in a seeded random order (so any
stretch of a file is a random sample of the training set, even when the
source file is sorted by label). An epoch lists its worker's shard files in
an order drawn from (seed, epoch), interleaves them, and cuts the stream into
shuffle windows of `shuffle_window` examples (rounded up to whole batches).
Each window is put back in training-set order (example_index) and then
ordered exactly as the in-memory path orders a whole epoch
(inputs.epoch_order: a permutation and length grouping), drawn from
(seed, epoch) for the first window and from (seed, epoch, window, worker)
for the others. So an epoch's batches are a function of (seed, epoch) alone
(a resumed epoch skips the batches done), and when one window holds the
whole training set, training is identical to the in-memory path's. Batches
are padded per batch (to JIT_PAD_MULTIPLE under XLA, to the static lengths
under static shapes).

Memory. Training holds at most a few shuffle windows of serialized examples
(the one being filled, the one prefetched, the one being batched), whatever
the size of the training set. Writing holds one chunk of tokenized
examples, but the data loaders (tasks/data.py) give every text in memory:
`preprocess` is bounded by the source's size in RAM, `train` is not.

Several workers. With a multi-worker strategy (or an input context from
`strategy.distribute_datasets_from_function`) each worker reads only its own
shard files (shard i goes to worker i % num_workers), every worker yields the
same number of full batches per epoch (the smallest share decides; a few
examples per worker sit each epoch out), and tf.distribute's own sharding
is switched off.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from adapter_keras.io import (atomic_directory, file_sha256, read_format_file, require_new_or_empty_directory,
                              write_json_atomic)
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import check_max_seq_length, encoder_vocabulary
from adapter_keras.tasks.data import TextExamples
from adapter_keras.tasks.registry import TaskSpec
from adapter_keras.train.inputs import (encode_examples, epoch_order,
                                        length_padded_to_multiple, length_padded_to_static, limit_examples,
                                        steps_per_epoch)
from adapter_keras.values import is_integer

SPEC_FILE = "records.json"
FORMAT = "adapter_keras.training_records"
FORMAT_VERSION = 1
DEFAULT_NUM_SHARDS = 8
# Examples per shuffle window: 16,384 (512 batches of 32) keeps a window of
# 128-token examples near 9 MiB serialized, and training sets up to this size
# train exactly as in memory.
DEFAULT_SHUFFLE_WINDOW = 16384
# Examples tokenized at once while writing (inputs.encode_examples' chunk).
ENCODE_CHUNK = 4096
# Shard files read at once per worker; each open TFRecord reader holds a buffer.
MAX_OPEN_SHARDS = 16

WORD_IDS, TYPE_IDS, LABEL, INDEX = "input_word_ids", "input_type_ids", "label_ids", "example_index"


# ----------------------------------------------------------------------------- writing


def shard_file_name(index: int, num_shards: int) -> str:
  return f"train-{index:05d}-of-{num_shards:05d}.tfrecord"


def encoder_tokenizer(encoder: str, max_seq_length: int) -> BertPreprocessor:
  """The tokenizer of `encoder` (a name such as "minilm-l6" or a directory), without loading its weights."""
  config, vocab_file, lower_case = encoder_vocabulary(encoder)
  check_max_seq_length(max_seq_length, config)
  return BertPreprocessor(vocab_file, lower_case, max_seq_length)


def tokenizer_settings(preprocessor: BertPreprocessor) -> Dict:
  """What the spec records about tokenization (and what training checks against)."""
  return dict(vocab_size=preprocessor.vocab_size, vocab_sha256=file_sha256(preprocessor.vocab_file),
              lower_case=preprocessor.lower_case, max_seq_length=preprocessor.max_seq_length)


def _serialized_example(word_ids: Sequence[int], type_ids: Sequence[int], label, index: int,
                        regression: bool) -> bytes:
  label_feature = (tf.train.Feature(float_list=tf.train.FloatList(value=[float(label)])) if regression
                   else tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])))
  feature = {
      WORD_IDS: tf.train.Feature(int64_list=tf.train.Int64List(value=word_ids)),
      TYPE_IDS: tf.train.Feature(int64_list=tf.train.Int64List(value=type_ids)),
      LABEL: label_feature,
      INDEX: tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_training_records(out_dir: str, task: TaskSpec, train: TextExamples, preprocessor: BertPreprocessor,
                           num_shards: int = DEFAULT_NUM_SHARDS, seed: int = 0,
                           max_train_examples: Optional[int] = None, encoder: Optional[str] = None,
                           log: Optional[Callable[[str], None]] = None, log_every_seconds: float = 15.0) -> Dict:
  """Writes `train` tokenized by `preprocessor` as `num_shards` TFRecord files plus records.json; returns the spec.

  `max_train_examples` keeps the seeded subset `train --max-train-examples N
  --seed S` would train on (inputs.limit_examples); `seed` also draws the
  order the examples are written in. `log` gets progress lines (one per
  shard, and every `log_every_seconds` within one). `out_dir` must not exist
  or be empty; it appears only once complete.
  """
  require_new_or_empty_directory(out_dir)
  if not is_integer(num_shards) or num_shards < 1:
    raise ValueError(f"the number of shards must be an integer >= 1, got {num_shards!r}")
  if len(train) == 0:
    raise ValueError("no training examples to write (the data set is empty)")
  subset = None
  if max_train_examples and max_train_examples < len(train):
    subset = dict(max_train_examples=max_train_examples, seed=seed, source_examples=len(train))
    train = limit_examples(train, max_train_examples, seed)
  total = len(train)
  if num_shards > total:
    raise ValueError(f"--num-shards {num_shards} is more than the {total} training examples")
  regression = task.task_type == "regression"
  log = log or (lambda line: None)
  # Written in a seeded random order, so that a stretch of any shard is a
  # random sample even of a sorted source (the reader's windows see stretches).
  write_order = np.random.default_rng([seed % 2**64, total]).permutation(total)
  bounds = [total * i // num_shards for i in range(num_shards + 1)]
  shards, longest, written = [], 0, 0
  started = last_log = time.perf_counter()
  with atomic_directory(out_dir) as tmp:
    for shard in range(num_shards):
      name = shard_file_name(shard, num_shards)
      path = os.path.join(tmp, name)
      indices = write_order[bounds[shard]:bounds[shard + 1]]
      with tf.io.TFRecordWriter(path) as writer:
        for start in range(0, len(indices), ENCODE_CHUNK):
          chunk = indices[start:start + ENCODE_CHUNK]
          encoded = encode_examples(preprocessor, train.take(chunk), chunk_size=ENCODE_CHUNK)
          word_ids, type_ids = encoded.word_ids.to_list(), encoded.type_ids.to_list()
          for i, index in enumerate(chunk):
            writer.write(_serialized_example(word_ids[i], type_ids[i], encoded.labels[i], int(index), regression))
            longest = max(longest, len(word_ids[i]))
          written += len(chunk)
          now = time.perf_counter()
          if now - last_log >= log_every_seconds and written < bounds[shard + 1]:
            last_log = now
            log(f"[preprocess] shard {shard + 1}/{num_shards}: {written:,}/{total:,} examples, "
                f"{written / (now - started):,.0f} examples/s")
      shards.append(dict(file=name, num_examples=len(indices), sha256=file_sha256(path)))
      now = last_log = time.perf_counter()
      log(f"[preprocess] shard {shard + 1}/{num_shards} {name}: {len(indices):,} examples "
          f"({written:,}/{total:,}, {written / max(now - started, 1e-9):,.0f} examples/s)")
    spec = dict(format=FORMAT, format_version=FORMAT_VERSION, task=task.to_dict(),
                tokenizer=tokenizer_settings(preprocessor), encoder=encoder, num_examples=total,
                longest_example=longest, subset=subset, write_order_seed=seed,
                features={WORD_IDS: "int64 list (unpadded)", TYPE_IDS: "int64 list (unpadded)",
                          LABEL: "float" if regression else "int64 class id",
                          INDEX: "int64, the example's place in the training set"},
                shards=shards)
    write_json_atomic(os.path.join(tmp, SPEC_FILE), spec)
  return spec


# ----------------------------------------------------------------------------- reading the spec


@dataclasses.dataclass(frozen=True)
class TrainingRecords:
  """A records directory with its spec (open_training_records makes one)."""

  directory: str
  spec: Dict

  @property
  def task(self) -> TaskSpec:
    return TaskSpec.from_dict(self.spec["task"])

  @property
  def num_examples(self) -> int:
    return int(self.spec["num_examples"])

  @property
  def num_shards(self) -> int:
    return len(self.spec["shards"])

  @property
  def longest_example(self) -> int:
    return int(self.spec["longest_example"])

  def digest(self) -> str:
    """sha256 of the spec's content (which holds every shard's sha256): what the records are."""
    return hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()

  def worker_shards(self, worker_index: int = 0, num_workers: int = 1) -> List[Tuple[str, int]]:
    """(path, examples) of the shards worker `worker_index` of `num_workers` reads: shard i goes to worker
    i % num_workers."""
    if num_workers < 1 or not 0 <= worker_index < num_workers:
      raise ValueError(f"worker index {worker_index} is not in [0, {num_workers})")
    if num_workers > self.num_shards:
      raise ValueError(f"{num_workers} workers need at least as many shards, {self.directory} has "
                       f"{self.num_shards}; re-run adapter-keras preprocess with --num-shards >= {num_workers}")
    return [(os.path.join(self.directory, s["file"]), int(s["num_examples"]))
            for s in self.spec["shards"][worker_index::num_workers]]

  def check_tokenizer(self, preprocessor: BertPreprocessor) -> None:
    """Raises ValueError when the records were tokenized differently from `preprocessor` (the run's)."""
    recorded, wanted = self.spec["tokenizer"], tokenizer_settings(preprocessor)
    again = "; re-run adapter-keras preprocess with this run's --encoder and --max-seq-length"
    if recorded["vocab_sha256"] != wanted["vocab_sha256"] or recorded["vocab_size"] != wanted["vocab_size"]:
      raise ValueError(f"the records in {self.directory} were tokenized with another vocabulary "
                       f"({recorded['vocab_size']} tokens, sha256 {recorded['vocab_sha256'][:12]}) than this "
                       f"encoder's {preprocessor.vocab_file} ({wanted['vocab_size']} tokens, sha256 "
                       f"{wanted['vocab_sha256'][:12]}){again}")
    if recorded["lower_case"] != wanted["lower_case"]:
      raise ValueError(f"the records in {self.directory} were tokenized with lower_case="
                       f"{recorded['lower_case']}, this encoder uses lower_case={wanted['lower_case']}{again}")
    if recorded["max_seq_length"] != wanted["max_seq_length"]:
      raise ValueError(f"the records in {self.directory} were cut to max_seq_length {recorded['max_seq_length']}, "
                       f"this run has --max-seq-length {wanted['max_seq_length']}{again}")


_SPEC_KEYS = ("format", "format_version", "task", "tokenizer", "num_examples", "longest_example", "shards")
_TOKENIZER_KEYS = ("vocab_size", "vocab_sha256", "lower_case", "max_seq_length")


def open_training_records(directory: str, verify: bool = True) -> TrainingRecords:
  """The records in `directory`, their spec checked; with `verify`, every shard's sha256 too.

  Raises FileNotFoundError (no directory, no spec, a missing shard) or
  ValueError (an unreadable or other-version spec, inconsistent counts, a
  shard whose content changed), each one line naming the problem.
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"--train-records {directory} is not a directory")
  spec_path = os.path.join(directory, SPEC_FILE)
  if not os.path.isfile(spec_path):
    raise FileNotFoundError(f"{directory} has no {SPEC_FILE}: not a directory written by adapter-keras preprocess")
  spec = read_format_file(spec_path, "a training-records spec", FORMAT, FORMAT_VERSION,
                          ": re-run adapter-keras preprocess")
  missing = [k for k in _SPEC_KEYS if k not in spec]
  if missing:
    raise ValueError(f"{spec_path} lacks {', '.join(missing)}")
  _check_spec_fields(spec, spec_path)
  records = TrainingRecords(directory, spec)
  counted = sum(s["num_examples"] for s in spec["shards"])
  if counted != records.num_examples:
    raise ValueError(f"{spec_path} counts {records.num_examples} examples but its shards hold {counted}")
  try:
    TaskSpec.from_dict(spec["task"])
  except (TypeError, ValueError) as e:
    raise ValueError(f"{spec_path} holds no valid task ({e})") from None
  for shard in spec["shards"]:
    path = os.path.join(directory, shard["file"])
    if not os.path.isfile(path):
      raise FileNotFoundError(f"shard {shard['file']} of {directory} is missing")
    if verify:
      actual = file_sha256(path)
      if actual != shard["sha256"]:
        raise ValueError(f"shard {shard['file']} of {directory} was changed or corrupted: its sha256 is "
                         f"{actual[:12]}..., {SPEC_FILE} says {shard['sha256'][:12]}...; re-run adapter-keras "
                         "preprocess")
    # The sha256 only says the file is the one the spec names: a shard cut short (or emptied) whose spec was
    # re-hashed would otherwise train on fewer examples than recorded, with no error.
    held = count_records(path)
    if held != shard["num_examples"]:
      raise ValueError(f"shard {shard['file']} of {directory} holds {held} examples, {SPEC_FILE} says "
                       f"{shard['num_examples']}; re-run adapter-keras preprocess")
  return records


def _is_count(value) -> bool:
  return is_integer(value) and value >= 0


def _check_spec_fields(spec: Dict, spec_path: str) -> None:
  """Raises ValueError naming the first entry of the spec of the wrong type (a hand-edited records.json), so that
  nothing later fails on it with a TypeError or a KeyError."""
  for key in ("num_examples", "longest_example"):
    if not _is_count(spec[key]):
      raise ValueError(f"{spec_path}: {key} must be an integer >= 0, got {spec[key]!r}")
  tokenizer = spec["tokenizer"]
  if not isinstance(tokenizer, dict):
    raise ValueError(f"{spec_path}: tokenizer must be an object, got {tokenizer!r}")
  lacking = [k for k in _TOKENIZER_KEYS if k not in tokenizer]
  if lacking:
    raise ValueError(f"{spec_path}: tokenizer lacks {', '.join(lacking)}")
  if not isinstance(tokenizer["vocab_sha256"], str):
    raise ValueError(f"{spec_path}: tokenizer's vocab_sha256 must be a string, got {tokenizer['vocab_sha256']!r}")
  shards = spec["shards"]
  if not isinstance(shards, list) or not shards:
    raise ValueError(f"{spec_path}: shards must be a non-empty list of objects (file, num_examples, sha256)")
  for i, shard in enumerate(shards):
    if not isinstance(shard, dict):
      raise ValueError(f"{spec_path}: shard {i} is a JSON {type(shard).__name__}, not an object (file, "
                       "num_examples, sha256)")
    lacking = [k for k in ("file", "num_examples", "sha256") if k not in shard]
    if lacking:
      raise ValueError(f"{spec_path}: shard {i} lacks {', '.join(lacking)}")
    file, count, digest = shard["file"], shard["num_examples"], shard["sha256"]
    if not isinstance(file, str) or not isinstance(digest, str) or not _is_count(count):
      raise ValueError(f"{spec_path}: shard {i} needs a file name, an integer num_examples >= 0 and a sha256 "
                       f"string, got {file!r}, {count!r}, {digest!r}")
    # As the sharded Hugging Face index (pretrained/hf.py): a shard is a file of the records' own directory.
    if os.path.basename(file) != file or file in ("", ".", ".."):
      raise ValueError(f"{spec_path}: shard {file!r} is outside the records' directory; shards are file names")


def count_records(path: str) -> int:
  """The records of a TFRecord file, counted from their length headers (nothing is parsed).

  Raises ValueError when the file ends inside a record (cut short).
  """
  size, count, offset = os.path.getsize(path), 0, 0
  with open(path, "rb") as f:
    while offset < size:
      # A record: its length (uint64 LE), the length's CRC (4 bytes), the data, the data's CRC (4 bytes).
      header = f.read(8)
      end = offset + 12 + (int.from_bytes(header, "little") if len(header) == 8 else size) + 4
      if end > size:
        raise ValueError(f"shard {path} ends inside its record {count + 1} (cut short?); re-run adapter-keras "
                         "preprocess")
      f.seek(end)
      offset, count = end, count + 1
  return count


# ----------------------------------------------------------------------------- reading the examples


def records_batches_per_epoch(records: TrainingRecords, batch_size: int, num_workers: int = 1,
                              drop_remainder: bool = False) -> int:
  """Batches each worker's `records_dataset` yields per epoch.

  One worker: every example once (the last batch partial unless
  `drop_remainder`). Several: the full batches of the smallest worker share,
  the same number on every worker (collective steps must match).
  """
  if num_workers == 1:
    return steps_per_epoch(records.num_examples, batch_size, drop_remainder=drop_remainder)
  shares = [sum(n for _, n in records.worker_shards(w, num_workers)) for w in range(num_workers)]
  if min(shares) < batch_size:
    raise ValueError(f"worker shares of {min(shares)} examples hold no full batch of {batch_size}: "
                     f"{num_workers} workers over {records.num_examples} examples")
  return min(shares) // batch_size


def window_order(example_indices: np.ndarray, lengths: np.ndarray, seed: int, epoch: int, window: int,
                 worker_index: int, num_workers: int, batch_size: int, group_by_length: bool,
                 drop_remainder: bool) -> np.ndarray:
  """The positions of one shuffle window's examples in their training order.

  The window is first put in training-set order (example_index), then
  ordered by inputs.epoch_order: the first window of worker 0 with (seed,
  epoch) itself, so that a window holding the whole training set is ordered
  exactly like the in-memory epoch; any other window with an epoch key above
  2**32 made unique by (window, worker).
  """
  by_index = np.argsort(example_indices, kind="stable")
  key = epoch + 2**32 * (window * num_workers + worker_index)
  order = epoch_order(len(by_index), seed, key, lengths[by_index] if group_by_length else None, batch_size,
                      drop_remainder=drop_remainder)
  return by_index[order]


def records_dataset(records: TrainingRecords, batch_size: int, seed: int, epoch: int,
                    worker_index: int = 0, num_workers: int = 1,
                    shuffle_window: int = DEFAULT_SHUFFLE_WINDOW, bucket_by_length: bool = True,
                    pad_to_multiple: Optional[int] = None, static_lengths: Optional[Sequence[int]] = None,
                    with_example_index: bool = False) -> tf.data.Dataset:
  """Epoch `epoch`'s (features, labels) batches for one worker, streamed from the shard files.

  See the module docstring for the order. Batches are padded to their
  longest example, rounded up to `pad_to_multiple` (XLA; never beyond the
  longest example of the records), or to the smallest of `static_lengths`
  that holds it with exactly `batch_size` examples each (static shapes).
  With several workers (or static shapes) only full batches, and exactly
  records_batches_per_epoch of them. `with_example_index` adds each
  example's example_index to the features (for checks).
  """
  if batch_size < 1 or shuffle_window < 1:
    raise ValueError(f"batch_size and shuffle_window must be >= 1, got {batch_size}, {shuffle_window}")
  drop_remainder = static_lengths is not None or num_workers > 1
  shards = records.worker_shards(worker_index, num_workers)
  num_batches = records_batches_per_epoch(records, batch_size, num_workers, drop_remainder)
  file_order = np.random.default_rng([seed % 2**64, epoch, 2**32 + worker_index]).permutation(len(shards))
  files = [shards[i][0] for i in file_order]
  window_size = math.ceil(shuffle_window / batch_size) * batch_size  # windows of whole batches
  regression = records.task.task_type == "regression"
  longest = records.longest_example
  if static_lengths is not None and longest > static_lengths[-1]:
    raise ValueError(f"the records hold an example of {longest} tokens, more than the longest static length "
                     f"{static_lengths[-1]}")

  def order(window, serialized):
    parsed = tf.io.parse_example(serialized, {INDEX: tf.io.FixedLenFeature([], tf.int64),
                                              WORD_IDS: tf.io.VarLenFeature(tf.int64)})
    size = tf.shape(serialized)[0]
    lengths = tf.math.bincount(tf.cast(parsed[WORD_IDS].indices[:, 0], tf.int32), minlength=size, maxlength=size)
    positions = tf.numpy_function(
        lambda w, i, n: window_order(i, n, seed, epoch, int(w), worker_index, num_workers, batch_size,
                                     bucket_by_length, drop_remainder).astype(np.int64),
        [window, parsed[INDEX], lengths], tf.int64, stateful=False)
    positions.set_shape([None])
    return tf.gather(serialized, positions)

  static = None if static_lengths is None else tf.constant(tuple(static_lengths), tf.int64)

  def parse(serialized):
    parsed = tf.io.parse_example(serialized, {
        WORD_IDS: tf.io.VarLenFeature(tf.int64), TYPE_IDS: tf.io.VarLenFeature(tf.int64), INDEX:
        tf.io.FixedLenFeature([], tf.int64),
        LABEL: tf.io.FixedLenFeature([], tf.float32 if regression else tf.int64)})
    words, types = parsed[WORD_IDS], parsed[TYPE_IDS]
    length = words.dense_shape[1]
    if pad_to_multiple is not None:
      length = length_padded_to_multiple(length, pad_to_multiple, longest)
    elif static is not None:
      length = length_padded_to_static(length, static)
    shape = tf.stack([words.dense_shape[0], length])

    def dense(sparse, values):  # padded with 0 to `shape`, as padded_batch pads ids and the mask
      return tf.sparse.to_dense(tf.SparseTensor(sparse.indices, values, shape))

    features = dict(input_word_ids=dense(words, tf.cast(words.values, tf.int32)),
                    input_mask=dense(words, tf.ones_like(words.values, tf.int32)),
                    input_type_ids=dense(types, tf.cast(types.values, tf.int32)))
    if drop_remainder:
      for value in features.values():
        value.set_shape([batch_size, None])
    if with_example_index:
      features[INDEX] = parsed[INDEX]
    return features, tf.cast(parsed[LABEL], tf.float32 if regression else tf.int32)

  ds = tf.data.Dataset.from_tensor_slices(files).interleave(
      tf.data.TFRecordDataset, cycle_length=min(len(files), MAX_OPEN_SHARDS), block_length=1,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  # The next window is filled and ordered while the current one trains.
  ds = ds.batch(window_size).enumerate().map(order).prefetch(1)
  ds = ds.unbatch().batch(batch_size, drop_remainder=drop_remainder)
  ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if num_workers > 1:
    ds = ds.take(num_batches)  # the same step count on every worker
  options = tf.data.Options()
  options.deterministic = True
  if num_workers > 1:
    # Already sharded by file here; tf.distribute must not shard it again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
