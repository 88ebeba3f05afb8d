"""The fusion attention study (Pfeiffer et al. 2021, Figure 6 style): per layer and adapter position, the
softmax weight each source adapter receives in a fusion model, averaged over the real (non-padding) tokens of
a data set; and its heat map. `adapter-keras analyze fusion` runs it on an artifact of method "fusion"."""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from adapter_keras.analysis.common import pyplot
from adapter_keras.train.inputs import EncodedExamples, make_dataset


def fusion_layers(model) -> list:
  """(layer index, position name, AdapterFusion) of every fusion layer of `model`, in layer order."""
  from adapter_keras.methods.fusion.layers import AdapterFusion  # pylint: disable=import-outside-toplevel
  found = [(i, position, layer) for i, position, layer in model.encoder.compositions()
           if isinstance(layer, AdapterFusion)]
  if not found:
    raise ValueError(f"model {model.name} (method {getattr(model, 'method', '?')}) has no fusion layers: "
                     "analyze fusion reads a model trained with --method fusion")
  return found


def fusion_weights(model, encoded: EncodedExamples, batch_size: int = 64,
                   progress: Optional[Callable[[str], None]] = None) -> Dict:
  """The mean softmax weight of each source at every fusion layer over the tokens of `encoded` (padding left
  out): {"sources": [names], "sites": [{"layer", "position", "weights": [per source]}], "tokens": n}."""
  layers = fusion_layers(model)
  totals = np.zeros((len(layers), len(layers[0][2].sources)), np.float64)
  tokens = 0
  for layer in (f for _, _, f in layers):
    layer.record = True
  try:
    for step, batch in enumerate(make_dataset(encoded, batch_size=batch_size)):
      features = batch[0] if isinstance(batch, tuple) else batch
      model(features, training=False)
      mask = features["input_mask"].numpy().astype(np.float64)[..., None]
      tokens += int(mask.sum())
      for i, (_, _, layer) in enumerate(layers):
        totals[i] += (layer.last_weights.numpy() * mask).sum(axis=(0, 1))
      if progress is not None and step % 20 == 0:
        progress(f"[fusion] batch {step + 1}: {tokens} tokens")
  finally:
    for layer in (f for _, _, f in layers):
      layer.record, layer.last_weights = False, None
  means = totals / max(tokens, 1)
  return dict(sources=layers[0][2].source_names, tokens=tokens,
              sites=[dict(layer=i, position=p, weights=[float(w) for w in means[n]])
                     for n, (i, p, _) in enumerate(layers)])


def plot_fusion_weights(result: Dict, path: str) -> str:
  """A heat map: rows the fusion sites (layer, position), columns the sources, the mean weight in each cell."""
  plt = pyplot()
  weights = np.array([site["weights"] for site in result["sites"]])
  labels = [f"layer {s['layer']} {s['position'].replace('_adapter', '')}" for s in result["sites"]]
  fig, ax = plt.subplots(figsize=(1.2 + 1.1 * weights.shape[1], 0.8 + 0.35 * weights.shape[0]))
  image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
  ax.set_xticks(range(weights.shape[1]), result["sources"], rotation=30, ha="right")
  ax.set_yticks(range(weights.shape[0]), labels)
  for (row, col), value in np.ndenumerate(weights):
    ax.text(col, row, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black",
            fontsize=7)
  fig.colorbar(image, ax=ax, label="mean softmax weight")
  ax.set_title(result.get("title", "fusion attention over the source adapters"))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
