"""Adapter configuration: the one object that says what adapters a model gets.

`AdapterConfig` is a small frozen dataclass in the style of PEFT configs. It is
stored in every artifact manifest and serialised in layer configs, so it only
holds JSON-friendly values.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

POSITIONS = ("attention", "ffn", "both")
ACTIVATIONS = ("gelu", "relu", "tanh", "swish", "sigmoid", "linear", "leaky_relu", "elu")


@dataclasses.dataclass(frozen=True)
class AdapterConfig:
  """What adapters to insert into a Transformer encoder.

  Attributes:
    size: bottleneck width m; one int for every layer, or a sequence with one
      int per Transformer layer (0 means "no adapter in this layer").
    init_std: standard deviation of the truncated normal (cut at 2 sigma) that
      initialises both adapter kernels. The paper's default is 1e-2; the
      authors' released code used 1e-3. Both give a near-identity adapter.
    activation: nonlinearity between the down- and up-projection.
    positions: "both" (Houlsby: after attention and after the FFN),
      "attention" or "ffn".
    layers: indices of the Transformer layers that get adapters; None = all.
  """

  size: Union[int, Tuple[int, ...]] = 64
  init_std: float = 1e-2
  activation: str = "gelu"
  positions: str = "both"
  layers: Optional[Tuple[int, ...]] = None

  def __post_init__(self):
    if isinstance(self.size, Sequence) and not isinstance(self.size, str):
      object.__setattr__(self, "size", tuple(self.size))
      for s in self.size:
        _check_size(s, allow_zero=True)
    else:
      _check_size(self.size, allow_zero=False)
    if self.layers is not None:
      object.__setattr__(self, "layers", tuple(self.layers))
      for i in self.layers:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
          raise ValueError(f"AdapterConfig.layers must hold layer indices >= 0, got {i!r}")
    if not (isinstance(self.init_std, (int, float)) and self.init_std > 0):
      raise ValueError(f"AdapterConfig.init_std must be > 0, got {self.init_std!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f"AdapterConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
    if self.positions not in POSITIONS:
      raise ValueError(
          f"AdapterConfig.positions must be one of {POSITIONS}, got {self.positions!r}")

  def validate_for(self, num_layers: int) -> None:
    """Raises ValueError if this config cannot apply to `num_layers` layers."""
    if isinstance(self.size, tuple) and len(self.size) != num_layers:
      raise ValueError(
          f"AdapterConfig.size lists {len(self.size)} sizes but the encoder has "
          f"{num_layers} Transformer layers")
    if self.layers is not None:
      bad = [i for i in self.layers if i >= num_layers]
      if bad:
        raise ValueError(
            f"AdapterConfig.layers {bad} out of range for an encoder with {num_layers} layers")

  def size_for_layer(self, index: int) -> int:
    """Bottleneck size of layer `index`; 0 when that layer has no adapters."""
    if self.layers is not None and index not in self.layers:
      return 0
    if isinstance(self.size, tuple):
      return self.size[index]
    return self.size

  @property
  def use_attention_adapter(self) -> bool:
    return self.positions in ("attention", "both")

  @property
  def use_ffn_adapter(self) -> bool:
    return self.positions in ("ffn", "both")

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    for key in ("size", "layers"):
      if isinstance(d[key], tuple):
        d[key] = list(d[key])
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "AdapterConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise ValueError(f"Unknown AdapterConfig fields: {sorted(unknown)}")
    return cls(**d)


def _check_size(size: Any, allow_zero: bool) -> None:
  lower = 0 if allow_zero else 1
  if isinstance(size, bool) or not isinstance(size, int) or size < lower:
    raise ValueError(
        f"Adapter size must be an integer >= {lower}, got {size!r}")
