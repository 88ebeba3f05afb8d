"""Loading BERT-base-sized encoders in each weight format: time, exactness, parameter count.

No network here, so the inputs are generated at BERT-base's shapes (12 layers, hidden 768, 12 heads,
FFN 3072, 512 positions, a 30,522-token vocabulary) with random weights:

* a TF Hub BERT encoder SavedModel written by Model Garden's own exporter (`export_tfhub_lib`, as
  TF Hub's BERTs were made), compared with the Keras encoder it was exported from;
* Google's original TF1 checkpoint layout (`bert_model.ckpt`, `bert_config.json`, `vocab.txt`);
* a Hugging Face directory of the same weights, as one file and as 4 shards.

For each: seconds for `load_encoder` (cold, in this process), the max abs difference of sequence
output against its reference, and the base parameter count (which must equal BERT-base's, 109,482,240
with 2 token types).

  python benchmarks/pretrained_formats.py [--workdir DIR] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from adapter_keras.encoder import ARCHITECTURES
from adapter_keras.io import write_json_atomic
from adapter_keras.pretrained import load_encoder
from adapter_keras.testing import (SPECIAL_TOKENS, write_sharded_hf_copy, write_tiny_hf_bert, write_tiny_tf1_bert,
                                   write_tiny_tfhub_bert)

BASE = dict(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072, max_position_embeddings=512)


def _inputs(vocab_size, batch=4, length=128):
  rng = np.random.default_rng(0)
  ids = rng.integers(len(SPECIAL_TOKENS), vocab_size, (batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1:, length // 2:] = 0
  return dict(input_word_ids=ids, input_mask=mask, input_type_ids=np.zeros_like(ids))


def _sequence(encoder, inputs):
  return encoder(inputs, training=False)["sequence_output"].numpy()


def _timed_load(path):
  start = time.perf_counter()
  loaded = load_encoder(path)
  return loaded, time.perf_counter() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", help="where to write the generated models (default: a temporary directory)")
  parser.add_argument("--out-json", default=os.path.join("docs", "results", "pretrained_formats.json"))
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  work = args.workdir or tempfile.mkdtemp(prefix="pretrained_formats_")
  vocab = SPECIAL_TOKENS + [f"w{i}" for i in range(30522 - len(SPECIAL_TOKENS))]
  expected_params = sum(int(np.prod(v.shape)) for v in _reference_base_weights())
  rows = []

  print("exporting a BERT-base-sized TF Hub SavedModel with Model Garden's exporter ...", file=sys.stderr)
  start = time.perf_counter()
  hub, original = write_tiny_tfhub_bert(os.path.join(work, "hub"), seed=0, vocab=vocab, initializer_range=0.02,
                                       **BASE)
  export_seconds = time.perf_counter() - start
  inputs = _inputs(len(vocab))
  loaded, seconds = _timed_load(hub)
  rows.append(dict(format="TF Hub SavedModel", load_seconds=seconds, reference="the exported Keras encoder",
                   max_abs_difference=float(np.abs(_sequence(loaded.encoder, inputs)
                                                   - _sequence(original, inputs)).max()),
                   base_params=loaded.encoder.count_params()))
  del loaded, original

  print("writing Google's TF1 layout and the Hugging Face copies ...", file=sys.stderr)
  tf1 = write_tiny_tf1_bert(os.path.join(work, "tf1"), seed=0, vocab=vocab, with_heads=True, **BASE)
  hf = write_tiny_hf_bert(os.path.join(work, "hf"), seed=0, vocab=vocab, hidden_act="gelu_new", num_layers=12,
                          hidden_size=768, num_heads=12, intermediate_size=3072, max_position_embeddings=512)
  sharded = write_sharded_hf_copy(hf, os.path.join(work, "hf_sharded"), shards=4)
  reference, _ = _timed_load(hf)
  reference_sequence = _sequence(reference.encoder, inputs)
  for name, path in (("Google TF1 checkpoint", tf1), ("Hugging Face, 4 shards", sharded),
                     ("Hugging Face, one file", hf)):
    loaded, seconds = _timed_load(path)
    rows.append(dict(format=name, load_seconds=seconds, reference="the Hugging Face copy",
                     max_abs_difference=float(np.abs(_sequence(loaded.encoder, inputs) - reference_sequence).max()),
                     base_params=loaded.encoder.count_params()))
    del loaded
  for row in rows:
    row["params_equal_bert_base"] = row["base_params"] == expected_params

  print(f"{'format':<26}{'load s':>8}{'max |diff|':>12}{'base params':>14}  reference")
  for r in rows:
    print(f"{r['format']:<26}{r['load_seconds']:>8.1f}{r['max_abs_difference']:>12.2e}{r['base_params']:>14,}"
          f"  {r['reference']}")
  result = dict(shapes=BASE, vocab_size=len(vocab), bert_base_params=expected_params,
                hub_export_seconds=export_seconds, rows=rows)
  if args.out_json:
    write_json_atomic(args.out_json, result)
  if args.json:
    print(json.dumps(result))
  if not args.workdir:
    shutil.rmtree(work, ignore_errors=True)
  return 0 if all(r["params_equal_bert_base"] for r in rows) else 1


def _reference_base_weights():
  from adapter_keras.encoder import build_encoder  # pylint: disable=import-outside-toplevel
  return build_encoder(ARCHITECTURES["bert-base"]).weights


if __name__ == "__main__":
  sys.exit(main())
