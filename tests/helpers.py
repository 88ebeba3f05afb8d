"""Helpers the test modules share (fixtures are in conftest.py)."""
import ast
import contextlib
import importlib
import io
import json
import os
import subprocess
import types

from adapter_keras import cli


def last_json(capsys):
  """The --json result: the last stdout line captured so far, parsed."""
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def run_cli(argv):
  """(exit status, stdout, stderr) of `adapter-keras argv`, run in this process."""
  stdout, stderr = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    status = cli.main(argv)
  return status, stdout.getvalue(), stderr.getvalue()


def run_keras_tuner_chief_and_worker(command, cwd, worker_timeout=600, chief_timeout=300):
  """Runs `command` twice on loopback as keras-tuner's chief and one worker; (chief stdout, worker stdout).

  Both must exit with status 0; the chief hosts the oracle, the worker runs trials.
  """
  from tests.conftest import free_port  # pylint: disable=import-outside-toplevel
  env = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(free_port()),
             TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  chief = subprocess.Popen(command, env=dict(env, KERASTUNER_TUNER_ID="chief"), cwd=cwd,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  worker = subprocess.Popen(command, env=dict(env, KERASTUNER_TUNER_ID="tuner0"), cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    worker_out, _ = worker.communicate(timeout=worker_timeout)
    chief_out, _ = chief.communicate(timeout=chief_timeout)
  finally:
    for process in (chief, worker):
      if process.poll() is None:
        process.kill()
  assert worker.returncode == 0, worker_out[-3000:]
  assert chief.returncode == 0, chief_out[-3000:]
  return chief_out, worker_out


# The project's own packages: a notebook importing from them must name modules and names that exist.
OWN_PACKAGES = ("adapter_keras", "automl_baseline")


def import_problems(source: str) -> list:
  """What `source` imports, or reads from an imported module, of OWN_PACKAGES that does not exist.

  Catches examples and notebooks left on old module paths without running them.
  """
  tree = ast.parse(source)
  problems = []
  modules = {}  # local name -> module, for names bound to one of our modules
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      # `import a.b` binds a; `import a.b as c` binds a.b.
      imported = [(alias.name, None, alias.asname or alias.name.split(".")[0]) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      imported = [(node.module, alias.name, alias.asname or alias.name) for alias in node.names]
    else:
      continue
    for module_name, name, local in imported:
      if module_name.split(".")[0] not in OWN_PACKAGES:
        continue
      try:
        module = importlib.import_module(module_name)
      except ImportError as e:
        problems.append(f"import {module_name}: {e}")
        continue
      if name is None:
        modules[local] = module if local != module_name.split(".")[0] else importlib.import_module(local)
      elif name == "*":
        continue
      elif hasattr(module, name):
        if isinstance(getattr(module, name), types.ModuleType):
          modules[local] = getattr(module, name)
      else:
        try:  # a submodule not imported by its package
          modules[local] = importlib.import_module(f"{module_name}.{name}")
        except ImportError:
          problems.append(f"from {module_name} import {name}: {module_name} has no {name!r}")
  # `module.attribute` for a name bound to one of our modules (and never rebound by the notebook).
  rebound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
        and node.value.id not in rebound and not hasattr(modules[node.value.id], node.attr)):
      problems.append(f"{node.value.id}.{node.attr}: {modules[node.value.id].__name__} has no {node.attr!r}")
  return sorted(set(problems))


def run_cli_subprocess(args, module="adapter_keras", timeout=300, input_text=None):
  """`python -m module args` in a fresh process from the repository root; the CompletedProcess."""
  import sys  # pylint: disable=import-outside-toplevel
  from tests.conftest import REPO_ROOT  # pylint: disable=import-outside-toplevel
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                        cwd=REPO_ROOT, timeout=timeout, input=input_text,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def assert_one_error_line(result, expected):
  """A failed command printed exactly one `error:` line containing `expected`, and no traceback."""
  assert result.returncode != 0, result.stdout[-2000:]
  error_lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(error_lines) == 1, result.stderr[-2000:]
  assert expected in error_lines[0], error_lines[0]
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  return error_lines[0]


def fit_method_model(encoder_dir, train, method, method_config=None):
  """(a classifier with `method`, trained one epoch on `train`; the plain base's classifier; their sequence
  outputs before training on 8 sentences): what the tests of a method that starts as the base compare."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from adapter_keras.models import AdapterClassifier  # pylint: disable=import-outside-toplevel
  model = AdapterClassifier.from_pretrained(encoder_dir, method=method, method_config=method_config, seed=0)
  plain = AdapterClassifier.from_pretrained(encoder_dir, method="layer-norm", seed=0)
  features = model.preprocessor(tf.constant(train.text[:8]))
  at_init = (model.encoder(features)["sequence_output"].numpy(), plain.encoder(features)["sequence_output"].numpy())
  model.compile(learning_rate=1e-2)
  model.fit(train.text, train.labels, batch_size=16, epochs=1, verbose=0)
  return model, plain, at_init
