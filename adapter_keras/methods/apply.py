"""Applying a tuning method to a model: injecting it, choosing what trains variable by variable, counting.

`apply_method` works on any tf_keras model that contains one adapter_keras encoder (AdapterBertEncoder):
our task models, or a user's own Functional model around one. Everything outside the encoder counts as
the head (it trains under every method). Decisions are made per variable from its `WeightSite` (where it
sits), not from lists of classes, so Model Garden's OnDeviceEmbedding is handled like any other frozen
layer. A layer none of whose variables train gets `trainable=False` (so Keras shows it frozen and runs a
BatchNorm in inference mode); a layer some of whose variables train keeps `trainable=True` and the others
are set aside one by one (_model_garden.freeze_variable). In tf_keras a parent with trainable=False hides
its children's variables, so only leaf layers get the flag.

TensorFlow is imported inside the functions: the registry (methods/__init__.py) stays TF-free.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, List, Optional, Tuple

from adapter_keras import _model_garden
from adapter_keras.methods.base import ModelShape, WeightSite, added_by, is_loaded_source
from adapter_keras.methods.registry import get_method


def _walk(layer, ancestors: Tuple = (), seen=None) -> Iterator[Tuple[object, Tuple]]:
  """(layer, its ancestors) for `layer` and every sublayer, each once, parents before children."""
  seen = set() if seen is None else seen
  if id(layer) in seen:
    return
  seen.add(id(layer))
  yield layer, ancestors
  for child in _model_garden.child_layers(layer):
    yield from _walk(child, ancestors + (layer,), seen)


def find_encoder(model):
  """The one adapter_keras encoder inside `model` (or `model` itself); one-line errors otherwise."""
  from official.nlp.modeling.networks import BertEncoderV2  # pylint: disable=import-outside-toplevel
  from adapter_keras.encoder import AdapterBertEncoder  # pylint: disable=import-outside-toplevel
  direct = getattr(model, "encoder", None)
  if isinstance(direct, AdapterBertEncoder):
    return direct
  found = [layer for layer, _ in _walk(model) if isinstance(layer, BertEncoderV2)]
  ours = [layer for layer in found if isinstance(layer, AdapterBertEncoder)]
  if len(ours) == 1:
    return ours[0]
  if len(ours) > 1:
    raise ValueError(f"model {model.name} contains {len(ours)} adapter_keras encoders "
                     f"({', '.join(e.name for e in ours)}); a tuning method applies to a model with one")
  if found:
    raise ValueError(f"model {model.name} contains a Model Garden BertEncoderV2 ({found[0].name}), not an "
                     "adapter_keras encoder: build it on adapter_keras.add_adapters(encoder) (or load_encoder)")
  raise ValueError(f"model {getattr(model, 'name', model)!r} contains no adapter_keras encoder: a tuning method "
                   "applies to a tf_keras model built on one (pretrained.load_encoder, adapter_keras.add_adapters)")


def _short_name(variable) -> str:
  name = variable.name[:-2] if variable.name.endswith(":0") else variable.name
  return name.rsplit("/", 1)[-1]


def _head_reads_pooler(model) -> bool:
  # Our task models say how they pool; a user's model is assumed to read the pooler (so methods that
  # fine-tune the base train it).
  return getattr(model, "pooling", "cls") == "cls"


def _sites(model) -> Iterator[Tuple[object, bool, object, WeightSite]]:
  """(layer, is a leaf, variable, its WeightSite) for every trainable-kind variable of `model`."""
  import tf_keras  # pylint: disable=import-outside-toplevel
  encoder = find_encoder(model)
  blocks = list(encoder.transformer_layers)
  block_ids = {id(b): i for i, b in enumerate(blocks)}
  pooler = encoder.pooler_layer
  reads_pooler = _head_reads_pooler(model)
  for layer, ancestors in _walk(model):
    variables = _model_garden.own_trainable_candidates(layer)
    if not variables:
      continue
    chain = ancestors + (layer,)
    in_encoder = any(a is encoder for a in chain)
    method = next((added_by(a) for a in reversed(chain) if added_by(a)), None)
    block = next((block_ids[id(a)] for a in chain if id(a) in block_ids), None)
    is_leaf = not _model_garden.child_layers(layer)
    for variable in variables:
      yield layer, is_leaf, variable, WeightSite(
          name=_short_name(variable), added_by=method,
          is_layer_norm=isinstance(layer, tf_keras.layers.LayerNormalization), is_head=not in_encoder,
          is_pooler=any(a is pooler for a in chain), head_reads_pooler=reads_pooler, block=block,
          num_layers=len(blocks))


def apply_method(model, method: str, top_k: Optional[int] = None, config=None) -> None:
  """Sets what trains in `model` as `method` says (its config: `config`, or `top_k` for top-k).

  Call after the model is built and the method injected, and collect `model.trainable_variables` only
  afterwards. Applying another method later resets every decision first.
  """
  spec = get_method(method)
  settings = spec.make_config(config, top_k=top_k)
  spec.validate(settings, len(find_encoder(model).transformer_layers))
  model.trainable = True  # resets every layer's flag below; leaves are decided next
  for layer, _ in _walk(model):
    _model_garden.unfreeze_variables(layer)
  decided = {}
  for layer, is_leaf, variable, site in _sites(model):
    decided.setdefault(id(layer), (layer, is_leaf, []))[2].append((variable, bool(spec.trains(site, settings))))
  for layer, is_leaf, decisions in decided.values():
    if is_leaf and not any(trains for _, trains in decisions):
      layer.trainable = False
      continue
    for variable, trains in decisions:
      if not trains:
        _model_garden.freeze_variable(layer, variable)


def mark_only_adapters_trainable(model) -> None:
  """`apply_method(model, "adapter")`: adapters, LayerNorms and the head train (any tf_keras model that
  contains an adapter_keras encoder)."""
  apply_method(model, "adapter")


def inject_method(encoder, method: str, config, seed: Optional[int] = None) -> None:
  """Puts `method`'s layers (if it adds any) into a built encoder and builds them."""
  from adapter_keras.encoder import dummy_inputs  # pylint: disable=import-outside-toplevel
  spec = get_method(method)
  spec.validate(config, len(encoder.transformer_layers))
  base_before = {id(v) for v in base_variables(encoder)}
  spec.inject(encoder, config, seed)
  encoder(dummy_inputs())  # builds what inject added, under the encoder's own name scopes
  base_after = {id(v) for v in base_variables(encoder)}
  lost = [v.name for v in encoder.weights if id(v) in base_before and id(v) not in base_after]
  if lost:
    raise ValueError(f"method {method} marked pre-trained variables as its own ({lost[0]}, ...): mark only the "
                     "layers that hold new variables (methods/sites.py)")


def added_variables(encoder) -> List[object]:
  """Every variable of the layers tuning methods added to `encoder` (adapters' gates included)."""
  return [v for layer, ancestors in _walk(encoder) if any(added_by(a) for a in ancestors + (layer,))
          for v in _model_garden.own_variables(layer)]


def loaded_source_variables(encoder) -> List[object]:
  """Every variable of the layers a method loaded from source artifacts (fusion's and stack's frozen adapters):
  an artifact of the composed model does not hold them."""
  return [v for layer, ancestors in _walk(encoder) if any(is_loaded_source(a) for a in ancestors + (layer,))
          for v in _model_garden.own_variables(layer)]


def base_variables(encoder) -> List[object]:
  """The encoder's own variables, not those of layers a method added, in a fixed order."""
  added = {id(v) for v in added_variables(encoder)}
  return [v for v in encoder.weights if id(v) not in added]


@dataclasses.dataclass(frozen=True)
class ParameterReport:
  """Parameter counts of a task model. `adapter_params` counts what the tuning method added (adapters for
  method "adapter"); `trained_fraction` = trained_params / base_params."""

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

  base_params counts the pre-trained encoder (pooler included, added layers excluded).
  """
  base = count_parameters(base_variables(find_encoder(model)))
  added, layer_norms, head = [], [], []
  for _, _, variable, site in _sites(model):
    if site.added_by:
      added.append(variable)
    elif site.is_head:
      head.append(variable)
    elif site.is_layer_norm:
      layer_norms.append(variable)
  trained = count_parameters(model.trainable_variables)
  return ParameterReport(base, count_parameters(added), count_parameters(layer_norms), count_parameters(head),
                         trained, trained / base)


def model_shape(model, bert_config) -> ModelShape:
  """The ModelShape of a built task model on an encoder of `bert_config` (for trained_params formulas)."""
  head = [variable for _, _, variable, site in _sites(model) if site.is_head]
  return ModelShape.of(bert_config, count_parameters(head), _head_reads_pooler(model))
