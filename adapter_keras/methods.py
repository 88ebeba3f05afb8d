"""Tuning methods: the registry every other module asks, and how a method freezes a model.

A `TuningMethod` says everything the library needs to know about a way of
training a pre-trained encoder for a task:

  name        uses adapters  trains (besides the head)                       frozen prefix ends at
  adapter     yes            adapters + every LayerNorm (embedding's too)    the first adapted layer
  full        no             everything (the pooler only if the head reads)  - (layer 0 trains)
  top-k       no             the top k Transformer layers (+ pooler if read) layer L - k
  layer-norm  no             every LayerNorm                                 - (the embedding LayerNorm trains)

and its label in tables ("top-2"). To add a method, add one `TuningMethod`
to `METHODS`: the CLI's choices, the trainer, the sweep, the prefix cache,
the multi-task bank and the report all read it from here.

`apply_method` sets `trainable` on leaf layers only: in tf_keras a parent
with trainable=False hides all its children's variables, and setting it on
a parent overwrites the children's flags. Decisions are made from a leaf's
position in the model (`Leaf`: inside an adapter, a LayerNorm, the head, the
pooler, in block i), not from lists of classes to freeze, so layers such as
Model Garden's OnDeviceEmbedding are handled like any other frozen leaf.

The registry imports no TensorFlow (the CLI reads it for `--method`); the
functions that walk a model import it when called.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterator, Optional, Tuple

from adapter_keras.config import AdapterConfig


@dataclasses.dataclass(frozen=True)
class Leaf:
  """Where a leaf layer sits in a task model: everything a method decides on."""

  in_adapter: bool
  is_layer_norm: bool
  is_head: bool
  is_pooler: bool
  head_reads_pooler: bool
  block: Optional[int]  # index of the Transformer block holding it; None outside blocks
  num_layers: int


@dataclasses.dataclass(frozen=True)
class TuningMethod:
  """One way of training a pre-trained encoder for a task (see the module docstring).

  Attributes:
    name: what `--method` and manifests call it.
    uses_adapters: the encoder gets adapters (AdapterConfig applies).
    fine_tunes_base: pre-trained weights train (analyses give these runs
      their own, fine-tuning learning rate).
    needs_top_k: the method takes k.
    trains: (leaf, top_k) -> whether the leaf trains.
    prefix_start: (num_layers, adapter_config, top_k) -> k, the first
      Transformer layer that trains (layers below form the frozen prefix),
      or None when the method trains something in the embeddings or layer 0.
  """

  name: str
  uses_adapters: bool
  fine_tunes_base: bool
  needs_top_k: bool
  trains: Callable[[Leaf, Optional[int]], bool]
  prefix_start: Optional[Callable[[int, Optional[AdapterConfig], Optional[int]], int]] = None

  def label(self, top_k: Optional[int] = None) -> str:
    """The method's name in tables: "top-2" for top-k with k = 2."""
    return f"top-{top_k}" if self.needs_top_k else self.name


def _pooler_if_read(leaf: Leaf) -> bool:
  return leaf.is_pooler and leaf.head_reads_pooler


def _adapter_prefix_start(num_layers: int, adapter_config: Optional[AdapterConfig], _top_k) -> int:
  if adapter_config is None:
    raise ValueError("method adapter needs an AdapterConfig")
  adapted = [i for i in range(num_layers) if adapter_config.size_for_layer(i)]
  if not adapted:
    raise ValueError("the adapter config puts adapters in no layer")
  start = adapted[0]
  if adapted != list(range(start, num_layers)):
    raise ValueError(
        f"the prefix cache needs adapters in a top range of layers k..{num_layers - 1} "
        f"(AdapterConfig.layers, --adapter-layers); they are in layers {adapted}")
  if adapter_config.norm == "batch":
    raise ValueError("the prefix cache does not support adapters with BatchNorm (norm='batch'): their "
                     "batch statistics include padding positions, which the cache does not keep")
  return start


def _top_k_prefix_start(num_layers: int, _adapter_config, top_k: Optional[int]) -> int:
  if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= num_layers:
    raise ValueError(f"method top-k needs 1 <= top_k <= {num_layers}, got {top_k!r}")
  return num_layers - top_k


METHODS: Dict[str, TuningMethod] = {m.name: m for m in (
    TuningMethod("adapter", uses_adapters=True, fine_tunes_base=False, needs_top_k=False,
                 trains=lambda leaf, _k: leaf.is_head or leaf.in_adapter or leaf.is_layer_norm,
                 prefix_start=_adapter_prefix_start),
    TuningMethod("full", uses_adapters=False, fine_tunes_base=True, needs_top_k=False,
                 trains=lambda leaf, _k: leaf.is_head or _pooler_if_read(leaf) or not leaf.is_pooler),
    TuningMethod("top-k", uses_adapters=False, fine_tunes_base=True, needs_top_k=True,
                 trains=lambda leaf, k: (leaf.is_head or _pooler_if_read(leaf)
                                         or (leaf.block is not None and leaf.block >= leaf.num_layers - k)),
                 prefix_start=_top_k_prefix_start),
    TuningMethod("layer-norm", uses_adapters=False, fine_tunes_base=False, needs_top_k=False,
                 trains=lambda leaf, _k: leaf.is_head or leaf.is_layer_norm),
)}
METHOD_NAMES: Tuple[str, ...] = tuple(METHODS)
PREFIX_METHODS: Tuple[str, ...] = tuple(m.name for m in METHODS.values() if m.prefix_start is not None)


def get_method(name: str) -> TuningMethod:
  """The registered method called `name`; ValueError naming the known ones otherwise."""
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; choose one of {', '.join(METHOD_NAMES)}")
  return METHODS[name]


def validate_method(method: str, top_k: Optional[int], num_layers: int) -> TuningMethod:
  """The method, after checking that `top_k` fits it and an encoder of `num_layers` layers."""
  spec = get_method(method)
  if spec.needs_top_k:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
      raise ValueError(f"method {method} needs --top-k >= 1, got {top_k!r}")
    if top_k > num_layers:
      raise ValueError(f"--top-k {top_k} exceeds the encoder's {num_layers} Transformer layers")
  return spec


def method_label(method: str, top_k: Optional[int] = None) -> str:
  """A method's name in tables (`TuningMethod.label`)."""
  return get_method(method).label(top_k)


def prefix_start_layer(method: str, num_layers: int, adapter_config: Optional[AdapterConfig] = None,
                       top_k: Optional[int] = None) -> int:
  """k, the first Transformer layer that trains under `method`; layers < k form the frozen prefix.

  "adapter" needs adapters in exactly the layers k..L-1 (AdapterConfig.layers
  a top range, k >= 1); "top-k" gives k = L - top_k. Other methods train
  the embeddings or layer 0 and leave nothing to cache.
  """
  spec = get_method(method)
  if spec.prefix_start is None:
    raise ValueError(f"the prefix cache applies to methods {' and '.join(PREFIX_METHODS)}, not {method!r} "
                     "(it trains the bottom layer, so there is no frozen prefix)")
  start = spec.prefix_start(num_layers, adapter_config, top_k)
  if start < 1:
    top_half = tuple(range(num_layers // 2, num_layers))
    raise ValueError(
        "every Transformer layer trains, so there is no frozen prefix to cache; put the adapters in a top "
        f"range of layers only, e.g. AdapterConfig(layers={top_half}) (train: --adapter-layers "
        f"{' '.join(map(str, top_half))})")
  return start


# ---------------------------------------------------------------- applying a method to a model


def _leaves(layer, ancestors: Tuple = ()) -> Iterator[Tuple[object, Tuple]]:
  from adapter_keras import _model_garden  # pylint: disable=import-outside-toplevel
  children = _model_garden.child_layers(layer)
  if not children:
    yield layer, ancestors
    return
  for child in children:
    yield from _leaves(child, ancestors + (layer,))


def _in_adapter(leaf, ancestors: Tuple) -> bool:
  from adapter_keras.layers.adapter import BottleneckAdapter  # pylint: disable=import-outside-toplevel
  return isinstance(leaf, BottleneckAdapter) or any(isinstance(a, BottleneckAdapter) for a in ancestors)


def _block_index(blocks, ancestors: Tuple) -> Optional[int]:
  for ancestor in ancestors:
    for i, block in enumerate(blocks):
      if ancestor is block:
        return i
  return None


def apply_method(model, method: str, top_k: Optional[int] = None) -> None:
  """Sets `trainable` on every leaf layer of `model` (a TaskModel or SpanModel) as `method` says.

  Call after the model is built (`build_with_dummy_inputs`), and collect
  `model.trainable_variables` only afterwards.
  """
  import tf_keras  # pylint: disable=import-outside-toplevel
  blocks = model.encoder.transformer_layers
  spec = validate_method(method, top_k, len(blocks))
  pooler = model.encoder.pooler_layer
  head_reads_pooler = model.pooling == "cls"
  model.trainable = True  # resets every flag below; leaves are decided next
  for leaf, ancestors in _leaves(model):
    position = Leaf(in_adapter=_in_adapter(leaf, ancestors),
                    is_layer_norm=isinstance(leaf, tf_keras.layers.LayerNormalization),
                    is_head=leaf is model.head, is_pooler=leaf is pooler,
                    head_reads_pooler=head_reads_pooler, block=_block_index(blocks, ancestors),
                    num_layers=len(blocks))
    leaf.trainable = bool(spec.trains(position, top_k))


def mark_only_adapters_trainable(model) -> None:
  """`apply_method(model, "adapter")`: adapters, LayerNorms and the head train."""
  apply_method(model, "adapter")


@dataclasses.dataclass(frozen=True)
class ParameterReport:
  base_params: int
  adapter_params: int
  layer_norm_params: int
  head_params: int
  trained_params: int
  trained_fraction: float

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def count_parameters(variables) -> int:
  """The number of scalars in `variables`."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  return int(sum(int(np.prod(v.shape)) for v in variables))


def parameter_report(model) -> ParameterReport:
  """Counts of a built task model's parameters by kind, and what trains.

  base_params counts the pre-trained encoder (pooler included, adapters
  excluded); trained_fraction = trained_params / base_params.
  """
  import tf_keras  # pylint: disable=import-outside-toplevel
  from adapter_keras.pretrained.fingerprint import plain_encoder_variables  # pylint: disable=import-outside-toplevel
  encoder = model.encoder
  base = count_parameters(plain_encoder_variables(encoder))
  adapters = count_parameters([v for a in encoder.adapters() for v in a.parameters])
  layer_norms = count_parameters([v for leaf, ancestors in _leaves(encoder)
                                  if isinstance(leaf, tf_keras.layers.LayerNormalization)
                                  and not _in_adapter(leaf, ancestors)
                                  for v in leaf.weights])
  head = count_parameters(model.head.weights)
  trained = count_parameters(model.trainable_variables)
  return ParameterReport(base, adapters, layer_norms, head, trained, trained / base)
