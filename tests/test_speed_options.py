"""The speed options as a user reaches them: TrainConfig fields and train/sweep flags
(--prefix-cache, --jit-compile, --mixed-precision), through the real trainer."""
import json

import numpy as np
import pytest
import tf_keras
from safetensors.numpy import load_file

from adapter_keras import cli
from adapter_keras.config import AdapterConfig
from adapter_keras.pretrained import load_encoder
from adapter_keras.tasks import classification_task
from adapter_keras.tasks.data import TextExamples
from adapter_keras.testing import tiny_sentiment_data, write_tiny_glue_dir, write_tiny_hf_bert
from adapter_keras.train import loop
from adapter_keras.train.run import train_task
from adapter_keras.train.config import TrainConfig

from tests.test_resume import SimulatedCrash

TOP_HALF = AdapterConfig(size=4, layers=(2, 3))


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
  return write_tiny_hf_bert(str(tmp_path_factory.mktemp("four_layers")), seed=0, num_layers=4, dropout=0.1)


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
  return write_tiny_glue_dir(str(tmp_path_factory.mktemp("glue")), n_train=64, n_dev=24)


@pytest.fixture(scope="module")
def tiny_task():
  texts, labels = tiny_sentiment_data(64, seed=0)
  dev_texts, dev_labels = tiny_sentiment_data(24, seed=1)
  return (classification_task("tiny", ("0", "1")), TextExamples(texts, labels),
          {"dev": TextExamples(dev_texts, dev_labels)})


def _last_json(capsys):
  captured = capsys.readouterr()
  return json.loads(captured.out.strip().splitlines()[-1]), captured


def _train_cli(glue_dir, encoder, out, *flags):
  return cli.main(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder, "--adapter-size", "4",
                   "--epochs", "2", "--learning-rate", "1e-2", "--batch-size", "8", "--out", str(out), "--json",
                   *flags])


def test_prefix_cache_flag_trains_above_the_prefix_and_the_artifact_reloads(four_layers, glue_dir, tmp_path,
                                                                             capsys):
  assert _train_cli(glue_dir, four_layers, tmp_path / "plain", "--adapter-layers", "2", "3") == 0
  plain, _ = _last_json(capsys)
  assert _train_cli(glue_dir, four_layers, tmp_path / "cached", "--adapter-layers", "2", "3",
                    "--prefix-cache") == 0
  cached, captured = _last_json(capsys)
  assert "[train] frozen-bottom cache: embeddings and layers 0-1 run once over 64 examples" in captured.out
  # The same adapters, minus what the cache freezes: the embedding LayerNorm
  # (2 x 32) and the two LayerNorms of layers 0 and 1 (2 x 2 x 2 x 32).
  assert plain["trained_params"] - cached["trained_params"] == 64 + 256
  metrics = json.loads((tmp_path / "cached" / "metrics.json").read_text())
  assert metrics["config"]["prefix_cache"] is True
  names = load_file(str(tmp_path / "cached" / "artifact" / "weights.safetensors")).keys()
  assert not [n for n in names if "embeddings" in n or "transformer/layer_0/" in n or "transformer/layer_1/" in n]
  assert [n for n in names if "transformer/layer_2/" in n]
  assert cli.main(["evaluate", "--artifact", str(tmp_path / "cached"), "--encoder", four_layers, "--task", "sst2",
                   "--data-dir", glue_dir, "--json"]) == 0
  evaluated, _ = _last_json(capsys)
  assert evaluated["metrics"]["dev"]["accuracy"] == pytest.approx(cached["metrics"]["accuracy"])


@pytest.mark.parametrize("flags,message", [
    (["--prefix-cache"], "top range of layers"),                       # adapters in every layer
    (["--prefix-cache", "--adapter-layers", "0", "3"], "top range of layers"),
    (["--prefix-cache", "--method", "full"], "applies to methods adapter and top-k"),
    (["--mixed-precision", "float64"], "invalid choice: 'float64'"),
])
def test_speed_flags_refuse_what_cannot_work_in_one_line(four_layers, glue_dir, tmp_path, capsys, flags, message):
  out = tmp_path / "run"
  try:
    status = _train_cli(glue_dir, four_layers, out, *flags)
  except SystemExit as e:  # argparse's own refusals
    status = e.code
  assert status == 2
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1
  assert not out.exists()


def test_prefix_cache_run_resumes_after_a_crash_to_the_same_result(four_layers, tiny_task, tmp_path, monkeypatch):
  config = TrainConfig(encoder=four_layers, adapter=TOP_HALF, learning_rate=3e-3, epochs=2, batch_size=8,
                       prefix_cache=True)
  train_task(*tiny_task, config, out_dir=str(tmp_path / "reference"), verbose=False, checkpoint_every_steps=None)
  count_step = loop._RunProgress.on_train_batch_end

  def crash_at_step_11(self, batch, logs=None):
    count_step(self, batch, logs)
    if self.global_step == 11:
      raise SimulatedCrash

  out = tmp_path / "crashed"
  with monkeypatch.context() as m:
    m.setattr(loop._RunProgress, "on_train_batch_end", crash_at_step_11)
    with pytest.raises(SimulatedCrash):
      train_task(*tiny_task, config, out_dir=str(out), verbose=False, checkpoint_every_steps=3)
  train_task(*tiny_task, config, out_dir=str(out), verbose=False, checkpoint_every_steps=3)
  runs = [json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "reference")]
  for run in runs:
    run.pop("seconds")
  assert runs[0] == runs[1]
  weights = [load_file(str(d / "artifact" / "weights.safetensors")) for d in (out, tmp_path / "reference")]
  for key in weights[1]:
    np.testing.assert_array_equal(weights[0][key], weights[1][key], err_msg=key)


def test_jit_compiled_run_matches_the_plain_run(tmp_path, tiny_task):
  # No dropout anywhere: XLA draws other dropout masks.
  encoder = write_tiny_hf_bert(str(tmp_path / "encoder"), seed=0, num_layers=4, dropout=0.0)
  results = {}
  for jit in (False, True):
    config = TrainConfig(encoder=encoder, adapter=AdapterConfig(size=4), learning_rate=3e-3, epochs=2,
                         batch_size=8, dropout_rate=0.0, jit_compile=jit)
    result, model = train_task(*tiny_task, config, verbose=False)
    assert bool(model.jit_compile) is jit
    results[jit] = result
  plain, jitted = results[False], results[True]
  assert jitted.best_epoch == plain.best_epoch
  for a, b in zip(plain.history, jitted.history):
    assert a.keys() == b.keys()
    for key in a:
      assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-4), key


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_run_computes_in_that_dtype_and_trains(four_layers, tiny_task, precision):
  config = TrainConfig(encoder=four_layers, adapter=AdapterConfig(size=4), learning_rate=3e-3, epochs=1,
                       batch_size=8, mixed_precision=precision)
  result, model = train_task(*tiny_task, config, verbose=False)
  assert tf_keras.mixed_precision.global_policy().name == "float32"  # restored after the run
  assert model.encoder.transformer_layers[0].compute_dtype == precision
  assert {v.dtype.name for v in model.trainable_variables} == {"float32"}
  assert isinstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer) is (precision == "float16")
  assert np.isfinite(result.history[0]["loss"]) and 0.0 <= result.score <= 1.0


def test_mixed_precision_refuses_an_encoder_built_in_another_dtype(four_layers, tiny_task):
  config = TrainConfig(encoder=four_layers, adapter=AdapterConfig(size=4), mixed_precision="bfloat16")
  pretrained = load_encoder(four_layers, AdapterConfig(size=4))  # float32
  with pytest.raises(ValueError, match=r"computes in float32.*precision_policy\('bfloat16'\)"):
    train_task(*tiny_task, config, pretrained=pretrained, verbose=False)


def test_sweep_passes_the_speed_options_to_every_trial(four_layers, glue_dir, tmp_path, capsys):
  out = tmp_path / "sweep"
  assert cli.main(["sweep", "--task", "sst2", "--data-dir", glue_dir, "--encoder", four_layers,
                   "--adapter-layers", "2", "3", "--prefix-cache", "--learning-rates", "1e-2", "--epochs", "1",
                   "--adapter-sizes", "2", "4", "--out", str(out), "--json"]) == 0
  trials = sorted((out / "trials").iterdir())
  assert len(trials) == 2
  for trial in trials:
    config = json.loads((trial / "metrics.json").read_text())["config"]
    assert config["prefix_cache"] is True and config["adapter"]["layers"] == [2, 3]
