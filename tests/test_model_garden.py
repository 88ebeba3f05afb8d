"""adapter_keras._model_garden: every private Model Garden / tf_keras name it relies on still means
what it meant. An upgrade of tf-models-official that moves one fails here first."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.nlp.modeling import layers as mg_layers
from official.nlp.modeling import networks

from adapter_keras import _model_garden
from adapter_keras.config import AdapterConfig
from adapter_keras.encoder import BertConfig, build_encoder, dummy_inputs

CONFIG = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=32)


@pytest.fixture(scope="module")
def encoder():
  return build_encoder(CONFIG, AdapterConfig(size=4), adapter_seed=0)


def test_block_attribute_names_hold_the_layers_adapters_wrap_and_tap():
  block = mg_layers.TransformerEncoderBlock(num_attention_heads=2, inner_dim=32, inner_activation="relu")
  block(tf.zeros([1, 3, 16]))
  assert isinstance(getattr(block, _model_garden.ATTENTION_OUTPUT_DROPOUT), tf_keras.layers.Dropout)
  assert isinstance(getattr(block, _model_garden.FFN_OUTPUT_DROPOUT), tf_keras.layers.Dropout)
  assert isinstance(getattr(block, _model_garden.ATTENTION_LAYER), tf_keras.layers.MultiHeadAttention)
  assert getattr(block, _model_garden.FFN_INTERMEDIATE_DENSE).kernel.shape[-1] == 32
  projections = _model_garden.attention_projections(block)
  assert [tuple(projections[k].kernel.shape) for k in ("query", "key", "value", "output")] == [
      (16, 2, 8), (16, 2, 8), (16, 2, 8), (2, 8, 16)]
  assert all(isinstance(n, tf_keras.layers.LayerNormalization) for n in _model_garden.block_layer_norms(block))
  assert [tuple(d.kernel.shape) for d in _model_garden.ffn_projections(block)] == [(16, 32), (32, 16)]
  for name in _model_garden.SHARED_BLOCK_SUBLAYERS:
    assert isinstance(getattr(block, name), tf_keras.layers.Layer)


def test_encoder_accessors(encoder):
  assert _model_garden.encoder_hidden_size(encoder) == 16
  assert tuple(_model_garden.word_embedding(encoder).embeddings.shape) == (40, 16)
  assert tuple(_model_garden.position_embedding(encoder).weights[0].shape) == (32, 16)
  assert tuple(_model_garden.type_embedding(encoder).embeddings.shape) == (2, 16)
  assert isinstance(_model_garden.embedding_layer_norm(encoder), tf_keras.layers.LayerNormalization)
  assert _model_garden.pooler_dense(encoder) is encoder.pooler_layer
  assert len(_model_garden.embedding_layers(encoder)) == 4 and not _model_garden.has_embedding_projection(encoder)
  assert _model_garden.output_range(encoder) is None
  for name in _model_garden.SHARED_ENCODER_SUBLAYERS:
    assert isinstance(getattr(encoder, name), tf_keras.layers.Layer)


def test_embed_and_attention_mask_reproduce_the_encoder(encoder):
  inputs = dummy_inputs(batch_size=2, seq_length=5)
  x = _model_garden.embed(encoder, inputs["input_word_ids"], inputs["input_type_ids"])
  mask = _model_garden.attention_mask(encoder, x, inputs["input_mask"])
  for block in encoder.transformer_layers:
    x = block([x, mask], training=False)
  np.testing.assert_allclose(x.numpy(), encoder(inputs, training=False)["sequence_output"].numpy(), atol=1e-6)


def test_replace_transformer_layers_swaps_the_blocks_of_an_unbuilt_encoder():
  plain = networks.BertEncoderV2(**CONFIG.encoder_kwargs())
  blocks = [mg_layers.TransformerEncoderBlock(**b.get_config()) for b in plain.transformer_layers]
  _model_garden.replace_transformer_layers(plain, blocks)
  assert all(a is b for a, b in zip(plain.transformer_layers, blocks))
  assert plain(dummy_inputs())["sequence_output"].shape == (1, 4, 16)


def test_share_sublayers_makes_the_task_encoder_use_the_base_layers(encoder):
  base = build_encoder(CONFIG)
  _model_garden.share_sublayers(encoder, base)
  for name in _model_garden.SHARED_ENCODER_SUBLAYERS:
    assert getattr(encoder, name) is getattr(base, name)
  for task_block, base_block in zip(encoder.transformer_layers, base.transformer_layers):
    assert getattr(task_block, _model_garden.FFN_INTERMEDIATE_DENSE) is getattr(base_block,
                                                                               _model_garden.FFN_INTERMEDIATE_DENSE)
    # The attention layer stays the task's own (a method may wrap inside it); its projections are the base's.
    assert getattr(task_block, _model_garden.ATTENTION_LAYER) is not getattr(base_block, _model_garden.ATTENTION_LAYER)
    task_projections, base_projections = (_model_garden.attention_projections(b) for b in (task_block, base_block))
    assert all(task_projections[k] is base_projections[k] for k in base_projections)
    for task_norm, base_norm in zip(_model_garden.block_layer_norms(task_block),
                                    _model_garden.block_layer_norms(base_block)):
      assert task_norm is not base_norm
      np.testing.assert_array_equal(task_norm.gamma.numpy(), base_norm.gamma.numpy())


def test_layer_walks_and_dropout_generator_state():
  tf_keras.backend.experimental.enable_tf_random_generator()
  try:
    dropout = tf_keras.layers.Dropout(0.5)
    model = tf_keras.Sequential([tf_keras.layers.Dense(2), dropout])
    model(tf.ones([1, 3]), training=True)
  finally:
    tf_keras.backend.experimental.disable_tf_random_generator()
  assert all(layer in _model_garden.child_layers(model) for layer in model.layers)
  assert _model_garden.child_layers(model.layers[0]) == []
  assert dropout in _model_garden.all_sublayers(model)
  assert isinstance(_model_garden.dropout_generator_state(dropout), tf.Variable)
  assert _model_garden.dropout_generator_state(model.layers[0]) is None


@pytest.mark.parametrize("prediction, truth, em, f1", [("The Cat!", "cat", 1.0, 1.0), ("a dog", "the cat", 0.0, 0.0),
                                                       ("the black cat", "cat", 0.0, 2 / 3)])
def test_official_squad_scorer(prediction, truth, em, f1):
  assert _model_garden.squad_normalize_answer("The  Cat, sat!") == "cat sat"
  assert _model_garden.squad_exact_match_score(prediction, truth) == em
  assert _model_garden.squad_f1_score(prediction, truth) == pytest.approx(f1)


@pytest.mark.parametrize("name,shape,expected_name,expected_shape", [
    ("bert/encoder/layer_3/attention/self/query/kernel", (16, 16), "transformer/layer_3/self_attention/query/kernel",
     (16, 2, 8)),
    ("bert/encoder/layer_0/attention/self/value/bias", (16,), "transformer/layer_0/self_attention/value/bias", (2, 8)),
    ("bert/encoder/layer_1/attention/output/dense/kernel", (16, 16),
     "transformer/layer_1/self_attention/attention_output/kernel", (2, 8, 16)),
    ("bert/encoder/layer_1/attention/output/LayerNorm/gamma", (16,),
     "transformer/layer_1/self_attention_layer_norm/gamma", (16,)),
    ("bert/encoder/layer_0/output/LayerNorm/beta", (16,), "transformer/layer_0/output_layer_norm/beta", (16,)),
    ("bert/embeddings/position_embeddings", (32, 16), "position_embedding/embeddings", (32, 16)),
    ("bert/pooler/dense/kernel", (16, 16), "pooler_transform/kernel", (16, 16)),
])
def test_tf1_converter_steps_map_original_bert_names_onto_the_encoder(name, shape, expected_name, expected_shape):
  """Model Garden's converter gives names that exist in our encoder, in their shapes."""
  new_name, value = _model_garden.tf1_bert_to_model_garden(name, np.zeros(shape, np.float32), num_heads=2)
  assert (new_name, value.shape) == (expected_name, expected_shape)
  from adapter_keras.pretrained.directory import model_garden_targets  # pylint: disable=import-outside-toplevel
  encoder = build_encoder(BertConfig(**{**CONFIG.to_dict(), "num_hidden_layers": 4}))
  targets = model_garden_targets(encoder)
  assert tuple(targets[new_name][0].shape) == expected_shape


def test_the_block_output_site_is_the_last_layer_norm(encoder):
  block = encoder.transformer_layers[0]
  assert getattr(block, _model_garden.BLOCK_OUTPUT_LAYER_NORM) is _model_garden.block_layer_norms(block)[1]


def test_one_variable_of_a_layer_is_frozen_and_unfrozen():
  dense = tf_keras.layers.Dense(2)
  dense.build((None, 3))
  _model_garden.freeze_variable(dense, dense.kernel)
  assert [v.name for v in dense.trainable_weights] == [dense.bias.name]
  assert any(v is dense.kernel for v in _model_garden.own_trainable_candidates(dense))
  _model_garden.unfreeze_variables(dense)
  assert {v.name for v in dense.trainable_weights} == {dense.kernel.name, dense.bias.name}


def test_tf_keras_and_keras_tuner_private_names():
  callbacks = tf_keras.callbacks.CallbackList([])
  assert hasattr(callbacks, "_check_timing")  # the attribute tf_keras reads
  _model_garden.disable_batch_hook_timing(callbacks)
  assert callbacks._check_timing is False  # pylint: disable=protected-access
  utils = _model_garden.keras_tuner_distribution()
  assert callable(utils.has_chief_oracle) and callable(utils.is_chief_oracle)
  import keras_tuner  # pylint: disable=import-outside-toplevel
  oracle = keras_tuner.oracles.GridSearchOracle(objective=keras_tuner.Objective("score", "max"), max_trials=2)
  assert callable(oracle._compare) and hasattr(oracle, "_ordered_ids") and hasattr(oracle, "_populate_next")  # pylint: disable=protected-access


@pytest.mark.parametrize("target", ["query", "key", "value", "attention_output", "ffn_in", "ffn_out"])
def test_every_projection_a_method_may_wrap_is_an_einsum_dense(encoder, target):
  owner, attribute = _model_garden.projection_owner(encoder.transformer_layers[0], target)
  assert isinstance(getattr(owner, attribute), tf_keras.layers.EinsumDense)
