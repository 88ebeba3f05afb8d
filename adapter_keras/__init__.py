"""adapter_keras: Houlsby adapters for TensorFlow Model Garden BERT encoders.

The front door (keras_api.py) is reachable from here: `adapter_keras.AdapterClassifier`,
`AdapterRegressor`, `AdapterSpanExtractor`, `add_adapters`, `mark_only_adapters_trainable` and
`AdapterConfig`.
"""
import importlib

from adapter_keras import _tf_runtime

__version__ = "0.2.0"

# Before anything imports TensorFlow: no GPU probe where no CUDA driver exists, whose failure
# TensorFlow logs as an error line (issue 17, item 12), in the command lines, notebooks and
# benchmarks alike. A TF_ENABLED_DEVICE_TYPES the user set wins.
_tf_runtime.configure_devices()

# Imported on first use (PEP 562): `import adapter_keras` must stay free of TensorFlow, since the
# command lines import it before they parse their flags, and the modules below import this package
# for __version__.
_FRONT_DOOR = {
    "AdapterClassifier": "adapter_keras.keras_api",
    "AdapterRegressor": "adapter_keras.keras_api",
    "AdapterSpanExtractor": "adapter_keras.keras_api",
    "add_adapters": "adapter_keras.keras_api",
    "mark_only_adapters_trainable": "adapter_keras.keras_api",
    "AdapterConfig": "adapter_keras.config",
}
__all__ = sorted(_FRONT_DOOR)


def __getattr__(name):
  if name not in _FRONT_DOOR:
    raise AttributeError(f"module 'adapter_keras' has no attribute {name!r}")
  return getattr(importlib.import_module(_FRONT_DOOR[name]), name)


def __dir__():
  return sorted(set(globals()) | set(_FRONT_DOOR))
