"""An independent numpy BERT forward pass over Hugging Face (torch-layout) tensors.

It shares no code with adapter_keras: it reads the tensors by their Hugging
Face names and follows the original BERT equations, so agreement with the
Keras encoder proves the weight mapping.
"""
import numpy as np
from scipy.special import erf


def _layer_norm(x, gamma, beta, eps=1e-12):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu(x, approximate):
  if approximate:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
  return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _linear(x, t, name):
  return x @ t[name + ".weight"].T.astype(np.float64) + t[name + ".bias"]


def bert_forward(t, config, word_ids, type_ids, mask):
  """Returns (sequence_output [B, L, H], pooled_output [B, H]) in float64."""
  t = {k: v.astype(np.float64) for k, v in t.items() if v.dtype != np.int64}
  heads = config["num_attention_heads"]
  hidden = config["hidden_size"]
  head_size = hidden // heads
  approximate = config["hidden_act"] != "gelu"
  batch, length = word_ids.shape
  x = (t["embeddings.word_embeddings.weight"][word_ids]
       + t["embeddings.position_embeddings.weight"][np.arange(length)][None]
       + t["embeddings.token_type_embeddings.weight"][type_ids])
  x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
  key_bias = (1.0 - mask[:, None, None, :].astype(np.float64)) * -1e9

  def split(y):
    return y.reshape(batch, length, heads, head_size).transpose(0, 2, 1, 3)

  for i in range(config["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    q = split(_linear(x, t, p + "attention.self.query"))
    k = split(_linear(x, t, p + "attention.self.key"))
    v = split(_linear(x, t, p + "attention.self.value"))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_size) + key_bias
    scores = scores - scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
    attention = _linear(context, t, p + "attention.output.dense")
    x = _layer_norm(x + attention, t[p + "attention.output.LayerNorm.weight"],
                    t[p + "attention.output.LayerNorm.bias"])
    inner = _gelu(_linear(x, t, p + "intermediate.dense"), approximate)
    out = _linear(inner, t, p + "output.dense")
    x = _layer_norm(x + out, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"])
  pooled = np.tanh(_linear(x[:, 0], t, "pooler.dense"))
  return x, pooled
