"""Tasks of different tuning methods on one base (serving/multitask.py): adding a LoRA, IA3 or prefix-tuning
task leaves every earlier task bit-identical, the base's weights exist once, and one SavedModel serves them all,
`mixed` routing each example to its task."""
import numpy as np
import pytest

from adapter_keras import methods
from adapter_keras.config import AdapterConfig
from adapter_keras.serving.multitask import MultiTaskModel
from adapter_keras.serving.signatures import signature_name
from adapter_keras.tasks import classification_task
from adapter_keras.tasks.data import TextExamples
from adapter_keras.testing import tiny_sentiment_data
from adapter_keras.train.config import TrainConfig
from tests.test_multitask import _reload_without_library

TEXTS, LABELS = tiny_sentiment_data(32, seed=0)
# Each task in the order it joins; every one must leave the ones before it as they were.
TASKS = (("adapter", None), ("lora", dict(rank=2, targets=["query", "value", "ffn_in"])), ("ia3", None),
         ("prefix-tuning", dict(length=3)))


@pytest.fixture(scope="module")
def bank(encoder_dir):
  """A base with one trained task per method; each task's outputs recorded right after it trained."""
  mt = MultiTaskModel.from_encoder(encoder_dir)
  config = TrainConfig(encoder=encoder_dir, learning_rate=3e-2, epochs=2, batch_size=8)
  data = TextExamples(TEXTS, LABELS)
  outputs = {}
  for i, (method, settings) in enumerate(TASKS):
    mt.add_task(method, classification_task(method, ("neg", "pos")), AdapterConfig(size=4), seed=i,
                method=method, method_config=settings)
    mt.train(method, data, {"dev": data}, config, verbose=False)
    outputs[method] = mt.predict(TEXTS, task=method, logits=True)
  return mt, outputs


def test_each_new_task_leaves_every_earlier_one_bit_identical(bank):
  mt, outputs = bank
  for method, _ in TASKS:
    np.testing.assert_array_equal(mt.predict(TEXTS, task=method, logits=True), outputs[method])
  # and the tasks did learn something of their own
  assert all(np.abs(outputs[a] - outputs[b]).max() > 1e-4 for a, b in zip(outputs, list(outputs)[1:]))


def test_the_tasks_compute_with_the_base_s_one_copy_of_its_weights(bank):
  mt, _ = bank
  base = {id(v) for v in mt.base.encoder.weights}
  layer_norms = {id(v) for v in mt.base.encoder.weights if "layer_norm" in v.name}  # every task has its own copy
  for method, _ in TASKS:
    model = mt[method]
    assert base - {id(v) for v in model.weights} == layer_norms, method
    assert {id(v) for v in model.trainable_variables}.isdisjoint(base), method


def test_a_bank_task_refuses_to_merge(bank):
  mt, _ = bank
  with pytest.raises(ValueError, match="shares the base's kernels"):
    methods.get_method("lora").merge(mt["lora"])


def test_one_saved_model_serves_every_method_and_mixed_routes_each_example(bank, tmp_path):
  mt, _ = bank
  names = [method for method, _ in TASKS]
  path = str(tmp_path / "saved")
  mt.export(path, tasks=names)
  column = [names[i % len(names)] for i in range(8)]
  calls = {signature_name(name): dict(text=TEXTS[:8]) for name in names}
  calls["mixed"] = dict(text=TEXTS[:8], text_b=[""] * 8, task=column)  # text_b: empty for single sentences
  out = _reload_without_library(tmp_path, path, calls)
  for name in names:
    np.testing.assert_allclose(out[signature_name(name)]["probabilities"], mt.predict(TEXTS[:8], task=name),
                               atol=1e-5)
  for i, name in enumerate(column):
    assert out["mixed"]["label"][i] == out[signature_name(name)]["label"][i]
    assert out["mixed"]["score"][i] == pytest.approx(max(out[signature_name(name)]["probabilities"][i]), abs=1e-5)


def test_a_saved_task_of_any_method_joins_another_bank_unchanged(bank, encoder_dir, tmp_path):
  mt, outputs = bank
  other = MultiTaskModel.from_encoder(encoder_dir)
  for method, _ in reversed(TASKS):
    mt.save_task(method, str(tmp_path / method))
    other.add_artifact(str(tmp_path / method))
  for method, _ in TASKS:
    np.testing.assert_array_equal(other.predict(TEXTS, task=method, logits=True), outputs[method])
