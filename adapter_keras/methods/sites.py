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

from typing import Callable, Tuple

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


def projection_dims(projection) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
  """(input dims, output dims) of a built projection's (EinsumDense's) kernel: its letters found in the input,
  then the rest (the kernel's layout in Model Garden's equations: "abc,cde->abde", "abcd,cde->abe",
  "abc,cd->abd"). A method that folds its update into the kernel needs this layout."""
  inputs, rest = projection.equation.split(",")
  kernel_letters = rest.split("->")[0]
  shape = tuple(int(n) for n in projection.kernel.shape)
  n_in = sum(1 for letter in kernel_letters if letter in inputs)
  if any(letter in inputs for letter in kernel_letters[n_in:]):
    raise ValueError(f"a projection's kernel must list its input dimensions first, got {projection.equation}")
  return shape[:n_in], shape[n_in:]


def wrap_attention_softmax(block, make_wrapper: Callable):
  """Replaces the masked softmax of a built block's attention (scores [B, N, T, S] and the mask, expanded to
  [B, 1, T, S], in; probabilities out) by `make_wrapper(softmax)`; returns the wrapper. A method that lengthens
  the keys and values (prefix tuning) widens the mask here, after tf_keras has combined it with any Keras masks
  of the inputs at their own length. The softmax lives in the attention layer a multi-task bank shares
  (TuningMethod.wraps_shared_layers)."""
  owner, attribute = _model_garden.attention_softmax_owner(block)
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
