"""Multi-task serving on MiniLM: SavedModel size for 1, 2, 4, 8 tasks, mixed-batch latency, every task in one call.

Builds one MultiTaskModel on the frozen MiniLM with N size-64 adapter tasks
(2 classes each; their weights do not change size or speed, so they are not
trained here), exports SavedModels with 1, 2, 4 and 8 tasks, and times, on the
8-task model reloaded with plain `tf.saved_model.load`:

* a single-task signature on a batch of B sentences,
* the `mixed` signature on the same B sentences, all of one task,
* the `mixed` signature on B sentences spread evenly over the 8 tasks;

and on the 2-, 4- and 8-task models, at batch 1 and B, the `all` signature
(every task's outputs in one call, the tokenization and embedding lookups
computed once) against N separate calls of the tasks' own signatures on the
same batch. The two are timed alternately, round by round, in alternating
order, so that other load on the machine affects both alike.

`--adapter-layers 3 4 5` puts the adapters in those layers only: untrained, the tasks then share the blocks
below too (networks/shared_bottom.py), and `all` computes them once.

  python benchmarks/multitask_serving.py [--batch-size 32] [--repeats 20] [--all-rounds 10]
      [--adapter-layers L ...] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (tokenizer ops for the reloaded SavedModel)

from adapter_keras.analysis import run_grid
from adapter_keras.config import AdapterConfig
from adapter_keras.io import write_json_atomic
from adapter_keras.serving.export import AllTasks
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


def _alternating_median_ms(variants, rounds):
  """{name: median ms} of callables timed alternately: one call of each per round, the order reversed every
  other round, after two warm-up calls each (tracing)."""
  names = list(variants)
  for name in names:
    variants[name]()
    variants[name]()
  times = {name: [] for name in names}
  for r in range(rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      start = time.perf_counter()
      variants[name]()
      times[name].append(1000 * (time.perf_counter() - start))
  return {name: statistics.median(values) for name, values in times.items()}


def _all_tasks_rows(work, names, texts, batch_sizes, rounds):
  """Rows of the `all` signature against the tasks' own signatures, called one after another."""
  rows = []
  for n in (2, 4, 8):
    loaded = tf.saved_model.load(os.path.join(work, f"tasks{n}"))
    own = [loaded.signatures[name] for name in names[:n]]
    everything = loaded.signatures["all"]
    for batch_size in batch_sizes:
      text = tf.constant(texts[:batch_size])

      def separate(text=text, own=own):
        for signature in own:
          signature(text=text)

      medians = _alternating_median_ms(dict(separate=separate, all=lambda text=text: everything(text=text)), rounds)
      rows.append(dict(tasks=n, batch_size=batch_size, separate_calls_ms=medians["separate"],
                       all_call_ms=medians["all"], all_over_separate=medians["all"] / medians["separate"]))
      print(f"  {n} tasks, batch {batch_size:>3}: {n} separate calls {medians['separate']:8.1f} ms, "
            f"one `all` call {medians['all']:8.1f} ms ({medians['all'] / medians['separate']:.2f}x)", flush=True)
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--encoder", default="minilm-l6")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--all-rounds", type=int, default=10, help="rounds of `all` against separate calls")
  parser.add_argument("--adapter-layers", type=int, nargs="+", help="adapters in these layers only")
  parser.add_argument("--out-json", default=os.path.join("docs", "results", "multitask_serving.json"))
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  work = tempfile.mkdtemp(prefix="mt_serving_")
  multitask = MultiTaskModel.from_encoder(args.encoder)
  base_params = sum(int(np.prod(v.shape)) for v in multitask.base.encoder.weights)
  names = [f"task{i}" for i in range(8)]
  adapters = AdapterConfig(size=64, layers=tuple(args.adapter_layers) if args.adapter_layers else None)
  for i, name in enumerate(names):
    multitask.add_task(name, classification_task(name, ("neg", "pos")), adapters, seed=i)
  shared_depths = dict(zip(names, AllTasks({n: multitask[n] for n in names}, multitask.base.encoder).depths))
  sizes = {}
  for n in (1, 2, 4, 8):
    path = multitask.export(os.path.join(work, f"tasks{n}"), tasks=names[:n])
    sizes[n] = dict(total_bytes=_bytes(path), variables_bytes=_bytes(os.path.join(path, "variables")))
  base_bytes = 4 * base_params

  all_texts = load_rotten_tomatoes().text
  texts = all_texts[:args.batch_size]
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
  print(f"`all` against the tasks' own signatures (median of {args.all_rounds} alternating rounds):", flush=True)
  all_rows = _all_tasks_rows(work, names, all_texts, (1, args.batch_size), args.all_rounds)
  result = dict(
      encoder=args.encoder, base_params=base_params, base_bytes=base_bytes, batch_size=len(texts),
      adapter_layers=args.adapter_layers, untrained_tasks=True, shared_depths=shared_depths,
      saved_model=[dict(tasks=n, **sizes[n], variables_x_base=sizes[n]["variables_bytes"] / base_bytes,
                        total_x_base=sizes[n]["total_bytes"] / base_bytes) for n in (1, 2, 4, 8)],
      latency_ms=dict(single_task_signature=single_ms, mixed_one_task=mixed_one_ms,
                      mixed_8_tasks=mixed_spread_ms),
      mixed_8_tasks_over_single=mixed_spread_ms / single_ms,
      all_tasks=all_rows, all_rounds=args.all_rounds,
      command=run_grid.benchmark_command(__file__, argv))
  print(f"{'tasks':>5} {'SavedModel MiB':>15} {'variables MiB':>14} {'variables x base':>17}")
  for row in result["saved_model"]:
    print(f"{row['tasks']:>5} {row['total_bytes'] / 2**20:>15.1f} {row['variables_bytes'] / 2**20:>14.1f} "
          f"{row['variables_x_base']:>17.3f}")
  print(f"\nbase encoder: {base_params:,} parameters = {base_bytes / 2**20:.1f} MiB in float32")
  print(f"latency, batch of {len(texts)} (median of {args.repeats}):")
  for name, value in result["latency_ms"].items():
    print(f"  {name:<24}{value:>9.1f} ms")
  print(f"mixed batch over 8 tasks / single-task batch: {result['mixed_8_tasks_over_single']:.2f}x")
  print(f"\nshared depths (0: the embedding lookups; k: also blocks < k): {shared_depths}")
  print(f"{'tasks':>5} {'batch':>5} {'N separate calls ms':>20} {'one all call ms':>16} {'all / separate':>15}")
  for row in all_rows:
    print(f"{row['tasks']:>5} {row['batch_size']:>5} {row['separate_calls_ms']:>20.1f} {row['all_call_ms']:>16.1f} "
          f"{row['all_over_separate']:>15.2f}")
  write_json_atomic(args.out_json, result)
  if args.json:
    print(json.dumps(result))


if __name__ == "__main__":
  main()
