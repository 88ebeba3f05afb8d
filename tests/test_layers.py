"""The adapter layer, the adapter block's wiring and the encoder's configs."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.nlp.modeling import layers as mg_layers
from official.nlp.modeling import networks

from adapter_keras.config import AdapterConfig
from adapter_keras.encoder import AdapterBertEncoder, BertConfig, build_encoder
from adapter_keras.layers import AdapterTransformerEncoderBlock, BottleneckAdapter, SublayerWithAdapter

TINY = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=32)


def _inputs(batch=3, length=9, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, TINY.vocab_size, (batch, length)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[0, 6:] = 0
  return dict(input_word_ids=tf.constant(ids), input_mask=tf.constant(mask),
              input_type_ids=tf.constant((np.arange(length) > 4).astype(np.int32)[None].repeat(batch, 0)))


@pytest.mark.parametrize("d,m", [(32, 1), (32, 8), (384, 64), (768, 64), (1024, 256)])
def test_adapter_parameter_count_is_2md_plus_d_plus_m(d, m):
  adapter = BottleneckAdapter(m)
  adapter.build((None, None, d))
  assert sum(int(np.prod(v.shape)) for v in adapter.parameters) == 2 * m * d + d + m
  assert sum(int(np.prod(v.shape)) for v in adapter.trainable_weights) == 2 * m * d + d + m


def test_adapter_initialisation_is_truncated_normal_with_zero_biases():
  adapter = BottleneckAdapter(64, init_std=0.01, seed=3)
  adapter.build((None, 256))
  down, up = adapter.down_project.kernel.numpy(), adapter.up_project.kernel.numpy()
  for kernel in (down, up):
    assert np.abs(kernel).max() <= 2 * 0.01 + 1e-7  # cut at two standard deviations
    # A normal truncated at +-2 sigma has std 0.88 sigma.
    assert 0.8 * 0.01 < kernel.std() < 0.95 * 0.01
  assert not np.allclose(down[:64, :64], up[:64, :64].T)  # each kernel has its own initializer
  assert not np.any(adapter.down_project.bias.numpy())
  assert not np.any(adapter.up_project.bias.numpy())


def test_unseeded_adapters_differ():
  a, b = BottleneckAdapter(8), BottleneckAdapter(8)
  a.build((None, 16))
  b.build((None, 16))
  assert not np.allclose(a.down_project.kernel.numpy(), b.down_project.kernel.numpy())


def test_adapter_is_near_identity_and_exact_identity_when_disabled():
  x = tf.random.normal((2, 5, 32), seed=1)
  adapter = BottleneckAdapter(8, init_std=1e-2)
  y = adapter(x)
  assert float(tf.reduce_max(tf.abs(y - x))) < 1e-2
  assert float(tf.reduce_max(tf.abs(y - x))) > 0
  adapter.set_enabled(False)
  np.testing.assert_array_equal(adapter(x).numpy(), x.numpy())
  assert not adapter.is_enabled


def test_adapter_computes_x_plus_up_act_down_x():
  x = tf.random.normal((4, 16), seed=2)
  adapter = BottleneckAdapter(4, activation="relu", init_std=0.5, seed=1)
  y = adapter(x).numpy()
  w1, b1 = adapter.down_project.kernel.numpy(), adapter.down_project.bias.numpy()
  w2, b2 = adapter.up_project.kernel.numpy(), adapter.up_project.bias.numpy()
  expected = x.numpy() + np.maximum(x.numpy() @ w1 + b1, 0) @ w2 + b2
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_first", [False, True])
def test_block_places_adapters_after_the_two_output_dropouts(norm_first):
  block = AdapterTransformerEncoderBlock(
      num_attention_heads=4, inner_dim=64, inner_activation="gelu", norm_first=norm_first,
      adapter_config=AdapterConfig(size=8))
  block(tf.zeros((1, 3, 32)))
  for wrapper in (block._attention_dropout, block._output_dropout):
    assert isinstance(wrapper, SublayerWithAdapter)
    assert isinstance(wrapper.sublayer, tf_keras.layers.Dropout)
    assert isinstance(wrapper.adapter, BottleneckAdapter)
  assert len(block.adapters) == 2


@pytest.mark.parametrize("norm_first", [False, True])
def test_block_with_disabled_adapters_equals_plain_block_exactly(norm_first):
  kwargs = dict(num_attention_heads=4, inner_dim=64, inner_activation="gelu", norm_first=norm_first)
  plain = mg_layers.TransformerEncoderBlock(name="block", **kwargs)
  with_adapters = AdapterTransformerEncoderBlock(
      adapter_config=AdapterConfig(size=8, init_std=0.5), name="block", **kwargs)
  x = tf.random.normal((2, 6, 32), seed=4)
  mask = tf.ones((2, 6, 6))
  plain([x, mask])
  with_adapters([x, mask])
  plain_vars = plain.weights
  base_vars = [v for v in with_adapters.weights if "adapter" not in v.name]
  assert [v.name for v in plain_vars] == [v.name for v in base_vars]
  for src, dst in zip(plain_vars, base_vars):
    dst.assign(src)
  expected = plain([x, mask]).numpy()
  assert np.abs(with_adapters([x, mask]).numpy() - expected).max() > 1e-3  # std 0.5: adapters matter
  with_adapters.set_adapters_enabled(False)
  np.testing.assert_array_equal(with_adapters([x, mask]).numpy(), expected)


def test_block_adapter_really_sits_before_residual_and_layer_norm():
  """With the FFN adapter forced to output a constant c, the block's output
  must be LayerNorm(c + attention_output): adapter first, then residual + LN."""
  block = AdapterTransformerEncoderBlock(
      num_attention_heads=4, inner_dim=64, inner_activation="gelu",
      adapter_config=AdapterConfig(size=4, positions="ffn"))
  x = tf.random.normal((1, 5, 32), seed=5)
  block(x)
  adapter = block.adapters[0]
  # Zero the FFN output projection: the adapter then sees 0 and adds
  # up(act(down(0))) = up(act(b_down)) + b_up, which we make non-trivial.
  block._output_dense.kernel.assign(tf.zeros_like(block._output_dense.kernel))
  block._output_dense.bias.assign(tf.zeros_like(block._output_dense.bias))
  adapter.up_project.bias.assign(np.linspace(-1, 1, 32).astype(np.float32))
  out = block(x).numpy()
  # Recompute the attention half by hand with the block's own sublayers.
  attention = block._attention_layer(query=x, value=x)
  attention_out = block._attention_layer_norm(x + attention)
  up_of_zero = adapter.up_project(adapter.activation(adapter.down_project(tf.zeros((1, 5, 32)))))
  expected = block._output_layer_norm(up_of_zero + attention_out).numpy()
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_encoder_has_two_adapters_per_layer_and_respects_positions_and_layers():
  assert len(build_encoder(TINY, AdapterConfig(size=4)).adapters()) == 4
  assert len(build_encoder(TINY, AdapterConfig(size=4, positions="ffn")).adapters()) == 2
  assert len(build_encoder(TINY, AdapterConfig(size=4, layers=[1])).adapters()) == 2
  encoder = build_encoder(TINY, AdapterConfig(size=[3, 5]))
  assert [a.bottleneck_size for a in encoder.adapters()] == [3, 3, 5, 5]
  assert build_encoder(TINY, None).adapters() == []


def test_encoder_keeps_model_garden_variable_names_and_checkpoint_keys(tmp_path):
  plain = networks.BertEncoderV2(name="encoder", **TINY.encoder_kwargs())
  plain(_inputs())
  adapted = build_encoder(TINY, AdapterConfig(size=4))
  plain_names = sorted(v.name for v in plain.weights)
  assert sorted(v.name for v in adapted.weights if "adapter" not in v.name) == plain_names
  plain_keys = {k for k, _ in tf.train.list_variables(
      tf.train.Checkpoint(encoder=plain).write(str(tmp_path / "plain")))}
  adapted_keys = {k for k, _ in tf.train.list_variables(
      tf.train.Checkpoint(encoder=adapted).write(str(tmp_path / "adapted")))}
  assert plain_keys <= adapted_keys
  assert all("adapter" in k for k in adapted_keys - plain_keys)


def test_encoder_near_identity_at_init_and_exact_when_disabled():
  plain = networks.BertEncoderV2(name="encoder", **TINY.encoder_kwargs())
  inputs = _inputs()
  plain(inputs)
  adapted = build_encoder(TINY, AdapterConfig(size=8))
  base = {v.name: v for v in adapted.weights if "adapter" not in v.name}
  assert len(base) == len(plain.weights)
  for src in plain.weights:
    base[src.name].assign(src)
  expected = plain(inputs)["sequence_output"].numpy()
  got = adapted(inputs)["sequence_output"].numpy()
  relative = np.linalg.norm(got - expected) / np.linalg.norm(expected)
  assert 0 < relative < 1e-3
  adapted.set_adapters_enabled(False)
  np.testing.assert_array_equal(adapted(inputs)["sequence_output"].numpy(), expected)
  adapted.set_adapters_enabled(True, layers=[1])
  assert [a.is_enabled for a in adapted.adapters()] == [False, False, True, True]


def test_block_and_encoder_get_config_round_trip():
  block = AdapterTransformerEncoderBlock(
      num_attention_heads=4, inner_dim=64, inner_activation="gelu",
      adapter_config=AdapterConfig(size=[2, 6], positions="attention"), layer_index=1, adapter_seed=7)
  clone = AdapterTransformerEncoderBlock.from_config(block.get_config())
  assert clone.get_config() == block.get_config()
  clone(tf.zeros((1, 2, 32)))
  assert [a.bottleneck_size for a in clone.adapters] == [6]

  encoder = build_encoder(TINY, AdapterConfig(size=4, activation="relu"), adapter_seed=3)
  config = encoder.get_config()
  restored = tf_keras.layers.deserialize(tf_keras.layers.serialize(encoder))
  assert isinstance(restored, AdapterBertEncoder)
  assert restored.get_config()["adapter_config"] == config["adapter_config"]
  restored(_inputs())
  assert [v.shape for v in restored.weights] == [v.shape for v in encoder.weights]
  # Same seed, same config -> same adapter initialisation.
  for a, b in zip(encoder.adapters(), restored.adapters()):
    np.testing.assert_array_equal(a.down_project.kernel.numpy(), b.down_project.kernel.numpy())
