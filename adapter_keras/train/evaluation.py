"""Running a trained model over encoded examples: outputs in the examples' order, task metrics."""
from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf

from adapter_keras.tasks.metrics import compute_metrics
from adapter_keras.train.inputs import JIT_PAD_MULTIPLE, EncodedExamples, make_dataset


def predict_outputs(model, dataset: tf.data.Dataset) -> np.ndarray:
  """Model outputs (logits or scores) for every example of an unshuffled dataset."""
  return model.predict(dataset.map(lambda features, _: features), verbose=0)


def predict_encoded(model, encoded: EncodedExamples, batch_size: int = 64) -> np.ndarray:
  """Model outputs for every example of `encoded`, in its order.

  The batches run sorted by length, so they carry almost no padding, and
  the outputs are put back in the examples' order. A model compiled with
  jit_compile gets JIT_PAD_MULTIPLE padding (few shapes to compile).
  """
  order = np.argsort(encoded.lengths, kind="stable")
  pad = JIT_PAD_MULTIPLE if getattr(model, "jit_compile", False) else None
  sorted_outputs = predict_outputs(model, make_dataset(encoded, batch_size, order=order, pad_to_multiple=pad))
  outputs = np.empty_like(sorted_outputs)
  outputs[order] = sorted_outputs
  return outputs


def accuracy(model, encoded: EncodedExamples, batch_size: int = 64) -> float:
  logits = predict_encoded(model, encoded, batch_size)
  return float(np.mean(np.argmax(logits, axis=-1) == encoded.labels))




def evaluate_model(model, task, encoded_splits: Dict[str, EncodedExamples],
                   batch_size: int = 64) -> Dict[str, Dict[str, float]]:
  """Task metrics of `model` on every encoded split."""
  return {split: compute_metrics(task, predict_encoded(model, encoded, batch_size), encoded.labels)
          for split, encoded in encoded_splits.items()}


def flatten_metrics(per_split: Dict[str, Dict[str, float]]) -> Dict[str, float]:
  """{metric: value} for one split; {"split/metric": value} for several."""
  if len(per_split) == 1:
    return dict(next(iter(per_split.values())))
  return {f"{split}/{name}": value for split, metrics in per_split.items()
          for name, value in metrics.items()}
