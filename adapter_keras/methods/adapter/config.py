"""Adapter configuration: the one object that says what adapters a model gets.

`AdapterConfig` is a small frozen dataclass in the style of PEFT configs. It is
stored in every artifact manifest and serialised in layer configs, so it only
holds JSON-friendly values. Besides the paper's default adapter it describes
the architecture variants of the paper's section 3.5 (a norm inside the
adapter, deeper adapters, parallel placement, a multiplicative interaction)
and the field's other placements of the same bottleneck (NAMED_PLACEMENTS: Pfeiffer et al. 2021's one
adapter after the FFN, He et al. 2022's scaled parallel adapter beside the FFN); their defaults give
exactly the Houlsby adapter.

Its command-line flags (`--adapter-<field>`) are in cli/flags.py, made from
the fields, so that a field cannot go without a flag.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Tuple, Union
from adapter_keras.values import is_integer, is_number

POSITIONS = ("attention", "ffn", "both")
ACTIVATIONS = ("gelu", "relu", "tanh", "swish", "sigmoid", "linear", "leaky_relu", "elu")
NORMS = (None, "layer", "batch")
PLACEMENTS = ("sequential", "parallel")
INTERACTIONS = ("additive", "multiplicative")

# The bottleneck placements the literature names, as the AdapterConfig fields they set (`--adapter-placement`
# takes these names besides PLACEMENTS; AdapterConfig.named(name, ...) in Python).
NAMED_PLACEMENTS = {
    # Houlsby et al. 2019: after the attention and after the FFN output projections (the default).
    "houlsby": dict(positions="both", placement="sequential"),
    # Pfeiffer et al. 2021 (AdapterFusion, section 3): one adapter, after the FFN output projection only.
    "pfeiffer": dict(positions="ffn", placement="sequential"),
    # He et al. 2022 ("Towards a Unified View of Parameter-Efficient Transfer Learning", section 4.4): the
    # scaled parallel adapter, reading the FFN's input beside the FFN, its output scaled by s = 4 and added.
    "scaled-parallel": dict(positions="ffn", placement="parallel", scale=4.0),
}


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
    norm: None, "layer" (LayerNorm) or "batch" (BatchNorm) inside the adapter.
      It normalises the adapter's INPUT, before the down-projection: a norm on
      the output would rescale the tiny up-projection output to unit variance
      and the adapter would no longer start as a near-identity.
    hidden_layers: hidden layers of width m between the down- and the
      up-projection; 1 is the paper's adapter, k > 1 adds k - 1 m x m layers.
    placement: "sequential" (the paper: the adapter transforms the sub-layer's
      output) or "parallel" (the adapter reads the sub-layer's input and its
      output is combined with the sub-layer's output).
    interaction: "additive" (h + f(x)) or "multiplicative" (h * (1 + f(x))),
      where h is the tensor the adapter modifies and x what it reads (both
      the sub-layer output when sequential). Both are near-identities at init.
    scale: s, the factor on the adapter's function: h + s f(x) (He et al.
      2022 scale a parallel adapter's output by 4); 1 is the paper's adapter.
  """

  size: Union[int, Tuple[int, ...]] = 64
  init_std: float = 1e-2
  activation: str = "gelu"
  positions: str = "both"
  layers: Optional[Tuple[int, ...]] = None
  norm: Optional[str] = None
  hidden_layers: int = 1
  placement: str = "sequential"
  interaction: str = "additive"
  scale: float = 1.0

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
        if not is_integer(i) or i < 0:
          raise ValueError(f"AdapterConfig.layers must hold layer indices >= 0, got {i!r}")
    if not (isinstance(self.init_std, (int, float)) and self.init_std > 0):
      raise ValueError(f"AdapterConfig.init_std must be > 0, got {self.init_std!r}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f"AdapterConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
    if self.positions not in POSITIONS:
      raise ValueError(
          f"AdapterConfig.positions must be one of {POSITIONS}, got {self.positions!r}")
    if self.norm not in NORMS:
      raise ValueError(f"AdapterConfig.norm must be one of {NORMS}, got {self.norm!r}")
    if (not is_integer(self.hidden_layers)
        or self.hidden_layers < 1):
      raise ValueError(f"AdapterConfig.hidden_layers must be an integer >= 1, got {self.hidden_layers!r}")
    if self.placement not in PLACEMENTS:
      raise ValueError(
          f"AdapterConfig.placement must be one of {PLACEMENTS}, got {self.placement!r}")
    if self.interaction not in INTERACTIONS:
      raise ValueError(
          f"AdapterConfig.interaction must be one of {INTERACTIONS}, got {self.interaction!r}")
    if not is_number(self.scale) or not self.scale > 0:
      raise ValueError(f"AdapterConfig.scale must be a number > 0, got {self.scale!r}")

  @classmethod
  def named(cls, placement: str, **fields) -> "AdapterConfig":
    """The adapter of a placement the literature names (NAMED_PLACEMENTS), with other `fields` (size, ...)."""
    if placement not in NAMED_PLACEMENTS:
      raise ValueError(f"unknown named placement {placement!r}; choose one of {', '.join(NAMED_PLACEMENTS)}")
    clash = sorted(k for k, v in fields.items() if k in NAMED_PLACEMENTS[placement]
                   and v != NAMED_PLACEMENTS[placement][k])
    if clash:
      raise ValueError(f"the {placement} placement sets {', '.join(clash)} itself")
    return cls(**dict(fields, **NAMED_PLACEMENTS[placement]))

  @property
  def placement_name(self) -> str:
    """The literature's name of this placement ("houlsby", "pfeiffer", "scaled-parallel"), else the field."""
    for name, fields in NAMED_PLACEMENTS.items():
      if all(getattr(self, k) == v for k, v in dict(dict(scale=1.0), **fields).items()):
        return name
    return self.placement

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
    if d["scale"] == 1.0:
      # Added in 0.3.0: left out at its default so that 0.2.0 runs (their identity) and manifests match.
      del d["scale"]
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
  if not is_integer(size) or size < lower:
    raise ValueError(
        f"Adapter size must be an integer >= {lower}, got {size!r}")
