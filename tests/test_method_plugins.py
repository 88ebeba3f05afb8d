"""A tuning method is one folder: a toy plugin, defined here and installed as a package on the path (its
entry point in the adapter_keras.methods group), goes through params, `adapter-keras train`, the front door,
save/load, export, the multi-task bank and a sweep without any change to the library."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from adapter_keras import methods
from adapter_keras.artifacts import read_manifest, read_weights, variable_key
from adapter_keras.config import AdapterConfig
from adapter_keras.models import AdapterClassifier, load_adapter
from adapter_keras.serving.multitask import MultiTaskModel
from adapter_keras.tasks import classification_task
from adapter_keras.tasks.data import TextExamples
from adapter_keras.testing import tiny_sentiment_data
from adapter_keras.train.config import TrainConfig
from tests.conftest import REPO_ROOT
from tests.helpers import run_cli

# The plugin: a learned scale vector on each Transformer block's output, initialised to ones (so the model
# starts as the base). Only its scales and the head train.
PLUGIN = textwrap.dedent('''
    """A toy tuning method: a learned scale on every block's output."""
    import tf_keras

    from adapter_keras.methods import TuningMethod, mark_added
    from adapter_keras.methods.sites import wrap_sublayer


    class Scale(tf_keras.layers.Layer):
      def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

      def call(self, x):
        return x * self.scale


    class ScaledOutput(tf_keras.layers.Layer):
      def __init__(self, sublayer, **kwargs):
        super().__init__(**kwargs)
        self.sublayer = sublayer
        self.scaler = mark_added(Scale(name="scale"), "block-scale")

      def call(self, x):
        return self.scaler(self.sublayer(x))


    class BlockScale(TuningMethod):
      name = "block-scale"

      def inject(self, encoder, config, seed=None):
        for block in encoder.transformer_layers:
          wrap_sublayer(block, "block_output", lambda layer: ScaledOutput(layer, name="block_scale"))

      def trains(self, site, config):
        return site.is_head or site.added_by == self.name

      def trained_params(self, shape, config):
        return shape.num_layers * shape.hidden_size + shape.head_params


    METHOD = BlockScale()
''')
SCALES = ["encoder/transformer/layer_0/block_scale/scale/scale", "encoder/transformer/layer_1/block_scale/scale/scale"]
HEAD = ["head/bias", "head/kernel"]


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
  """A directory holding the plugin installed as a distribution (module + dist-info with its entry point)."""
  root = tmp_path_factory.mktemp("plugin")
  (root / "block_scale_plugin.py").write_text(PLUGIN)
  info = root / "block_scale_plugin-1.0.dist-info"
  info.mkdir()
  (info / "METADATA").write_text("Metadata-Version: 2.1\nName: block-scale-plugin\nVersion: 1.0\n")
  (info / "entry_points.txt").write_text("[adapter_keras.methods]\nblock-scale = block_scale_plugin:METHOD\n")
  sys.path.insert(0, str(root))
  try:
    yield str(root)
  finally:
    sys.path.remove(str(root))
    methods.unregister("block-scale")


def _cli(plugin_path, *argv, timeout=600):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([plugin_path, REPO_ROOT]), TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run([sys.executable, "-m", "adapter_keras", *argv], capture_output=True, text=True, env=env,
                       cwd=REPO_ROOT, timeout=timeout)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.fixture(scope="module")
def cli_run(plugin_path, glue_dir, encoder_dir, tmp_path_factory):
  """`adapter-keras train --method block-scale`, the plugin found by its entry point (in this process: the
  params test runs the command line in a fresh one)."""
  out = str(tmp_path_factory.mktemp("plugin_run") / "run")
  status, _, stderr = run_cli(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--method", "block-scale", "--epochs", "1", "--batch-size", "16", "--learning-rate",
                               "1e-2", "--out", out, "--json"])
  assert status == 0, stderr
  return out


def test_the_plugin_is_found_by_its_entry_point_and_counted_by_params(plugin_path):
  assert "block-scale" in methods.method_names()
  assert methods.get_method("block-scale").name == "block-scale"  # loaded from the entry point
  result = json.loads(_cli(plugin_path, "params", "--arch", "minilm-l6", "--method", "block-scale",
                           "--json").strip().splitlines()[-1])
  assert result["adapter_params"] == 6 * 384  # what the method added
  assert result["trained_params"] == 6 * 384 + 384 * 2 + 2  # the plugin's formula, counted


def test_the_formula_and_the_fingerprint_on_a_built_model(plugin_path, encoder_dir):
  model = AdapterClassifier.from_pretrained(encoder_dir, method="block-scale", seed=0)
  spec = methods.get_method("block-scale")
  report = model.parameter_report()
  assert spec.trained_params(methods.model_shape(model, model.bert_config), spec.make_config()) == \
      report.trained_params == 2 * 32 + 32 * 2 + 2
  assert sorted(variable_key(model, v) for v in model.trainable_variables) == sorted(SCALES + HEAD)
  # The scales start at one: the model computes the base's function, and the base's fingerprint is unchanged.
  plain = AdapterClassifier.from_pretrained(encoder_dir, method="layer-norm", seed=0)
  assert model.base_fingerprint == plain.base_fingerprint
  np.testing.assert_allclose(model.encoder(model.preprocessor(tf.constant(["a b c"])))["sequence_output"],
                             plain.encoder(plain.preprocessor(tf.constant(["a b c"])))["sequence_output"], atol=1e-6)


def test_the_command_lines_artifact_loads_in_the_front_door_and_exports(plugin_path, cli_run, encoder_dir, tmp_path):
  artifact = os.path.join(cli_run, "artifact")
  manifest = read_manifest(artifact)
  assert manifest["format_version"] == 3 and manifest["method"] == "block-scale" and manifest["method_config"] == {}
  assert sorted(read_weights(artifact)) == sorted(SCALES + HEAD)
  model = load_adapter(artifact, encoder_dir)
  assert type(model) is AdapterClassifier and model.method == "block-scale"
  trained = {k: v for k, v in read_weights(artifact).items()}
  assert not np.allclose(trained[SCALES[0]], 1.0)  # the scales trained
  # Round trip through the front door's save_adapter: bit-identical.
  model.save_adapter(str(tmp_path / "again"))
  again = read_weights(str(tmp_path / "again"))
  for key, value in trained.items():
    np.testing.assert_array_equal(again[key], value)
  # A string-in SavedModel reloaded with TensorFlow and tensorflow-text only.
  texts = ["a good film", "a bad film with a dull plot"]
  model.export(str(tmp_path / "served"))
  code = ("import sys, json, tensorflow as tf, tensorflow_text\n"
          "serve = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
          "print(json.dumps(serve(text=tf.constant(sys.argv[2:]))['probabilities'].numpy().tolist()))")
  out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "served"), *texts], capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert out.returncode == 0, out.stderr[-2000:]
  assert "adapter_keras" not in out.stderr
  np.testing.assert_allclose(json.loads(out.stdout.strip().splitlines()[-1]), model.predict(texts), atol=1e-5)


def test_the_front_door_fits_and_round_trips_bit_identically(plugin_path, encoder_dir, sentiment_examples, tmp_path):
  train, _ = sentiment_examples
  model = AdapterClassifier.from_pretrained(encoder_dir, method="block-scale", labels=["neg", "pos"], seed=0)
  model.compile(learning_rate=1e-2)
  model.fit(train.text, train.labels, batch_size=16, epochs=1, verbose=0)
  model.save_adapter(str(tmp_path / "artifact"))
  loaded = AdapterClassifier.load_adapter(str(tmp_path / "artifact"), encoder_dir)
  for variable, again in zip(model.trainable_variables, loaded.trainable_variables):
    np.testing.assert_array_equal(variable.numpy(), again.numpy())
  np.testing.assert_array_equal(loaded.predict(train.text), model.predict(train.text))


def test_the_bank_serves_the_plugin_beside_adapters_and_earlier_tasks_stay_bit_identical(plugin_path, encoder_dir,
                                                                                         tmp_path):
  texts, labels = tiny_sentiment_data(32, seed=0)
  bank = MultiTaskModel.from_encoder(encoder_dir)
  task = classification_task("first", ("0", "1"))
  bank.add_task("first", task, AdapterConfig(size=4), seed=0)
  config = TrainConfig(encoder=encoder_dir, learning_rate=1e-2, epochs=1, batch_size=16)
  bank.train("first", TextExamples(texts, labels), {"dev": TextExamples(texts, labels)}, config, verbose=False)
  before = bank.predict(texts, task="first")
  bank.add_task("scaled", classification_task("scaled", ("0", "1")), method="block-scale", seed=1)
  bank.train("scaled", TextExamples(texts, labels), {"dev": TextExamples(texts, labels)}, config, verbose=False)
  np.testing.assert_array_equal(bank.predict(texts, task="first"), before)
  bank.export(str(tmp_path / "served"))
  served = tf.saved_model.load(str(tmp_path / "served"))
  out = served.signatures["mixed"](text=tf.constant(texts[:4]), text_b=tf.constant([""] * 4),
                                   task=tf.constant(["first", "scaled", "first", "scaled"]))
  expected = [bank.predict(texts[i:i + 1], task=t).max() for i, t in enumerate(["first", "scaled"] * 2)]
  np.testing.assert_allclose(out["score"].numpy(), expected, atol=1e-5)
  # A method that trains the base's own weights cannot join a bank whose tasks share them.
  with pytest.raises(ValueError, match="trains the base's own weights"):
    bank.add_task("full", classification_task("full", ("0", "1")), method="full")
  # Nor one whose inject changes a layer the tasks share, as its plugin declares (a LoRA task has wrappers of
  # its own: tests/test_multitask_methods.py).
  shared_changer = type("SharedChanger", (type(methods.get_method("block-scale")),),
                        dict(name="shared-changer", wraps_shared_layers=True))()
  methods.register(shared_changer)
  try:
    with pytest.raises(ValueError, match="method 'shared-changer' changes layers the tasks share"):
      bank.add_task("shared", classification_task("shared", ("0", "1")), method="shared-changer")
  finally:
    methods.unregister("shared-changer")
  base = {id(v) for v in bank.base.encoder.weights}  # the refusals left the shared base frozen
  assert not [v for v in bank["first"].trainable_variables if id(v) in base]


def test_a_sweep_runs_the_plugin(plugin_path, glue_dir, encoder_dir, tmp_path):
  out = str(tmp_path / "sweep")
  status, _, stderr = run_cli(["sweep", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                               "--method", "block-scale", "--learning-rates", "1e-2", "--epochs", "1", "--seeds",
                               "0", "--batch-size", "16", "--max-train-examples", "16", "--out", out])
  assert status == 0, stderr
  with open(os.path.join(out, "best.json"), encoding="utf-8") as f:
    best = json.load(f)
  assert best["method"] == "block-scale" and best["trials"] == 1
  assert np.isfinite(best["best_setting"]["score"])
