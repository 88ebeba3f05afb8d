"""Checks of plain values that configs, flags and file readers share, and the name every serializable Keras
class of adapter_keras registers under. No TensorFlow."""
from __future__ import annotations

# tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE): "AdapterKeras>AdapterClassifier".
KERAS_PACKAGE = "AdapterKeras"


def is_integer(value) -> bool:
  """An int that is not a bool (bool is an int subclass, and True would pass for 1)."""
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
  """An int or float that is not a bool."""
  return isinstance(value, (int, float)) and not isinstance(value, bool)
