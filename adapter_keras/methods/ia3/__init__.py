"""IA3 ((IA)^3, Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning"): learned vectors that rescale the attention's keys (l_k, size d), its values (l_v, size d) and the
FFN's intermediate activation (l_ff, size intermediate), initialised to ones so that the model starts as the
base; the vectors and the head train. `merge` folds each vector into its projection's kernel (l_k, l_v into the
key/value kernels' output columns and biases, l_ff into the rows of the FFN's output kernel), so a merged model
computes with the base's operations alone; `unmerge` takes them out again.

Where the vectors sit (methods/sites.py's projections): the outputs of the key and value projections, and the
input of the FFN's output projection (the paper's l_ff multiplies gamma(W1 x) before W2). In a multi-task bank
each task wraps the base's shared projections in its own attention layer and blocks (serving/multitask.py), and
does not merge.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from adapter_keras.methods.base import MergeableMethod, MethodSettings, ModelShape, WeightSite

TARGETS = ("key", "value", "ffn")
# target -> (the projection it wraps, the side of it the vector scales).
TARGET_SITES = {"key": ("key", "output"), "value": ("value", "output"), "ffn": ("ffn_out", "input")}


@dataclasses.dataclass(frozen=True)
class IA3Config(MethodSettings):
  """The vectors IA3 learns: any of the keys', the values' and the FFN activation's (the paper's: all three)."""

  SETTINGS_OF = "IA3"

  targets: Tuple[str, ...] = TARGETS

  def __post_init__(self):
    targets = tuple(self.targets) if isinstance(self.targets, (list, tuple)) else None
    if not targets or len(set(targets)) != len(targets) or not set(targets) <= set(TARGETS):
      raise ValueError(f"IA3 targets must be distinct names among {', '.join(TARGETS)}, got {self.targets!r}")
    object.__setattr__(self, "targets", targets)


class IA3Method(MergeableMethod):
  name = "ia3"
  config_class = IA3Config

  def inject(self, encoder, config: IA3Config, seed: Optional[int] = None) -> None:
    del seed  # the vectors start at ones
    from adapter_keras.methods.ia3.layers import IA3Projection  # pylint: disable=import-outside-toplevel
    from adapter_keras.methods.sites import wrap_projection  # pylint: disable=import-outside-toplevel
    for block in encoder.transformer_layers:
      for target in config.targets:
        projection, side = TARGET_SITES[target]
        wrap_projection(block, projection, lambda layer, t=target, s=side: IA3Projection(layer, s, name=f"ia3_{t}"))

  def trains(self, site: WeightSite, config) -> bool:
    return site.is_head or site.added_by == self.name

  def trained_params(self, shape: ModelShape, config: IA3Config) -> int:
    per_block = sum(shape.intermediate_size if t == "ffn" else shape.hidden_size for t in config.targets)
    return shape.num_layers * per_block + shape.head_params

  def wrapper_class(self) -> type:
    from adapter_keras.methods.ia3.layers import IA3Projection  # pylint: disable=import-outside-toplevel
    return IA3Projection


METHOD = IA3Method()
