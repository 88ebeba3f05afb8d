"""A Model Garden encoder object the user already holds, as a source of pre-trained weights: `add_adapters`."""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras.encoder import AdapterBertEncoder, approximate_gelu, dummy_inputs
from adapter_keras.methods import inject_method
from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.pretrained.directory import assign_strictly, model_garden_targets


def add_adapters(encoder: tf_keras.layers.Layer, adapter_config: AdapterConfig = AdapterConfig(),
                 adapter_seed: Optional[int] = None) -> AdapterBertEncoder:
  """An AdapterBertEncoder with `encoder`'s weights (a Model Garden BertEncoderV2) and adapters.

  Every pre-trained tensor is copied and checked by name and shape (pretrained/directory.py:
  assign_strictly), so a mismatch names the tensor instead of leaving a random weight; then the adapter
  method's inject adds the adapters (methods.inject_method). The new encoder with its adapters disabled
  (`set_adapters_enabled(False)`) computes exactly what `encoder` does. Choose what trains on the model
  built on it: `mark_only_adapters_trainable(model)` (any tf_keras model that contains it).
  """
  if not isinstance(adapter_config, AdapterConfig):
    raise TypeError(f"adapter_config must be an AdapterConfig, got {type(adapter_config).__name__}")
  if isinstance(encoder, AdapterBertEncoder) and encoder.adapters():
    raise ValueError(f"encoder {encoder.name} already has adapters")
  if not encoder.built:
    encoder(dummy_inputs())
  config = {k: v for k, v in encoder.get_config().items() if k not in ("adapter_config", "adapter_seed")}
  config["inner_activation"] = _rebuildable_activation(encoder, config.get("inner_activation"))
  adapted = AdapterBertEncoder(**config)
  adapted(dummy_inputs())
  scope = encoder.name + "/"
  tensors = {}
  for variable in encoder.weights:
    name = variable.name[:-len(":0")] if variable.name.endswith(":0") else variable.name
    tensors[name[len(scope):] if name.startswith(scope) else name] = variable.numpy()
  assign_strictly(model_garden_targets(adapted), tensors, f"encoder {encoder.name}")
  inject_method(adapted, "adapter", adapter_config, adapter_seed)
  return adapted


# Activations a block may use that Keras can rebuild by name (approximate_gelu is registered).
_KNOWN_ACTIVATIONS = (approximate_gelu, "gelu", "relu", "swish", "tanh")


def _rebuildable_activation(encoder, serialized):
  """The encoder's FFN activation in a form its config can rebuild.

  Model Garden's default activation is a lambda (approximate GELU), whose config reads '<lambda>' and
  cannot be rebuilt; it is recognised by its values instead.
  """
  try:
    tf_keras.activations.get(serialized)
    return serialized
  except ValueError:
    pass
  used = [layer.activation for layer in encoder.transformer_layers[0].submodules
          if isinstance(layer, tf_keras.layers.Activation)]
  probe = tf.linspace(-6.0, 6.0, 121)
  for candidate in _KNOWN_ACTIVATIONS:
    if used and np.array_equal(tf_keras.activations.get(candidate)(probe).numpy(), used[0](probe).numpy()):
      return candidate
  raise ValueError(f"encoder {encoder.name}'s activation {serialized!r} is none of approximate GELU, "
                   "GELU, ReLU, swish or tanh: build it with a named (or registered) activation")
