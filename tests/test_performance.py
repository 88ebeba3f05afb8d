"""Speed options (docs/performance.md): frozen-bottom cache, frozen gradients, XLA padding, mixed precision."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from adapter_keras.config import AdapterConfig
from adapter_keras.methods.adapter.layers import BottleneckAdapter
from adapter_keras.methods import apply_method, parameter_report, frozen_bottom_start_layer
from adapter_keras.networks import TaskModel, frozen_bottom
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import load_encoder
from adapter_keras.tasks.data import TextExamples
from adapter_keras.testing import tiny_sentiment_data, write_tiny_hf_bert
from adapter_keras.train import evaluation, inputs, optim
from adapter_keras.train.classification import compile_task_model
from adapter_keras.train.loop import seed_everything
from adapter_keras.train.frozen_bottom_cache import FrozenBottomCache

TOP_HALF = AdapterConfig(size=8, layers=(2, 3))


@pytest.fixture(scope="module")
def four_layer_dir(tmp_path_factory):
  """A 4-layer tiny BERT without dropout: runs differ only where the computation does."""
  return write_tiny_hf_bert(str(tmp_path_factory.mktemp("four_layers")), seed=0, num_layers=4, dropout=0.0)


@pytest.fixture(scope="module")
def preprocessor(four_layer_dir):
  return BertPreprocessor(f"{four_layer_dir}/vocab.txt", max_seq_length=32)


@pytest.fixture(scope="module")
def encoded(preprocessor):
  texts, labels = tiny_sentiment_data(60, seed=4)
  texts = [t + " and the cat sat on the mat" * (i % 3) for i, t in enumerate(texts)]
  return inputs.encode_examples(preprocessor, TextExamples(texts, labels))


def _model(directory, adapter_config=TOP_HALF, pooling="mean", method="adapter", freeze=True):
  seed_everything(0)
  loaded = load_encoder(directory, adapter_config if method == "adapter" else None, adapter_seed=0)
  model = TaskModel(loaded.encoder, 2, pooling=pooling, dropout_rate=0.0, head_seed=0)
  model.build_with_dummy_inputs()
  apply_method(model, method)
  if freeze:
    frozen_bottom.freeze_bottom(model, 2)
  return model


def test_frozen_bottom_start_layer_accepts_only_a_top_range_or_top_k():
  assert frozen_bottom_start_layer("adapter", 6, AdapterConfig(layers=(3, 4, 5))) == 3
  assert frozen_bottom_start_layer("adapter", 4, AdapterConfig(size=(0, 0, 8, 8))) == 2
  assert frozen_bottom_start_layer("top-k", 6, top_k=2) == 4
  for method, config, top_k, message in (
      ("adapter", AdapterConfig(), None, "no frozen bottom"),
      ("adapter", AdapterConfig(layers=(3, 5)), None, "top range"),
      ("adapter", AdapterConfig(layers=(0, 1)), None, "top range"),
      ("adapter", AdapterConfig(layers=(4, 5), norm="batch"), None, "BatchNorm"),
      ("top-k", None, 6, "no frozen bottom"),
      ("full", None, None, "applies to methods"),
      ("layer-norm", None, None, "applies to methods")):
    with pytest.raises(ValueError, match=message):
      frozen_bottom_start_layer(method, 6, config, top_k)


def test_freeze_bottom_freezes_embedding_and_lower_layer_norms_and_the_split_model_insists(four_layer_dir):
  model = _model(four_layer_dir, freeze=False)
  before = parameter_report(model).trained_params
  with pytest.raises(ValueError, match="freeze_bottom"):
    frozen_bottom.FrozenBottomModel(model, 2)
  assert any("embeddings/layer_norm" in n for n in frozen_bottom.trainable_bottom_variables(model, 2))
  frozen_bottom.freeze_bottom(model, 2)
  assert frozen_bottom.trainable_bottom_variables(model, 2) == []
  names = [v.name for v in model.trainable_variables]
  assert not any("layer_0/" in n or "layer_1/" in n or "embeddings" in n for n in names)
  assert any("layer_2/" in n and "layer_norm" in n for n in names)  # LayerNorms from layer k on still train
  # 2 LayerNorms x (scale, offset) x hidden 32 per frozen layer, plus the embedding LayerNorm.
  assert before - parameter_report(model).trained_params == (2 * 2 + 2) * 32 + 2 * 2 * 32
  frozen_bottom.FrozenBottomModel(model, 2)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_split_model_computes_what_the_task_model_computes(four_layer_dir, encoded, pooling):
  model = _model(four_layer_dir, pooling=pooling)
  split = frozen_bottom.FrozenBottomModel(model, 2)
  cache = FrozenBottomCache.build(split, encoded, batch_size=7)
  assert len(cache) == len(encoded) and cache.nbytes == int(encoded.lengths.sum()) * 32 * 4
  for features, _ in inputs.make_dataset(encoded, 16, prefix_cache=cache):
    plain = {k: v for k, v in features.items() if k != frozen_bottom.BOTTOM_OUTPUT}
    expected = model(plain, training=False).numpy()
    np.testing.assert_allclose(split(plain, training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(split(features, training=False).numpy(), expected, rtol=1e-5, atol=1e-6)
    mask = features["input_mask"].numpy().astype(bool)
    assert not features[frozen_bottom.BOTTOM_OUTPUT].numpy()[~mask].any()  # padding is zeros


class _BatchLosses(tf_keras.callbacks.Callback):
  def __init__(self):
    super().__init__()
    self.losses = []

  def on_train_batch_end(self, batch, logs=None):
    self.losses.append(logs["loss"])


def _train(fit_model, dataset, epochs=6):
  batches = sum(1 for _ in dataset)
  compile_task_model(fit_model, optim.create_optimizer(3e-2, batches * epochs))
  recorder = _BatchLosses()
  fit_model.fit(dataset, epochs=epochs, verbose=0, callbacks=[recorder])
  return np.array(recorder.losses)


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_cached_training_follows_the_uncached_loss_trajectory(four_layer_dir, encoded, tmp_path, storage):
  """Same semantics on both sides: prefix frozen, no dropout; same batches in the same order."""
  reference = _model(four_layer_dir)
  reference_losses = _train(reference, inputs.make_dataset(
      encoded, 16, shuffle=True, seed=3, bucket_by_length=True))

  model = _model(four_layer_dir)
  split = frozen_bottom.FrozenBottomModel(model, 2)
  if storage == "memory":
    cache = FrozenBottomCache.build(split, encoded)
  else:
    cache = FrozenBottomCache.build(split, encoded, cache_dir=str(tmp_path), max_memory_bytes=0)
  assert cache.on_disk == (storage == "disk")
  cached_losses = _train(split, inputs.make_dataset(
      encoded, 16, shuffle=True, seed=3, bucket_by_length=True, prefix_cache=cache))

  assert len(cached_losses) == len(reference_losses) >= 16
  assert reference_losses[-1] < 0.95 * reference_losses[0]  # it does learn
  np.testing.assert_allclose(cached_losses, reference_losses, rtol=1e-4, atol=1e-6)
  for trained, expected in zip(model.trainable_variables, reference.trainable_variables):
    np.testing.assert_allclose(trained.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5, err_msg=trained.name)
  if storage == "disk":
    path = cache.path
    assert os.path.exists(path)
    cache.close()
    assert not os.path.exists(path)


def test_cache_size_guard_refuses_or_spills_to_disk(four_layer_dir, encoded, tmp_path):
  split = frozen_bottom.FrozenBottomModel(_model(four_layer_dir), 2)
  with pytest.raises(ValueError, match="memory limit"):
    FrozenBottomCache.build(split, encoded, max_memory_bytes=1000)
  on_disk = FrozenBottomCache.build(split, encoded, cache_dir=str(tmp_path / "c"), max_memory_bytes=1000)
  in_memory = FrozenBottomCache.build(split, encoded)
  assert on_disk.on_disk and not in_memory.on_disk
  assert os.path.getsize(on_disk.path) == in_memory.nbytes
  np.testing.assert_array_equal(np.asarray(on_disk.values), in_memory.values)
  with pytest.raises(ValueError, match="same encoded examples"):
    inputs.make_dataset(inputs.EncodedExamples(encoded.word_ids[:5], encoded.type_ids[:5],
                                               encoded.labels[:5]), prefix_cache=in_memory)


class _RecordingAdam(tf_keras.optimizers.Adam):
  """Adam that remembers which variables Keras's train step hands it gradients for."""

  def apply_gradients(self, grads_and_vars, *args, **kwargs):
    grads_and_vars = list(grads_and_vars)
    self.updated = [v for g, v in grads_and_vars if g is not None]
    return super().apply_gradients(grads_and_vars, *args, **kwargs)


@pytest.mark.parametrize("method", ["adapter", "layer-norm", "adapter-top-half"])
def test_frozen_variables_get_no_gradient_and_stay_bit_identical(four_layer_dir, encoded, method):
  model = (_model(four_layer_dir) if method == "adapter-top-half"
           else _model(four_layer_dir, AdapterConfig(size=8), method=method, freeze=False))
  trainable = {id(v) for v in model.trainable_variables}
  frozen = {v.name: v.numpy().copy() for v in model.variables if id(v) not in trainable}
  model.compile(optimizer=_RecordingAdam(1e-2), loss=tf_keras.losses.SparseCategoricalCrossentropy(True))
  model.fit(inputs.make_dataset(encoded, 16), epochs=2, verbose=0)
  # The step differentiates exactly the trainable variables: no frozen one has a gradient.
  assert [id(v) for v in model.optimizer.updated] == [id(v) for v in model.trainable_variables]
  for v in model.variables:
    if v.name in frozen:
      np.testing.assert_array_equal(v.numpy(), frozen[v.name], err_msg=v.name)
  assert len(frozen) > len(trainable)


def test_split_model_backpropagates_into_no_prefix_layer(four_layer_dir, encoded):
  """Above layer k backprop passes through frozen layers (activation gradients);
  below it, nothing: the prefix output is a constant to the tape."""
  model = _model(four_layer_dir)
  split = frozen_bottom.FrozenBottomModel(model, 2)
  features, labels = next(iter(inputs.make_dataset(encoded, 16)))
  prefix_variables = [v for layer in frozen_bottom.frozen_bottom_layers(model.encoder, 2) for v in layer.weights]
  frozen_above = list(model.encoder.transformer_layers[3]._intermediate_dense.weights)
  with tf.GradientTape(persistent=True) as tape:
    loss = tf.reduce_mean(tf_keras.losses.sparse_categorical_crossentropy(
        labels, split(features, training=True), from_logits=True))
  assert all(g is None for g in tape.gradient(loss, prefix_variables))
  assert all(g is not None for g in tape.gradient(loss, frozen_above + model.trainable_variables))


def test_pad_to_multiple_bounds_lengths_and_keeps_order_and_content(encoded):
  longest = int(encoded.lengths.max())
  order = np.random.default_rng(0).permutation(len(encoded))
  seen, lengths = [], set()
  for features, labels in inputs.make_dataset(encoded, 8, order=order, pad_to_multiple=16):
    word_ids, mask = features["input_word_ids"].numpy(), features["input_mask"].numpy()
    length = word_ids.shape[1]
    lengths.add(length)
    assert length % 16 == 0 or length == longest
    assert length - mask.sum(axis=1).max() < 16
    for row, i in enumerate(order[len(seen):len(seen) + len(labels)]):
      n = encoded.lengths[i]
      np.testing.assert_array_equal(word_ids[row, :n], encoded.word_ids[i].numpy())
      assert mask[row, :n].all() and not mask[row, n:].any() and not word_ids[row, n:].any()
    seen.extend(labels.numpy().tolist())
  assert seen == encoded.labels[order].tolist()
  assert lengths <= {16, 32, longest}
  with pytest.raises(ValueError, match="order"):
    inputs.make_dataset(encoded, 8, order=[0, len(encoded)])


def test_jit_compiled_train_and_predict_match_the_plain_ones(tmp_path, encoded):
  # One layer and one batch each for training and prediction: XLA compiles
  # slowly on CPU, once per program and shape.
  one_layer_dir = write_tiny_hf_bert(str(tmp_path), seed=0, num_layers=1, dropout=0.0)
  eval_batches = inputs.make_dataset(encoded, 64, pad_to_multiple=inputs.JIT_PAD_MULTIPLE)
  results = {}
  for jit in (False, True):
    model = _model(one_layer_dir, AdapterConfig(size=8), freeze=False)
    compile_task_model(model, optim.create_optimizer(1e-3, 2), jit_compile=jit)
    before = evaluation.predict_outputs(model, eval_batches)
    history = model.fit(inputs.make_dataset(encoded, 64, shuffle=True, seed=1,
                                            pad_to_multiple=inputs.JIT_PAD_MULTIPLE), verbose=0)
    results[jit] = before, history.history["loss"], evaluation.predict_outputs(model, eval_batches)
  # XLA's fused kernels round differently; the results agree to float32 noise.
  for plain, compiled in zip(results[False], results[True]):
    np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mixed_precision", ["bfloat16", "float16"])
def test_mixed_precision_builds_and_trains_a_step(four_layer_dir, encoded, mixed_precision):
  with optim.precision_policy(mixed_precision):
    model = _model(four_layer_dir, AdapterConfig(size=8), freeze=False)
  assert tf_keras.mixed_precision.global_policy().name == "float32"  # restored
  assert model.encoder.transformer_layers[0].compute_dtype == mixed_precision
  assert all(v.dtype == tf.float32 for v in model.trainable_variables)
  optimizer = optim.create_optimizer(1e-3, 10, mixed_precision=mixed_precision)
  assert isinstance(optimizer, tf_keras.mixed_precision.LossScaleOptimizer) == (mixed_precision == "float16")
  compile_task_model(model, optimizer)
  before = [v.numpy().copy() for v in model.trainable_variables]
  features, labels = next(iter(inputs.make_dataset(encoded, 16)))
  loss, _ = model.train_on_batch(features, labels)
  assert np.isfinite(loss)
  assert model(features).dtype == tf.float32
  assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
  with pytest.raises(ValueError, match="mixed_precision"):
    with optim.precision_policy("float8"):
      pass


@pytest.mark.parametrize("norm", [None, "layer", "batch"])
def test_adapter_runs_its_mlp_on_a_token_matrix_with_the_same_result(norm):
  adapter = BottleneckAdapter(6, init_std=0.3, seed=1, norm=norm, hidden_layers=2)
  x = tf.random.stateless_normal([3, 5, 12], seed=[0, 1])
  out = adapter(x, training=False).numpy()
  # Reference: the Dense layers on the [batch, seq, d] tensor itself (tf.tensordot's path).
  h = x
  if adapter.norm_layer is not None:  # built for [tokens, d] matrices
    h = tf.reshape(adapter.norm_layer(tf.reshape(x, [15, 12]), training=False), x.shape)
  h = adapter.activation(adapter.down_project(h))
  h = adapter.activation(adapter.hidden_projects[0](h))
  np.testing.assert_allclose(out, (x + adapter.up_project(h)).numpy(), rtol=1e-5, atol=1e-6)
  assert adapter.transform(tf.reshape(x, [15, 12])).shape == (15, 12)
