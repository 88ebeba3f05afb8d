"""Tuning methods: the registry and its leaf decisions, exact trainable variable sets, the parameter
report, and adding a method in one place."""
import argparse

import pytest

from adapter_keras import cli, methods
from adapter_keras.cli import flags
from adapter_keras.config import AdapterConfig
from adapter_keras.encoder import BertConfig, build_encoder
from adapter_keras.methods import apply_method, parameter_report
from adapter_keras.networks import TaskModel
from tests.helpers import last_json

TINY = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=32)

EMBEDDINGS = {"encoder/word_embeddings/embeddings", "encoder/position_embedding/embeddings",
              "encoder/type_embeddings/embeddings"}
EMBEDDING_LN = {"encoder/embeddings/layer_norm/gamma", "encoder/embeddings/layer_norm/beta"}
POOLER = {"encoder/pooler_transform/kernel", "encoder/pooler_transform/bias"}
HEAD = {"task_model/head/kernel", "task_model/head/bias"}


def block_layer_norms(i):
  return {f"encoder/transformer/layer_{i}/{n}/{p}"
          for n in ("self_attention_layer_norm", "output_layer_norm") for p in ("gamma", "beta")}


def block_adapters(i):
  return {f"encoder/transformer/layer_{i}/{pos}/adapter/{proj}/{p}"
          for pos in ("attention_adapter", "ffn_adapter") for proj in ("down", "up")
          for p in ("kernel", "bias")}


def block_base(i):
  names = {f"encoder/transformer/layer_{i}/self_attention/{d}/{p}"
           for d in ("query", "key", "value", "attention_output") for p in ("kernel", "bias")}
  names |= {f"encoder/transformer/layer_{i}/{d}/{p}"
            for d in ("intermediate", "output") for p in ("kernel", "bias")}
  return names | block_layer_norms(i)


ALL_LN = EMBEDDING_LN | block_layer_norms(0) | block_layer_norms(1)
ALL_ADAPTERS = block_adapters(0) | block_adapters(1)
EVERYTHING = EMBEDDINGS | EMBEDDING_LN | block_base(0) | block_base(1) | ALL_ADAPTERS | HEAD


def _model(pooling, adapters=True):
  encoder = build_encoder(TINY, AdapterConfig(size=4) if adapters else None)
  return TaskModel(encoder, 3, pooling=pooling, name="task_model").build_with_dummy_inputs()


def _trainable(model):
  return {v.name[:-2] for v in model.trainable_variables}


@pytest.mark.parametrize("method,top_k,pooling,expected", [
    ("adapter", None, "cls", ALL_ADAPTERS | ALL_LN | HEAD),
    ("adapter", None, "mean", ALL_ADAPTERS | ALL_LN | HEAD),
    ("layer-norm", None, "cls", ALL_LN | HEAD),
    ("full", None, "cls", EVERYTHING | POOLER),
    ("full", None, "mean", EVERYTHING),
    ("top-k", 1, "cls", block_base(1) | block_adapters(1) | POOLER | HEAD),
    ("top-k", 2, "mean", block_base(0) | block_base(1) | ALL_ADAPTERS | HEAD),
])
def test_exact_trainable_sets(method, top_k, pooling, expected):
  model = _model(pooling)
  apply_method(model, method, top_k)
  assert _trainable(model) == expected
  gates = [v for v in model.variables if v.name.endswith("enabled:0")]
  assert gates and not any(g.trainable for g in gates)


def test_methods_can_be_switched_back_and_forth():
  model = _model("cls")
  apply_method(model, "layer-norm")
  apply_method(model, "full")
  apply_method(model, "adapter")
  assert _trainable(model) == ALL_ADAPTERS | ALL_LN | HEAD


@pytest.mark.parametrize("method,top_k,message", [
    ("prefix", None, "Unknown method"), ("top-k", None, "top-k"), ("top-k", 3, "exceeds"),
    ("top-k", 0, "top-k")])
def test_invalid_methods(method, top_k, message):
  with pytest.raises(ValueError, match=message):
    apply_method(_model("cls"), method, top_k)


def test_report_for_tiny_model_follows_the_formula():
  model = _model("cls")
  apply_method(model, "adapter")
  report = parameter_report(model)
  d, m, layers = 32, 4, 2
  assert report.adapter_params == layers * 2 * (2 * m * d + d + m)
  assert report.layer_norm_params == (2 * layers + 1) * 2 * d
  assert report.head_params == d * 3 + 3
  assert report.trained_params == report.adapter_params + report.layer_norm_params + report.head_params
  assert report.trained_fraction == report.trained_params / report.base_params


def _params_json(capsys, *argv):
  assert cli.main(["params", *argv, "--json"]) == 0
  return last_json(capsys)


def test_params_cli_bert_base_exact_numbers(capsys):
  result = _params_json(capsys, "--arch", "bert-base", "--adapter-size", "64", "--num-labels", "2",
                        "--method", "adapter")
  assert result == dict(base_params=109482240, adapter_params=2379264, layer_norm_params=38400,
                        head_params=1538, trained_params=2419202,
                        trained_fraction=pytest.approx(2419202 / 109482240))
  assert isinstance(result["trained_fraction"], float)


def test_params_cli_minilm_and_bert_large(capsys):
  result = _params_json(capsys, "--arch", "minilm-l6")
  assert (result["base_params"], result["trained_params"]) == (22713216, 605954)
  result = _params_json(capsys, "--arch", "bert-large", "--adapter-size", "64")
  adapters = 24 * 2 * (2 * 64 * 1024 + 1024 + 64)
  assert result["base_params"] == 335141888  # BERT-large with pooler
  assert result["adapter_params"] == adapters
  assert result["layer_norm_params"] == 49 * 2048
  assert result["trained_params"] == adapters + 49 * 2048 + 1024 * 2 + 2


def test_params_cli_other_methods_have_no_adapters(capsys):
  result = _params_json(capsys, "--arch", "minilm-l6", "--method", "top-k", "--top-k", "2")
  assert result["adapter_params"] == 0
  assert result["trained_params"] == 2 * 1774464 + 770  # two MiniLM blocks + head (mean pooling)


def test_params_cli_on_a_pretrained_encoder_dir(capsys, tiny_mean_pooling_dir):
  result = _params_json(capsys, "--encoder", tiny_mean_pooling_dir, "--adapter-size", "4",
                        "--num-labels", "1")
  assert result["head_params"] == 33
  assert result["adapter_params"] == 2 * 2 * (2 * 4 * 32 + 32 + 4)


def test_params_cli_rejects_top_k_above_layers(capsys):
  assert cli.main(["params", "--arch", "minilm-l6", "--method", "top-k", "--top-k", "7"]) == 2
  assert "exceeds" in capsys.readouterr().err


# ---------------------------------------------------------------- the registry

REGISTRY_CONFIG = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                             intermediate_size=32, max_position_embeddings=32)


def site(**where):
  values = dict(name="kernel", added_by=None, is_layer_norm=False, is_head=False, is_pooler=False,
                head_reads_pooler=True, block=None, num_layers=4)
  if where.pop("in_adapter", False):
    values["added_by"] = "adapter"
  values.update(where)
  return methods.WeightSite(**values)


@pytest.mark.parametrize("method, where, top_k, trains", [
    ("adapter", dict(in_adapter=True, block=1), None, True),
    ("adapter", dict(is_layer_norm=True), None, True),
    ("adapter", dict(block=3), None, False),
    ("adapter", dict(is_pooler=True), None, False),
    ("full", dict(block=0), None, True),
    ("full", dict(is_pooler=True), None, True),
    ("full", dict(is_pooler=True, head_reads_pooler=False), None, False),
    ("top-k", dict(block=2), 2, True),
    ("top-k", dict(block=1), 2, False),
    ("top-k", dict(is_layer_norm=True), 2, False),
    ("layer-norm", dict(is_layer_norm=True, block=0), None, True),
    ("layer-norm", dict(block=3), None, False),
])
def test_which_variables_a_method_trains(method, where, top_k, trains):
  spec = methods.get_method(method)
  config = spec.make_config(top_k=top_k)
  assert spec.trains(site(**where), config) is trains
  assert spec.trains(site(is_head=True), config) is True  # every method trains the head


def test_registry_facts():
  assert methods.METHOD_NAMES == ("adapter", "full", "top-k", "layer-norm", "bitfit", "lora", "ia3", "prefix-tuning",
                                  "fusion", "stack")
  assert [m for m in methods.METHOD_NAMES if methods.get_method(m).uses_adapters] == ["adapter"]
  assert [m for m in methods.METHOD_NAMES if methods.get_method(m).fine_tunes_base] == ["full", "top-k", "bitfit"]
  assert methods.FROZEN_BOTTOM_METHODS == ("adapter", "top-k")
  assert [methods.method_label(m, 3) for m in methods.METHOD_NAMES] == ["adapter", "full", "top-3", "layer-norm",
                                                                       "bitfit", "lora", "ia3", "prefix-16", "fusion",
                                                                       "stack"]
  assert [m for m in methods.METHOD_NAMES if methods.get_method(m).can_merge] == ["lora", "ia3"]
  with pytest.raises(ValueError, match="Unknown method 'dora'; choose one of adapter, full, top-k, layer-norm, bitfit, "
                                       "lora, ia3, prefix-tuning, fusion, stack"):
    methods.get_method("dora")
  parser = argparse.ArgumentParser()
  flags.add_training_arguments(parser)
  assert next(a for a in parser._actions if a.dest == "method").choices == methods.METHOD_NAMES


def test_prefix_start_comes_from_the_method():
  assert methods.frozen_bottom_start_layer("top-k", 4, top_k=1) == 3
  assert methods.frozen_bottom_start_layer("adapter", 4, AdapterConfig(layers=(2, 3))) == 2
  with pytest.raises(ValueError, match="applies to methods adapter and top-k, not 'full'"):
    methods.frozen_bottom_start_layer("full", 4)
  with pytest.raises(ValueError, match="top range of layers"):
    methods.frozen_bottom_start_layer("adapter", 4, AdapterConfig(layers=(1, 3)))


class LinearProbe(methods.TuningMethod):
  name = "linear-probe"

  def trains(self, site, config):
    return site.is_head

  def trained_params(self, shape, config):
    return shape.head_params


def test_a_new_method_is_one_registered_class():
  methods.register(LinearProbe())
  try:
    model = TaskModel(build_encoder(REGISTRY_CONFIG), num_outputs=3).build_with_dummy_inputs()
    methods.apply_method(model, "linear-probe")
    assert {v.name for v in model.trainable_variables} == {v.name for v in model.head.weights}
    report = methods.parameter_report(model)
    assert report.trained_params == report.head_params == 16 * 3 + 3
    assert "linear-probe" in methods.method_names()
  finally:
    methods.unregister("linear-probe")
  with pytest.raises(ValueError, match="Unknown method 'linear-probe'"):
    methods.get_method("linear-probe")


@pytest.mark.parametrize("method, top_k, adapter, pooling", [
    ("adapter", None, AdapterConfig(size=4), "cls"), ("adapter", None, AdapterConfig(size=(0, 3), norm="layer",
                                                                                       hidden_layers=2), "mean"),
    ("adapter", None, AdapterConfig(size=5, positions="ffn", norm="batch"), "cls"),
    ("full", None, None, "cls"), ("full", None, None, "mean"), ("top-k", 1, None, "cls"),
    ("top-k", 2, None, "mean"), ("layer-norm", None, None, "cls"), ("bitfit", None, None, "cls"),
    ("bitfit", None, None, "mean")])
def test_trained_params_formula_equals_the_count(method, top_k, adapter, pooling):
  encoder = build_encoder(TINY, adapter)
  model = TaskModel(encoder, 3, pooling=pooling, name="task_model").build_with_dummy_inputs()
  apply_method(model, method, top_k)
  spec = methods.get_method(method)
  formula = spec.trained_params(methods.model_shape(model, TINY), spec.make_config(adapter=adapter, top_k=top_k))
  assert formula == parameter_report(model).trained_params
  assert methods.model_shape(model, TINY).base_params == parameter_report(model).base_params


class BiasesOnly(methods.TuningMethod):
  """BitFit's rule, as a test plugin: biases (and LayerNorm offsets) train, kernels do not."""
  name = "biases-only"

  def trains(self, site, config):
    return site.is_head or site.is_bias


def test_a_kernel_stays_frozen_while_its_bias_trains():
  methods.register(BiasesOnly())
  try:
    model = _model("cls", adapters=False)
    query = "encoder/transformer/layer_0/self_attention/query/"
    before = {v.name[:-2]: v.numpy() for v in model.variables}
    apply_method(model, "biases-only")
    trained = _trainable(model)
    assert query + "bias" in trained and query + "kernel" not in trained
    assert "encoder/embeddings/layer_norm/beta" in trained and "encoder/embeddings/layer_norm/gamma" not in trained
    assert HEAD <= trained
    model.compile(optimizer=__import__("tf_keras").optimizers.SGD(0.5), loss="mse")
    import numpy as np  # pylint: disable=import-outside-toplevel
    ids = np.ones((4, 6), np.int32)
    model.fit(dict(input_word_ids=ids, input_mask=ids, input_type_ids=0 * ids), np.ones((4, 3)), verbose=0)
    after = {v.name[:-2]: v.numpy() for v in model.variables}
    assert not np.array_equal(before[query + "bias"], after[query + "bias"])
    np.testing.assert_array_equal(before[query + "kernel"], after[query + "kernel"])
    # The same model under another method: every variable of the layer trains again.
    apply_method(model, "full")
    assert query + "kernel" in _trainable(model)
  finally:
    methods.unregister("biases-only")


def test_apply_method_on_a_users_functional_model():
  tf_keras = __import__("tf_keras")
  encoder = build_encoder(TINY, AdapterConfig(size=4))
  inputs = {name: tf_keras.Input((None,), dtype="int32") for name in ("input_word_ids", "input_mask", "input_type_ids")}
  hidden = tf_keras.layers.Dense(8, name="my_hidden")(encoder(inputs)["pooled_output"])
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(2, name="my_head")(hidden))
  methods.mark_only_adapters_trainable(model)
  trained = _trainable(model)
  assert {"my_hidden/kernel", "my_head/bias"} <= trained
  assert ALL_ADAPTERS | ALL_LN <= trained
  assert not any("self_attention/query" in n for n in trained)
  with pytest.raises(ValueError, match="contains no adapter_keras encoder"):
    methods.apply_method(tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))]), "adapter")


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_bitfit_trains_exactly_the_biases_and_layer_norm_offsets(pooling):
  model = _model(pooling, adapters=False)
  apply_method(model, "bitfit")
  biases = {"encoder/embeddings/layer_norm/beta"}
  for i in range(2):
    block = f"encoder/transformer/layer_{i}"
    biases |= {f"{block}/self_attention/{d}/bias" for d in ("query", "key", "value", "attention_output")}
    biases |= {f"{block}/{d}/bias" for d in ("intermediate", "output")}
    biases |= {f"{block}/{n}/beta" for n in ("self_attention_layer_norm", "output_layer_norm")}
  pooler = {"encoder/pooler_transform/bias"} if pooling == "cls" else set()
  assert _trainable(model) == biases | pooler | HEAD
