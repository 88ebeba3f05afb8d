"""Full fine-tuning: every pre-trained weight trains (the pooler only if the head reads it)."""
from __future__ import annotations

from adapter_keras.methods.base import ModelShape, TuningMethod, WeightSite


class FullMethod(TuningMethod):
  name = "full"
  fine_tunes_base = True

  def trains(self, site: WeightSite, config) -> bool:
    return site.is_head or (site.is_pooler and site.head_reads_pooler) or not site.is_pooler

  def trained_params(self, shape: ModelShape, config) -> int:
    unread_pooler = 0 if shape.head_reads_pooler else shape.pooler_params
    return shape.base_params - unread_pooler + shape.head_params


METHOD = FullMethod()
