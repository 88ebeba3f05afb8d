"""Trained-model artifacts: what a training run saves and evaluation loads.

An artifact is a directory with

  manifest.json        task (name, type, labels, metrics), the tuning method and
                       its config, pooling, tokenizer settings, encoder spec and
                       config, the fingerprint of the pre-trained base, library
                       version; an extractive-QA model (task type "span") also
                       records its SQuAD window settings under "squad"
  weights.safetensors  the trained variables only (for method "adapter":
                       adapters + LayerNorms + head, ~4 bytes per parameter)

This module owns the format: writing, reading and checking it. Rebuilding a
model from an artifact is `models.load_adapter` (the one loader), which
refuses a base whose fingerprint differs from the one the artifact was
trained on. Writes are atomic (io.atomic_directory), so an interrupted save
leaves no artifact, and go only to a new or empty directory, or (with
overwrite) over an earlier artifact: nothing of the user's is replaced.

Loading also refuses an incomplete or edited artifact, naming what is wrong,
so that a model with a random head or NaN weights is never evaluated:
a manifest that is not an object, lacks a field loading needs or has one
this version does not know; a weights file whose sha256 differs from the
manifest's; tensors missing from the file, or in it but not listed, or of
another shape or dtype than listed; non-finite values; a listed set without
the head's or the adapters' variables (every method trains them).

Format versions. Version 3 (this one, adapter_keras 0.3) records the tuning
method generically: `method` and `method_config` (the method's config as a
dict: AdapterConfig's fields, {"k": 2} for top-k, {} for full/layer-norm, a
plugin's own). Version 2 (0.2.0) recorded `adapter_config` and `top_k`
instead; both list every tensor with its shape and dtype (`weights`: {name:
{"dtype", "shape"}}) and record `weights_sha256`.
Version 1 (adapter_keras 0.1.0) listed only the names (`weights`: [name]);
it is still read, checked as far as it allows (names, the values' shapes
against the model, finite values). Adding a manifest field is a format
change: readers refuse fields they do not know, so a new field goes with a
new version (and into _FIELDS). tests/fixtures holds artifacts written by
adapter_keras 0.1.0; every later version must read them.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

import adapter_keras
from adapter_keras.io import atomic_directory, file_sha256, read_json_object
from adapter_keras.layers.pooling import POOLINGS
from adapter_keras.methods import added_variables, loaded_source_variables
from adapter_keras.networks.span_model import SPAN_TASK_TYPE, SpanModel
from adapter_keras.tasks.registry import TaskSpec
from adapter_keras.values import is_integer, is_number

FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (1, 2, 3)
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"

# (required, optional) manifest fields per format version. Version 1 requires
# only what loading needs: 0.1.0 always wrote the rest, but a hand-made one
# may lack them. "squad" is a SpanModel's extra (train/squad.py), "token" a token model's (train/tagging.py).
_V1_REQUIRED = frozenset({"format_version", "task", "method", "pooling", "tokenizer", "encoder",
                          "base_fingerprint", "weights"})
_V2_REQUIRED = _V1_REQUIRED | {"adapter_config", "top_k", "dropout_rate", "library_version", "train_config",
                               "train_examples", "trained_params", "weights_sha256"}
_V3_REQUIRED = _V2_REQUIRED - {"adapter_config", "top_k"} | {"method_config"}
_FIELDS = {
    1: (_V1_REQUIRED, _V2_REQUIRED - _V1_REQUIRED - {"weights_sha256"} | {"squad"}),
    2: (_V2_REQUIRED, frozenset({"squad"})),
    3: (_V3_REQUIRED, frozenset({"squad", "token"})),
}
_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def check_artifact_destination(out_dir: str, overwrite: bool = False) -> None:
  """Refuses (FileExistsError) to save where it would replace anything but an earlier artifact: `out_dir`
  must be new or an empty directory, or, with `overwrite`, a directory holding only an artifact."""
  if not os.path.exists(out_dir):
    return
  if not os.path.isdir(out_dir):
    raise FileExistsError(f"{out_dir} is a file, not a directory: an artifact is a directory; choose another path")
  present = set(os.listdir(out_dir))
  if not present:
    return
  if present <= {MANIFEST_FILE, WEIGHTS_FILE} and MANIFEST_FILE in present:
    if overwrite:
      return
    raise FileExistsError(f"{out_dir} holds an artifact already; pass overwrite=True (--overwrite) to replace it")
  raise FileExistsError(f"{out_dir} exists and holds other files ({_first(present, 3)}); an artifact goes into a "
                        "new or empty directory")


def save_artifact(out_dir: str, model, manifest: Dict, overwrite: bool = False, variables=None) -> str:
  """Saves `model`'s trainable variables (or `variables`, the form a method saves: TuningMethod.prepare_artifact)
  and `manifest` atomically to `out_dir` (check_artifact_destination)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  check_artifact_destination(out_dir, overwrite)
  trained = list(model.trainable_variables if variables is None else variables)
  tensors = {variable_key(model, v): np.ascontiguousarray(v.numpy())
             for v in trained + adapter_statistics(model)}
  with atomic_directory(out_dir) as tmp:
    weights_path = os.path.join(tmp, WEIGHTS_FILE)
    save_file(tensors, weights_path)
    manifest = dict(manifest, format_version=FORMAT_VERSION, library_version=adapter_keras.__version__,
                    weights={k: dict(dtype=str(v.dtype), shape=list(v.shape)) for k, v in tensors.items()},
                    weights_sha256=file_sha256(weights_path),
                    trained_params=int(sum(int(np.prod(v.shape)) for v in trained)))
    with open(os.path.join(tmp, MANIFEST_FILE), "w", encoding="utf-8") as f:
      json.dump(manifest, f, indent=2, sort_keys=True)
    # Saving takes time; check again so that files put into out_dir meanwhile are not replaced.
    check_artifact_destination(out_dir, overwrite)
  return out_dir


def artifact_sha256(artifact_dir: str) -> str:
  """The sha256 of an artifact's manifest, which records its weights file's sha256 (read_weights checks it): what
  pins a source artifact that another model is loaded from (fusion, stack: models/sources.py)."""
  return file_sha256(os.path.join(artifact_dir, MANIFEST_FILE))


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
  manifest = read_json_object(path, "an artifact manifest object", ArtifactError)
  version = manifest.get("format_version")
  if isinstance(version, bool) or version not in READABLE_FORMAT_VERSIONS:
    raise ArtifactError(
        f"artifact {artifact_dir} has format version {version} (written by adapter_keras "
        f"{manifest.get('library_version', '?')}); this adapter_keras {adapter_keras.__version__} reads "
        f"formats {', '.join(map(str, READABLE_FORMAT_VERSIONS))}: use a matching adapter_keras version")
  problem = _manifest_problem(manifest, version)
  if problem:
    raise ArtifactError(f"{path} is not a valid artifact manifest: {problem}")
  return manifest


def _manifest_problem(manifest: Dict, version: int) -> Optional[str]:
  """What is wrong with a manifest of format `version` (fields and their types), or None."""
  required, optional = _FIELDS[version]
  missing = sorted(required - set(manifest))
  if missing:
    return f"it lacks {', '.join(missing)}"
  unknown = sorted(set(manifest) - required - optional)
  if unknown:
    return (f"unknown field(s) {', '.join(unknown)} (format version {version} has no such field; "
            "was it edited, or written by another tool?)")
  checks = [
      ("task", isinstance(manifest["task"], dict) and isinstance(manifest["task"].get("name"), str),
       "an object with the task's name"),
      ("method", isinstance(manifest["method"], str) and manifest["method"], "a method name"),
      ("method_config", isinstance(manifest.get("method_config", {}), dict), "an object"),
      ("pooling", manifest["pooling"] in POOLINGS + (SpanModel.pooling,),
       f"one of {', '.join(POOLINGS + (SpanModel.pooling,))}"),
      ("tokenizer", isinstance(manifest["tokenizer"], dict)
       and isinstance(manifest["tokenizer"].get("lower_case"), bool)
       and _is_positive_int(manifest["tokenizer"].get("max_seq_length")),
       "an object with lower_case (true/false) and max_seq_length (a positive integer)"),
      ("encoder", isinstance(manifest["encoder"], dict) and isinstance(manifest["encoder"].get("spec"), str),
       "an object with the encoder's spec"),
      ("base_fingerprint", isinstance(manifest["base_fingerprint"], str) and manifest["base_fingerprint"],
       "a fingerprint string"),
      ("top_k", manifest.get("top_k") is None or _is_positive_int(manifest["top_k"]),
       "null or a positive integer"),
      ("adapter_config", manifest.get("adapter_config") is None or isinstance(manifest["adapter_config"], dict),
       "null or an object"),
      ("dropout_rate", _is_number(manifest.get("dropout_rate", 0.0)) and 0 <= manifest.get("dropout_rate", 0.0) < 1,
       "a number in [0, 1)"),
  ]
  if version == 1:
    checks.append(("weights", isinstance(manifest["weights"], list)
                   and all(isinstance(k, str) for k in manifest["weights"]), "a list of tensor names"))
  else:
    checks.append(("weights", isinstance(manifest["weights"], dict) and all(
        isinstance(spec, dict) and isinstance(spec.get("dtype"), str) and isinstance(spec.get("shape"), list)
        and all(_is_positive_int(d) or d == 0 for d in spec["shape"]) for spec in manifest["weights"].values()),
                   "an object of tensor name -> {dtype, shape}"))
    checks.append(("weights_sha256", isinstance(manifest["weights_sha256"], str)
                   and _SHA256.fullmatch(manifest["weights_sha256"]), "a sha256 hex digest"))
  for field, ok, expected in checks:
    if not ok:
      return f"{field} must be {expected}, got {json.dumps(manifest.get(field))[:80]}"
  return None


def _is_positive_int(value) -> bool:
  return is_integer(value) and value > 0


def _is_number(value) -> bool:
  return is_number(value)


def _first(names, limit: int = 5) -> str:
  names = sorted(names)
  return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def read_weights(artifact_dir: str, manifest: Optional[Dict] = None) -> Dict[str, np.ndarray]:
  """The artifact's tensors, checked against its manifest (`read_manifest(artifact_dir)` if not given).

  Refuses (ArtifactError, naming the file and the tensors) a file whose
  sha256 is not the manifest's, tensors missing or not listed, shapes and
  dtypes other than listed, and non-finite values.
  """
  from adapter_keras.pretrained.hf import read_safetensors  # pylint: disable=import-outside-toplevel
  manifest = read_manifest(artifact_dir) if manifest is None else manifest
  path = os.path.join(artifact_dir, WEIGHTS_FILE)
  if not os.path.isfile(path):
    raise ArtifactError(f"artifact {artifact_dir} lacks {WEIGHTS_FILE}")
  expected_sha256 = manifest.get("weights_sha256")
  if expected_sha256 is not None and file_sha256(path) != expected_sha256:
    raise ArtifactError(f"{path} is not the file this artifact was saved with (its sha256 differs from the "
                        f"manifest's): it was edited, truncated or replaced; restore it or train again")
  try:
    tensors = read_safetensors(path)
  except (OSError, ValueError) as e:  # a truncated or foreign file
    raise ArtifactError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0] if str(e) else e!r})") \
        from None
  listed = manifest["weights"]
  missing, unlisted = set(listed) - set(tensors), set(tensors) - set(listed)
  if missing:
    raise ArtifactError(f"{path} lacks {len(missing)} of the {len(listed)} tensors its manifest lists: "
                        f"{_first(missing)}")
  if unlisted:
    raise ArtifactError(f"{path} holds tensors its manifest does not list: {_first(unlisted)}")
  for key, value in tensors.items():
    if isinstance(listed, dict):  # format 2 records shapes and dtypes
      spec = listed[key]
      if str(value.dtype) != spec["dtype"] or list(value.shape) != spec["shape"]:
        raise ArtifactError(f"{path}: tensor {key} is {value.dtype} {list(value.shape)}, the manifest lists "
                            f"{spec['dtype']} {spec['shape']}")
    if not np.issubdtype(value.dtype, np.number) or not np.all(np.isfinite(value)):
      raise ArtifactError(f"{path}: tensor {key} holds NaN or infinite values (or is not numeric); "
                          "the saved model is unusable")
  return tensors


def required_weight_keys(model) -> set:
  """Keys an artifact of `model` must hold whatever its method: the head's variables and every variable of
  the layers the method added (adapters' gates aside).

  The model builds these randomly initialised: without them a loaded model
  would give random outputs.
  """
  loaded = {id(v) for v in loaded_source_variables(model.encoder)}
  added = [v for v in added_variables(model.encoder) if not v.name.endswith("enabled:0") and id(v) not in loaded]
  return {variable_key(model, v) for v in list(model.head.weights) + added}


def assign_weights(model, tensors: Dict[str, np.ndarray], source: str) -> None:
  """Assigns artifact tensors to `model`'s variables by key, strictly (names, shapes, dtypes, completeness)."""
  variables = {variable_key(model, v): v for v in model.variables}
  unknown = sorted(set(tensors) - set(variables))
  if unknown:
    raise ArtifactError(f"{source}: the model has no variables {_first(unknown)}")
  missing = required_weight_keys(model) - set(tensors)
  if missing:
    raise ArtifactError(f"{source}: the artifact lacks {len(missing)} trained variables the model needs "
                        f"(its head or adapters): {_first(missing)}")
  for key, value in tensors.items():
    variable = variables[key]
    if tuple(variable.shape) != tuple(value.shape):
      raise ArtifactError(f"{source}: {key} has shape {value.shape}, the model expects {variable.shape}")
    if value.dtype != variable.dtype.as_numpy_dtype:
      raise ArtifactError(f"{source}: {key} is {value.dtype}, the model expects {variable.dtype.name}")
  for key, value in tensors.items():  # only once every tensor fits: a refused artifact changes nothing
    variables[key].assign(value)


def check_fingerprint(manifest: Dict, fingerprint: str, encoder_spec: str, artifact_dir: str) -> None:
  expected = manifest["base_fingerprint"]
  if fingerprint != expected:
    raise ArtifactError(
        f"artifact {artifact_dir} was trained on a base encoder with fingerprint {expected[:16]}..., "
        f"but encoder {encoder_spec!r} has fingerprint {fingerprint[:16]}...: load it onto the "
        "base it was trained on")


def method_of(manifest: Dict) -> Tuple[str, Dict]:
  """(method name, method config as a dict) of a manifest of any format version."""
  if "method_config" in manifest:
    return manifest["method"], dict(manifest["method_config"])
  method = manifest["method"]  # formats 1 and 2: the built-in methods' settings had fields of their own
  if method == "adapter":
    return method, dict(manifest.get("adapter_config") or {})
  if method == "top-k":
    return method, {"k": manifest.get("top_k")}
  return method, {}


def task_type_of(manifest: Dict) -> str:
  """The artifact's task type ("classification", "regression", "span", ...)."""
  return manifest["task"].get("task_type") or "classification"


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
  try:
    return TaskSpec.from_dict(data)
  except (TypeError, ValueError) as e:  # TypeError: fields missing or unknown
    raise ArtifactError(f"the artifact's task {data.get('name')!r} is invalid: {e}") from None
