"""Reading the source artifacts a method's layers are loaded from (fusion's sources, stack's lower adapter),
before the method is injected: each must be present, unchanged (the sha256 its reference records, when it
records one) and trained on this base (its fingerprint and tokenizer); each refusal is one line naming the
source. Sources are never copied: a composed model's artifact references them by path and sha256, and
loading it reads them again (from their recorded path, or else from beside the loaded artifact, so that a
directory holding the composed artifact and its sources can move as a whole).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

from adapter_keras.artifacts import (ArtifactError, artifact_sha256, check_fingerprint, method_of, read_manifest,
                                     read_weights, resolve_artifact_dir)
from adapter_keras.methods import get_method
from adapter_keras.methods.base import LoadedSource, SourceRef
from adapter_keras.pretrained import PretrainedEncoder, base_fingerprint


def _locate(ref: SourceRef, method: str) -> str:
  if os.path.isdir(ref.path):
    return resolve_artifact_dir(ref.path)
  pinned = f" (sha256 {ref.sha256[:12]}...)" if ref.sha256 else ""
  raise ArtifactError(f"{method} source {ref.label}{pinned} is missing: no artifact at {ref.path}; put it back, or "
                      "give its new path")


def read_source(ref: SourceRef, method: str, pretrained: PretrainedEncoder, fingerprint: str) -> LoadedSource:
  """One source artifact, read and checked (module docstring)."""
  directory = _locate(ref, method)
  digest = artifact_sha256(directory)
  if ref.sha256 is not None and digest != ref.sha256:
    raise ArtifactError(f"{method} source {ref.label} at {directory} has changed since it was referenced: its "
                        f"sha256 is {digest[:12]}..., the reference records {ref.sha256[:12]}...; put the original "
                        "back")
  manifest = read_manifest(directory)
  tensors = read_weights(directory, manifest)
  try:
    check_fingerprint(manifest, fingerprint, pretrained.name, directory)
  except ArtifactError as e:
    raise ArtifactError(f"{method} source {ref.label}: {e}") from None
  if manifest["tokenizer"]["lower_case"] != pretrained.lower_case:
    raise ArtifactError(f"{method} source {ref.label} ({directory}) was trained with lower_case="
                        f"{manifest['tokenizer']['lower_case']}, this base tokenizes with lower_case="
                        f"{pretrained.lower_case}")
  source_method, source_config = method_of(manifest)
  name = ref.name or manifest["task"].get("name") or None
  return LoadedSource(SourceRef(os.path.abspath(directory), digest, name), source_method, source_config,
                      manifest, tensors)


def read_sources(method: str, config, pretrained: PretrainedEncoder):
  """`config` with the sources its method names read (TuningMethod.with_sources), or as it is when it names
  none. Call on the plain encoder, before inject."""
  spec = get_method(method)
  refs = spec.source_artifacts(config)
  if not refs:
    return config
  fingerprint = base_fingerprint(pretrained.encoder)
  loaded = tuple(read_source(ref, method, pretrained, fingerprint) for ref in refs)
  return spec.with_sources(config, loaded)


def relocated_config(method: str, method_config: Optional[dict], artifact_dir: str) -> Optional[dict]:
  """An artifact's method config with each source that is missing at its recorded path but present beside the
  artifact pointed there (its sha256 is checked when it is read)."""
  if not method_config:
    return method_config
  spec = get_method(method)
  config = spec.make_config(method_config)
  refs = spec.source_artifacts(config)
  beside = os.path.dirname(os.path.abspath(artifact_dir))
  moved = {}
  for ref in refs:
    candidate = os.path.join(beside, os.path.basename(os.path.normpath(ref.path)))
    if not os.path.isdir(ref.path) and os.path.isdir(candidate):
      moved[ref.path] = candidate
  if not moved:
    return method_config
  return _replace_paths(config, moved).to_dict()


def _replace_paths(config, moved: dict):
  changes = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if isinstance(value, SourceRef) and value.path in moved:
      changes[field.name] = dataclasses.replace(value, path=moved[value.path])
    elif isinstance(value, tuple) and value and all(isinstance(v, SourceRef) for v in value):
      changes[field.name] = tuple(dataclasses.replace(v, path=moved.get(v.path, v.path)) for v in value)
  return dataclasses.replace(config, **changes)
