"""Stack (AdapterHub's Stack composition; Pfeiffer et al. 2020, MAD-X): a new adapter on top of a trained,
frozen one at every adapter position, reading its output: o = upper(lower(h)), e.g. a task adapter over a
domain or language adapter. The lower adapter comes from its artifact (`--stack-lower ARTIFACT`, referenced by
path and sha256 like fusion's sources: models/sources.py) and stays frozen; the upper adapter (the lower's
configuration with its own size, `--stack-size`), every LayerNorm (started at the lower's) and the head train.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from adapter_keras.methods import composition
from adapter_keras.methods.adapter import adapter_params
from adapter_keras.methods.base import ModelShape, SourceRef, mark_added
from adapter_keras.values import is_integer


@dataclasses.dataclass(frozen=True)
class StackConfig:
  """The lower adapter's artifact (a path, or a SourceRef with its sha256) and the upper adapter's size m.
  `loaded` is filled by the task model from the artifact it read (never serialised)."""

  lower: Optional[SourceRef] = dataclasses.field(default=None, metadata=dict(
      metavar="ARTIFACT", help="the lower adapter's artifact (method adapter, trained on this base; stays frozen)"))
  size: int = 64
  loaded: tuple = dataclasses.field(default=(), compare=False, repr=False, metadata={"flag": None})

  def __post_init__(self):
    if self.lower is not None:
      object.__setattr__(self, "lower", SourceRef.of(self.lower))
    if not is_integer(self.size) or self.size < 1:
      raise ValueError(f"the stacked adapter's size must be an integer >= 1, got {self.size!r}")

  def to_dict(self) -> dict:
    return dict(lower=self.lower.to_dict() if self.lower else None, size=self.size)

  @classmethod
  def from_dict(cls, d) -> "StackConfig":
    unknown = set(d) - {"lower", "size"}
    if unknown:
      raise ValueError(f"unknown stack settings {sorted(unknown)}")
    return cls(**d)


class StackMethod(composition.CompositionMethod):
  """A new adapter over a frozen trained one at each position; the new adapter, LayerNorms and head train."""

  name = "stack"
  config_class = StackConfig
  refs_field = "lower"
  missing = "method stack needs the lower adapter's artifact: --stack-lower ARTIFACT (StackConfig(lower=...))"

  def upper_config(self, config: StackConfig):
    """The upper adapter's AdapterConfig: the lower's with the stack's size in every layer the lower adapts."""
    lower = composition.source_adapter_config(config.loaded[0], self.name)
    sizes = lower.size if isinstance(lower.size, tuple) else None
    size = tuple(config.size if s else 0 for s in sizes) if sizes else config.size
    return dataclasses.replace(lower, size=size)

  def inject(self, encoder, config: StackConfig, seed: Optional[int] = None) -> None:
    from adapter_keras.methods.adapter.layers import BottleneckAdapter  # pylint: disable=import-outside-toplevel
    from adapter_keras.methods.stack.layers import StackedAdapters  # pylint: disable=import-outside-toplevel
    positions = self.positions(config, len(encoder.transformer_layers))
    source = config.loaded[0]
    upper = self.upper_config(config)

    def make_stack(layer_index: int, position: int):
      lower = composition.source_adapter(source, layer_index, position, "lower", self.name)
      upper_seed = None if seed is None else seed * 1000 + layer_index * 2 + position
      new = mark_added(BottleneckAdapter(
          bottleneck_size=upper.size_for_layer(layer_index), activation=upper.activation, init_std=upper.init_std,
          seed=upper_seed, norm=upper.norm, hidden_layers=upper.hidden_layers, interaction=upper.interaction,
          scale=upper.scale, name="upper"), self.name)
      return StackedAdapters(lower, source, new, name="stack")

    encoder.attach_composition(positions, make_stack)

  def trained_params(self, shape: ModelShape, config: StackConfig) -> int:
    self.positions(config, shape.num_layers)
    return adapter_params(shape.hidden_size, shape.num_layers, self.upper_config(config)) + \
        shape.layer_norm_params + shape.head_params


METHOD = StackMethod()
