"""The base-encoder fingerprint that adapter artifacts are tied to: sha256 over the name, shape and
value of every variable no tuning method added, the same for every weight format."""
from __future__ import annotations

import hashlib

import numpy as np

from adapter_keras.methods import base_variables


def plain_encoder_variables(encoder) -> list:
  """The encoder's variables that no tuning method added, in a fixed order (methods.base_variables)."""
  return base_variables(encoder)


def base_fingerprint(encoder) -> str:
  """sha256 over the names, shapes and values of every non-adapter variable."""
  digest = hashlib.sha256()
  for variable in sorted(plain_encoder_variables(encoder), key=lambda v: v.name):
    value = np.ascontiguousarray(variable.numpy())
    digest.update(variable.name.encode())
    digest.update(str(value.shape).encode())
    digest.update(value.tobytes())
  return digest.hexdigest()
