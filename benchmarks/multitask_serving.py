"""Multi-task serving on MiniLM: SavedModel size for 1, 4, 8 tasks and mixed-batch latency.

Builds one MultiTaskModel on the frozen MiniLM with N size-64 adapter tasks
(2 classes each; their weights do not change size or speed, so they are not
trained here), exports SavedModels with 1, 4 and 8 tasks, and times, on the
8-task model reloaded with plain `tf.saved_model.load`:

* a single-task signature on a batch of B sentences,
* the `mixed` signature on the same B sentences, all of one task,
* the `mixed` signature on B sentences spread evenly over the 8 tasks.

  python benchmarks/multitask_serving.py [--batch-size 32] [--repeats 20] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (tokenizer ops for the reloaded SavedModel)

from adapter_keras.config import AdapterConfig
from adapter_keras.io import write_json_atomic
from adapter_keras.serving.multitask import MultiTaskModel
from adapter_keras.tasks import classification_task
from adapter_keras.tasks.data import load_rotten_tomatoes


def _bytes(path):
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def _median_ms(fn, repeats):
  fn()  # warm-up (tracing)
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(1000 * (time.perf_counter() - start))
  return statistics.median(times)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--encoder", default="minilm-l6")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out-json", default=os.path.join("docs", "results", "multitask_serving.json"))
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  work = tempfile.mkdtemp(prefix="mt_serving_")
  multitask = MultiTaskModel.from_encoder(args.encoder)
  base_params = sum(int(np.prod(v.shape)) for v in multitask.base.encoder.weights)
  names = [f"task{i}" for i in range(8)]
  for i, name in enumerate(names):
    multitask.add_task(name, classification_task(name, ("neg", "pos")), AdapterConfig(size=64), seed=i)
  sizes = {}
  for n in (1, 4, 8):
    path = multitask.export(os.path.join(work, f"tasks{n}"), tasks=names[:n])
    sizes[n] = dict(total_bytes=_bytes(path), variables_bytes=_bytes(os.path.join(path, "variables")))
  base_bytes = 4 * base_params

  texts = load_rotten_tomatoes().text[:args.batch_size]
  loaded = tf.saved_model.load(os.path.join(work, "tasks8"))
  text = tf.constant(texts)
  empty = tf.constant([""] * len(texts))
  one_task = tf.constant(["task0"] * len(texts))
  spread = tf.constant([names[i % 8] for i in range(len(texts))])
  single_ms = _median_ms(lambda: loaded.signatures["task0"](text=text), args.repeats)
  mixed_one_ms = _median_ms(lambda: loaded.signatures["mixed"](text=text, text_b=empty, task=one_task),
                            args.repeats)
  mixed_spread_ms = _median_ms(lambda: loaded.signatures["mixed"](text=text, text_b=empty, task=spread),
                               args.repeats)
  result = dict(
      encoder=args.encoder, base_params=base_params, base_bytes=base_bytes, batch_size=len(texts),
      saved_model=[dict(tasks=n, **sizes[n], variables_x_base=sizes[n]["variables_bytes"] / base_bytes,
                        total_x_base=sizes[n]["total_bytes"] / base_bytes) for n in (1, 4, 8)],
      latency_ms=dict(single_task_signature=single_ms, mixed_one_task=mixed_one_ms,
                      mixed_8_tasks=mixed_spread_ms),
      mixed_8_tasks_over_single=mixed_spread_ms / single_ms,
      command="python benchmarks/multitask_serving.py " + " ".join(argv if argv is not None else sys.argv[1:]))
  print(f"{'tasks':>5} {'SavedModel MiB':>15} {'variables MiB':>14} {'variables x base':>17}")
  for row in result["saved_model"]:
    print(f"{row['tasks']:>5} {row['total_bytes'] / 2**20:>15.1f} {row['variables_bytes'] / 2**20:>14.1f} "
          f"{row['variables_x_base']:>17.3f}")
  print(f"\nbase encoder: {base_params:,} parameters = {base_bytes / 2**20:.1f} MiB in float32")
  print(f"latency, batch of {len(texts)} (median of {args.repeats}):")
  for name, value in result["latency_ms"].items():
    print(f"  {name:<24}{value:>9.1f} ms")
  print(f"mixed batch over 8 tasks / single-task batch: {result['mixed_8_tasks_over_single']:.2f}x")
  write_json_atomic(args.out_json, result)
  if args.json:
    print(json.dumps(result))


if __name__ == "__main__":
  main()
