"""Adapter architecture variants (paper sec. 3.5): config, parameters, wiring, training."""
import argparse
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.nlp.modeling import layers as mg_layers
from official.nlp.modeling import networks

from adapter_keras.cli.flags import adapter_config_from_args, add_adapter_arguments
from adapter_keras.config import AdapterConfig
from adapter_keras.encoder import AdapterBertEncoder, BertConfig, build_encoder, dummy_inputs
from adapter_keras.methods.adapter.layers import BottleneckAdapter, SublayerInputTap, SublayerWithParallelAdapter
from adapter_keras.layers.block import AdapterTransformerEncoderBlock
from adapter_keras.networks import TaskModel
from adapter_keras.pretrained import load_encoder
from adapter_keras.testing import write_tiny_hf_bert
from adapter_keras.methods import apply_method, parameter_report

TINY = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=32)
# One layer and hidden size 16 keep the training tests' graph tracing short.
SMALLEST = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32)

VARIANTS = {
    "layer_norm": dict(norm="layer"),
    "batch_norm": dict(norm="batch"),
    "three_hidden_layers": dict(hidden_layers=3),
    "parallel": dict(placement="parallel"),
    "multiplicative": dict(interaction="multiplicative"),
}


def _extra_params(variant: dict, d: int, m: int) -> int:
  """Parameters a variant adds to the paper's 2md + d + m."""
  extra = 2 * d if variant.get("norm") else 0  # scale and offset of the input norm
  return extra + (variant.get("hidden_layers", 1) - 1) * (m * m + m)


def _count(variables) -> int:
  return int(sum(int(np.prod(v.shape)) for v in variables))


# ---------------------------------------------------------------- config


def test_defaults_are_the_houlsby_adapter_and_old_manifests_still_load():
  c = AdapterConfig()
  assert (c.norm, c.hidden_layers, c.placement, c.interaction) == (None, 1, "sequential", "additive")
  old_manifest_entry = dict(size=8, init_std=1e-3, activation="gelu", positions="both", layers=None)
  assert AdapterConfig.from_dict(old_manifest_entry) == AdapterConfig(size=8, init_std=1e-3)


@pytest.mark.parametrize("variant", list(VARIANTS.values()) + [
    dict(norm="batch", hidden_layers=2, placement="parallel", interaction="multiplicative",
         activation="tanh", positions="ffn", size=[3, 5])], ids=list(VARIANTS) + ["everything"])
def test_variant_config_round_trips(variant):
  config = AdapterConfig(**variant)
  assert AdapterConfig.from_dict(config.to_dict()) == config
  restored = AdapterConfig.from_dict(dict(config.to_dict()))
  for key, value in variant.items():
    assert restored.to_dict()[key] == (list(value) if isinstance(value, list) else value)


@pytest.mark.parametrize("kwargs", [
    dict(norm="group"), dict(norm="none"), dict(hidden_layers=0), dict(hidden_layers=True),
    dict(hidden_layers=1.5), dict(placement="middle"), dict(interaction="gated"), dict(scale=0),
    dict(scale="4")])
def test_invalid_variant_values_are_rejected(kwargs):
  with pytest.raises(ValueError):
    AdapterConfig(**kwargs)


# A value other than the default for each AdapterConfig field, as flag arguments and as the field's
# value. A new AdapterConfig field needs an entry here (the test below fails until it has one).
NON_DEFAULT_FLAG_VALUES = {
    "size": (["8"], 8),
    "init_std": (["1e-3"], 1e-3),
    "activation": (["relu"], "relu"),
    "positions": (["ffn"], "ffn"),
    "layers": (["0", "2"], (0, 2)),
    "norm": (["batch"], "batch"),
    "hidden_layers": (["2"], 2),
    "placement": (["parallel"], "parallel"),
    "interaction": (["multiplicative"], "multiplicative"),
    "scale": (["4"], 4.0),
}


def _flag(field_name: str) -> str:
  return "--adapter-" + field_name.replace("_", "-")


def test_adapter_flags_cover_every_field():
  parser = argparse.ArgumentParser()
  add_adapter_arguments(parser)
  flags = {option for action in parser._actions for option in action.option_strings}
  fields = dataclasses.fields(AdapterConfig)
  defaults = AdapterConfig()
  for field in fields:
    assert _flag(field.name) in flags, f"AdapterConfig.{field.name} has no {_flag(field.name)} flag"
    assert field.name in NON_DEFAULT_FLAG_VALUES, f"no test value for AdapterConfig.{field.name}"
    assert NON_DEFAULT_FLAG_VALUES[field.name][1] != getattr(defaults, field.name)
  assert adapter_config_from_args(parser.parse_args([])) == AdapterConfig()
  # Each field alone, then all together: the non-default value reaches the config.
  for field in fields:
    argv, value = NON_DEFAULT_FLAG_VALUES[field.name]
    config = adapter_config_from_args(parser.parse_args([_flag(field.name), *argv]))
    assert config == dataclasses.replace(defaults, **{field.name: value}), field.name
  argv = [arg for field in fields
          for arg in [_flag(field.name), *NON_DEFAULT_FLAG_VALUES[field.name][0]]]
  assert adapter_config_from_args(parser.parse_args(argv)) == AdapterConfig(
      **{field.name: NON_DEFAULT_FLAG_VALUES[field.name][1] for field in fields})
  args = parser.parse_args(["--adapter-size", "8", "--adapter-init-std", "1e-3",
                            "--adapter-activation", "relu", "--adapter-positions", "ffn",
                            "--adapter-norm", "batch", "--adapter-hidden-layers", "2",
                            "--adapter-placement", "parallel",
                            "--adapter-interaction", "multiplicative"])
  assert adapter_config_from_args(args) == AdapterConfig(
      size=8, init_std=1e-3, activation="relu", positions="ffn", norm="batch", hidden_layers=2,
      placement="parallel", interaction="multiplicative")
  assert adapter_config_from_args(parser.parse_args(["--adapter-norm", "none"])).norm is None
  without_size = argparse.ArgumentParser()
  add_adapter_arguments(without_size, with_size=False)
  assert "--adapter-size" not in {o for a in without_size._actions for o in a.option_strings}
  args = without_size.parse_args(["--adapter-norm", "layer"])
  assert adapter_config_from_args(args, size=4) == AdapterConfig(size=4, norm="layer")
  with pytest.raises(SystemExit):
    parser.parse_args(["--adapter-hidden-layers", "0"])


@pytest.mark.parametrize("name, fields", [
    ("houlsby", dict(positions="both", placement="sequential", scale=1.0)),
    ("pfeiffer", dict(positions="ffn", placement="sequential", scale=1.0)),
    ("scaled-parallel", dict(positions="ffn", placement="parallel", scale=4.0))])
def test_named_placements_are_flags_and_configs(name, fields):
  parser = argparse.ArgumentParser()
  add_adapter_arguments(parser)
  config = adapter_config_from_args(parser.parse_args(["--adapter-placement", name, "--adapter-size", "8"]))
  assert config == AdapterConfig(size=8, **fields) == AdapterConfig.named(name, size=8)
  assert config.placement_name == name
  assert AdapterConfig.from_dict(config.to_dict()) == config
  assert ("scale" in config.to_dict()) == (fields["scale"] != 1.0)  # 0.2.0 manifests and run identities
  if name != "houlsby":
    with pytest.raises(ValueError, match=f"--adapter-placement: the {name} placement sets positions itself"):
      adapter_config_from_args(parser.parse_args(["--adapter-placement", name, "--adapter-positions", "both"]))


# ---------------------------------------------------------------- the adapter layer


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("d,m", [(32, 8), (384, 64)])
def test_variant_parameter_count(name, d, m):
  variant = VARIANTS[name]
  adapter = BottleneckAdapter(m, norm=variant.get("norm"), hidden_layers=variant.get("hidden_layers", 1),
                              interaction=variant.get("interaction", "additive"))
  adapter.build((None, None, d))
  expected = 2 * m * d + d + m + _extra_params(variant, d, m)
  assert _count(adapter.parameters) == expected
  assert _count(adapter.trainable_weights) == expected
  # BatchNorm's moving mean and variance are state, not parameters.
  assert _count(adapter.statistics) == (2 * d if variant.get("norm") == "batch" else 0)


def _reference_delta(adapter: BottleneckAdapter, x: np.ndarray, training: bool = False) -> np.ndarray:
  """f(x) of an adapter, in numpy from its variables (the activation is relu)."""
  h = x
  if adapter.norm == "layer":
    norm = adapter.norm_layer
    mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mean) / np.sqrt(var + norm.epsilon) * norm.gamma.numpy() + norm.beta.numpy()
  elif adapter.norm == "batch":
    norm = adapter.norm_layer
    if training:
      mean, var = h.mean(0), h.var(0)
    else:
      mean, var = norm.moving_mean.numpy(), norm.moving_variance.numpy()
    h = (h - mean) / np.sqrt(var + norm.epsilon) * norm.gamma.numpy() + norm.beta.numpy()
  for dense in [adapter.down_project] + list(adapter.hidden_projects):
    h = np.maximum(h @ dense.kernel.numpy() + dense.bias.numpy(), 0)
  return h @ adapter.up_project.kernel.numpy() + adapter.up_project.bias.numpy()


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "parallel"])
def test_variant_computes_its_formula(name):
  variant = VARIANTS[name]
  x = tf.random.normal((6, 16), seed=2)
  adapter = BottleneckAdapter(4, activation="relu", init_std=0.5, seed=1, norm=variant.get("norm"),
                              hidden_layers=variant.get("hidden_layers", 1),
                              interaction=variant.get("interaction", "additive"))
  adapter.build(x.shape)
  if adapter.norm_layer is not None:  # non-trivial scale and offset
    adapter.norm_layer.gamma.assign(np.linspace(0.5, 1.5, 16).astype(np.float32))
    adapter.norm_layer.beta.assign(np.linspace(-0.2, 0.2, 16).astype(np.float32))
  delta = _reference_delta(adapter, x.numpy())
  expected = x.numpy() * (1 + delta) if name == "multiplicative" else x.numpy() + delta
  np.testing.assert_allclose(adapter(x).numpy(), expected, rtol=1e-4, atol=1e-5)
  # `base`: read x, modify another tensor (parallel placement).
  base = tf.random.normal((6, 16), seed=3)
  expected = base.numpy() * (1 + delta) if name == "multiplicative" else base.numpy() + delta
  np.testing.assert_allclose(adapter(x, base=base).numpy(), expected, rtol=1e-4, atol=1e-5)
  if name == "batch_norm":  # in training the batch's own statistics normalise
    expected = x.numpy() + _reference_delta(adapter, x.numpy(), training=True)
    np.testing.assert_allclose(adapter(x, training=True).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_hidden_layers_have_distinct_seeded_kernels_of_variance_preserving_scale():
  a = BottleneckAdapter(32, seed=5, hidden_layers=3)
  b = BottleneckAdapter(32, seed=5, hidden_layers=3)
  a.build((None, 64))
  b.build((None, 64))
  assert [l.name for l in a.hidden_projects] == ["hidden_1", "hidden_2"]
  first, second = (l.kernel.numpy() for l in a.hidden_projects)
  assert not np.allclose(first, second)
  np.testing.assert_array_equal(first, b.hidden_projects[0].kernel.numpy())
  assert 0.8 / np.sqrt(32) < first.std() < 0.95 / np.sqrt(32)  # truncated normal, std 1/sqrt(m)


# ---------------------------------------------------------------- the block


def _plain_and_adapted_blocks(config: AdapterConfig, norm_first: bool):
  kwargs = dict(num_attention_heads=4, inner_dim=64, inner_activation="gelu", norm_first=norm_first)
  plain = mg_layers.TransformerEncoderBlock(name="block", **kwargs)
  adapted = AdapterTransformerEncoderBlock(adapter_config=config, name="block", **kwargs)
  x = tf.random.normal((2, 6, 32), seed=4)
  mask = tf.ones((2, 6, 6))
  plain([x, mask])
  adapted([x, mask])
  base = [v for v in adapted.weights if "adapter" not in v.name]
  assert [v.name for v in base] == [v.name for v in plain.weights]
  for src, dst in zip(plain.weights, base):
    dst.assign(src)
  return plain, adapted, [x, mask]


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("name", VARIANTS)
def test_variant_block_is_near_identity_at_init_and_exact_when_disabled(name, norm_first):
  plain, adapted, inputs = _plain_and_adapted_blocks(AdapterConfig(size=8, **VARIANTS[name]), norm_first)
  expected = plain(inputs).numpy()
  got = adapted(inputs).numpy()
  relative = np.linalg.norm(got - expected) / np.linalg.norm(expected)
  assert 0 < relative < 1e-2
  adapted.set_adapters_enabled(False)
  np.testing.assert_array_equal(adapted(inputs).numpy(), expected)


@pytest.mark.parametrize("norm_first", [False, True])
def test_parallel_adapters_read_the_sublayer_inputs(norm_first):
  """Block output recomputed by hand: each adapter reads what its sub-layer
  reads and is added to that sub-layer's output, before the residual."""
  _, block, inputs = _plain_and_adapted_blocks(
      AdapterConfig(size=4, init_std=0.5, placement="parallel"), norm_first)
  x = inputs[0]
  assert isinstance(block._attention_layer, SublayerInputTap)
  assert isinstance(block._intermediate_dense, SublayerInputTap)
  assert isinstance(block._attention_dropout, SublayerWithParallelAdapter)
  attention_adapter, ffn_adapter = block.adapters
  h = block._attention_layer_norm(x) if norm_first else x
  attention = block._attention_layer.sublayer(query=h, value=h) + attention_adapter.transform(h)
  if norm_first:
    attention_out = x + attention
    ffn_in = block._output_layer_norm(attention_out)
  else:
    attention_out = block._attention_layer_norm(x + attention)
    ffn_in = attention_out
  inner = block._intermediate_activation_layer(block._intermediate_dense.sublayer(ffn_in))
  ffn = block._output_dense(inner) + ffn_adapter.transform(ffn_in)
  expected = attention_out + ffn if norm_first else block._output_layer_norm(ffn + attention_out)
  np.testing.assert_allclose(block(inputs).numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
  # He et al.'s scaled parallel adapter: only beside the FFN, its output times 4.
  _, scaled, _ = _plain_and_adapted_blocks(AdapterConfig.named("scaled-parallel", size=4, init_std=0.5), norm_first)
  (scaled_adapter,) = scaled.adapters
  scaled_adapter.set_weights(ffn_adapter.get_weights())
  h = scaled._attention_layer_norm(x) if norm_first else x
  attention = scaled._attention_layer(query=h, value=h)
  attention_out = x + attention if norm_first else scaled._attention_layer_norm(x + attention)
  ffn_in = scaled._output_layer_norm(attention_out) if norm_first else attention_out
  ffn = scaled._output_dense(scaled._intermediate_activation_layer(scaled._intermediate_dense.sublayer(ffn_in)))
  ffn = ffn + 4.0 * scaled_adapter.transform(ffn_in)
  expected = attention_out + ffn if norm_first else scaled._output_layer_norm(ffn + attention_out)
  np.testing.assert_allclose(scaled(inputs).numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)
  # Without the FFN adapter's term the output differs: that adapter does contribute.
  without_ffn_adapter = (attention_out + block._output_dense(inner) if norm_first
                         else block._output_layer_norm(attention_out + block._output_dense(inner)))
  assert np.abs(block(inputs).numpy() - without_ffn_adapter.numpy()).max() > 1e-2


def test_parallel_encoder_keeps_names_keys_and_loads_pretrained_weights(tmp_path):
  config = AdapterConfig(size=4, placement="parallel", norm="layer", hidden_layers=2)
  plain = networks.BertEncoderV2(name="encoder", **TINY.encoder_kwargs())
  plain(dummy_inputs())
  adapted = build_encoder(TINY, config)
  assert sorted(v.name for v in adapted.weights if "adapter" not in v.name) == sorted(
      v.name for v in plain.weights)
  plain_keys = {k for k, _ in tf.train.list_variables(
      tf.train.Checkpoint(encoder=plain).write(str(tmp_path / "plain")))}
  adapted_keys = {k for k, _ in tf.train.list_variables(
      tf.train.Checkpoint(encoder=adapted).write(str(tmp_path / "adapted")))}
  assert plain_keys <= adapted_keys
  assert adapted_keys - plain_keys and all("adapter" in k for k in adapted_keys - plain_keys)
  # Hugging Face weights reach the tapped sub-layers; disabled adapters give the plain encoder.
  hf_dir = write_tiny_hf_bert(str(tmp_path / "hf"), seed=3)
  with_adapters = load_encoder(hf_dir, config, adapter_seed=1).encoder
  without = load_encoder(hf_dir, None).encoder
  inputs = dummy_inputs(batch_size=2, seq_length=7)
  with_adapters.set_adapters_enabled(False)
  np.testing.assert_array_equal(with_adapters(inputs)["sequence_output"].numpy(),
                                without(inputs)["sequence_output"].numpy())


def test_parallel_encoder_serialises_and_rebuilds_the_same_adapters():
  encoder = build_encoder(TINY, AdapterConfig(size=4, placement="parallel", norm="batch",
                                              interaction="multiplicative"), adapter_seed=3)
  restored = tf_keras.layers.deserialize(tf_keras.layers.serialize(encoder))
  assert isinstance(restored, AdapterBertEncoder)
  restored(dummy_inputs())
  assert restored.adapter_config == encoder.adapter_config
  # Same variables in the same order (the restored encoder's name scope differs).
  def relative_names(e):
    return [v.name.split("/", 1)[1] for v in e.weights]
  assert relative_names(restored) == relative_names(encoder)
  for a, b in zip(encoder.adapters(), restored.adapters()):
    np.testing.assert_array_equal(a.down_project.kernel.numpy(), b.down_project.kernel.numpy())


def test_set_base_sublayer_keeps_the_parallel_tap_and_tracks_the_new_layer():
  _, block, inputs = _plain_and_adapted_blocks(AdapterConfig(size=4, placement="parallel"), False)
  other = mg_layers.TransformerEncoderBlock(num_attention_heads=4, inner_dim=64, inner_activation="gelu")
  other(inputs)
  old_attention = block._attention_layer.sublayer
  block.set_base_sublayer("_attention_layer", other._attention_layer)
  block.set_base_sublayer("_intermediate_dense", other._intermediate_dense)
  assert isinstance(block._attention_layer, SublayerInputTap)
  assert block._attention_layer.sublayer is other._attention_layer
  ids = {id(v) for v in block.weights}
  assert all(id(v) in ids for v in other._attention_layer.weights + other._intermediate_dense.weights)
  assert not any(id(v) in ids for v in old_attention.weights)
  block(inputs)  # the taps still feed the parallel adapters


# ---------------------------------------------------------------- tuning and training


def _adapter_ids(encoder) -> set:
  return {id(v) for a in encoder.adapters() for v in a.parameters}


@pytest.mark.parametrize("name", VARIANTS)
def test_adapter_method_trains_exactly_adapters_layer_norms_and_head(name):
  encoder = build_encoder(TINY, AdapterConfig(size=4, **VARIANTS[name]))
  model = TaskModel(encoder, 2, pooling="mean", name="task_model").build_with_dummy_inputs()
  apply_method(model, "adapter")
  adapters = _adapter_ids(encoder)
  inside = {id(w) for a in encoder.adapters() for w in a.weights}
  block_layer_norms = [l for b in encoder.transformer_layers
                       for l in (b._attention_layer_norm, b._output_layer_norm)]
  layer_norms = {id(v) for l in block_layer_norms + [encoder._embedding_norm_layer] for v in l.weights}
  head = {id(v) for v in model.head.weights}
  assert {id(v) for v in model.trainable_variables} == adapters | layer_norms | head
  assert not inside - adapters - {id(v) for v in model.non_trainable_variables}
  report = parameter_report(model)
  assert report.adapter_params == _count(v for a in encoder.adapters() for v in a.parameters)
  assert report.adapter_params == 2 * 2 * (2 * 4 * 32 + 32 + 4 + _extra_params(VARIANTS[name], 32, 4))
  # A norm inside an adapter is counted once, as adapter parameters.
  assert report.adapter_params + report.layer_norm_params + report.head_params == report.trained_params


def _easy_task(n: int = 64, length: int = 8, seed: int = 0):
  """Token 5 or 6 at position 1 gives the label; the other tokens are noise."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(7, SMALLEST.vocab_size, (n, length)).astype(np.int32)
  labels = rng.integers(0, 2, n).astype(np.int32)
  ids[:, 1] = 5 + labels
  return dict(input_word_ids=ids, input_mask=np.ones_like(ids), input_type_ids=np.zeros_like(ids)), labels


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_trains_with_only_adapters_layer_norms_and_head(name):
  tf_keras.utils.set_random_seed(0)
  encoder = build_encoder(SMALLEST, AdapterConfig(size=8, **VARIANTS[name]), adapter_seed=0)
  model = TaskModel(encoder, 2, pooling="mean", dropout_rate=0.0).build_with_dummy_inputs()
  apply_method(model, "adapter")
  frozen = [(v, v.numpy()) for v in encoder._transformer_layers[0]._output_dense.weights]
  adapters_before = [v.numpy() for a in encoder.adapters() for v in a.parameters]
  statistics_before = [v.numpy() for a in encoder.adapters() for v in a.statistics]
  model.compile(optimizer=tf_keras.optimizers.Adam(1e-2),
                loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  features, labels = _easy_task()
  losses = model.fit(features, labels, batch_size=64, epochs=40, verbose=0).history["loss"]
  assert losses[-1] < 0.5 * losses[0]
  moved = [np.abs(v.numpy() - b).max() for v, b in zip(
      [v for a in encoder.adapters() for v in a.parameters], adapters_before)]
  assert max(moved) > 0.05  # the adapters themselves learned, not only LayerNorms and head
  for variable, value in frozen:
    np.testing.assert_array_equal(variable.numpy(), value)
  if name == "batch_norm":
    statistics = [v.numpy() for a in encoder.adapters() for v in a.statistics]
    assert any(not np.allclose(a, b) for a, b in zip(statistics, statistics_before))
