"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a low-rank update
(alpha / r) * B A beside chosen pre-trained projections (query and value by default), A random and B zero so
that the model starts as the base; A, B and the head train. `merge` folds the update into the kernels, so a
merged model computes with the base's shapes and no extra operation; `unmerge` takes it out again.

Targets: the attention's query, key, value and output projections, the FFN's two (methods/sites.py). In a
multi-task bank each task wraps the base's shared projections in its own attention layer and blocks
(serving/multitask.py), and does not merge.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from adapter_keras.methods.base import MergeableMethod, MethodSettings, ModelShape, WeightSite
from adapter_keras.methods.sites import PROJECTIONS
from adapter_keras.values import is_integer, is_number


@dataclasses.dataclass(frozen=True)
class LoRAConfig(MethodSettings):
  """rank r, alpha (the update is scaled by alpha / r), dropout on the LoRA path's input, the projections it
  adapts (PEFT's defaults: r 8, alpha 8, no dropout, query and value)."""

  SETTINGS_OF = "LoRA"

  rank: int = 8
  alpha: float = 8.0
  dropout: float = 0.0
  targets: Tuple[str, ...] = ("query", "value")

  def __post_init__(self):
    if not is_integer(self.rank) or self.rank < 1:
      raise ValueError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
    if not is_number(self.alpha) or self.alpha <= 0:
      raise ValueError(f"LoRA alpha must be a number > 0, got {self.alpha!r}")
    if not is_number(self.dropout) or not 0 <= self.dropout < 1:
      raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
    targets = tuple(self.targets) if isinstance(self.targets, (list, tuple)) else None
    if not targets or len(set(targets)) != len(targets) or not set(targets) <= set(PROJECTIONS):
      raise ValueError(f"LoRA targets must be distinct names among {', '.join(PROJECTIONS)}, got {self.targets!r}")
    object.__setattr__(self, "targets", targets)


def _sizes(target: str, shape: ModelShape) -> Tuple[int, int]:
  d, inner = shape.hidden_size, shape.intermediate_size
  return {"ffn_in": (d, inner), "ffn_out": (inner, d)}.get(target, (d, d))


class LoRAMethod(MergeableMethod):
  name = "lora"
  config_class = LoRAConfig

  def inject(self, encoder, config: LoRAConfig, seed: Optional[int] = None) -> None:
    from adapter_keras.methods.lora.layers import LoRAProjection  # pylint: disable=import-outside-toplevel
    from adapter_keras.methods.sites import wrap_projection  # pylint: disable=import-outside-toplevel
    for i, block in enumerate(encoder.transformer_layers):
      for j, target in enumerate(config.targets):
        layer_seed = None if seed is None else seed * 1000 + i * len(PROJECTIONS) + j
        wrap_projection(block, target, lambda projection, t=target, s=layer_seed: LoRAProjection(
            projection, config.rank, config.alpha, config.dropout, s, name=f"lora_{t}"))

  def trains(self, site: WeightSite, config) -> bool:
    return site.is_head or site.added_by == self.name

  def trained_params(self, shape: ModelShape, config: LoRAConfig) -> int:
    per_block = sum(config.rank * sum(_sizes(t, shape)) for t in config.targets)
    return shape.num_layers * per_block + shape.head_params

  def wrapper_class(self) -> type:
    from adapter_keras.methods.lora.layers import LoRAProjection  # pylint: disable=import-outside-toplevel
    return LoRAProjection


METHOD = LoRAMethod()
