"""Tuning methods as plugins: one folder per method, a registry, and how a method is applied to a model.

  methods/base.py       TuningMethod (config, inject, trains per variable, trained_params, frozen bottom,
                        merge), MergeableMethod, MethodSettings, WeightSite, ModelShape, NoConfig
  methods/registry.py   the built-in methods, run-time and entry-point plugins, get_method
  methods/apply.py      apply_method, inject_method, parameter_report, the base/added variables
  methods/adapter/      Houlsby adapters: config.py (AdapterConfig), layers.py (BottleneckAdapter)
  methods/full/, top_k/, layer_norm/   the paper's baselines
  methods/bitfit/       BitFit: the biases only (a variable-level method)
  methods/lora/, ia3/   LoRA and IA3: wrappers of pre-trained projections, with merge/unmerge
  methods/prefix_tuning/  P-tuning v2: learned keys and values before every attention's
  methods/fusion/, stack/  compositions of trained adapters (AdapterFusion, Stack), loaded from their
                        artifacts; methods/composition.py holds what they share

  name        adds               trains (besides the head)                       frozen bottom ends at
  adapter     2 adapters/block   adapters + every LayerNorm (embedding's too)    the first adapted layer
  full        -                  everything (the pooler only if the head reads)  - (layer 0 trains)
  top-k       -                  the top k Transformer layers (+ pooler if read) layer L - k
  layer-norm  -                  every LayerNorm                                 - (the embedding LayerNorm trains)
  bitfit      -                  every bias and LayerNorm offset (BitFit)        - (the embedding LayerNorm trains)
  lora        (alpha/r) B A      its factors A, B (query, value by default)      - (layer 0 trains)
  ia3         3 scale vectors    its vectors (keys, values, FFN activation)      - (layer 0 trains)
  prefix-tuning  p keys+values   its prefixes (or their MLP while training)      - (layer 0 trains)
  fusion      attention over     its query, key, value + every LayerNorm         - (the embedding LayerNorm trains)
              frozen adapters
  stack       an adapter over a  the upper adapters + every LayerNorm            - (the embedding LayerNorm trains)
              frozen one

The Pfeiffer and scaled parallel adapters are placements of the adapter method (AdapterConfig.named).

To add a method: a folder with its config and a TuningMethod subclass, registered in registry.py (built
in) or through the `adapter_keras.methods` entry point group (a plugin package). The CLI's `--method`,
the trainer, the sweep, artifacts, the front door, the multi-task bank and export read it from here.
This package imports no TensorFlow.
"""
from __future__ import annotations

from typing import Optional

from adapter_keras.methods.apply import (ParameterReport, added_variables, apply_method, base_variables,
                                         count_parameters, find_encoder, inject_method, loaded_source_variables,
                                         mark_only_adapters_trainable, model_shape, parameter_report)
from adapter_keras.methods.base import (ModelShape, NoConfig, TuningMethod, WeightSite, added_by, check_can_merge,
                                        mark_added, mark_shares_base)
from adapter_keras.methods.registry import (BUILTIN_METHODS, ENTRY_POINT_GROUP, get_method, method_label,
                                            method_names, register, unregister, validate_method)

METHOD_NAMES = method_names()  # at import: the built-in methods and installed plugins
FROZEN_BOTTOM_METHODS = tuple(m.name for m in BUILTIN_METHODS
                       if type(m).frozen_bottom_start is not TuningMethod.frozen_bottom_start)

__all__ = ["TuningMethod", "WeightSite", "ModelShape", "NoConfig", "ParameterReport", "get_method", "register",
           "unregister", "method_names", "method_label", "validate_method", "apply_method", "inject_method",
           "mark_only_adapters_trainable", "parameter_report", "model_shape", "base_variables", "added_variables",
           "find_encoder", "count_parameters",
           "loaded_source_variables", "added_by", "mark_added", "mark_shares_base", "check_can_merge",
           "frozen_bottom_start_layer", "METHOD_NAMES",
           "FROZEN_BOTTOM_METHODS", "ENTRY_POINT_GROUP"]


def frozen_bottom_start_layer(method: str, num_layers: int, adapter_config=None, top_k: Optional[int] = None,
                       config=None) -> int:
  """k, the first Transformer layer that trains under `method`; layers < k form the frozen bottom
  (train/frozen_bottom_cache.py caches it). "adapter" needs adapters in exactly the layers k..L-1; "top-k"
  gives k = L - top_k; methods that train the embeddings or layer 0 leave nothing to cache."""
  spec = get_method(method)
  start = spec.frozen_bottom_start(num_layers, spec.make_config(config, adapter=adapter_config, top_k=top_k))
  if start is None:
    raise ValueError(f"the frozen-bottom cache applies to methods {' and '.join(FROZEN_BOTTOM_METHODS)}, "
                     f"not {method!r} (it trains the bottom layer, so there is no frozen bottom)")
  if start < 1:
    top_half = tuple(range(num_layers // 2, num_layers))
    raise ValueError(
        "every Transformer layer trains, so there is no frozen bottom to cache; put the adapters in a top "
        f"range of layers only, e.g. AdapterConfig(layers={top_half}) (train: --adapter-layers "
        f"{' '.join(map(str, top_half))})")
  return start
