"""Streaming training inputs: peak memory and throughput from 10k to 200k examples, records against in memory.

For each training-set size (default 10,000 and 200,000 examples) it

* writes generated sentiment examples to a TSV (each example three tiny
  sentences, about 25 tokens; adapter_keras.testing.tiny_sentiment_data)
  plus a 500-example dev TSV;
* runs `adapter-keras preprocess` on them (a subprocess; wall time, peak RSS);
* trains a fixed number of steps, each run in a fresh subprocess, once from
  the records (`train --train-records`' RecordsClassificationRecipe) and
  once in memory (`train --train/--dev`'s ClassificationRecipe): the data
  is read as `train` reads it, the model built, the recipe prepared (the
  in-memory path tokenizes the whole training set here, the records path
  only the dev set), then `fit` runs STEPS steps over consecutive epochs.

Measured per run: the process's peak RSS (ru_maxrss from wait4: TF
runtime, data, model, training), the input pipeline's examples/s alone (the
same STEPS batches iterated once without the model, before training) and
training examples/s over the steps after the first WARMUP (the default 600 steps of 32 cross one 16,384-example shuffle
window boundary, so refilling a window is in the measurement). With
--repeats 2 every training run happens twice, records and in-memory
alternating, and the faster of each pair counts (the machine is shared).

Encoder: a generated Hugging Face BERT, 4 layers, hidden 128, 4 heads, FFN
512, tiny vocabulary (testing.write_tiny_hf_bert); adapters of size 64.

  python benchmarks/input_scaling.py [--sizes 10000 200000] [--steps 600] [--repeats 2] [--json]
      [--out docs/results/input_scaling.json] [--work DIR]

Prints a table; writes the JSON to --out (and, with --json, as the last stdout line).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from adapter_keras.analysis import run_grid  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH_SIZE = 32
WARMUP = 50
SENTENCES_PER_EXAMPLE = 3
DEV_EXAMPLES = 500
ENCODER_SHAPE = dict(num_layers=4, hidden_size=128, num_heads=4, intermediate_size=512)


# ----------------------------------------------------------------------------- data and subprocesses


def write_examples(path: str, n: int, seed: int) -> None:
  """`n` examples of SENTENCES_PER_EXAMPLE generated sentences; the first sentence sets the label."""
  from adapter_keras.testing import tiny_sentiment_data  # pylint: disable=import-outside-toplevel
  texts, labels = tiny_sentiment_data(n, seed=seed)
  fillers, _ = tiny_sentiment_data(n * (SENTENCES_PER_EXAMPLE - 1), seed=seed + 1)
  with open(path, "w", encoding="utf-8") as f:
    f.write("sentence\tlabel\n")
    for i, (text, label) in enumerate(zip(texts, labels)):
      more = fillers[i * (SENTENCES_PER_EXAMPLE - 1):(i + 1) * (SENTENCES_PER_EXAMPLE - 1)]
      f.write(" . ".join([text] + more) + f"\t{label}\n")


def run_measured(command: List[str], log_path: str) -> Dict:
  """Runs `command` (stdout and stderr to `log_path`); its wall seconds, peak RSS and last stdout line."""
  started = time.perf_counter()
  with open(log_path, "w", encoding="utf-8") as log:
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1"))
    _, status, usage = os.wait4(process.pid, 0)
  seconds = time.perf_counter() - started
  with open(log_path, encoding="utf-8") as f:
    lines = f.read().strip().splitlines()
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f"{' '.join(command)} failed; the end of {log_path}:\n" + "\n".join(lines[-20:]))
  return dict(seconds=seconds, peak_rss_bytes=usage.ru_maxrss * 1024, last_line=lines[-1] if lines else "")


# ----------------------------------------------------------------------------- the training probe


def training_probe(args) -> Dict:
  """Runs in its own process: STEPS training steps of one path; examples/s after WARMUP."""
  # pylint: disable=import-outside-toplevel
  import math

  import tf_keras

  from adapter_keras.config import AdapterConfig
  from adapter_keras.preprocessing import BertPreprocessor
  from adapter_keras.tasks.sources import DataSource, load_task_data
  from adapter_keras.train.classification import ClassificationRecipe
  from adapter_keras.train.config import TrainConfig
  from adapter_keras.train.distribute import get_strategy
  from adapter_keras.train.loop import compile_for_training
  from adapter_keras.train.recipe import build_trainable_model
  from adapter_keras.train.records import open_training_records
  from adapter_keras.train.records_recipe import RecordsClassificationRecipe
  started = time.perf_counter()
  source = DataSource(train_file=os.path.join(args.work, "train.tsv"), dev_file=os.path.join(args.work, "dev.tsv"),
                      text_column="sentence", label_column="label")
  if args.probe == "records":
    records = open_training_records(os.path.join(args.work, "records"))
    source.train_file = None
    _, _, dev = load_task_data(source, need_train=False, task=records.task)
    recipe = RecordsClassificationRecipe(records, dev)
  else:
    task, train, dev = load_task_data(source)
    recipe = ClassificationRecipe(task, train, dev)
  config = TrainConfig(encoder=os.path.join(os.path.dirname(args.work), "encoder"), adapter=AdapterConfig(size=64),
                       batch_size=BATCH_SIZE, learning_rate=1e-3, epochs=1, seed=0)
  strategy = get_strategy("default")
  pretrained, model, _ = build_trainable_model(config, lambda loaded: recipe.build_model(loaded, config), strategy)
  recipe.prepare(BertPreprocessor(pretrained.vocab_file, pretrained.lower_case, config.max_seq_length), config)
  train_model = recipe.training_model(model, strategy, verbose=False)
  compile_for_training(train_model, recipe.compile_model, config, args.steps, strategy)
  prepared = time.perf_counter() - started

  def steps_dataset():
    dataset = recipe.epoch_dataset(0)
    for epoch in range(1, math.ceil(args.steps / recipe.num_train_batches_per_epoch)):
      dataset = dataset.concatenate(recipe.epoch_dataset(epoch))
    return dataset

  # The input pipeline alone first (the same batches, no model): what it can feed at most.
  input_started, examples = time.perf_counter(), 0
  for _, labels in steps_dataset().take(args.steps):
    examples += int(labels.shape[0])
  input_only = examples / (time.perf_counter() - input_started)
  dataset = steps_dataset()
  times = {}

  class Timer(tf_keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
      if batch + 1 in (WARMUP, args.steps):
        times[batch + 1] = time.perf_counter()

  train_model.fit(dataset, epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=[Timer()])
  timed_steps = args.steps - WARMUP
  return dict(path=args.probe, examples_per_s=timed_steps * BATCH_SIZE / (times[args.steps] - times[WARMUP]),
              input_only_examples_per_s=input_only, prepare_s=prepared, train_examples=recipe.num_train_examples)


# ----------------------------------------------------------------------------- the benchmark


def measure_size(n: int, args, work: str, log) -> Dict:
  os.makedirs(work, exist_ok=True)
  write_examples(os.path.join(work, "train.tsv"), n, seed=0)
  write_examples(os.path.join(work, "dev.tsv"), DEV_EXAMPLES, seed=100)
  preprocess = run_measured(
      [sys.executable, "-m", "adapter_keras", "preprocess", "--train", os.path.join(work, "train.tsv"),
       "--text-column", "sentence", "--label-column", "label", "--encoder", os.path.join(args.work, "encoder"),
       "--out", os.path.join(work, "records"), "--json"], os.path.join(work, "preprocess.log"))
  spec = json.loads(preprocess.pop("last_line"))
  log(f"[input-scaling] {n:,}: preprocess {preprocess['seconds']:.1f}s, peak RSS "
      f"{preprocess['peak_rss_bytes'] / 2**20:.0f} MiB, longest example {spec['longest_example']} tokens")
  runs: Dict[str, List[Dict]] = {"records": [], "memory": []}
  for repeat in range(args.repeats):
    for path in (("records", "memory") if repeat % 2 == 0 else ("memory", "records")):
      measured = run_measured([sys.executable, os.path.abspath(__file__), "--probe", path, "--work", work,
                               "--steps", str(args.steps)], os.path.join(work, f"train-{path}-{repeat}.log"))
      measured.update(json.loads(measured.pop("last_line")))
      runs[path].append(measured)
      log(f"[input-scaling] {n:,} {path}: {measured['examples_per_s']:.0f} examples/s (input alone "
          f"{measured['input_only_examples_per_s']:.0f}), peak RSS "
          f"{measured['peak_rss_bytes'] / 2**20:.0f} MiB, {measured['seconds']:.0f}s")
  best = {path: dict(examples_per_s=max(r["examples_per_s"] for r in rs),
                     input_only_examples_per_s=max(r["input_only_examples_per_s"] for r in rs),
                     peak_rss_bytes=max(r["peak_rss_bytes"] for r in rs), runs=rs) for path, rs in runs.items()}
  return dict(examples=n, preprocess=dict(preprocess, num_shards=spec["num_shards"],
                                          longest_example=spec["longest_example"]), **best,
              records_over_memory_throughput=best["records"]["examples_per_s"] / best["memory"]["examples_per_s"])


def print_table(result: Dict) -> None:
  print(f"\n{'examples':>9} {'path':<8} {'examples/s':>11} {'input alone':>12} {'peak RSS MiB':>13}")
  for size in result["sizes"]:
    for path in ("records", "memory"):
      print(f"{size['examples']:>9,} {path:<8} {size[path]['examples_per_s']:>11.0f} "
            f"{size[path]['input_only_examples_per_s']:>12.0f} {size[path]['peak_rss_bytes'] / 2**20:>13.0f}")
    print(f"{'':>9} {'preproc.':<8} {'':>11} {'':>12} {size['preprocess']['peak_rss_bytes'] / 2**20:>13.0f}  "
          f"({size['preprocess']['seconds']:.0f}s)")
  print(f"\npeak RSS, last size over first: records {result['records_rss_growth']:.2f}x, "
        f"in memory {result['memory_rss_growth']:.2f}x")
  print("records / in-memory throughput: " + ", ".join(
      f"{s['examples']:,}: {s['records_over_memory_throughput']:.2f}" for s in result["sizes"]))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 200_000])
  parser.add_argument("--steps", type=int, default=600, help="training steps per run (batch 32)")
  parser.add_argument("--repeats", type=int, default=2, help="training runs per path and size (best counts)")
  parser.add_argument("--out", default=os.path.join(REPO_ROOT, "docs", "results", "input_scaling.json"))
  parser.add_argument("--work", help="working directory (default: a temporary one, deleted after)")
  parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")
  parser.add_argument("--probe", choices=["records", "memory"], help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.probe:
    print(json.dumps(training_probe(args)))
    return
  if args.steps <= WARMUP:
    parser.error(f"--steps must be more than the {WARMUP} warm-up steps")
  sys.path.insert(0, REPO_ROOT)
  from adapter_keras.io import write_json_atomic  # pylint: disable=import-outside-toplevel
  from adapter_keras.testing import write_tiny_hf_bert  # pylint: disable=import-outside-toplevel
  started = time.perf_counter()

  def log(message):
    print(f"{message} ({time.perf_counter() - started:.0f}s; load {os.getloadavg()[0]:.1f})", file=sys.stderr,
          flush=True)

  with tempfile.TemporaryDirectory(prefix="input_scaling-") as scratch:
    args.work = os.path.abspath(args.work or scratch)
    write_tiny_hf_bert(os.path.join(args.work, "encoder"), seed=0, **ENCODER_SHAPE)
    load_before = os.getloadavg()
    sizes = [measure_size(n, args, os.path.join(args.work, f"n{n}"), log) for n in args.sizes]
  first, last = sizes[0], sizes[-1]
  result = dict(
      sizes=sizes,
      records_rss_growth=last["records"]["peak_rss_bytes"] / first["records"]["peak_rss_bytes"],
      memory_rss_growth=last["memory"]["peak_rss_bytes"] / first["memory"]["peak_rss_bytes"],
      settings=dict(batch_size=BATCH_SIZE, steps=args.steps, warmup_steps=WARMUP, repeats=args.repeats,
                    encoder=ENCODER_SHAPE, adapter_size=64, dev_examples=DEV_EXAMPLES,
                    sentences_per_example=SENTENCES_PER_EXAMPLE),
      load_average_before=load_before, load_average_after=os.getloadavg(),
      device=f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
      date=datetime.date.today().isoformat(), seconds=time.perf_counter() - started,
      command=run_grid.benchmark_command(__file__, argv))
  print_table(result)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  write_json_atomic(args.out, result)
  if args.json:
    print(json.dumps(result))


if __name__ == "__main__":
  main()
