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


def bert_forward(t, config, word_ids, type_ids, mask, ia3=None, prefix=None):
  """Returns (sequence_output [B, L, H], pooled_output [B, H]) in float64.

  The tuning methods that change the attention or the FFN from inside, as their papers write them:
    ia3: per layer a dict of IA3's vectors "key" [H], "value" [H], "ffn" [intermediate] (absent: 1),
      multiplying the keys, the values and the FFN's activation (Liu et al. 2022, eq. in section 3.3).
    prefix: per layer (P_k, P_v), each [p, H]: p key and value vectors prepended in every head's
      attention, which every position may attend to (Li & Liang 2021; P-tuning v2).
  """
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
    scales = (ia3 or [{}] * (i + 1))[i]
    k = _linear(x, t, p + "attention.self.key") * scales.get("key", 1.0)
    v = _linear(x, t, p + "attention.self.value") * scales.get("value", 1.0)
    layer_bias = key_bias
    if prefix is not None:
      prefix_k, prefix_v = (np.broadcast_to(np.asarray(a, np.float64), (batch,) + np.shape(a)) for a in prefix[i])
      k, v = np.concatenate([prefix_k, k], axis=1), np.concatenate([prefix_v, v], axis=1)
      layer_bias = np.concatenate([np.zeros(key_bias.shape[:3] + (len(prefix[i][0]),)), key_bias], axis=-1)

    def split_keys(y):
      return y.reshape(batch, y.shape[1], heads, head_size).transpose(0, 2, 1, 3)

    k, v = split_keys(k), split_keys(v)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_size) + layer_bias
    scores = scores - scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
    attention = _linear(context, t, p + "attention.output.dense")
    x = _layer_norm(x + attention, t[p + "attention.output.LayerNorm.weight"],
                    t[p + "attention.output.LayerNorm.bias"])
    inner = _gelu(_linear(x, t, p + "intermediate.dense"), approximate) * scales.get("ffn", 1.0)
    out = _linear(inner, t, p + "output.dense")
    x = _layer_norm(x + out, t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"])
  pooled = np.tanh(_linear(x[:, 0], t, "pooler.dense"))
  return x, pooled
