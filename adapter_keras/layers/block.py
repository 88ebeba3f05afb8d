"""A Model Garden TransformerEncoderBlock with Houlsby adapters (and the paper's variants).

`TransformerEncoderBlock.call()` applies, in order, the attention output
projection, `self._attention_dropout`, the residual add and LayerNorm, then the
FFN, its output projection, `self._output_dropout`, residual add and LayerNorm.
The paper's two adapter points are exactly the outputs of those two dropouts.
After the parent `build()` creates its sublayers we wrap the two dropouts with
`SublayerWithAdapter`; every pre-trained sublayer, variable name and checkpoint
key stays as Model Garden made it, and no parent code is copied. With
`norm_first=True` the same points sit before the residual add, which is still
the paper's placement.

Parallel placement (AdapterConfig.placement="parallel") needs each
sub-layer's INPUT as well. The attention sub-layer reads the query that the
parent passes to `self._attention_layer` (the block input, or its LayerNorm
with `norm_first`); the FFN reads what the parent passes to
`self._intermediate_dense` (the attention block's output, normalised with
`norm_first`). Those two attributes are replaced by a `SublayerInputTap`, a
plain callable that records its input and calls the original layer; the
dropout wrappers then combine the sub-layer output with the adapter's
function of the recorded input, at the same point as the sequential adapter
(after the dropout, before the residual add). The tap is assigned without
Keras attribute tracking, so the wrapped layers stay tracked under their own
names: variable names and checkpoint keys are Model Garden's in every
placement.

The private attribute names involved are Model Garden's and come from
_model_garden.py; tests/test_layers.py and tests/test_variants.py check the
wiring.
"""
from __future__ import annotations

from typing import Optional, Union

import tf_keras
from official.nlp.modeling import layers as mg_layers

from adapter_keras import _model_garden
from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.methods.adapter.layers import (BottleneckAdapter, SublayerInputTap, SublayerWithAdapter,
                                          SublayerWithParallelAdapter)
from adapter_keras.values import KERAS_PACKAGE



@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class AdapterTransformerEncoderBlock(mg_layers.TransformerEncoderBlock):
  """TransformerEncoderBlock plus adapters after attention and after the FFN.

  Args:
    adapter_config: AdapterConfig (or its dict). None builds the plain block.
    layer_index: position of this block in the encoder; selects the per-layer
      adapter size and whether this layer gets adapters at all.
    adapter_seed: optional seed; each adapter gets its own derived seed.
    **kwargs: everything TransformerEncoderBlock takes.
  """

  def __init__(self,
               *args,
               adapter_config: Optional[Union[AdapterConfig, dict]] = None,
               layer_index: int = 0,
               adapter_seed: Optional[int] = None,
               **kwargs):
    super().__init__(*args, **kwargs)
    if isinstance(adapter_config, dict):
      adapter_config = AdapterConfig.from_dict(adapter_config)
    self._adapter_config = adapter_config
    self._layer_index = layer_index
    self._adapter_seed = adapter_seed
    self._composition = None  # attach_composition's layer maker

  def build(self, input_shape):
    super().build(input_shape)
    if self._adapter_config is not None:
      self._wrap_with_adapters()

  def attach_adapters(self, adapter_config: AdapterConfig, adapter_seed: Optional[int] = None) -> None:
    """Puts adapters into this built block (the adapter method's inject, methods/adapter): they are
    created unbuilt and get their variables, under this block's name scope, at the encoder's next call."""
    if self.adapters:
      raise ValueError(f"block {self.name} already has adapters")
    self._adapter_config = adapter_config
    self._adapter_seed = adapter_seed
    if self.built:
      self._wrap_with_adapters()

  def attach_composition(self, adapter_config: AdapterConfig, make_layer) -> None:
    """Puts `make_layer(position)` (0: after attention, 1: after the FFN) at each sequential adapter position
    `adapter_config` names in this layer: a composition of trained adapters (methods/fusion, methods/stack)
    in the adapters' place, so that their variables sit where the sources' adapters sat."""
    if self.adapters or self._composition is not None:
      raise ValueError(f"block {self.name} already has adapters")
    if adapter_config.placement != "sequential":
      raise ValueError("compositions of adapters take sequential adapters only")
    self._adapter_config = adapter_config
    self._composition = make_layer
    if self.built:
      self._wrap_with_adapters()

  def _wrap_with_adapters(self) -> None:
    config = self._adapter_config
    size = config.size_for_layer(self._layer_index)
    if not size:
      return
    make = self._composition or (lambda position: self._new_adapter(config, size, position, name="adapter"))
    if config.use_attention_adapter:
      self._wrap_output(_model_garden.ATTENTION_OUTPUT_DROPOUT, make(0),
                        input_sublayer=_model_garden.ATTENTION_LAYER,
                        input_name=_model_garden.ATTENTION_INPUT_KEYWORD, name="attention_adapter")
    if config.use_ffn_adapter:
      self._wrap_output(_model_garden.FFN_OUTPUT_DROPOUT, make(1),
                        input_sublayer=_model_garden.FFN_INTERMEDIATE_DENSE, input_name="inputs",
                        name="ffn_adapter")

  def _wrap_output(self, dropout_attribute: str, adapter: BottleneckAdapter, input_sublayer: str,
                   input_name: str, name: str) -> None:
    setattr(self, dropout_attribute, self._attach_adapter(
        getattr(self, dropout_attribute), adapter, input_sublayer, input_name, name))

  def _attach_adapter(self, output_dropout: tf_keras.layers.Layer, adapter: tf_keras.layers.Layer,
                      input_sublayer: str, input_name: str, name: str) -> SublayerWithAdapter:
    """Wraps a sub-layer's output dropout; for parallel adapters also taps its input."""
    if self._adapter_config.placement == "sequential":
      return SublayerWithAdapter(output_dropout, adapter, name=name)
    tap = SublayerInputTap(getattr(self, input_sublayer), input_name)
    self._set_untracked(input_sublayer, tap)
    return SublayerWithParallelAdapter(output_dropout, adapter, tap, name=name)

  def _set_untracked(self, attribute: str, value) -> None:
    # Keras's __setattr__ would drop the tracked layer under `attribute` (its
    # variables from self.weights, its checkpoint key); object.__setattr__
    # only changes what the parent's call() finds there.
    object.__setattr__(self, attribute, value)

  def set_base_sublayer(self, attribute: str, layer: tf_keras.layers.Layer) -> None:
    """Replaces a pre-trained sublayer (e.g. to share a base's frozen layers),
    keeping a parallel adapter's input tap in front of the new layer."""
    current = getattr(self, attribute)
    if isinstance(current, SublayerInputTap):
      self._set_untracked(attribute, current.sublayer)  # let Keras untrack the old layer properly
      setattr(self, attribute, layer)
      current.sublayer = layer
      self._set_untracked(attribute, current)
    else:
      setattr(self, attribute, layer)

  def _new_adapter(self, config: AdapterConfig, size: int, position: int, name: str):
    seed = None
    if self._adapter_seed is not None:
      seed = self._adapter_seed * 1000 + self._layer_index * 2 + position
    return BottleneckAdapter(
        bottleneck_size=size,
        activation=config.activation,
        init_std=config.init_std,
        seed=seed,
        norm=config.norm,
        hidden_layers=config.hidden_layers,
        interaction=config.interaction,
        scale=config.scale,
        name=name)

  @property
  def adapters(self) -> list[BottleneckAdapter]:
    """This block's adapters, attention first; empty before build or if none."""
    found = []
    for wrapper in self._wrappers():
      if isinstance(wrapper.adapter, BottleneckAdapter):
        found.append(wrapper.adapter)
    return found

  @property
  def compositions(self) -> list:
    """(position, layer) of each layer attach_composition put here, the position the wrapper's name
    ("attention_adapter", "ffn_adapter"), attention first."""
    return [(w.name, w.adapter) for w in self._wrappers() if not isinstance(w.adapter, BottleneckAdapter)]

  def _wrappers(self) -> list:
    return [w for w in (getattr(self, _model_garden.ATTENTION_OUTPUT_DROPOUT, None),
                        getattr(self, _model_garden.FFN_OUTPUT_DROPOUT, None)) if isinstance(w, SublayerWithAdapter)]

  @property
  def layer_index(self) -> int:
    return self._layer_index

  def set_adapters_enabled(self, enabled: bool) -> None:
    for adapter in self.adapters:
      adapter.set_enabled(enabled)

  def get_config(self):
    config = super().get_config()
    config.update(
        adapter_config=self._adapter_config.to_dict() if self._adapter_config else None,
        layer_index=self._layer_index,
        adapter_seed=self._adapter_seed)
    return config
