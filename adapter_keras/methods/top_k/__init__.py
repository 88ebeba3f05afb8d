"""Top-k fine-tuning (the paper's variable fine-tuning baseline): the top k Transformer layers train
(and the pooler if the head reads it); layers below form a frozen bottom."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from adapter_keras.methods.base import ModelShape, TuningMethod, WeightSite
from adapter_keras.values import is_integer


@dataclasses.dataclass(frozen=True)
class TopKConfig:
  """k, the number of top Transformer layers that train (`--top-k`)."""

  k: int

  def __post_init__(self):
    if not is_integer(self.k) or self.k < 1:
      raise ValueError(f"method top-k needs --top-k >= 1, got {self.k!r}")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TopKConfig":
    if set(d) != {"k"}:
      raise ValueError(f"method top-k's config is {{'k': int}}, got {dict(d)}")
    return cls(**d)


class TopKMethod(TuningMethod):
  name = "top-k"
  config_class = TopKConfig
  fine_tunes_base = True

  def make_config(self, config=None, *, adapter=None, top_k=None):
    if config is None:
      return TopKConfig(top_k)
    return super().make_config(config)

  def label(self, config: TopKConfig) -> str:
    return f"top-{config.k}"

  def validate(self, config: TopKConfig, num_layers: int) -> None:
    if config.k > num_layers:
      raise ValueError(f"--top-k {config.k} exceeds the encoder's {num_layers} Transformer layers")

  def trains(self, site: WeightSite, config: TopKConfig) -> bool:
    return (site.is_head or (site.is_pooler and site.head_reads_pooler)
            or (site.block is not None and site.block >= site.num_layers - config.k))

  def trained_params(self, shape: ModelShape, config: TopKConfig) -> int:
    return (config.k * shape.block_params + (shape.pooler_params if shape.head_reads_pooler else 0)
            + shape.head_params)

  def frozen_bottom_start(self, num_layers: int, config: TopKConfig) -> int:
    self.validate(config, num_layers)
    return num_layers - config.k


METHOD = TopKMethod()
