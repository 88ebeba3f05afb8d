"""Serving a trained wide & deep model: the SavedModel export and predictions from it.

`export_saved_model` writes a SavedModel whose `serving_default` signature
takes raw strings, with `EXPORT_INFO_FILE` (label names, pair or single text)
beside it; `load_exported`, `predict_exported` and `predict_labels` read it back.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

EXPORT_INFO_FILE = "automl_baseline.json"


def export_saved_model(model: tf_keras.Model, out_dir: str, is_pair: bool,
                       label_names: Optional[Sequence[str]] = None,
                       info: Optional[dict] = None) -> str:
  """Saves the model as a SavedModel whose serving signature takes raw strings.

  `serving_default(text[, text_b])` returns logits, probabilities, class_ids
  and labels (the label names). Loading it needs `import tensorflow_text`
  when the embedding module uses its ops (WordPiece modules).
  """
  num_classes = int(model.linear_model.settings.num_classes)
  names = list(label_names) if label_names else [str(i) for i in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f"{len(names)} label names for {num_classes} classes")
  names_tensor = tf.constant(names)

  def outputs(logits: tf.Tensor) -> Dict[str, tf.Tensor]:
    class_ids = tf.argmax(logits, axis=-1)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits), "class_ids": class_ids,
            "labels": tf.gather(names_tensor, class_ids)}

  strings = tf.TensorSpec([None], tf.string)
  if is_pair:
    @tf.function(input_signature=[strings, strings])
    def serve(text, text_b):
      return outputs(model({"text": text, "text_b": text_b}, training=False))
  else:
    @tf.function(input_signature=[strings])
    def serve(text):
      return outputs(model({"text": text}, training=False))

  model.save(out_dir, save_format="tf", include_optimizer=False,
             signatures={"serving_default": serve.get_concrete_function()})
  with open(os.path.join(out_dir, EXPORT_INFO_FILE), "w", encoding="utf-8") as f:
    json.dump(dict(info or {}, label_names=names, is_pair=is_pair,
                   signature_inputs=["text", "text_b"] if is_pair else ["text"]), f, indent=2)
  return out_dir


def load_exported(path: str):
  """`tf.saved_model.load` of an exported model, with the ops its modules may need."""
  import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  return tf.saved_model.load(path)


def predict_exported(path: str, texts: List[str], texts_b: Optional[List[str]] = None,
                     batch_size: int = 256) -> Dict[str, np.ndarray]:
  """The serving outputs (logits, probabilities, class_ids, labels) of an exported model."""
  serve = load_exported(path).signatures["serving_default"]
  parts: Dict[str, List[np.ndarray]] = {}
  for start in range(0, len(texts), batch_size):
    kwargs = {"text": tf.constant(texts[start:start + batch_size])}
    if texts_b is not None:
      kwargs["text_b"] = tf.constant(texts_b[start:start + batch_size])
    for name, value in serve(**kwargs).items():
      parts.setdefault(name, []).append(value.numpy())
  return {name: np.concatenate(values) for name, values in parts.items()}


def predict_labels(path: str, texts: List[str], texts_b: Optional[List[str]] = None) -> List[str]:
  """Label names predicted by an exported model (a convenience for users and tests)."""
  return [label.decode("utf-8") for label in predict_exported(path, texts, texts_b)["labels"]]
