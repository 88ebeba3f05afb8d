"""What the command lines print besides their output, and what loading a file may run.

Issue 17, item 12: on a CPU machine every command printed two E-level TensorFlow lines that read
as errors, `failed call to cuInit` (TensorFlow's GPU probe, on a machine without a CUDA driver)
and `oneDNN supports DT_INT64 only on platforms with AVX-512` (an integer Transpose inside
tf_text.combine_segments). Real commands run here as a user runs them, with TF_CPP_MIN_LOG_LEVEL
unset; graph checks pin each removed integer Transpose (also the AutoML wide tower's, on pairs).
Item 13: no module of the packages unpickles anything.
"""
import ast
import os
import platform
import re
import subprocess
import sys
import textwrap

import pytest

from adapter_keras import _tf_runtime
from tests.conftest import REPO_ROOT

# TensorFlow's own format (`2026-01-02 03:04:05.678901: E path:line] ...`) and absl's
# (`E0102 03:04:05.678901  1234 path:line] ...`, `E0000 00:00:...` before absl is initialised).
TF_ERROR_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: E |E\d{4} \d\d:\d\d|E )")
CUINIT = "failed call to cuInit"
ONEDNN_DTYPE = re.compile(r"oneDNN supports DT_\w+ only on platforms with")


def _env(**overrides):
  """The user's environment, minus what this test process sets: the default log level is the point."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", _tf_runtime.ENABLED_DEVICE_TYPES)}
  env.update(overrides)
  return env


def _tf_error_lines(stderr):
  return [l for l in stderr.splitlines()
          if TF_ERROR_LINE.match(l) or CUINIT in l or ONEDNN_DTYPE.search(l)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, encoder_dir, glue_dir):
  """Every command of these tests, started together (each one is mostly TensorFlow's start-up)."""
  root = tmp_path_factory.mktemp("logs")
  # What a TensorFlow E line looks like when one is due: an integer Transpose on the CPU, in a
  # process set up as the command lines set it up, except that TF_ENABLED_DEVICE_TYPES is the
  # user's (empty: every device factory, so the GPU probe runs as it did before the fix).
  control = textwrap.dedent("""
      import adapter_keras.cli
      import tensorflow as tf
      with tf.device("/CPU:0"):
        tf.transpose(tf.zeros([2, 3], tf.int32))
      """)
  # train builds the encoder as params does, then tokenizes, fits, evaluates and saves. A real
  # automl-baseline command costs as much again; its set-up is checked cheaply ("automl-env"),
  # and its model's integer Transpose by the graph test below.
  commands = {
      "train": ["-m", "adapter_keras", "train", "--task", "sst2", "--data-dir", glue_dir,
                "--encoder", encoder_dir, "--epochs", "1", "--batch-size", "16",
                "--max-seq-length", "32", "--out", str(root / "run")],
      "automl-env": ["-c", "import os, automl_baseline.cli; "
                     f"print(os.environ.get({_tf_runtime.ENABLED_DEVICE_TYPES!r}))"],
      "library-env": ["-c", "import os, adapter_keras; "
                      f"print(os.environ.get({_tf_runtime.ENABLED_DEVICE_TYPES!r}))"],
      "broken": ["-m", "adapter_keras", "predict", "--model", str(root / "no_such_model"), "hi"],
      "control": ["-c", control],
  }
  started = {}
  for name, args in commands.items():
    env = _env(**({_tf_runtime.ENABLED_DEVICE_TYPES: ""} if name == "control" else {}))
    started[name] = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  results = {}
  for name, process in started.items():
    out, err = process.communicate(timeout=300)
    results[name] = (process.returncode, out, err)
  return results


def test_a_healthy_command_prints_no_tensorflow_error_line(runs):
  code, out, err = runs["train"]
  assert code == 0, err[-2000:]
  assert "wrote" in out
  assert not _tf_error_lines(err), err[-3000:]


@pytest.mark.parametrize("name", ["automl-env", "library-env"])
def test_the_automl_command_line_and_the_library_start_tensorflow_the_same_way(runs, name):
  code, out, err = runs[name]
  assert code == 0, err[-2000:]
  assert out.strip() == str(_tf_runtime.configure_devices(_env()))


def test_a_broken_input_still_prints_its_one_error_line(runs):
  code, _, err = runs["broken"]
  assert code == 2
  errors = [l for l in err.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and "no_such_model" in errors[0], err[-2000:]
  assert "Traceback" not in err
  assert not _tf_error_lines(err), err[-3000:]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64")
                    or os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() in ("0", "false"),
                    reason="the oneDNN dtype line comes from TensorFlow's x86 oneDNN build")
def test_tensorflow_error_lines_still_show_and_the_gpu_probe_is_what_logged_cuinit(runs):
  """Nothing hides E lines (the detector above would see them), and a user's own
  TF_ENABLED_DEVICE_TYPES wins; without a CUDA driver the GPU probe then logs cuInit again."""
  code, _, err = runs["control"]
  assert code == 0, err[-2000:]
  lines = _tf_error_lines(err)
  assert any(TF_ERROR_LINE.match(l) and "oneDNN supports DT_INT32" in l for l in lines), err[-3000:]
  if not _tf_runtime.cuda_driver_loadable():
    assert any(TF_ERROR_LINE.match(l) and CUINIT in l for l in lines), err[-3000:]


def _op_types(fn, specs):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return {op.type for op in tf.function(fn).get_concrete_function(*specs).graph.get_operations()}


def test_packing_runs_no_transpose_and_gives_combine_segments_ids(encoder_dir):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_text as tf_text  # pylint: disable=import-outside-toplevel
  from adapter_keras.preprocessing import BertPreprocessor  # pylint: disable=import-outside-toplevel
  from adapter_keras.testing import tiny_sentiment_data  # pylint: disable=import-outside-toplevel

  pre = BertPreprocessor(os.path.join(encoder_dir, "vocab.txt"), max_seq_length=12)

  def reference(segments):
    trimmed = tf_text.RoundRobinTrimmer(max_seq_length=pre.max_seq_length - 1 - len(segments)).trim(
        [pre.tokenize(s) for s in segments])
    return tf_text.combine_segments(trimmed, start_of_sequence_id=pre.cls_id,
                                    end_of_segment_id=pre.sep_id)

  for n in (1, 2):
    strings = [tf.TensorSpec([None], tf.string)] * n
    assert "Transpose" in _op_types(lambda *s: reference(list(s)), strings)  # the cause, in tensorflow-text
    assert "Transpose" not in _op_types(lambda *s: pre.pack(list(s)), strings)
  texts, _ = tiny_sentiment_data(24, seed=4)
  texts = list(texts) + ["", "the movie was very very good and fun and the plot and the acting great"]
  for segments in ([texts], [texts, texts[::-1]], [[""], [""]], [[], []]):
    segments = [tf.constant(s, tf.string) for s in segments]
    for got, expected in zip(pre.pack(segments), reference(segments)):
      assert got.dtype == tf.int32
      assert got.to_list() == expected.to_list()


def test_the_wide_tower_joins_pairs_without_a_transpose_and_sums_the_same():
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from adapter_keras.testing import tiny_sentiment_data  # pylint: disable=import-outside-toplevel
  from automl_baseline import towers  # pylint: disable=import-outside-toplevel

  tower = towers.WideTower(towers.ModelSettings(num_classes=3, is_pair=True, wide_buckets=512))

  def ragged_concat(inputs):  # what the tower did before: a ragged concat along axis 1
    ids = tf.concat([towers.hashed_ngram_ids(inputs["text"], 512, 2, "a:"),
                     towers.hashed_ngram_ids(inputs["text_b"], 512, 2, "b:")], axis=1)
    rows = tf.gather(tower.hashed_weights, ids.flat_values)
    return tf.math.unsorted_segment_sum(rows, ids.value_rowids(), ids.nrows()) + tower.bias

  a, _ = tiny_sentiment_data(40, seed=1)
  b, _ = tiny_sentiment_data(40, seed=2)
  pairs = {"text": tf.constant(list(a) + [""]), "text_b": tf.constant(list(b) + ["the"])}
  tower(pairs)
  tower.hashed_weights.assign(tf.random.stateless_normal(tower.hashed_weights.shape, [1, 2]))
  tower.bias.assign([0.1, 0.2, 0.3])
  np.testing.assert_array_equal(tower(pairs).numpy(), ragged_concat(pairs).numpy())
  spec = [{"text": tf.TensorSpec([None], tf.string), "text_b": tf.TensorSpec([None], tf.string)}]
  assert "Transpose" in _op_types(ragged_concat, spec)
  assert "Transpose" not in _op_types(tower.call, spec)


@pytest.mark.parametrize("environ, driver, expected", [
    ({}, False, ",".join(_tf_runtime.NON_CUDA_DEVICE_TYPES)),
    ({}, True, None),  # a CUDA driver: the GPU stays
    ({"CUDA_VISIBLE_DEVICES": "-1"}, True, ",".join(_tf_runtime.NON_CUDA_DEVICE_TYPES)),
    ({"CUDA_VISIBLE_DEVICES": "0"}, True, None),
    ({"TF_ENABLED_DEVICE_TYPES": "CPU,GPU"}, False, None),  # the user's choice
    ({"TF_PLUGGABLE_DEVICE_LIBRARY_PATH": "/opt/plugin"}, False, None),  # a plugin may bring a GPU
])
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="configure_devices acts on Linux only")
def test_the_gpu_probe_is_left_out_only_where_it_cannot_find_a_gpu(environ, driver, expected):
  if expected and _tf_runtime._pluggable_device_plugins({}):  # pylint: disable=protected-access
    pytest.skip("a PluggableDevice plugin is installed here, so the GPU factories always stay")
  environ = dict(environ)
  before = dict(environ)
  assert _tf_runtime.configure_devices(environ, driver_loadable=lambda: driver) == expected
  if expected is None:
    assert environ == before
  else:
    assert environ[_tf_runtime.ENABLED_DEVICE_TYPES] == expected
    assert "GPU" not in expected.split(",")


# Item 13: what would let a file run code when it is loaded.
UNPICKLING_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}


def unpickling_uses(source, filename="<source>"):
  """`file:line what` for every import of an unpickling module, np.load(allow_pickle=anything but
  False), torch.load and read_pickle in `source`."""
  found = []
  for node in ast.walk(ast.parse(source, filename)):
    names = []
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level:
      names = [node.module or ""]
    found += [f"{filename}:{node.lineno} import {n}" for n in names
              if n.split(".")[0] in UNPICKLING_MODULES]
    if not isinstance(node, ast.Call):
      continue
    for keyword in node.keywords:
      if keyword.arg == "allow_pickle" and not (isinstance(keyword.value, ast.Constant)
                                                and keyword.value.value is False):
        found.append(f"{filename}:{node.lineno} allow_pickle={ast.unparse(keyword.value)}")
    func = node.func
    if isinstance(func, ast.Attribute):
      owner = func.value.id if isinstance(func.value, ast.Name) else None
      if func.attr == "read_pickle" or (owner == "torch" and func.attr == "load"):
        found.append(f"{filename}:{node.lineno} {ast.unparse(func)}")
  return found


def test_the_unpickling_finder_finds_each_form():
  source = textwrap.dedent("""
      import pickle
      import joblib.numpy_pickle
      from dill import loads
      from cloudpickle import load
      import shelve
      x = np.load("a.npy", allow_pickle=True)
      y = numpy.load("a.npy", allow_pickle=flag)
      z = torch.load("model.bin")
      w = pd.read_pickle("frame.pkl")
      fine = np.load("a.npy", allow_pickle=False), np.load("b.npy"), json.load(f), tf.saved_model
      """)
  found = unpickling_uses(source)
  assert sorted(f.split(" ", 1)[1] for f in found) == sorted([
      "import pickle", "import joblib.numpy_pickle", "import dill", "import cloudpickle",
      "import shelve", "allow_pickle=True", "allow_pickle=flag", "torch.load", "pd.read_pickle"])


def test_no_module_of_the_packages_unpickles():
  found = []
  for package in ("adapter_keras", "automl_baseline"):
    for directory, _, files in os.walk(os.path.join(REPO_ROOT, package)):
      for name in sorted(files):
        if name.endswith(".py"):
          path = os.path.join(directory, name)
          with open(path, encoding="utf-8") as f:
            found += unpickling_uses(f.read(), os.path.relpath(path, REPO_ROOT))
  assert not found, found
