"""The layout's promises, checked on the source: no import cycle, layers that only look down,
Model Garden's private names in one module, the CLI free of TensorFlow at import."""
import ast
import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("adapter_keras", "automl_baseline")
# Layers, bottom to top: a module may import its own layer and the ones below it. Entries name a
# top-level module or package of adapter_keras, or one of their modules (dotted); the longest entry
# that names a module decides its layer.
LAYERS = [
    {"__init__", "_model_garden", "_tf_runtime", "io", "values"},
    {"methods", "config", "layers", "encoder", "preprocessing", "tasks"},
    {"networks", "pretrained"},
    {"artifacts"},
    {"train", "serving.export", "serving.signatures"},
    {"models"},
    {"train.run", "train.sweep"},
    {"serving", "analysis"},
    {"demo", "testing"},
    {"cli", "__main__"},
]


def _modules():
  """{module name: source path} of every module of the packages."""
  found = {}
  for package in PACKAGES:
    root = os.path.join(REPO_ROOT, package)
    for directory, _, files in os.walk(root):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(directory, name)
          parts = os.path.relpath(path, REPO_ROOT)[:-3].split(os.sep)
          if parts[-1] == "__init__":
            parts = parts[:-1]
          found[".".join(parts)] = path
  return found


MODULES = _modules()


def _imports(path, module):
  """Modules of the packages that `module` imports anywhere in its source (functions included)."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  is_package = path.endswith("__init__.py")
  targets = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = module.split(".")[:len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(anchor + ([base] if base else []))
      # `from a import b` imports module a.b when there is one, else (the attribute b of) a.
      names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    else:
      continue
    for name in names:
      # The longest prefix that is one of our modules: `from a.b import c` imports a.b (or a.b.c).
      parts = name.split(".")
      for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
          if candidate != module:
            targets.add(candidate)
          break
  return targets


GRAPH = {module: _imports(path, module) for module, path in MODULES.items()}


def _cycle(graph):
  """One import cycle as a list of modules, or None."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for target in sorted(graph.get(node, ())):
      if state.get(target) == "open":
        return stack[stack.index(target):] + [target]
      if target not in state:
        found = visit(target)
        if found:
          return found
    stack.pop()
    state[node] = "done"
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_the_cycle_finder_finds_a_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_back_through_others():
  # Package __init__ modules that only re-export their own submodules are edges too.
  graph = {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in GRAPH.items()}
  assert _cycle(graph) is None


def _layer_of(module):
  parts = module.split(".")
  if parts[0] != "adapter_keras":
    return None
  names = parts[1:] or ["__init__"]
  for end in range(len(names), 0, -1):
    key = ".".join(names[:end])
    for index, layer in enumerate(LAYERS):
      if key in layer:
        return index
  raise AssertionError(f"{module} is in no layer of this test; add its package to LAYERS")


def test_every_package_imports_only_its_own_layer_or_the_ones_below():
  upward = []
  for module, targets in GRAPH.items():
    own = _layer_of(module)
    if own is None:
      continue
    for target in targets:
      if _layer_of(target) is not None and _layer_of(target) > own:
        upward.append(f"{module} -> {target}")
  assert not upward, upward




def test_private_names_of_other_objects_are_touched_only_in_model_garden_module():
  offenders = []
  for module, path in MODULES.items():
    if module == "adapter_keras._model_garden" or not module.startswith("adapter_keras"):
      continue
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
      if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
        continue
      is_dunder = node.attr.startswith("__") and node.attr.endswith("__")  # Python's own, fine anywhere
      if not is_dunder and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
        offenders.append(f"{module}:{node.lineno} .{node.attr}")
  assert not offenders, offenders


def _src_imports(source: str) -> list:
  """Lines importing a dependency's private `.src` modules (keras_tuner.src, tf_keras.src, keras.src)."""
  found = []
  for node in ast.walk(ast.parse(source)):
    names = ([a.name for a in node.names] if isinstance(node, ast.Import)
             else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
    found += [f"{node.lineno} {n}" for n in names if ".src" in f".{n}." and not n.startswith("adapter_keras")]
  return found


def _foreign_private_attributes(cls) -> list:
  """`self._x` names a class of ours uses that one of its foreign (non-adapter_keras) base classes also
  uses: a private name of tf_keras, keras-tuner or Model Garden reached through inheritance."""
  import inspect  # pylint: disable=import-outside-toplevel
  import textwrap  # pylint: disable=import-outside-toplevel
  tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
  used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr.startswith("_")
          and not node.attr.startswith("__") and isinstance(node.value, ast.Name) and node.value.id == "self"}
  foreign = []
  for base in cls.__mro__[1:]:
    module = getattr(base, "__module__", "") or ""
    if module.startswith(("adapter_keras", "automl_baseline", "builtins", "tests")):
      continue
    try:
      source = inspect.getsource(base)
    except (OSError, TypeError):
      continue
    foreign += [f"{cls.__name__}.{name} ({base.__module__}.{base.__name__})" for name in sorted(used)
                if re.search(rf"\bself\.{name}\b", source)]
  return sorted(set(foreign))


def test_dependencies_private_modules_are_imported_only_in_model_garden_module():
  offenders = [f"{module}:{line}" for module, path in MODULES.items() if module != "adapter_keras._model_garden"
               for line in _src_imports(open(path, encoding="utf-8").read())]
  assert not offenders, offenders
  assert _src_imports("from keras_tuner.src.tuners.gridsearch import LinkedList\n")  # the check sees one


def test_private_names_of_parent_classes_are_touched_only_in_model_garden_module():
  import importlib  # pylint: disable=import-outside-toplevel
  import inspect  # pylint: disable=import-outside-toplevel
  offenders = []
  for module in sorted(MODULES):
    if not module.startswith("adapter_keras") or module in ("adapter_keras._model_garden", "adapter_keras.__main__"):
      continue
    loaded = importlib.import_module(module)
    for _, cls in inspect.getmembers(loaded, inspect.isclass):
      if cls.__module__ == module:
        offenders += _foreign_private_attributes(cls)
  assert not offenders, offenders


def test_the_parent_class_check_sees_a_foreign_private_name():
  import tf_keras  # pylint: disable=import-outside-toplevel
  namespace = {}
  exec(textwrap.dedent('''
      class Quiet(tf_keras.callbacks.CallbackList):
        def __init__(self, callbacks):
          super().__init__(callbacks)
          self._check_timing = False
  '''), dict(tf_keras=tf_keras), namespace)  # pylint: disable=exec-used
  quiet = namespace["Quiet"]
  import inspect  # pylint: disable=import-outside-toplevel
  source = ("class Quiet(tf_keras.callbacks.CallbackList):\n  def __init__(self, callbacks):\n"
            "    self._check_timing = False\n")
  quiet_source = inspect.getsource
  try:
    inspect.getsource = lambda obj: source if obj is quiet else quiet_source(obj)
    assert _foreign_private_attributes(quiet) == ["Quiet._check_timing (tf_keras.src.callbacks.CallbackList)"]
  finally:
    inspect.getsource = quiet_source


@pytest.mark.parametrize("command", ["adapter_keras.cli", "automl_baseline.cli"])
def test_the_command_lines_import_without_tensorflow(command):
  code = (f"import sys, {command}; {command}.build_parser(); "
          "print(sorted(m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
  assert out.stdout.strip() == "[]"
