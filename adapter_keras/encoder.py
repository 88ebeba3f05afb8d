"""BERT encoders with adapters: the architecture config, presets and builder.

`AdapterBertEncoder` is Model Garden's `BertEncoderV2` whose Transformer
blocks are swapped for `AdapterTransformerEncoderBlock`s right after the parent
constructor made them (BertEncoderV2 has no block factory argument). The swap
happens before anything is built, so no variables are created twice, and the
attribute and variable names stay those of BertEncoderV2: checkpoints written
by Model Garden restore into it unchanged.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional, Union

import tensorflow as tf
import tf_keras
from official.nlp.modeling import networks

from adapter_keras import _model_garden
from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.io import read_json_object
from adapter_keras.layers.block import AdapterTransformerEncoderBlock
from adapter_keras.values import KERAS_PACKAGE, is_integer, is_number



@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
def approximate_gelu(x):
  """tanh-approximated GELU, as in Google's original BERT."""
  return tf_keras.activations.gelu(x, approximate=True)


# Hugging Face / original-BERT `hidden_act` names -> a serialisable activation.
_HIDDEN_ACTIVATIONS = {
    "gelu": "gelu",  # exact (erf) GELU: tf_keras's gelu defaults to approximate=False
    "gelu_new": approximate_gelu,
    "gelu_pytorch_tanh": approximate_gelu,
    "gelu_approx": approximate_gelu,
    "relu": "relu",
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture of a BERT encoder, in the key names of BERT's config.json.

  Hugging Face `config.json` and Google's `bert_config.json` share these names.
  """

  vocab_size: int
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  layer_norm_eps: float = 1e-12

  def __post_init__(self):
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings", "type_vocab_size"):
      value = getattr(self, field)
      # bool is an int subclass, and 2.0 or "32" would fail deep inside Keras.
      if not is_integer(value) or value < 1:
        raise ValueError(f"BERT config: {field} must be a positive integer, got {value!r}")
    for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
      value = getattr(self, field)
      if not is_number(value) or not 0 <= value < 1:
        raise ValueError(f"BERT config: {field} must be a number in [0, 1), got {value!r}")
    if not is_number(self.layer_norm_eps):
      raise ValueError(f"BERT config: layer_norm_eps must be a number, got {self.layer_norm_eps!r}")
    if not isinstance(self.hidden_act, str) or self.hidden_act not in _HIDDEN_ACTIVATIONS:
      raise ValueError(
          f"hidden_act {self.hidden_act!r} is not supported; use one of {sorted(_HIDDEN_ACTIVATIONS)}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
          f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
          f"{self.num_attention_heads}")
    if abs(self.layer_norm_eps - 1e-12) > 1e-15:
      # BertEncoderV2 hard-codes 1e-12 for its embedding LayerNorm.
      raise ValueError(f"layer_norm_eps must be 1e-12 (BERT's), got {self.layer_norm_eps}")

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "BertConfig":
    if not isinstance(d, Mapping):
      raise ValueError(f"BERT config must be a JSON object of settings, got a {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
               if k not in d]
    if missing:
      raise ValueError(f"BERT config lacks required keys {missing}")
    return cls(**{k: v for k, v in d.items() if k in known})

  @classmethod
  def from_json_file(cls, path: Union[str, os.PathLike]) -> "BertConfig":
    data = read_json_object(os.fspath(path), "a JSON object of BERT settings")
    if data.get("model_type", "bert") != "bert":
      raise ValueError(f"{path}: model_type {data['model_type']!r} is not 'bert'")
    try:
      return cls.from_dict(data)
    except ValueError as e:
      raise ValueError(f"{path}: {e}") from None

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @property
  def head_size(self) -> int:
    return self.hidden_size // self.num_attention_heads

  def encoder_kwargs(self) -> dict:
    """Keyword arguments for BertEncoderV2 / AdapterBertEncoder."""
    return dict(
        vocab_size=self.vocab_size,
        hidden_size=self.hidden_size,
        num_layers=self.num_hidden_layers,
        num_attention_heads=self.num_attention_heads,
        max_sequence_length=self.max_position_embeddings,
        type_vocab_size=self.type_vocab_size,
        inner_dim=self.intermediate_size,
        inner_activation=_HIDDEN_ACTIVATIONS[self.hidden_act],
        output_dropout=self.hidden_dropout_prob,
        attention_dropout=self.attention_probs_dropout_prob,
        initializer=tf_keras.initializers.TruncatedNormal(stddev=0.02),
    )


# Architectures by name. bert-base/large are Google's BERT (tanh-GELU);
# minilm-l6 is sentence-transformers/all-MiniLM-L6-v2 (erf-GELU).
ARCHITECTURES = {
    "bert-base": BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                            num_attention_heads=12, intermediate_size=3072, hidden_act="gelu_new"),
    "bert-large": BertConfig(vocab_size=30522, hidden_size=1024, num_hidden_layers=24,
                             num_attention_heads=16, intermediate_size=4096, hidden_act="gelu_new"),
    "minilm-l6": BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                            num_attention_heads=12, intermediate_size=1536, hidden_act="gelu"),
}


@tf_keras.utils.register_keras_serializable(package=KERAS_PACKAGE)
class AdapterBertEncoder(networks.BertEncoderV2):
  """BertEncoderV2 with Houlsby adapters in every (selected) Transformer block.

  Args:
    adapter_config: AdapterConfig or its dict; None gives the plain encoder.
    adapter_seed: optional seed for the adapters' initialisers.
    **kwargs: everything BertEncoderV2 takes.
  """

  def __init__(self,
               adapter_config: Optional[Union[AdapterConfig, dict]] = None,
               adapter_seed: Optional[int] = None,
               **kwargs):
    super().__init__(**kwargs)
    if isinstance(adapter_config, dict):
      adapter_config = AdapterConfig.from_dict(adapter_config)
    if adapter_config is not None:
      adapter_config.validate_for(len(self.transformer_layers))
    self._adapter_config = adapter_config
    self._adapter_seed = adapter_seed
    _model_garden.replace_transformer_layers(self, [
        AdapterTransformerEncoderBlock(
            adapter_config=adapter_config,
            layer_index=i,
            adapter_seed=adapter_seed,
            **block.get_config())
        for i, block in enumerate(self.transformer_layers)
    ])

  @property
  def adapter_config(self) -> Optional[AdapterConfig]:
    return self._adapter_config

  @property
  def num_layers(self) -> int:
    return len(self.transformer_layers)

  @property
  def hidden_size(self) -> int:
    return _model_garden.encoder_hidden_size(self)

  def attach_adapters(self, adapter_config: AdapterConfig, adapter_seed: Optional[int] = None) -> None:
    """Puts adapters into every (selected) block of this built, plain encoder (methods/adapter's inject);
    they get their variables at the next call (methods.inject_method makes it)."""
    if self._adapter_config is not None:
      raise ValueError(f"encoder {self.name} already has adapters")
    adapter_config.validate_for(len(self.transformer_layers))
    for block in self.transformer_layers:
      block.attach_adapters(adapter_config, adapter_seed)
    self._adapter_config = adapter_config
    self._adapter_seed = adapter_seed

  def attach_composition(self, adapter_config: AdapterConfig, make_layer) -> None:
    """Puts `make_layer(layer_index, position)` at every adapter position `adapter_config` names in this built,
    plain encoder (fusion's and stack's inject: a composition of trained adapters where adapters would sit)."""
    if self._adapter_config is not None:
      raise ValueError(f"encoder {self.name} already has adapters")
    adapter_config.validate_for(len(self.transformer_layers))
    for i, block in enumerate(self.transformer_layers):
      block.attach_composition(adapter_config, lambda position, i=i: make_layer(i, position))

  def adapters(self) -> list:
    """All adapters, in layer order (attention before FFN within a layer)."""
    return [a for block in self.transformer_layers for a in block.adapters]

  def compositions(self) -> list:
    """(layer index, position, layer) of each layer attach_composition put in, in layer order (attention before
    FFN within a layer)."""
    return [(i, position, layer) for i, block in enumerate(self.transformer_layers)
            for position, layer in block.compositions]

  def set_adapters_enabled(self, enabled: bool, layers=None) -> None:
    """Switches the adapters of `layers` (default: all) on or off."""
    chosen = range(self.num_layers) if layers is None else layers
    for i in chosen:
      self.transformer_layers[i].set_adapters_enabled(enabled)

  def get_config(self):
    config = super().get_config()
    config.update(
        adapter_config=self._adapter_config.to_dict() if self._adapter_config else None,
        adapter_seed=self._adapter_seed)
    return config


def dummy_inputs(batch_size: int = 1, seq_length: int = 4) -> dict:
  ids = tf.ones((batch_size, seq_length), tf.int32)
  return dict(input_word_ids=ids, input_mask=ids, input_type_ids=tf.zeros_like(ids))


def build_encoder(config: BertConfig,
                  adapter_config: Optional[AdapterConfig] = None,
                  adapter_seed: Optional[int] = None,
                  name: str = "encoder") -> AdapterBertEncoder:
  """An AdapterBertEncoder for `config`, built (all variables exist)."""
  encoder = AdapterBertEncoder(
      adapter_config=adapter_config, adapter_seed=adapter_seed, name=name,
      **config.encoder_kwargs())
  encoder(dummy_inputs())
  return encoder
