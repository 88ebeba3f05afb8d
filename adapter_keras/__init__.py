"""adapter_keras: Houlsby adapters for TensorFlow Model Garden BERT encoders.

The front door is reachable from here: the task models `adapter_keras.AdapterClassifier`,
`AdapterRegressor`, `AdapterSpanExtractor`, `AdapterTokenClassifier` (models/), `load_adapter`, `add_adapters`,
`mark_only_adapters_trainable`, `apply_method`, `register_method` and `AdapterConfig`.
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
    "AdapterClassifier": "adapter_keras.models",
    "AdapterRegressor": "adapter_keras.models",
    "AdapterSpanExtractor": "adapter_keras.models",
    "AdapterTokenClassifier": "adapter_keras.models",
    "load_adapter": "adapter_keras.models",
    "add_adapters": "adapter_keras.pretrained.keras_encoder",
    "mark_only_adapters_trainable": "adapter_keras.methods",
    "apply_method": "adapter_keras.methods",
    "register_method": "adapter_keras.methods",
    "AdapterConfig": "adapter_keras.config",
}
__all__ = sorted(_FRONT_DOOR)


def __getattr__(name):
  if name not in _FRONT_DOOR:
    raise AttributeError(f"module 'adapter_keras' has no attribute {name!r}")
  attribute = "register" if name == "register_method" else name
  return getattr(importlib.import_module(_FRONT_DOOR[name]), attribute)


def __dir__():
  return sorted(set(globals()) | set(_FRONT_DOOR))
