"""Trained-model artifacts: what a training run saves and evaluation loads.

An artifact is a directory with

  manifest.json        task (name, type, labels, metrics), method, AdapterConfig,
                       pooling, tokenizer settings, encoder spec and config, the
                       fingerprint of the pre-trained base, library version;
                       an extractive-QA model (SpanModel, task type "span")
                       also records its SQuAD window settings under "squad"
  weights.safetensors  the trained variables only (for method "adapter":
                       adapters + LayerNorms + head, ~4 bytes per parameter)

Loading rebuilds the model on a base encoder and refuses a base whose
fingerprint differs from the one the artifact was trained on. Writes are
atomic (io.atomic_directory), so an interrupted save leaves no artifact.
The format is read back by every later version: tests/fixtures holds
artifacts written by adapter_keras 0.1.0.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

import adapter_keras
from adapter_keras.config import AdapterConfig
from adapter_keras.io import atomic_directory
from adapter_keras.models.span_model import SPAN_TASK_TYPE
from adapter_keras.tasks.registry import TaskSpec

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"


class ArtifactError(ValueError):
  """An artifact cannot be loaded (wrong base, version, missing files...)."""


def variable_key(model: tf.Module, variable: tf.Variable) -> str:
  """A model-name-independent key: 'encoder/...' or 'head/kernel'."""
  name = variable.name[:-2] if variable.name.endswith(":0") else variable.name
  prefix = model.name + "/"
  return name[len(prefix):] if name.startswith(prefix) else name


def adapter_statistics(model) -> list:
  """Non-trainable state that training changes (BatchNorm moving statistics in adapters)."""
  encoder = getattr(model, "encoder", None)
  if encoder is None or not hasattr(encoder, "adapters"):
    return []
  return [v for a in encoder.adapters() for v in a.statistics]


def save_artifact(out_dir: str, model, manifest: Dict) -> str:
  """Saves `model`'s trainable variables and `manifest` atomically to `out_dir`."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  trained = list(model.trainable_variables)
  tensors = {variable_key(model, v): np.ascontiguousarray(v.numpy())
             for v in trained + adapter_statistics(model)}
  manifest = dict(manifest, format_version=FORMAT_VERSION, library_version=adapter_keras.__version__,
                  weights=sorted(tensors), trained_params=int(sum(int(np.prod(v.shape)) for v in trained)))
  with atomic_directory(out_dir) as tmp:
    save_file(tensors, os.path.join(tmp, WEIGHTS_FILE))
    with open(os.path.join(tmp, MANIFEST_FILE), "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=2, sort_keys=True)
  return out_dir


def resolve_artifact_dir(path: str) -> str:
  """Accepts the artifact directory or the train run directory holding it."""
  nested = os.path.join(path, "artifact")
  if not os.path.exists(os.path.join(path, MANIFEST_FILE)) and os.path.exists(os.path.join(nested, MANIFEST_FILE)):
    return nested
  return path


def read_manifest(artifact_dir: str) -> Dict:
  path = os.path.join(artifact_dir, MANIFEST_FILE)
  if not os.path.isdir(artifact_dir):
    raise ArtifactError(f"artifact {artifact_dir} does not exist")
  if not os.path.exists(path):
    raise ArtifactError(f"{artifact_dir} is not an adapter_keras artifact (no {MANIFEST_FILE})")
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except json.JSONDecodeError as e:
    raise ArtifactError(f"{path} is corrupt: {e}") from None
  version = manifest.get("format_version")
  if version != FORMAT_VERSION:
    raise ArtifactError(
        f"artifact {artifact_dir} has format version {version} (written by adapter_keras "
        f"{manifest.get('library_version', '?')}); this adapter_keras {adapter_keras.__version__} reads "
        f"format {FORMAT_VERSION}: use a matching adapter_keras version")
  return manifest


def read_weights(artifact_dir: str) -> Dict[str, np.ndarray]:
  from adapter_keras.pretrained.hf import read_safetensors  # pylint: disable=import-outside-toplevel
  path = os.path.join(artifact_dir, WEIGHTS_FILE)
  if not os.path.exists(path):
    raise ArtifactError(f"artifact {artifact_dir} lacks {WEIGHTS_FILE}")
  return read_safetensors(path)


def assign_weights(model, tensors: Dict[str, np.ndarray], source: str) -> None:
  """Assigns artifact tensors to `model`'s variables by key, strictly."""
  variables = {variable_key(model, v): v for v in model.variables}
  missing = sorted(set(tensors) - set(variables))
  if missing:
    raise ArtifactError(f"{source}: the model has no variables {missing}")
  for key, value in tensors.items():
    variable = variables[key]
    if tuple(variable.shape) != tuple(value.shape):
      raise ArtifactError(f"{source}: {key} has shape {value.shape}, the model expects {variable.shape}")
    variable.assign(value)


def check_fingerprint(manifest: Dict, fingerprint: str, encoder_spec: str, artifact_dir: str) -> None:
  expected = manifest["base_fingerprint"]
  if fingerprint != expected:
    raise ArtifactError(
        f"artifact {artifact_dir} was trained on a base encoder with fingerprint {expected[:16]}..., "
        f"but encoder {encoder_spec!r} has fingerprint {fingerprint[:16]}...: load it onto the "
        "base it was trained on")


def adapter_config_from_manifest(manifest: Dict) -> Optional[AdapterConfig]:
  config = manifest.get("adapter_config")
  return AdapterConfig.from_dict(config) if config else None


def is_span_manifest(manifest: Dict) -> bool:
  """Whether the artifact holds an extractive-QA SpanModel (SQuAD) rather than a TaskModel."""
  return manifest.get("task", {}).get("task_type") == SPAN_TASK_TYPE


def task_from_manifest(manifest: Dict) -> TaskSpec:
  """The TaskSpec a classification/regression artifact was trained for."""
  data = manifest["task"]
  if data.get("task_type") == SPAN_TASK_TYPE:
    # Every caller scores TaskSpec outputs (labels, scores); a span model needs squad decoding.
    raise ArtifactError(f"this artifact holds an extractive-QA model for {data.get('name')!r}, not a "
                        "classification or regression task; use `adapter-keras evaluate-squad`")
  return TaskSpec.from_dict(data)


def artifact_manifest(task, config, model, preprocessor, encoder_config, fingerprint: str,
                      train_examples: int) -> Dict:
  """What an artifact records besides its weights (see the module docstring).

  `task` is a TaskSpec (or SQuAD's task record), `config` the run's
  TrainConfig, `model` the trained TaskModel or SpanModel.
  """
  adapter_config = model.encoder.adapter_config
  return dict(
      task=task.to_dict(), method=config.method, top_k=config.top_k,
      adapter_config=adapter_config.to_dict() if adapter_config else None,
      pooling=model.pooling, dropout_rate=model.dropout_rate,
      tokenizer=preprocessor.settings(), encoder=dict(spec=config.encoder, config=encoder_config.to_dict()),
      base_fingerprint=fingerprint, train_config=config.to_dict(), train_examples=train_examples)


def load_artifact(artifact_dir: str, encoder_spec: str) -> Tuple[object, Dict, object]:
  """Rebuilds a trained model on `encoder_spec`: (model, manifest, preprocessor).

  The model is a TaskModel, or a SpanModel for a SQuAD artifact
  (`is_span_manifest`; train.squad.load_squad_artifact adds its featurizer).
  Refuses (ArtifactError) when the encoder's base weights differ from the
  ones the artifact was trained on.
  """
  from adapter_keras.models import build_span_model, build_task_model  # pylint: disable=import-outside-toplevel
  from adapter_keras.preprocessing import BertPreprocessor  # pylint: disable=import-outside-toplevel
  from adapter_keras.pretrained import base_fingerprint, load_encoder  # pylint: disable=import-outside-toplevel
  artifact_dir = resolve_artifact_dir(artifact_dir)
  manifest = read_manifest(artifact_dir)
  tensors = read_weights(artifact_dir)
  pretrained = load_encoder(encoder_spec, adapter_config_from_manifest(manifest))
  check_fingerprint(manifest, base_fingerprint(pretrained.encoder), encoder_spec, artifact_dir)
  dropout_rate = manifest.get("dropout_rate", 0.1)
  if is_span_manifest(manifest):
    model = build_span_model(pretrained, dropout_rate=dropout_rate)
  else:
    model = build_task_model(pretrained, task_from_manifest(manifest), pooling=manifest["pooling"],
                             dropout_rate=dropout_rate)
  assign_weights(model, tensors, artifact_dir)
  tokenizer = manifest["tokenizer"]
  preprocessor = BertPreprocessor(pretrained.vocab_file, tokenizer["lower_case"], tokenizer["max_seq_length"])
  return model, manifest, preprocessor
