"""Running a trained model over encoded examples: outputs in the examples' order, task metrics.

With static shapes (train/inputs.py) prediction keeps every batch at
`batch_size` examples and one of the fixed lengths: the last batch is filled
with copies of its last example, whose outputs are dropped, so every example
is scored exactly once.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from adapter_keras.tasks.metrics import compute_metrics
from adapter_keras.train.inputs import JIT_PAD_MULTIPLE, EncodedExamples, make_dataset


def predict_outputs(model, dataset: tf.data.Dataset) -> np.ndarray:
  """Model outputs (logits or scores) for every example of an unshuffled dataset.

  Under MultiWorkerMirroredStrategy every worker gets all of them, in order:
  tf_keras's predict shards the batches by DATA, splits each over the
  replicas and gathers the outputs back (tests/test_multi_worker.py).
  """
  return model.predict(dataset.map(lambda features, _: features), verbose=0)


def fill_last_batch(order: np.ndarray, batch_size: int) -> np.ndarray:
  """`order` extended with copies of its last index up to a multiple of `batch_size`.

  Copies of the last example rather than empty ones: sorted by length, it
  is the longest of its batch, so the batch keeps its padded length, and a
  real example has a well-defined output (a fully masked one would not:
  mean pooling over no tokens).
  """
  missing = -len(order) % batch_size
  return np.concatenate([order, np.full(missing, order[-1], order.dtype)]) if missing else order


def predict_encoded(model, encoded: EncodedExamples, batch_size: int = 64,
                    static_lengths: Optional[Sequence[int]] = None) -> np.ndarray:
  """Model outputs for every example of `encoded`, in its order.

  The batches run sorted by length, so they carry almost no padding, and
  the outputs are put back in the examples' order. A model compiled with
  jit_compile gets JIT_PAD_MULTIPLE padding (few shapes to compile). With
  `static_lengths` (train/inputs.static_batch_lengths) every batch holds
  `batch_size` examples padded to one of those lengths: the last batch is
  filled (fill_last_batch) and the fillers' outputs are dropped.
  """
  order = np.argsort(encoded.lengths, kind="stable")
  if static_lengths is not None:
    dataset = make_dataset(encoded, batch_size, order=fill_last_batch(order, batch_size),
                           static_lengths=static_lengths)
    sorted_outputs = predict_outputs(model, dataset)[:len(order)]
  else:
    pad = JIT_PAD_MULTIPLE if getattr(model, "jit_compile", False) else None
    sorted_outputs = predict_outputs(model, make_dataset(encoded, batch_size, order=order, pad_to_multiple=pad))
  outputs = np.empty_like(sorted_outputs)
  outputs[order] = sorted_outputs
  return outputs


def accuracy(model, encoded: EncodedExamples, batch_size: int = 64) -> float:
  logits = predict_encoded(model, encoded, batch_size)
  return float(np.mean(np.argmax(logits, axis=-1) == encoded.labels))




def evaluate_model(model, task, encoded_splits: Dict[str, EncodedExamples], batch_size: int = 64,
                   static_lengths: Optional[Sequence[int]] = None) -> Dict[str, Dict[str, float]]:
  """Task metrics of `model` on every encoded split (`static_lengths`: see predict_encoded)."""
  return {split: compute_metrics(task, predict_encoded(model, encoded, batch_size, static_lengths), encoded.labels)
          for split, encoded in encoded_splits.items()}


def flatten_metrics(per_split: Dict[str, Dict[str, float]]) -> Dict[str, float]:
  """{metric: value} for one split; {"split/metric": value} for several."""
  if len(per_split) == 1:
    return dict(next(iter(per_split.values())))
  return {f"{split}/{name}": value for split, metrics in per_split.items()
          for name, value in metrics.items()}
