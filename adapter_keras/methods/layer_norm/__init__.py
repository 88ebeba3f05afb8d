"""LayerNorm-only tuning (the paper's baseline): every LayerNorm and the head train."""
from __future__ import annotations

from adapter_keras.methods.base import ModelShape, TuningMethod, WeightSite


class LayerNormMethod(TuningMethod):
  name = "layer-norm"

  def trains(self, site: WeightSite, config) -> bool:
    return site.is_head or site.is_layer_norm

  def trained_params(self, shape: ModelShape, config) -> int:
    return shape.layer_norm_params + shape.head_params


METHOD = LayerNormMethod()
