"""BitFit (Ben Zaken et al. 2022, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
Language-models"): only the bias terms of the pre-trained encoder train, LayerNorm offsets (beta) included as in
the paper's code, and the head. It adds no layers, so it needs no inject, and a trained model has no inference
overhead; it is a variable-level method (a Dense's bias trains while its kernel stays frozen).
"""
from __future__ import annotations

from adapter_keras.methods.base import ModelShape, TuningMethod, WeightSite


class BitFitMethod(TuningMethod):
  name = "bitfit"
  fine_tunes_base = True  # the biases are the base's own variables: tasks cannot share them

  def trains(self, site: WeightSite, config) -> bool:
    if site.is_head:
      return True
    if site.is_pooler and not site.head_reads_pooler:
      return False
    return site.is_bias

  def trained_params(self, shape: ModelShape, config) -> int:
    d, inner = shape.hidden_size, shape.intermediate_size
    # per block: query, key, value and attention-output biases (4d), two LayerNorm offsets (2d), the FFN's two
    # biases (inner + d); the embedding LayerNorm's offset; the pooler's bias when the head reads it.
    per_block = 4 * d + 2 * d + inner + d
    return shape.num_layers * per_block + d + (d if shape.head_reads_pooler else 0) + shape.head_params


METHOD = BitFitMethod()
