"""Peak memory of `adapter-keras predict`: 10,000 short strings, with and without one long string.

The in-graph tokenizer pads each model call to its longest input, so a single
call over every input (what predict did before it batched) pads 10,000 short
strings to max_seq_length as soon as one long string is among them. predict
now runs length-sorted batches (serving/predict.py); this measures it.

For each batch size (default: predict's default) it runs `adapter-keras
predict --input FILE` in a fresh process twice, on N short generated
sentences (adapter_keras.testing.tiny_sentiment_data, about 6 words) and on
the same with one LONG-word sentence in the middle, and reports each
process's peak RSS (ru_maxrss from wait4: TensorFlow runtime, model, inputs)
and wall time. `--one-call` adds batch size N + 1, i.e. every input in one
call as before (about 8 GB with a long string: mind the machine).

Model: a generated Hugging Face BERT (testing.write_tiny_hf_bert: 2 layers,
hidden 32, 4 heads, max_position_embeddings 128) with one untrained
size-8 adapter classification task (max_seq_length 128), exported with
MultiTaskModel.export.

  python benchmarks/predict_memory.py [--short 10000] [--long-words 300] [--batch-sizes 64]
      [--one-call] [--out docs/results/predict_memory.json] [--json] [--work DIR]

Prints a table; writes the JSON to --out (and, with --json, as the last stdout line).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from adapter_keras.analysis import run_grid  # noqa: E402
from adapter_keras.io import write_json_atomic  # noqa: E402
from adapter_keras.serving.predict import DEFAULT_BATCH_SIZE  # noqa: E402
from adapter_keras.testing import tiny_sentiment_data, write_tiny_hf_bert  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export_tiny_model(work: str) -> str:
  """The tiny one-task export the measurements run (built in this process, measured in others)."""
  # pylint: disable=import-outside-toplevel
  from adapter_keras.config import AdapterConfig
  from adapter_keras.serving.multitask import MultiTaskModel
  from adapter_keras.tasks import classification_task
  encoder = write_tiny_hf_bert(os.path.join(work, "encoder"), seed=0, dropout=0.0)
  multitask = MultiTaskModel.from_encoder(encoder)
  multitask.add_task("sentiment", classification_task("sentiment", ("neg", "pos")), AdapterConfig(size=8),
                     max_seq_length=128, seed=0)
  return multitask.export(os.path.join(work, "export"))


def write_inputs(work: str, n_short: int, long_words: int) -> Dict[str, str]:
  """Input files: N short sentences, and the same with one long sentence in the middle."""
  texts, _ = tiny_sentiment_data(n_short, seed=0)
  words = " ".join(texts).split()
  long_text = " ".join(words[i % len(words)] for i in range(long_words))
  paths = dict(short=os.path.join(work, "short.txt"), short_and_long=os.path.join(work, "short_and_long.txt"))
  with open(paths["short"], "w", encoding="utf-8") as f:
    f.write("\n".join(texts) + "\n")
  with open(paths["short_and_long"], "w", encoding="utf-8") as f:
    f.write("\n".join(texts[:n_short // 2] + [long_text] + texts[n_short // 2:]) + "\n")
  return paths


def measure_predict(model: str, input_path: str, batch_size: int, log_path: str) -> Dict:
  """Wall seconds and peak RSS of `adapter-keras predict --input input_path` in a fresh process."""
  command = [sys.executable, "-m", "adapter_keras", "predict", "--model", model, "--input", input_path,
             "--batch-size", str(batch_size)]
  started = time.perf_counter()
  with open(log_path, "w", encoding="utf-8") as log:
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    _, status, usage = os.wait4(process.pid, 0)
  seconds = time.perf_counter() - started
  if os.waitstatus_to_exitcode(status) != 0:
    with open(log_path, encoding="utf-8") as f:
      raise RuntimeError(f"{' '.join(command)} failed:\n{f.read()[-3000:]}")
  return dict(seconds=seconds, peak_rss_bytes=usage.ru_maxrss * 1024)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--short", type=int, default=10_000, help="number of short strings")
  parser.add_argument("--long-words", type=int, default=300, help="words in the one long string")
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[DEFAULT_BATCH_SIZE])
  parser.add_argument("--one-call", action="store_true",
                      help="also every input in one call (batch size N + 1), as predict did before batching")
  parser.add_argument("--out", default=os.path.join("docs", "results", "predict_memory.json"))
  parser.add_argument("--work", help="working directory (default: a new temporary one)")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  work = args.work or tempfile.mkdtemp(prefix="predict_memory_")
  os.makedirs(work, exist_ok=True)
  model = export_tiny_model(work)
  inputs = write_inputs(work, args.short, args.long_words)
  batch_sizes = list(args.batch_sizes) + ([args.short + 1] if args.one_call else [])
  rows = []
  print(f"{'batch size':>10} {'inputs':>22} {'peak RSS MiB':>13} {'seconds':>8} {'x short alone':>14}")
  for batch_size in batch_sizes:
    measured = {name: measure_predict(model, path, batch_size, os.path.join(work, f"{name}_{batch_size}.log"))
                for name, path in inputs.items()}
    ratio = measured["short_and_long"]["peak_rss_bytes"] / measured["short"]["peak_rss_bytes"]
    for name, result in measured.items():
      label = f"{args.short} short" + (" + 1 long" if name == "short_and_long" else "")
      shown_ratio = f"{ratio:.2f}" if name == "short_and_long" else ""
      print(f"{batch_size:>10} {label:>22} {result['peak_rss_bytes'] / 2**20:>13.0f} {result['seconds']:>8.1f} "
            f"{shown_ratio:>14}")
    rows.append(dict(batch_size=batch_size, one_call=batch_size > args.short, short=measured["short"],
                     short_and_long=measured["short_and_long"], long_over_short=ratio))
  result = dict(short_strings=args.short, long_words=args.long_words, rows=rows,
                command=run_grid.benchmark_command(__file__, argv))
  write_json_atomic(args.out, result)
  if args.json:
    print(json.dumps(result))


if __name__ == "__main__":
  main()
