"""methods.py: the registry every module asks, its leaf decisions, and adding a method in one place."""
import argparse

import pytest

from adapter_keras import methods
from adapter_keras.cli import flags
from adapter_keras.config import AdapterConfig
from adapter_keras.encoder import BertConfig, build_encoder
from adapter_keras.models import TaskModel

CONFIG = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=32)


def leaf(**where):
  values = dict(in_adapter=False, is_layer_norm=False, is_head=False, is_pooler=False, head_reads_pooler=True,
                block=None, num_layers=4)
  values.update(where)
  return methods.Leaf(**values)


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
def test_which_leaves_a_method_trains(method, where, top_k, trains):
  assert methods.get_method(method).trains(leaf(**where), top_k) is trains
  assert methods.get_method(method).trains(leaf(is_head=True), top_k) is True  # every method trains the head


def test_registry_facts():
  assert methods.METHOD_NAMES == ("adapter", "full", "top-k", "layer-norm")
  assert [m for m in methods.METHOD_NAMES if methods.get_method(m).uses_adapters] == ["adapter"]
  assert [m for m in methods.METHOD_NAMES if methods.get_method(m).fine_tunes_base] == ["full", "top-k"]
  assert methods.PREFIX_METHODS == ("adapter", "top-k")
  assert [methods.method_label(m, 3) for m in methods.METHOD_NAMES] == ["adapter", "full", "top-3", "layer-norm"]
  with pytest.raises(ValueError, match="Unknown method 'bitfit'; choose one of adapter, full, top-k, layer-norm"):
    methods.get_method("bitfit")
  parser = argparse.ArgumentParser()
  flags.add_training_arguments(parser)
  assert next(a for a in parser._actions if a.dest == "method").choices == methods.METHOD_NAMES


def test_prefix_start_comes_from_the_method():
  assert methods.prefix_start_layer("top-k", 4, top_k=1) == 3
  assert methods.prefix_start_layer("adapter", 4, AdapterConfig(layers=(2, 3))) == 2
  with pytest.raises(ValueError, match="applies to methods adapter and top-k, not 'full'"):
    methods.prefix_start_layer("full", 4)
  with pytest.raises(ValueError, match="top range of layers"):
    methods.prefix_start_layer("adapter", 4, AdapterConfig(layers=(1, 3)))


def test_a_new_method_is_one_registry_entry(monkeypatch):
  probe = methods.TuningMethod("linear-probe", uses_adapters=False, fine_tunes_base=False, needs_top_k=False,
                               trains=lambda where, _k: where.is_head)
  monkeypatch.setitem(methods.METHODS, "linear-probe", probe)
  model = TaskModel(build_encoder(CONFIG), num_outputs=3).build_with_dummy_inputs()
  methods.apply_method(model, "linear-probe")
  assert {v.name for v in model.trainable_variables} == {v.name for v in model.head.weights}
  report = methods.parameter_report(model)
  assert report.trained_params == report.head_params == 16 * 3 + 3
