"""Merged export (serving/export.py): a single task of a method with a merge (LoRA, IA3) is exported with its
update folded into the base kernels: the same outputs, fewer operations, and the model in memory untouched;
`merge=False` / `--no-merge` keep the unmerged graph, and several tasks are never merged."""
import numpy as np
import pytest
import tensorflow as tf

from adapter_keras import methods
from adapter_keras.models import AdapterClassifier
from adapter_keras.serving.export import can_merge, export_saved_model
from tests.helpers import run_cli

TEXTS = ["a fine film", "a dull plot", "not good at all"]
# The scope of each method's own operations (LoRAFactors, IA3Vector): absent from a merged graph.
OWN_SCOPES = {"lora": "/lora/", "ia3": "/ia3/"}


def _model(encoder_dir, method, config):
  model = AdapterClassifier.from_pretrained(encoder_dir, method=method, method_config=config, seed=0)
  rng = np.random.default_rng(0)
  for variable in model.trainable_variables:  # an update that changes the outputs (B = 0 and ones would not)
    if "lora_b" in variable.name or "ia3" in variable.name:
      offset = 1.0 if "ia3" in variable.name else 0.0
      variable.assign(offset + 0.5 * rng.standard_normal(variable.shape).astype(np.float32))
  return model


def _served(directory):
  """(probabilities of TEXTS, operations in the signature's graph and its functions, those in the method's scope)."""
  signature = tf.saved_model.load(directory).signatures["serving_default"]
  graph = signature.graph.as_graph_def()
  names = [node.name for node in graph.node] + [node.name for f in graph.library.function for node in f.node_def]
  return signature(text=tf.constant(TEXTS))["probabilities"].numpy(), names


@pytest.mark.parametrize("method, config", [("lora", dict(rank=2, targets=["query", "value", "ffn_out"])),
                                            ("ia3", None)])
def test_a_merged_export_computes_the_same_with_fewer_operations_and_leaves_the_model(encoder_dir, tmp_path,
                                                                                      method, config):
  model = _model(encoder_dir, method, config)
  assert can_merge(model) and methods.get_method(method).can_merge
  expected = model.predict(TEXTS)
  weights = [w.numpy() for w in model.weights]
  model.export(str(tmp_path / "merged"))
  model.export(str(tmp_path / "unmerged"), merge=False)
  merged, merged_ops = _served(str(tmp_path / "merged"))
  unmerged, unmerged_ops = _served(str(tmp_path / "unmerged"))
  np.testing.assert_allclose(merged, expected, atol=1e-5)
  np.testing.assert_allclose(unmerged, expected, atol=1e-5)
  assert len(merged_ops) < len(unmerged_ops)
  assert not [n for n in merged_ops if OWN_SCOPES[method] in n]
  assert [n for n in unmerged_ops if OWN_SCOPES[method] in n]
  for value, weight in zip(weights, model.weights):  # exactly as before, not within float error
    np.testing.assert_array_equal(weight.numpy(), value)
  np.testing.assert_array_equal(model.predict(TEXTS), expected)


def test_the_command_line_merges_one_task_unless_told_not_to(encoder_dir, tmp_path):
  model = _model(encoder_dir, "ia3", dict(targets=["key", "ffn"]))
  artifact = model.save_adapter(str(tmp_path / "artifact"))
  ops = {}
  for label, flags in (("merged", []), ("unmerged", ["--no-merge"])):
    out = str(tmp_path / label)
    status, _, stderr = run_cli(["export", "--artifact", artifact, "--encoder", encoder_dir, "--out", out] + flags)
    assert status == 0, stderr
    probabilities, ops[label] = _served(out)
    np.testing.assert_allclose(probabilities, model.predict(TEXTS), atol=1e-5)
  assert len(ops["merged"]) < len(ops["unmerged"])


def test_methods_without_a_merge_export_as_they_are_and_several_tasks_refuse_merge(encoder_dir, tmp_path):
  adapter = AdapterClassifier.from_pretrained(encoder_dir, seed=0)
  assert not can_merge(adapter) and not methods.get_method("adapter").can_merge
  adapter.export(str(tmp_path / "adapter"))  # merge=True is the default: nothing to merge, nothing refused
  np.testing.assert_allclose(_served(str(tmp_path / "adapter"))[0], adapter.predict(TEXTS), atol=1e-5)
  lora = _model(encoder_dir, "lora", None)
  with pytest.raises(ValueError, match="several tasks share"):
    export_saved_model({"a": lora, "b": adapter}, str(tmp_path / "both"), merge=True)
