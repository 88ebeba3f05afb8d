"""Houlsby adapters (the paper's method, the library's default): config.py (AdapterConfig), layers.py
(BottleneckAdapter and the wrappers that put it after a sublayer), and the method below.

inject: two adapters per Transformer block (AdapterConfig says which, where and how), through
layers/block.py's `attach_adapters`; trains: the adapters, every LayerNorm and the head.
"""
from __future__ import annotations

from typing import Optional

from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.methods.base import ModelShape, TuningMethod, WeightSite


class AdapterMethod(TuningMethod):
  """Bottleneck adapters after the attention and FFN output projections; they, LayerNorms and the head train."""

  name = "adapter"
  config_class = AdapterConfig
  uses_adapters = True

  def make_config(self, config=None, *, adapter=None, top_k=None):
    return super().make_config(config if config is not None else adapter)

  def validate(self, config: AdapterConfig, num_layers: int) -> None:
    config.validate_for(num_layers)

  def inject(self, encoder, config: AdapterConfig, seed: Optional[int] = None) -> None:
    if not hasattr(encoder, "attach_adapters"):
      raise TypeError(f"encoder {encoder.name} is a {type(encoder).__name__}; adapters go into an "
                      "AdapterBertEncoder (pretrained.load_encoder, or adapter_keras.add_adapters for a BertEncoderV2)")
    encoder.attach_adapters(config, seed)

  def trains(self, site: WeightSite, config) -> bool:
    return site.is_head or site.in_adapter or site.is_layer_norm

  def trained_params(self, shape: ModelShape, config: AdapterConfig) -> int:
    return adapter_params(shape.hidden_size, shape.num_layers, config) + shape.layer_norm_params + shape.head_params

  def frozen_bottom_start(self, num_layers: int, config: AdapterConfig) -> int:
    adapted = [i for i in range(num_layers) if config.size_for_layer(i)]
    if not adapted:
      raise ValueError("the adapter config puts adapters in no layer")
    start = adapted[0]
    if adapted != list(range(start, num_layers)):
      raise ValueError(
          f"the frozen-bottom cache needs adapters in a top range of layers k..{num_layers - 1} "
          f"(AdapterConfig.layers, --adapter-layers); they are in layers {adapted}")
    if config.norm == "batch":
      raise ValueError("the frozen-bottom cache does not support adapters with BatchNorm (norm='batch'): their "
                       "batch statistics include padding positions, which the cache does not keep")
    return start


def adapter_params(hidden_size: int, num_layers: int, config: AdapterConfig) -> int:
  """Trainable parameters of every adapter of an encoder: 2md + d + m each, plus 2d for a norm on its
  input and (k - 1)(m^2 + m) for k > 1 hidden layers."""
  d = hidden_size
  per_block = int(config.use_attention_adapter) + int(config.use_ffn_adapter)
  total = 0
  for i in range(num_layers):
    m = config.size_for_layer(i)
    if m:
      one = 2 * m * d + d + m + (2 * d if config.norm else 0) + (config.hidden_layers - 1) * (m * m + m)
      total += per_block * one
  return total


METHOD = AdapterMethod()
