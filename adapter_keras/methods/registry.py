"""The registry of tuning methods every other module asks: built-in methods, plugins and run-time ones.

A plugin is a Python package that declares its method in the `adapter_keras.methods` entry point group
(`[project.entry-points."adapter_keras.methods"] my-method = "my_package:METHOD"`, a TuningMethod
instance); its name is listed (for `--method`) without importing it, and it is loaded on first use.
`register(method)` adds one at run time (tests, notebooks). No TensorFlow is imported here.
"""
from __future__ import annotations

from importlib import metadata
from typing import Dict, Optional, Tuple

from adapter_keras.methods import adapter, bitfit, full, fusion, ia3, layer_norm, lora, prefix_tuning, stack, top_k
from adapter_keras.methods.base import TuningMethod

ENTRY_POINT_GROUP = "adapter_keras.methods"
BUILTIN_METHODS: Tuple[TuningMethod, ...] = (adapter.METHOD, full.METHOD, top_k.METHOD, layer_norm.METHOD,
                                             bitfit.METHOD, lora.METHOD, ia3.METHOD, prefix_tuning.METHOD,
                                             fusion.METHOD, stack.METHOD)

_METHODS: Dict[str, TuningMethod] = {m.name: m for m in BUILTIN_METHODS}


def _entry_points() -> dict:
  return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _METHODS}


def method_names() -> Tuple[str, ...]:
  """Every method's name: the built-in ones, run-time registered ones, installed plugins."""
  return tuple(_METHODS) + tuple(sorted(_entry_points()))


def register(method: TuningMethod) -> TuningMethod:
  """Adds `method` to the registry (a method of the same name is replaced: the newest definition wins)."""
  if not isinstance(method, TuningMethod) or not method.name:
    raise TypeError(f"register takes a named TuningMethod instance, got {method!r}")
  if method.name in {m.name for m in BUILTIN_METHODS} and _METHODS[method.name] is not method:
    raise ValueError(f"method {method.name!r} is built in; give yours another name")
  _METHODS[method.name] = method
  return method


def unregister(name: str) -> None:
  """Removes a run-time registered method (built-in ones stay)."""
  if name in {m.name for m in BUILTIN_METHODS}:
    raise ValueError(f"method {name!r} is built in")
  _METHODS.pop(name, None)


def get_method(name: str) -> TuningMethod:
  """The method called `name` (a plugin is loaded here); ValueError naming the known ones otherwise."""
  if name in _METHODS:
    return _METHODS[name]
  plugin = _entry_points().get(name) if isinstance(name, str) else None
  if plugin is None:
    raise ValueError(f"Unknown method {name!r}; choose one of {', '.join(method_names())}")
  method = plugin.load()
  if not isinstance(method, TuningMethod) or method.name != name:
    raise ValueError(f"the plugin {plugin.value} registered as method {name!r} is not a TuningMethod named "
                     f"{name!r}")
  return register(method)


def validate_method(name: str, top_k: Optional[int], num_layers: int, config=None) -> TuningMethod:
  """The method, after checking that its config (or `top_k`) fits it and an encoder of `num_layers` layers."""
  method = get_method(name)
  if name == "top-k" or config is not None:
    method.validate(method.make_config(config, top_k=top_k), num_layers)
  return method


def method_label(name: str, top_k: Optional[int] = None, config=None) -> str:
  """A method's name in tables ("top-2" for top-k with k = 2; the bare name when its settings are unknown)."""
  method = get_method(name)
  try:
    resolved = method.make_config(config, top_k=top_k)
  except (TypeError, ValueError):
    return method.name
  return method.label(resolved)
