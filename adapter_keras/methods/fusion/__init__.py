"""AdapterFusion (Pfeiffer et al. 2021, "AdapterFusion: Non-Destructive Task Composition for Transfer
Learning"): a new task learns, at every adapter position, an attention over the frozen adapters of tasks
trained before (layers.py). The base and the source adapters stay frozen; the fusion's query, key and value,
every LayerNorm (started at the sources' mean, as the adapter recipe trains them) and the head train.

Sources are artifacts of method "adapter" with sequential adapters at the same positions of the same layers
(their sizes may differ), trained on this base; the target task's own adapter can be one of them (the
paper's ST-A, trained first). The config references them by path and sha256 (`--fuse A B ...`): the task
model reads and checks them (models/sources.py), an artifact of a fusion model holds only what trained, and
loading it reads the sources again, refusing a missing or changed one by name.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from adapter_keras.methods import composition
from adapter_keras.methods.base import ModelShape, SourceRef


@dataclasses.dataclass(frozen=True)
class FusionConfig:
  """The source artifacts (paths, or SourceRefs with their sha256) fused at every adapter position.
  `loaded` is filled by the task model from the sources it read (never serialised)."""

  sources: Tuple[SourceRef, ...] = dataclasses.field(default=(), metadata=dict(
      flag="--fuse", metavar="ARTIFACT", help="the source adapters' artifacts (method adapter, trained on this base)"))
  loaded: tuple = dataclasses.field(default=(), compare=False, repr=False, metadata={"flag": None})

  def __post_init__(self):
    object.__setattr__(self, "sources", composition.source_refs(self.sources, "fusion"))

  def to_dict(self) -> dict:
    return dict(sources=[s.to_dict() for s in self.sources])

  @classmethod
  def from_dict(cls, d) -> "FusionConfig":
    unknown = set(d) - {"sources"}
    if unknown:
      raise ValueError(f"unknown fusion settings {sorted(unknown)}")
    return cls(sources=tuple(d.get("sources") or ()))


class FusionMethod(composition.CompositionMethod):
  """Attention over frozen source adapters; its query/key/value, the LayerNorms and the head train."""

  name = "fusion"
  config_class = FusionConfig
  refs_field = "sources"
  missing = "method fusion needs source artifacts: --fuse ARTIFACT [ARTIFACT ...] (FusionConfig(sources=[...]))"

  def label(self, config: FusionConfig) -> str:
    return f"fusion-{len(config.sources)}" if config.sources else self.name

  def inject(self, encoder, config: FusionConfig, seed: Optional[int] = None) -> None:
    from adapter_keras.methods.fusion.layers import AdapterFusion  # pylint: disable=import-outside-toplevel
    positions = self.positions(config, len(encoder.transformer_layers))

    def make_fusion(layer_index: int, position: int):
      sources = [composition.source_adapter(s, layer_index, position, f"source_{n}", self.name)
                 for n, s in enumerate(config.loaded)]
      layer_seed = None if seed is None else seed * 1000 + layer_index * 2 + position
      return AdapterFusion(sources, config.loaded, seed=layer_seed, name="fusion")

    encoder.attach_composition(positions, make_fusion)

  def trained_params(self, shape: ModelShape, config: FusionConfig) -> int:
    sites = composition.adapter_sites(self.positions(config, shape.num_layers), shape.num_layers)
    d = shape.hidden_size
    return len(sites) * 3 * (d * d + d) + shape.layer_norm_params + shape.head_params


METHOD = FusionMethod()
