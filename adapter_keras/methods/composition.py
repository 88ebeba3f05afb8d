"""What the compositions of trained adapters share (methods/fusion, methods/stack): checking that source
artifacts compose, the frozen source adapters rebuilt at each position with their saved values, the layer
that holds them, and the LayerNorms' starting values taken from the sources.

A source is an artifact of method "adapter" (models/sources.py reads and checks it before inject). Its
adapters are rebuilt as BottleneckAdapters inside the composition layer that takes the adapter's place in
the block (`AdapterBertEncoder.attach_composition`), so a source adapter's variable key is the source
artifact's own with the position's "adapter" component replaced by "<composition>/<source>"; that is how
their values are found. Source adapters are marked `mark_loaded_source`: they never train and an artifact
of the composed model does not hold them.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Sequence

from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.methods.base import LoadedSource, SourceRef, TuningMethod, WeightSite, added_by, mark_loaded_source


def source_refs(values, method: str) -> tuple:
  """A config's sources as SourceRefs (from paths, dicts or SourceRefs), refusing none and duplicates."""
  if isinstance(values, (str, Mapping, SourceRef)):
    values = (values,)
  refs = tuple(SourceRef.of(v) for v in (values or ()))
  paths = [r.path for r in refs]
  if len(set(paths)) != len(paths):
    raise ValueError(f"{method} sources must be distinct artifacts, got {paths}")
  return refs


def source_adapter_config(source: LoadedSource, method: str) -> AdapterConfig:
  """The AdapterConfig a source artifact's adapters were trained with; one line when it is not composable."""
  if source.method != "adapter":
    raise ValueError(f"{method} source {source.ref.label} ({source.ref.path}) was trained with method "
                     f"{source.method!r}; {method} composes adapters (method 'adapter')")
  config = AdapterConfig.from_dict(dict(source.method_config))
  if config.placement != "sequential":
    raise ValueError(f"{method} source {source.ref.label} has {config.placement} adapters; {method} composes "
                     "sequential adapters (the houlsby or pfeiffer placement)")
  return config


def common_positions(sources: Sequence[LoadedSource], method: str, num_layers: int) -> AdapterConfig:
  """The first source's AdapterConfig, after checking that every source has adapters at the same positions of
  the same layers of an encoder of `num_layers` layers (their sizes may differ)."""
  configs = [source_adapter_config(s, method) for s in sources]
  if not configs:
    raise ValueError(f"{method} needs at least one source artifact")

  def layers(config):
    return [i for i in range(num_layers) if config.size_for_layer(i)]

  first = configs[0]
  for source, config in zip(sources[1:], configs[1:]):
    if config.positions != first.positions or layers(config) != layers(first):
      raise ValueError(f"{method} sources must have adapters at the same places: {sources[0].ref.label} has "
                       f"positions {first.positions!r} in layers {layers(first)}, {source.ref.label} positions "
                       f"{config.positions!r} in layers {layers(config)}")
  return first


def adapter_sites(config: AdapterConfig, num_layers: int) -> list:
  """(layer index, position) of every adapter `config` puts into an encoder of `num_layers` layers."""
  positions = [p for p, used in ((0, config.use_attention_adapter), (1, config.use_ffn_adapter)) if used]
  return [(i, p) for i in range(num_layers) if config.size_for_layer(i) for p in positions]


def source_adapter(source: LoadedSource, layer_index: int, position: int, name: str, method: str):
  """A frozen BottleneckAdapter rebuilt from `source`'s config for one position (its values are assigned by
  `assign_source_values` once built)."""
  from adapter_keras.methods.adapter.layers import BottleneckAdapter  # pylint: disable=import-outside-toplevel
  config = source_adapter_config(source, method)
  adapter = BottleneckAdapter(bottleneck_size=config.size_for_layer(layer_index), activation=config.activation,
                              init_std=config.init_std, norm=config.norm, hidden_layers=config.hidden_layers,
                              interaction=config.interaction, scale=config.scale, name=name)
  return mark_loaded_source(adapter)


def _short_key(key: str) -> str:
  """A variable key without its first component (the encoder's or the model's name, which may differ)."""
  key = key[:-2] if key.endswith(":0") else key
  return key.split("/", 1)[1] if "/" in key else key


def assign_source_values(adapter, source: LoadedSource, composition: str, method: str) -> None:
  """Gives a built source adapter (inside the layer `composition`) the values its source artifact saved."""
  tensors = {_short_key(k): v for k, v in source.tensors.items()}
  for variable in adapter.parameters + adapter.statistics:
    own = _short_key(variable.name)
    key = own.replace(f"/{composition}/{adapter.name}/", "/adapter/", 1)
    if key not in tensors:
      raise ValueError(f"{method} source {source.ref.label} ({source.ref.path}) holds no {key}: it does not have "
                       "the adapters its manifest describes")
    value = tensors[key]
    if tuple(value.shape) != tuple(variable.shape):
      raise ValueError(f"{method} source {source.ref.label}: {key} has shape {tuple(value.shape)}, its adapter "
                       f"needs {tuple(variable.shape)}")
    variable.assign(value)


def build_sources(layer, sources: list, loaded: Sequence[LoadedSource], hidden_size: int, method: str) -> None:
  """Builds `layer`'s source adapters under their own names and assigns their saved values (call in build)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  for adapter, source in zip(sources, loaded):
    with tf.name_scope(adapter.name):
      adapter.build(tf.TensorShape([None, hidden_size]))
    assign_source_values(adapter, source, layer.name, method)
    adapter.trainable = False


def layer_norms_from_sources(model, sources: Sequence[LoadedSource]) -> int:
  """Starts every pre-trained LayerNorm of a task model's encoder at the mean of the sources' trained values (each
  source artifact of method "adapter" holds them all); returns how many variables it set."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tf_keras  # pylint: disable=import-outside-toplevel
  from adapter_keras import _model_garden  # pylint: disable=import-outside-toplevel
  saved: List[Dict[str, object]] = [{_short_key(k): v for k, v in s.tensors.items()} for s in sources]
  count = 0
  for layer in _model_garden.all_sublayers(model.encoder):
    if not isinstance(layer, tf_keras.layers.LayerNormalization) or added_by(layer):
      continue
    for variable in layer.weights:
      values = [s[_short_key(variable.name)] for s in saved if _short_key(variable.name) in s]
      if values:
        variable.assign(np.mean(np.stack(values), axis=0).astype(variable.dtype.as_numpy_dtype))
        count += 1
  return count


def with_loaded(config, loaded: Sequence[LoadedSource], refs_field: str):
  """`config` with its source references replaced by the read ones (sha256 filled in) and `loaded` set."""
  refs = tuple(s.ref for s in loaded)
  value = refs if isinstance(getattr(config, refs_field), tuple) else refs[0]
  return dataclasses.replace(config, **{refs_field: value, "loaded": tuple(loaded)})


class CompositionMethod(TuningMethod):
  """What fusion and stack share as methods: their config names source artifacts in the field `refs_field` (a
  tuple of SourceRefs or one) and holds them, read, in `loaded`; what the method added trains, with every
  LayerNorm (started from the sources') and the head; `missing` says, in one line, which flag names sources."""

  refs_field = ""
  missing = ""

  def validate(self, config, num_layers: int) -> None:
    if not self.source_artifacts(config):
      raise ValueError(self.missing)
    if config.loaded:
      common_positions(config.loaded, self.name, num_layers)

  def source_artifacts(self, config) -> tuple:
    refs = getattr(config, self.refs_field)
    return refs if isinstance(refs, tuple) else (() if refs is None else (refs,))

  def with_sources(self, config, loaded: tuple):
    for source in loaded:
      source_adapter_config(source, self.name)
    return with_loaded(config, loaded, self.refs_field)

  def positions(self, config, num_layers: int) -> AdapterConfig:
    """The sources' common adapter positions; a one-line error when the config's sources were not read."""
    if not config.loaded:
      raise ValueError(f"the {self.name} method's source artifacts were not read: build a task model with method "
                       f"{self.name!r} (models/sources.py reads them) before injecting or counting it")
    return common_positions(config.loaded, self.name, num_layers)

  def trains(self, site: WeightSite, config) -> bool:
    return site.added_by == self.name or site.is_head or (site.is_layer_norm and site.added_by is None)

  def initialize(self, model, config) -> None:
    layer_norms_from_sources(model, config.loaded)
