"""Every task in one call (serving/export.py: the `all` signature and AllTasks; MultiTaskModel.predict_all;
`adapter-keras predict --task all`): equal to each task's own outputs, with what the tasks share computed once."""
import collections
import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from adapter_keras.config import AdapterConfig
from adapter_keras.serving.export import AllTasks
from adapter_keras.serving.multitask import MultiTaskModel
from adapter_keras.serving.signatures import EXPORT_MANIFEST, signature_names
from adapter_keras.tasks import classification_task, regression_task
from adapter_keras.tasks.data import TextExamples
from adapter_keras.tasks.tagging import TokenTask
from adapter_keras.testing import tiny_sentiment_data
from adapter_keras.train.config import TrainConfig
from tests.helpers import assert_one_error_line, run_cli, run_cli_subprocess
from tests.test_multitask import _reload_without_library

TEXTS, LABELS = tiny_sentiment_data(24, seed=0)
PAIRS = TEXTS[::-1]


@pytest.fixture(scope="module")
def bank(encoder_dir):
  """An adapter, a LoRA (shorter max_seq_length) and a pair regression task, trained (their LayerNorms moved:
  they share the embedding lookups only); a task with adapters in the top layer only, trained with the
  frozen-bottom cache (which keeps block 0 the base's: it shares block 0 too), and an untrained token task."""
  mt = MultiTaskModel.from_encoder(encoder_dir)
  config = TrainConfig(encoder=encoder_dir, learning_rate=3e-2, epochs=1, batch_size=8)
  data = TextExamples(TEXTS, LABELS)
  mt.add_task("sentiment", classification_task("sentiment", ("neg", "pos")), AdapterConfig(size=4), seed=0)
  mt.train("sentiment", data, {"dev": data}, config, verbose=False)
  mt.add_task("lora", classification_task("lora", ("neg", "pos")), seed=1, method="lora",
              method_config=dict(rank=2), max_seq_length=12)
  mt.train("lora", data, {"dev": data}, config, verbose=False)
  mt.add_task("similarity", regression_task("similarity", is_pair=True), AdapterConfig(size=4), seed=2)
  pairs = TextExamples(TEXTS, (LABELS * 5).astype(np.float32), text_b=PAIRS)
  mt.train("similarity", pairs, {"dev": pairs}, config, verbose=False)
  top_layer = AdapterConfig(size=4, layers=(1,))
  mt.add_task("top", classification_task("top", ("neg", "pos")), top_layer, seed=3)
  mt.train("top", data, {"dev": data}, dataclasses.replace(config, adapter=top_layer, prefix_cache=True),
           verbose=False)
  mt.add_task("tags", TokenTask("tags", ("O", "B-X", "I-X")), AdapterConfig(size=4), seed=4)
  return mt


def test_the_all_signature_equals_each_task_s_own_and_computes_what_they_share_once(bank, tmp_path):
  everything = AllTasks({name: bank[name] for name in bank.task_names}, bank.base.encoder)
  with pytest.raises(ValueError, match="task 'all' would be signature 'all', which is reserved"):
    signature_names(["sentiment", "all"])
  assert dict(zip(everything.task_names, everything.depths)) == dict(sentiment=0, lora=0, similarity=0, top=1,
                                                                     tags=0)
  spec = tf.TensorSpec([None], tf.string)

  def ops(function, *specs):
    graph = tf.function(function).get_concrete_function(*specs).graph
    counts = collections.Counter(op.type for op in graph.get_operations())
    return counts["FastWordpieceTokenizeWithOffsets"], counts["ResourceGather"]  # tokenizations, word lookups

  # The tasks' own signatures tokenize 6 times and look words up 5 times; `all` tokenizes text once for the
  # sentence tasks, text_b once and the token task's words once, and looks words up once per packing.
  assert ops(everything.servers[0].outputs, spec, spec) == (1, 1)
  assert ops(everything.outputs, spec, spec) == (3, 4)

  path = str(tmp_path / "saved")
  bank.export(path)
  assert json.loads((tmp_path / "saved" / EXPORT_MANIFEST).read_text())["all_tasks"] == "all"
  calls = {name: dict(text=TEXTS[:8], text_b=PAIRS[:8]) if name == "similarity" else dict(text=TEXTS[:8])
           for name in bank.task_names}
  calls["all"] = dict(text=TEXTS[:8], text_b=PAIRS[:8])
  out = _reload_without_library(tmp_path, path, calls)
  expected = {f"{name}/{key}": value for name in bank.task_names for key, value in out[name].items()}
  assert sorted(out["all"]) == sorted(expected)
  for key, value in expected.items():
    if isinstance(np.asarray(value).flat[0], str):
      assert out["all"][key] == value, key
    else:
      np.testing.assert_allclose(out["all"][key], value, atol=1e-6, rtol=0, err_msg=key)


def test_predict_all_equals_each_task_s_predict(bank):
  got = bank.predict_all(TEXTS, PAIRS, batch_size=5)
  assert list(got) == bank.task_names
  for name in bank.task_names:
    expected = bank.predict(TEXTS, PAIRS if name == "similarity" else None, task=name)
    if name == "tags":
      assert got[name] == expected
    else:
      assert got[name].shape == expected.shape
      np.testing.assert_allclose(got[name], expected, atol=1e-6, rtol=0, err_msg=name)
  with pytest.raises(ValueError, match="task 'similarity' is a sentence-pair task; give text_b"):
    bank.predict_all(TEXTS)


def test_predict_task_all_writes_every_task_s_result_per_input(bank, encoder_dir, tmp_path):
  artifacts = []
  for name in ("sentiment", "similarity", "tags"):
    artifacts += ["--artifact", bank.save_task(name, str(tmp_path / name))]
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  assert run_cli(["export", *artifacts, "--encoder", encoder_dir, "--out", multi])[0] == 0
  assert run_cli(["export", *artifacts[:2], "--encoder", encoder_dir, "--out", single])[0] == 0
  texts, seconds = TEXTS[:3], PAIRS[:3]
  result = run_cli_subprocess(["predict", "--model", multi, "--task", "all", *texts, "--text-b", *seconds])
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [json.loads(line) for line in result.stdout.splitlines()]
  assert [(line["text"], line["text_b"], list(line["tasks"])) for line in lines] == [
      (t, b, ["sentiment", "similarity", "tags"]) for t, b in zip(texts, seconds)]
  probabilities = bank.predict(texts, task="sentiment")
  scores = bank.predict(texts, seconds, task="similarity")
  for line, p, score, tags in zip(lines, probabilities, scores, bank.predict(texts, task="tags")):
    assert line["tasks"]["sentiment"]["label"] == ["neg", "pos"][p.argmax()]
    assert line["tasks"]["sentiment"]["score"] == pytest.approx(float(p.max()), abs=1e-6)
    assert line["tasks"]["similarity"]["score"] == pytest.approx(float(score), abs=1e-6)
    assert [(w["word"], w["tag"]) for w in line["tasks"]["tags"]["words"]] == tags
  assert_one_error_line(run_cli_subprocess(["predict", "--model", multi, "--task", "all", "good"]),
                        "--task all runs sentence-pair task 'similarity' and input 1 has no second text")
  assert_one_error_line(run_cli_subprocess(["predict", "--model", single, "--task", "all", "good"]),
                        f"--model {single} serves a single task (task 'sentiment'); --task all runs every task")
