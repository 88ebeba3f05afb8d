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
atomic: files go to a temporary sibling directory, are fsynced, and the
directory is renamed into place, so an interrupted save leaves no artifact.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

import adapter_keras
from adapter_keras.config import AdapterConfig

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


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write_json_atomic(path: str, data) -> None:
  """Writes JSON to a temp file in the same directory, fsyncs, renames."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(data, f, indent=2, sort_keys=True)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  _fsync_dir(directory)


def commit_directory(tmp_dir: str, final_dir: str) -> None:
  """Moves a fully written `tmp_dir` to `final_dir`, replacing any old one."""
  for root, _, files in os.walk(tmp_dir):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        os.fsync(f.fileno())
  _fsync_dir(tmp_dir)
  parent = os.path.dirname(os.path.abspath(final_dir))
  old = None
  if os.path.exists(final_dir):
    old = tempfile.mkdtemp(prefix=".old-", dir=parent)
    os.rmdir(old)
    os.rename(final_dir, old)
  os.rename(tmp_dir, final_dir)
  _fsync_dir(parent)
  if old:
    shutil.rmtree(old, ignore_errors=True)


def staging_directory(final_dir: str) -> str:
  """A new empty temporary directory next to `final_dir` (same filesystem)."""
  parent = os.path.dirname(os.path.abspath(final_dir)) or "."
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.normpath(final_dir))}.tmp-", dir=parent)


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
  tmp = staging_directory(out_dir)
  try:
    save_file(tensors, os.path.join(tmp, WEIGHTS_FILE))
    with open(os.path.join(tmp, MANIFEST_FILE), "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=2, sort_keys=True)
    commit_directory(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
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
  from adapter_keras.pretrained import read_safetensors  # pylint: disable=import-outside-toplevel
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


def task_to_dict(task) -> Dict:
  return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(task).items()}


SPAN_TASK_TYPE = "span"  # SpanModel.task_type


def is_span_manifest(manifest: Dict) -> bool:
  """Whether the artifact holds an extractive-QA SpanModel (SQuAD) rather than a TaskModel."""
  return manifest.get("task", {}).get("task_type") == SPAN_TASK_TYPE


def task_from_dict(data: Dict):
  if data.get("task_type") == SPAN_TASK_TYPE:
    # Every caller scores TaskSpec outputs (labels, scores); a span model needs squad decoding.
    raise ArtifactError(f"this artifact holds an extractive-QA model for {data.get('name')!r}, not a "
                        "classification or regression task; use `adapter-keras evaluate-squad`")
  from adapter_keras.tasks import TaskSpec  # pylint: disable=import-outside-toplevel
  return TaskSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


def load_artifact(artifact_dir: str, encoder_spec: str) -> Tuple[object, Dict, object]:
  """Rebuilds a trained model on `encoder_spec`: (model, manifest, preprocessor).

  The model is a TaskModel, or a SpanModel for a SQuAD artifact
  (`is_span_manifest`; squad_trainer.load_squad_artifact adds its featurizer).
  Refuses (ArtifactError) when the encoder's base weights differ from the
  ones the artifact was trained on.
  """
  from adapter_keras.pretrained import base_fingerprint, load_encoder  # pylint: disable=import-outside-toplevel
  from adapter_keras.trainer import build_model  # pylint: disable=import-outside-toplevel
  from adapter_keras.preprocessing import BertPreprocessor  # pylint: disable=import-outside-toplevel
  artifact_dir = resolve_artifact_dir(artifact_dir)
  manifest = read_manifest(artifact_dir)
  tensors = read_weights(artifact_dir)
  pretrained = load_encoder(encoder_spec, adapter_config_from_manifest(manifest))
  check_fingerprint(manifest, base_fingerprint(pretrained.encoder), encoder_spec, artifact_dir)
  if is_span_manifest(manifest):
    from adapter_keras.squad_trainer import build_span_model  # pylint: disable=import-outside-toplevel
    model = build_span_model(pretrained, dropout_rate=manifest.get("dropout_rate", 0.1))
  else:
    task = task_from_dict(manifest["task"])
    model = build_model(pretrained, task, pooling=manifest["pooling"],
                        dropout_rate=manifest.get("dropout_rate", 0.1))
  assign_weights(model, tensors, artifact_dir)
  tokenizer = manifest["tokenizer"]
  preprocessor = BertPreprocessor(pretrained.vocab_file, tokenizer["lower_case"], tokenizer["max_seq_length"])
  return model, manifest, preprocessor
