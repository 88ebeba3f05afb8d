"""The base-encoder fingerprint that adapter artifacts are tied to: sha256 over the name, shape and
value of every non-adapter variable, the same for every weight format."""
from __future__ import annotations

import hashlib

import numpy as np


def plain_encoder_variables(encoder) -> list:
  """The encoder's variables that are not part of an adapter, in a fixed order."""
  adapter_ids = {id(v) for a in encoder.adapters() for v in a.weights}
  return [v for v in encoder.weights if id(v) not in adapter_ids]


def base_fingerprint(encoder) -> str:
  """sha256 over the names, shapes and values of every non-adapter variable."""
  digest = hashlib.sha256()
  for variable in sorted(plain_encoder_variables(encoder), key=lambda v: v.name):
    value = np.ascontiguousarray(variable.numpy())
    digest.update(variable.name.encode())
    digest.update(str(value.shape).encode())
    digest.update(value.tobytes())
  return digest.hexdigest()
