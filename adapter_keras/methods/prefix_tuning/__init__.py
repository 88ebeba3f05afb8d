"""Prefix tuning in its NLU form (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for
Generation"; Liu et al. 2022, "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally Across
Scales and Tasks"): every Transformer layer gets p learned key vectors and p learned value vectors, prepended to
the keys and values of its attention, which every position attends to; the prefix vectors and the head train.
The queries, hence the sequence output, keep their length, so pooling, span heads and the string-in SavedModel
are unchanged.

With `reparameterize`, an MLP (Li & Liang, section 4.3, "Parametrization of P"; P-tuning v2's PrefixEncoder)
produces the prefixes while training. An artifact holds the prefixes it computes, as the plain prefix variables,
and records the config with reparameterize=False (prepare_artifact, artifact_config): the loaded model has no MLP
and computes the same outputs. The artifact's recorded run (train_config) still says how it was trained.

Where it does not apply: the frozen-bottom cache (layer 0 has a prefix: frozen_bottom_start is None, refused
with the reason), the adapter ablation (it has no adapters), merge (the prefix is not a linear update of a
weight). In a multi-task bank each task wraps its own attention layer, around the base's shared projections.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from adapter_keras.methods.base import MethodSettings, ModelShape, TuningMethod, WeightSite, mark_added
from adapter_keras.values import is_integer, is_number


@dataclasses.dataclass(frozen=True)
class PrefixTuningConfig(MethodSettings):
  """length p: prefix vectors per layer, for keys and for values each. The default 16 follows P-tuning v2
  (section 3.3, "Prompt length"): simple classification tasks prefer prompts shorter than 20, hard sequence
  labelling ones around 100.

  reparameterize: train the prefixes through an MLP (embedding [p, d] -> tanh MLP of `hidden_size` units ->
  every layer's keys and values). Off by default: P-tuning v2 (section 3.3, "Reparameterization") finds its use
  task- and data-dependent. `hidden_size` is Li & Liang's 512; it is only read with reparameterize.

  init_std: the prefix vectors start N(0, init_std). P-tuning v2 initialises them randomly (torch's N(0, 1));
  0.02, BERT's initializer_range, starts them small so that the model starts near the base: keys near 0 give
  the prefix positions scores near 0 and values near 0 add almost nothing, so the base's attention output is
  only scaled by the share of attention left to the real positions. With reparameterize it is the MLP kernels'
  scale (layers.py: PrefixMLP).
  """

  SETTINGS_OF = "prefix-tuning"

  length: int = 16
  reparameterize: bool = False
  hidden_size: int = 512
  init_std: float = 0.02

  def __post_init__(self):
    if not is_integer(self.length) or self.length < 1:
      raise ValueError(f"prefix-tuning length must be an integer >= 1, got {self.length!r}")
    if not isinstance(self.reparameterize, bool):
      raise ValueError(f"prefix-tuning reparameterize must be true or false, got {self.reparameterize!r}")
    if not is_integer(self.hidden_size) or self.hidden_size < 1:
      raise ValueError(f"prefix-tuning hidden_size must be an integer >= 1, got {self.hidden_size!r}")
    if not is_number(self.init_std) or not self.init_std > 0:
      raise ValueError(f"prefix-tuning init_std must be a number > 0, got {self.init_std!r}")


class PrefixTuningMethod(TuningMethod):
  name = "prefix-tuning"
  config_class = PrefixTuningConfig

  def label(self, config: PrefixTuningConfig) -> str:
    """"prefix-16" ("prefix-16-mlp" with reparameterize): runs of other lengths are other rows of a table."""
    return f"prefix-{config.length}" + ("-mlp" if config.reparameterize else "")

  def inject(self, encoder, config: PrefixTuningConfig, seed: Optional[int] = None) -> None:
    # pylint: disable=import-outside-toplevel
    from adapter_keras import _model_garden
    from adapter_keras.methods.prefix_tuning.layers import (PrefixedProjection, PrefixMLP, PrefixVectors,
                                                            PrefixVisibleSoftmax, ReparameterizedPrefix)
    from adapter_keras.methods.sites import wrap_attention_softmax, wrap_projection
    blocks = list(encoder.transformer_layers)
    mlp = None
    if config.reparameterize:
      mlp = mark_added(PrefixMLP(config.length, _model_garden.encoder_hidden_size(encoder), config.hidden_size,
                                 len(blocks), config.init_std, seed, name="prefix_mlp"), self.name)
    for i, block in enumerate(blocks):
      for position, target in enumerate(("key", "value")):
        if mlp is None:
          layer_seed = None if seed is None else seed * 1000 + 2 * i + position
          prefix = PrefixVectors(config.length, config.init_std, layer_seed, name="prefix")
        else:
          prefix = ReparameterizedPrefix(config.length, mlp, i, position, name="prefix")
        mark_added(prefix, self.name)
        wrap_projection(block, target, lambda projection, p=prefix, t=target: PrefixedProjection(
            projection, p, name=f"prefixed_{t}"))
      wrap_attention_softmax(block, lambda softmax: PrefixVisibleSoftmax(softmax, config.length,
                                                                         name="prefix_visible_softmax"))

  def trains(self, site: WeightSite, config) -> bool:
    return site.is_head or site.added_by == self.name

  def trained_params(self, shape: ModelShape, config: PrefixTuningConfig) -> int:
    d, p, layers = shape.hidden_size, config.length, shape.num_layers
    if not config.reparameterize:
      return layers * 2 * p * d + shape.head_params
    m = config.hidden_size
    # embedding, the hidden layer's kernel and bias, the output layer's kernel and bias
    return p * d + d * m + m + m * layers * 2 * d + layers * 2 * d + shape.head_params

  def artifact_config(self, config: PrefixTuningConfig) -> PrefixTuningConfig:
    return dataclasses.replace(config, reparameterize=False)

  def prepare_artifact(self, model, config: PrefixTuningConfig):
    """With reparameterize: the prefixes the MLP computes now, stored in each layer's `vectors` (the plain
    layer's variable name), and what trains besides the MLP (the head)."""
    if not config.reparameterize:
      return None
    from adapter_keras import _model_garden  # pylint: disable=import-outside-toplevel
    from adapter_keras.methods.prefix_tuning.layers import (PrefixMLP,  # pylint: disable=import-outside-toplevel
                                                            ReparameterizedPrefix)
    sublayers = _model_garden.all_sublayers(model)
    prefixes = [layer for layer in sublayers if isinstance(layer, ReparameterizedPrefix)]
    for prefix in prefixes:
      prefix.store()
    mlp_variables = {id(v) for layer in sublayers if isinstance(layer, PrefixMLP) for v in layer.weights}
    return [p.vectors for p in prefixes] + [v for v in model.trainable_variables if id(v) not in mlp_variables]


METHOD = PrefixTuningMethod()
