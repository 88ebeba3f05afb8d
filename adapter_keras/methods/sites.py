"""Where a method plugin may put its layers: named sites of a Transformer block, and `wrap_sublayer`.

A method's inject (methods/base.py) wraps the sublayer at a site with a layer of its own, e.g. a learned
scale on each block's output:

    for block in encoder.transformer_layers:
      wrap_sublayer(block, "block_output", lambda layer: ScaledOutput(layer))

The wrapper calls the wrapped (pre-trained) layer and changes its output. Mark only the layers that hold
new variables with `mark_added` (the wrapper's own scale layer, an adapter), never a wrapper that contains
the pre-trained layer: the base fingerprint and `params` count the marked layers' variables as the method's
(inject_method refuses a method that marks a pre-trained variable). The sites' attribute names are Model
Garden's private ones, so they come from _model_garden.py.
"""
from __future__ import annotations

from typing import Callable

from adapter_keras import _model_garden

SITES = {
    # The attention output projection's dropout: the paper's first adapter point (before residual + LayerNorm).
    "attention_output": _model_garden.ATTENTION_OUTPUT_DROPOUT,
    # The FFN output projection's dropout: the paper's second adapter point.
    "ffn_output": _model_garden.FFN_OUTPUT_DROPOUT,
    # The block's final LayerNorm: its output is the block's output.
    "block_output": _model_garden.BLOCK_OUTPUT_LAYER_NORM,
}


# The projections of a block a method may wrap (LoRA's targets): each an EinsumDense of Model Garden's.
PROJECTIONS = tuple(_model_garden.ATTENTION_PROJECTIONS) + tuple(_model_garden.FFN_PROJECTIONS)


def wrap_projection(block, target: str, make_wrapper: Callable):
  """Replaces the projection `target` (PROJECTIONS) of a built block by `make_wrapper(projection)`; returns the
  wrapper. The attention projections live in the block's attention layer, which a multi-task bank shares
  between tasks: a method that wraps them says so (TuningMethod.wraps_shared_layers)."""
  if target not in PROJECTIONS:
    raise ValueError(f"unknown projection {target!r}; a block's projections are {', '.join(PROJECTIONS)}")
  owner, attribute = _model_garden.projection_owner(block, target)
  wrapper = make_wrapper(getattr(owner, attribute))
  setattr(owner, attribute, wrapper)
  return wrapper


def wrap_sublayer(block, site: str, make_wrapper: Callable):
  """Replaces the sublayer at `site` of a built Transformer block by `make_wrapper(sublayer)`; returns the
  wrapper. Its variables are created at the encoder's next call, under the block's name scope."""
  if site not in SITES:
    raise ValueError(f"unknown site {site!r}; a block's sites are {', '.join(SITES)}")
  attribute = SITES[site]
  wrapper = make_wrapper(getattr(block, attribute))
  setattr(block, attribute, wrapper)
  return wrapper
