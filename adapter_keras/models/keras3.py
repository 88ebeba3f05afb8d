"""Keras 3 objects handed to our Keras 2 (tf_keras) models, refused with the fix named.

On TensorFlow 2.20 `tf.keras` is Keras 3, while our models are tf_keras models (Keras 2, like Model
Garden's). A Keras 3 callback or optimizer given to them otherwise fails deep inside tf_keras with a
riddle (`'EarlyStopping' object has no attribute '_implements_train_batch_hooks'`, `Could not interpret
optimizer identifier`); `refuse_keras3_objects` turns that into one error naming the tf_keras class to use.
"""
from __future__ import annotations

from typing import Any, Iterator

_KINDS = ("callbacks", "optimizers", "losses", "metrics", "layers", "initializers", "regularizers")


def is_keras3_object(value: Any) -> bool:
  """Whether `value` is an instance of a class of the Keras 3 package (`keras`, which `tf.keras` is on TF 2.20)."""
  module = type(value).__module__ or ""
  return module == "keras" or module.startswith("keras.")


def _items(value) -> Iterator[Any]:
  if isinstance(value, dict):
    for item in value.values():
      yield from _items(item)
  elif isinstance(value, (list, tuple)):
    for item in value:
      yield from _items(item)
  elif value is not None:
    yield value


def keras3_message(where: str, argument: str, value: Any) -> str:
  cls = type(value)
  kind = next((k for k in _KINDS if f".{k}" in cls.__module__), None)
  replacement = f"tf_keras.{kind}.{cls.__name__}" if kind else f"the tf_keras version of {cls.__name__}"
  return (f"{where}() got a Keras 3 object as {argument} ({cls.__module__}.{cls.__name__}; on TensorFlow 2.20 "
          f"tf.keras is Keras 3), but adapter_keras models are Keras 2 (tf_keras) models: use {replacement} "
          "(import tf_keras), or set TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported so that tf.keras "
          "is tf_keras")


def refuse_keras3_objects(where: str, **arguments) -> None:
  """Raises TypeError naming the first Keras 3 object among `arguments` (lists and dicts searched)."""
  for argument, value in arguments.items():
    for item in _items(value):
      if is_keras3_object(item):
        raise TypeError(keras3_message(where, argument, item))
