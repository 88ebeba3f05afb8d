"""The paper's analyses: ablation, init-scale and trade-off studies and their CLI."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from official.nlp.modeling import layers as mg_layers

from adapter_keras import cli
from adapter_keras.analysis import ablation, common, init_scale, tradeoff
from adapter_keras.config import AdapterConfig
from adapter_keras.encoder import BertConfig, build_encoder
from adapter_keras.networks import TaskModel, build_task_model
from adapter_keras.preprocessing import BertPreprocessor
from adapter_keras.pretrained import load_encoder
from adapter_keras.tasks import get_task
from adapter_keras.tasks.sources import DataSource, load_task_data
from adapter_keras.testing import write_tiny_hf_bert
from adapter_keras.train.config import TrainConfig
from adapter_keras.train.inputs import encode_examples
from tests.helpers import last_json

# One batch per epoch and per evaluation: every run traces its functions once.
FAST_TRAINING = ["--epochs", "1", "--batch-size", "64", "--max-seq-length", "32"]


@pytest.fixture(scope="module")
def one_layer_encoder_dir(tmp_path_factory):
  """For the studies that train many models: one layer traces fastest."""
  return write_tiny_hf_bert(str(tmp_path_factory.mktemp("enc1")), seed=1, num_layers=1, dropout=0.0)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, glue_dir, encoder_dir):
  out = tmp_path_factory.mktemp("run")
  # A large init std makes every adapter matter, so ablations change predictions.
  assert cli.main(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                   "--adapter-size", "4", "--adapter-init-std", "0.5", "--learning-rate", "1e-2",
                   *FAST_TRAINING, "--out", str(out)]) == 0
  return str(out / "artifact")


@pytest.fixture(scope="module")
def second_artifact(tmp_path_factory, glue_dir, encoder_dir):
  """`artifact`'s training with another seed: an ablation to average with its own."""
  out = tmp_path_factory.mktemp("run-seed1")
  assert cli.main(["train", "--task", "sst2", "--data-dir", glue_dir, "--encoder", encoder_dir,
                   "--adapter-size", "4", "--adapter-init-std", "0.5", "--learning-rate", "1e-2",
                   "--seed", "1", *FAST_TRAINING, "--out", str(out)]) == 0
  return str(out / "artifact")


def _assert_png(path):
  with open(path, "rb") as f:
    head = f.read(8)
  assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 2000


# ---------------------------------------------------------------- ablation


def test_ablation_cli_writes_the_matrix_and_a_heatmap(tmp_path, capsys, artifact, encoder_dir, glue_dir):
  out = tmp_path / "ablation"
  assert cli.main(["analyze", "ablation", "--artifact", artifact, "--encoder", encoder_dir, "--task", "sst2",
                   "--data-dir", glue_dir, "--out", str(out), "--json"]) == 0
  printed = capsys.readouterr().out.strip().splitlines()
  result = json.loads(printed[-1])
  assert [line.split(":")[0] for line in printed if line.startswith("[ablation] ") and "/5 " in line] == [
      "[ablation] 1/5 all adapters on", "[ablation] 2/5 layers 0..0 removed", "[ablation] 3/5 layers 0..1 removed",
      "[ablation] 4/5 layers 1..1 removed", "[ablation] 5/5 all adapters removed"]
  written = json.loads((out / "ablation.json").read_text())
  assert {k: v for k, v in result.items() if k not in ("json", "png")} == written
  assert set(written) == {"layers", "metric", "baseline", "matrix", "all_removed", "majority_class",
                          "majority_source", "task", "split"}
  assert written["layers"] == 2 and written["metric"] == "accuracy" and written["split"] == "dev"
  matrix = written["matrix"]
  assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
  assert matrix[1][0] is None
  assert all(isinstance(matrix[i][j], float) for i in range(2) for j in range(i, 2))
  # Removing layers 0..L-1 is removing every adapter.
  assert written["baseline"] + matrix[0][1] == pytest.approx(written["all_removed"])
  # Majority class of SST-2's train labels, scored on dev.
  task, train, dev = load_task_data(DataSource(task="sst2", data_dir=glue_dir))
  majority = np.bincount(train.labels).argmax()
  assert written["majority_source"] == "train"
  assert written["majority_class"] == pytest.approx(np.mean(dev["dev"].labels == majority))
  _assert_png(out / "ablation.png")


def test_ablation_without_train_data_uses_dev_majority(tmp_path, capsys, artifact, encoder_dir, glue_dir):
  dev_file = os.path.join(glue_dir, "SST-2", "dev.tsv")
  out = tmp_path / "ablation"
  assert cli.main(["analyze", "ablation", "--artifact", artifact, "--encoder", encoder_dir, "--dev", dev_file,
                   "--text-column", "sentence", "--label-column", "label", "--out", str(out), "--json"]) == 0
  result = last_json(capsys)
  assert result["majority_source"] == "dev"
  labels = load_task_data(DataSource(task="sst2", data_dir=glue_dir))[2]["dev"].labels
  assert result["majority_class"] == pytest.approx(np.mean(labels == np.bincount(labels).argmax()))


def test_ablation_matrix_is_what_toggling_the_adapters_gives_and_restores_plain_blocks(glue_dir, encoder_dir):
  pretrained = load_encoder(encoder_dir, AdapterConfig(size=4, init_std=0.5), adapter_seed=0)
  task = get_task("sst2")
  model = build_task_model(pretrained, task)
  preprocessor = BertPreprocessor(pretrained.vocab_file, pretrained.lower_case, 32)
  dev = load_task_data(DataSource(task="sst2", data_dir=glue_dir), need_train=False)[2]
  encoded = encode_examples(preprocessor, dev["dev"])
  encoder = model.encoder
  encoder.set_adapters_enabled(False, layers=[1])
  result = ablation.ablation_study(model, task, encoded)
  assert result["majority_source"] == "dev"
  # The study measured with all adapters on and left the gates as it found them.
  assert [a.is_enabled for a in encoder.adapters()] == [True, True, False, False]
  encoder.set_adapters_enabled(True)
  for first in range(2):
    for last in range(first, 2):
      encoder.set_adapters_enabled(False, layers=range(first, last + 1))
      score = ablation.evaluate_model_on(model, task, encoded)
      encoder.set_adapters_enabled(True)
      assert score - result["baseline"] == result["matrix"][first][last]

  # With its adapters off, each block computes exactly the plain Model Garden block.
  x = tf.random.normal((2, 5, 32), seed=1)
  mask = tf.ones((2, 5, 5))
  for block in encoder.transformer_layers:
    config = {k: v for k, v in block.get_config().items()
              if k not in ("adapter_config", "layer_index", "adapter_seed", "name")}
    plain = mg_layers.TransformerEncoderBlock.from_config(config)
    plain([x, mask])
    base = [v for v in block.weights if "adapter" not in v.name]
    for src, dst in zip(base, plain.weights):
      dst.assign(src)
    expected = plain([x, mask]).numpy()
    assert np.abs(block([x, mask]).numpy() - expected).max() > 1e-3
    block.set_adapters_enabled(False)
    np.testing.assert_array_equal(block([x, mask]).numpy(), expected)
    block.set_adapters_enabled(True)
  # All off: exactly the encoder without adapters.
  plain_encoder = load_encoder(encoder_dir, None).encoder
  features = preprocessor(np.array(dev["dev"].text[:4]))
  encoder.set_adapters_enabled(False)
  np.testing.assert_array_equal(encoder(features)["sequence_output"].numpy(),
                                plain_encoder(features)["sequence_output"].numpy())


def test_ablation_refuses_a_model_without_adapters():
  encoder = build_encoder(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32), None)
  model = TaskModel(encoder, 2).build_with_dummy_inputs()
  with pytest.raises(ValueError, match="no adapters"):
    ablation.ablation_study(model, get_task("sst2"), None)


def test_majority_class_score():
  task = get_task("sst2")
  assert ablation.majority_class_score(task, np.array([1, 1, 0]), np.array([1, 0, 0, 0])) == 0.25
  assert ablation.majority_class_score(get_task("stsb"), np.array([1.0, 2.0]), np.array([0.5])) is None


def _sem(values):
  return np.std(values, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0


def _assert_mean_and_sem_over_runs(result):
  """ablation.json's mean and s.e.m. against numpy over its per-run values."""
  per_run = result["per_run"]
  layers = result["layers"]
  for name in ("baseline", "all_removed"):
    values = np.array([run[name] for run in per_run], float)
    assert result["mean"][name] == pytest.approx(values.mean())
    assert result["sem"][name] == pytest.approx(_sem(values))
  for first in range(layers):
    for last in range(layers):
      cells = [run["matrix"][first][last] for run in per_run]
      if last < first:
        assert result["mean"]["matrix"][first][last] is None and result["sem"]["matrix"][first][last] is None
        continue
      values = np.array([c for c in cells if c is not None], float)
      assert result["mean"]["matrix"][first][last] == pytest.approx(values.mean())
      assert result["sem"]["matrix"][first][last] == pytest.approx(_sem(values))


def test_ablation_over_runs_is_the_mean_and_sem_of_each_cell(tmp_path):
  rng = np.random.default_rng(0)
  runs = []
  for seed in range(3):
    matrix = [[float(rng.normal()) if j >= i else None for j in range(3)] for i in range(3)]
    runs.append(dict(layers=3, metric="accuracy", task="rte", matrix=matrix, baseline=0.6 + 0.01 * seed,
                     all_removed=0.5 - 0.02 * seed, majority_class=0.52, majority_source="train",
                     artifact=f"run{seed}/artifact", seed=seed))
  runs[2]["matrix"][0][1] = None  # a diverged evaluation drops out of its cell only
  result = ablation.ablation_over_runs(runs)
  assert result["n_runs"] == 3 and [r["seed"] for r in result["per_run"]] == [0, 1, 2]
  _assert_mean_and_sem_over_runs(result)
  _assert_png(ablation.plot_ablation(result, str(tmp_path / "mean.png")))
  with pytest.raises(ValueError, match="does not match"):
    ablation.ablation_over_runs([runs[0], dict(runs[1], task="mrpc")])


def _sweep_trial(sweep, template, size, lr, seed, score, artifact=None):
  """A sweep trial directory as `sweep` writes it, from a real run's metrics.json."""
  record = json.loads(open(os.path.join(os.path.dirname(template), "metrics.json"), encoding="utf-8").read())
  record["score"] = score
  record["config"] = dict(record["config"], learning_rate=lr, seed=seed,
                          adapter=dict(record["config"]["adapter"], size=size))
  trial = sweep / "trials" / f"adapter_size{size}-epochs1-learning_rate{lr}-seed{seed}"
  trial.mkdir(parents=True)
  (trial / "metrics.json").write_text(json.dumps(record))
  if artifact:
    shutil.copytree(artifact, trial / "artifact")
  return str(trial)


@pytest.mark.parametrize("source", ["artifacts", "sweep"])
def test_ablation_over_seeds_cli_averages_the_artifacts(tmp_path, capsys, artifact, second_artifact, encoder_dir,
                                                        glue_dir, source):
  if source == "artifacts":
    # Run directories stand for their artifact/, as with --artifact.
    selection = ["--artifacts", os.path.dirname(artifact), os.path.dirname(second_artifact)]
  else:
    sweep = tmp_path / "sweep"
    # lr 1e-2 has the single best trial, lr 1e-3 the best mean; size 8 is not asked for.
    for lr, seed, score in ((1e-2, 0, 0.9), (1e-2, 1, 0.1), (1e-3, 0, 0.6), (1e-3, 1, 0.6)):
      _sweep_trial(sweep, artifact, 4, lr, seed, score,
                   artifact=(artifact, second_artifact)[seed] if lr == 1e-3 else None)
    _sweep_trial(sweep, artifact, 8, 1e-3, 0, 0.99)
    selection = ["--artifacts-from-sweep", str(sweep), "--adapter-size", "4"]
  out = tmp_path / "ablation"
  assert cli.main(["analyze", "ablation", *selection, "--encoder", encoder_dir, "--task", "sst2",
                   "--data-dir", glue_dir, "--out", str(out), "--json"]) == 0
  printed = capsys.readouterr().out.strip().splitlines()
  result = json.loads(printed[-1])
  # Per artifact: which one, its L(L+1)/2 + 2 evaluations, its scores.
  for index in (1, 2):
    assert sum(line.startswith(f"[ablation] artifact {index}/2: ") for line in printed) == 2
  assert sum(line.startswith("[ablation] 5/5 ") for line in printed) == 2
  written = json.loads((out / "ablation.json").read_text())
  assert {k: v for k, v in result.items() if k not in ("json", "png")} == written
  assert written["n_runs"] == 2 and written["task"] == "sst2" and written["split"] == "dev"
  assert [run["seed"] for run in written["per_run"]] == [0, 1]
  assert written["per_run"][0]["matrix"] != written["per_run"][1]["matrix"]  # seeds differ
  _assert_mean_and_sem_over_runs(written)
  if source == "sweep":
    picked = written["selected_from_sweep"]
    assert (picked["learning_rate"], picked["adapter_size"], picked["seeds"]) == (1e-3, 4, [0, 1])
    assert picked["mean"] == pytest.approx(0.6)
    assert all("learning_rate0.001" in run["artifact"] for run in written["per_run"])
  _assert_png(out / "ablation.png")


def test_ablation_refuses_artifacts_of_different_tasks(tmp_path, capsys, artifact, encoder_dir, glue_dir):
  other = tmp_path / "rte-artifact"
  shutil.copytree(artifact, other)
  manifest = json.loads((other / "manifest.json").read_text())
  manifest["task"]["name"] = "rte"
  (other / "manifest.json").write_text(json.dumps(manifest))
  assert cli.main(["analyze", "ablation", "--artifacts", artifact, str(other), "--encoder", encoder_dir,
                   "--task", "sst2", "--data-dir", glue_dir, "--out", str(tmp_path / "out")]) == 2
  captured = capsys.readouterr()
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and str(other) in err[0] and "'rte'" in err[0], err
  assert "[ablation] artifact" not in captured.out  # refused before any evaluation


# ---------------------------------------------------------------- initialisation scale


def test_init_scale_cli_trains_per_std_and_seed_and_resumes(tmp_path, capsys, monkeypatch, glue_dir,
                                                            one_layer_encoder_dir):
  out = tmp_path / "init"
  argv = ["analyze", "init-scale", "--task", "rte", "--data-dir", glue_dir,
          "--encoder", one_layer_encoder_dir, "--adapter-size", "2", *FAST_TRAINING,
          "--stds", "1e-1", "1e-4", "--seeds", "3", "--out", str(out), "--json"]
  assert cli.main(argv) == 0
  result = last_json(capsys)
  written = json.loads((out / "init_scale.json").read_text())
  assert {k: v for k, v in result.items() if k not in ("json", "png")} == written
  assert written["stds"] == [1e-4, 1e-1] and written["seeds"] == [3] and written["metric"] == "accuracy"
  scores = np.array(written["scores"], float)
  assert scores.shape == (2, 1)
  np.testing.assert_allclose(written["mean"], scores[:, 0])
  assert written["sem"] == [0.0, 0.0]  # one seed: no spread to report
  for std in (1e-4, 1e-1):
    run = json.loads((out / "runs" / f"std{std:g}-seed3.json").read_text())
    assert run["config"]["adapter"]["init_std"] == std and run["config"]["seed"] == 3
    assert run["config"]["adapter"]["size"] == 2
  _assert_png(out / "init_scale.png")

  def no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")

  monkeypatch.setattr(common, "train_task", no_training)
  before = (out / "init_scale.json").read_bytes()
  assert cli.main(argv) == 2  # the earlier result is kept unless --overwrite
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "init_scale.json and init_scale.png" in err[0] and "--overwrite" in err[0], err
  assert (out / "init_scale.json").read_bytes() == before
  assert cli.main(argv + ["--overwrite"]) == 0
  assert last_json(capsys)["scores"] == written["scores"]


def test_init_scale_summary_is_mean_and_sem_over_seeds(tmp_path):
  scores = [[0.5, 0.7, 0.9], [0.6, None, 0.8], [None, None, None]]
  result = init_scale.summarise_init_scale("rte", "accuracy", [1e-3, 1e-2, 1e-1], [0, 1, 2], scores)
  assert result["mean"][:2] == pytest.approx([0.7, 0.7]) and result["mean"][2] is None
  assert result["sem"][0] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1) / np.sqrt(3))
  assert result["sem"][1] == pytest.approx(np.std([0.6, 0.8], ddof=1) / np.sqrt(2))
  _assert_png(init_scale.plot_init_scale(result, str(tmp_path / "init.png")))


def test_init_scale_rejects_bad_stds(tmp_path, capsys, glue_dir, one_layer_encoder_dir):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["analyze", "init-scale", "--task", "rte", "--data-dir", glue_dir, "--encoder",
              one_layer_encoder_dir, "--stds", "0", "--out", str(tmp_path)])
  assert exit_info.value.code == 2 and "positive" in capsys.readouterr().err
  task, train, dev = load_task_data(DataSource(task="rte", data_dir=glue_dir))
  with pytest.raises(ValueError, match="adapters"):
    init_scale.init_scale_study(task, train, dev, TrainConfig(method="full"), [1e-2], [0], str(tmp_path))


# ---------------------------------------------------------------- trade-off


def test_tradeoff_cli_on_several_tasks_normalises_by_full_fine_tuning(tmp_path, capsys, glue_dir,
                                                                      one_layer_encoder_dir):
  out = tmp_path / "tradeoff"
  assert cli.main(["analyze", "tradeoff", "--tasks", "sst2", "rte", "--data-dir", glue_dir, "--encoder",
                   one_layer_encoder_dir, *FAST_TRAINING, "--adapter-sizes", "2",
                   "--fine-tune-learning-rate", "1e-4", "--out", str(out), "--json"]) == 0
  result = last_json(capsys)
  written = json.loads((out / "tradeoff.json").read_text())
  assert {k: v for k, v in result.items() if k not in ("json", "png")} == written
  assert written["tasks"] == ["sst2", "rte"] and written["normalised"] is True
  methods = {(r["task"], r["method"], r["setting"]) for r in written["runs"]}
  assert methods == {(t, m, s) for t in ("sst2", "rte")
                     for m, s in (("adapter", 2), ("full", None))}
  assert set(written["curves"]) == {"adapter"}
  for method, points in written["curves"].items():
    (point,) = points
    runs = [r for r in written["runs"] if r["method"] == method]
    deltas = [r["score"] - written["full"][r["task"]] for r in runs]
    expected = np.percentile(deltas, [20, 50, 80])
    assert [point["p20"], point["p50"], point["p80"]] == pytest.approx(expected)
    assert point["trained_params"] == pytest.approx(np.mean([r["trained_params"] for r in runs]))
  assert written["curves"]["adapter"][0]["trained_params"] < written["runs"][-1]["trained_params"]  # full
  full_config = json.loads((out / "runs" / "rte-full.json").read_text())["config"]
  assert (full_config["method"], full_config["learning_rate"]) == ("full", 1e-4)
  adapter_config = json.loads((out / "runs" / "rte-adapter-2.json").read_text())["config"]
  assert (adapter_config["adapter"]["size"], adapter_config["learning_rate"]) == (2, 3e-4)
  _assert_png(out / "tradeoff.png")


def test_tradeoff_settings_become_train_configs():
  settings = tradeoff.tradeoff_settings([64, 8, 8], [2, 1], layer_norm=True, full=True)
  assert [s.key for s in settings] == ["adapter-8", "adapter-64", "top-k-1", "top-k-2", "layer-norm", "full"]
  base = TrainConfig(adapter=AdapterConfig(size=16, placement="parallel"), learning_rate=1e-3)
  configs = [tradeoff.setting_train_config(base, s, fine_tune_learning_rate=3e-5) for s in settings]
  assert [(c.method, c.top_k, c.learning_rate) for c in configs] == [
      ("adapter", None, 1e-3), ("adapter", None, 1e-3), ("top-k", 1, 3e-5), ("top-k", 2, 3e-5),
      ("layer-norm", None, 1e-3), ("full", None, 3e-5)]
  assert [c.adapter.size for c in configs[:2]] == [8, 64]
  assert configs[1].adapter.placement == "parallel"  # the variant flags reach every adapter run
  with pytest.raises(ValueError, match="nothing to compare"):
    tradeoff.tradeoff_settings([], [], layer_norm=False, full=True)


def test_tradeoff_summary_and_plot_for_one_task(tmp_path):
  runs = [dict(task="cola", method="adapter", setting=m, trained_params=p, score=s)
          for m, p, s in ((64, 9000, 0.5), (8, 1500, 0.4))]
  runs.append(dict(task="cola", method="layer-norm", setting=None, trained_params=300, score=0.2))
  result = tradeoff.summarise_tradeoff(runs, {"cola": "mcc"})
  assert result["normalised"] is False and "full" not in result
  shown = ("setting", "trained_params", "score", "n_seeds", "sem")
  assert [{k: p[k] for k in shown} for p in result["curves"]["adapter"]] == [
      dict(setting=8, trained_params=1500.0, score=0.4, n_seeds=1, sem=0.0),
      dict(setting=64, trained_params=9000.0, score=0.5, n_seeds=1, sem=0.0)]
  assert [{k: p[k] for k in shown} for p in result["curves"]["layer-norm"]] == [
      dict(setting=None, trained_params=300.0, score=0.2, n_seeds=1, sem=0.0)]
  _assert_png(tradeoff.plot_tradeoff(result, str(tmp_path / "one.png")))
  with pytest.raises(ValueError, match="full fine-tuning"):
    tradeoff.summarise_tradeoff(runs + [dict(runs[0], task="rte")], {"cola": "mcc", "rte": "accuracy"})


def test_tradeoff_summary_and_plot_for_several_tasks(tmp_path):
  full = {"cola": 0.6, "rte": 0.7, "sst2": 0.9}
  runs = [dict(task=t, method="full", setting=None, trained_params=110000, score=s) for t, s in full.items()]
  for task, delta in (("cola", -0.1), ("rte", 0.0), ("sst2", -0.3)):
    runs.append(dict(task=task, method="layer-norm", setting=None, trained_params=400,
                     score=full[task] + delta))
    for k, params in ((1, 7000), (2, 14000)):
      runs.append(dict(task=task, method="top-k", setting=k, trained_params=params,
                       score=full[task] + delta / k))
  result = tradeoff.summarise_tradeoff(runs, {"cola": "mcc", "rte": "accuracy", "sst2": "accuracy"})
  assert result["normalised"] is True and result["full"] == full
  (layer_norm,) = result["curves"]["layer-norm"]
  expected = np.percentile([-0.1, 0.0, -0.3], [20, 50, 80])
  assert [layer_norm[f"p{q}"] for q in (20, 50, 80)] == pytest.approx(expected)
  assert [p["setting"] for p in result["curves"]["top-k"]] == [1, 2]
  assert result["curves"]["top-k"][1]["p50"] == pytest.approx(-0.05)
  _assert_png(tradeoff.plot_tradeoff(result, str(tmp_path / "several.png")))


@pytest.mark.parametrize("extra,message", [
    ([], "nothing to compare"),
    (["--top-k", "2"], "exceeds"),
    (["--adapter-sizes", "2", "--task", "rte"], "--tasks"),
    (["--adapter-sizes", "2", "--learning-rates", "1e-3", "--fine-tune-learning-rate", "1e-4"],
     "--learning-rates"),
    (["--adapter-sizes", "2", "--seeds", "0", "1", "--seed", "0"], "--seeds"),
    (["--adapter-sizes", "2", "--seeds", "0", "0"], "twice"),
])
def test_tradeoff_argument_errors_come_before_training(tmp_path, capsys, glue_dir, one_layer_encoder_dir,
                                                       extra, message):
  assert cli.main(["analyze", "tradeoff", "--tasks", "sst2", "rte", "--data-dir", glue_dir, "--encoder",
                   one_layer_encoder_dir, "--out", str(tmp_path), *extra]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
  assert not os.path.exists(tmp_path / "runs")


def _train_run(out, glue_dir, encoder_dir, task, *method):
  assert cli.main(["train", "--task", task, "--data-dir", glue_dir, "--encoder", encoder_dir,
                   *FAST_TRAINING, *method, "--out", str(out)]) == 0
  return str(out)


def test_tradeoff_from_finished_train_runs(tmp_path, capsys, glue_dir, one_layer_encoder_dir):
  runs = [_train_run(tmp_path / name, glue_dir, one_layer_encoder_dir, task, *method)
          for name, task, method in (
              ("sst2-a2", "sst2", ["--method", "adapter", "--adapter-size", "2"]),
              ("sst2-full", "sst2", ["--method", "full"]),
              ("rte-a2", "rte", ["--method", "adapter", "--adapter-size", "2"]),
              ("rte-full", "rte", ["--method", "full"]),
              ("rte-top1", "rte", ["--method", "top-k", "--top-k", "1"]))]
  capsys.readouterr()
  out = tmp_path / "plot"
  assert cli.main(["analyze", "tradeoff", "--from-runs", *runs, "--out", str(out), "--json"]) == 0
  result = last_json(capsys)
  metrics = {os.path.basename(r): json.loads((tmp_path / r / "metrics.json").read_text()) for r in runs}
  assert result["tasks"] == ["sst2", "rte"] and result["normalised"] is True
  assert set(result["curves"]) == {"adapter", "top-k"}
  (adapter_point,) = result["curves"]["adapter"]
  deltas = [metrics[f"{t}-a2"]["score"] - metrics[f"{t}-full"]["score"] for t in ("sst2", "rte")]
  assert adapter_point["p50"] == pytest.approx(np.percentile(deltas, 50))
  assert result["curves"]["top-k"][0]["setting"] == 1
  _assert_png(out / "tradeoff.png")

  assert cli.main(["analyze", "tradeoff", "--from-runs", runs[0], "--out", str(tmp_path / "one")]) == 0
  one = json.loads((tmp_path / "one" / "tradeoff.json").read_text())
  assert one["normalised"] is False and one["curves"]["adapter"][0]["score"] == metrics["sst2-a2"]["score"]

  for argv, message in ((["--from-runs", runs[0], runs[0]], "keep one"),
                        (["--from-runs", runs[0], runs[2]], "needs a full fine-tuning run"),
                        (["--from-runs", str(tmp_path)], "no metrics.json"),
                        (["--from-runs", runs[0], "--adapter-sizes", "4"], "do not combine")):
    capsys.readouterr()
    assert cli.main(["analyze", "tradeoff", *argv, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def _fake_run(path, task, method, lr, seed, score, size=None, epochs=1):
  """A finished run's metrics.json, as `train` or a sweep trial writes it."""
  os.makedirs(path)
  config = dict(method=method, learning_rate=lr, epochs=epochs, seed=seed, top_k=None,
                adapter=dict(size=size) if method == "adapter" else None)
  trained = {"adapter": 100 * (size or 0) + 50, "full": 100000}[method]
  record = dict(task=task, method=method, score=score, primary_metric="accuracy", base_params=100000,
                trained_params=trained, trained_fraction=trained / 100000, config=config)
  with open(os.path.join(path, "metrics.json"), "w", encoding="utf-8") as f:
    json.dump(record, f)
  return str(path)


def test_tradeoff_from_runs_tunes_the_learning_rate_on_the_mean_over_seeds(tmp_path, capsys):
  runs = []
  # lr 1e-4 has the single best run (0.9) but lr 1e-3 the best mean (0.70 against 0.63).
  for lr, scores in ((1e-4, (0.9, 0.5, 0.5)), (1e-3, (0.7, 0.68, 0.72))):
    runs += [_fake_run(tmp_path / f"a8-lr{lr}-s{seed}", "rte", "adapter", lr, seed, score, size=8)
             for seed, score in enumerate(scores)]
  for lr, scores in ((3e-5, (0.8, 0.78, 0.82)), (3e-4, (0.5, 0.5))):
    runs += [_fake_run(tmp_path / f"full-lr{lr}-s{seed}", "rte", "full", lr, seed, score)
             for seed, score in enumerate(scores)]
  out = tmp_path / "plot"
  assert cli.main(["analyze", "tradeoff", "--from-runs", *runs, "--out", str(out), "--json"]) == 0
  result = last_json(capsys)
  (point,) = result["curves"]["adapter"]
  assert (point["learning_rate"], point["n_seeds"], point["seeds"]) == (1e-3, 3, [0, 1, 2])
  assert point["scores"] == [0.7, 0.68, 0.72]
  assert point["score"] == pytest.approx(0.7) and point["sem"] == pytest.approx(_sem([0.7, 0.68, 0.72]))
  assert [(c["learning_rate"], c["n_seeds"]) for c in point["by_learning_rate"]] == [(1e-4, 3), (1e-3, 3)]
  assert [c["mean"] for c in point["by_learning_rate"]] == pytest.approx([0.6333333, 0.7])
  assert result["full"] == {"rte": pytest.approx(0.8)}
  assert result["full_selection"]["rte"]["learning_rate"] == 3e-5
  assert json.loads((out / "tradeoff.json").read_text())["curves"] == result["curves"]
  _assert_png(out / "tradeoff.png")


@pytest.mark.parametrize("study,argv", [
    ("tradeoff", ["tradeoff", "--from-runs", "RUN"]),
    ("ablation", ["ablation", "--artifact", "ARTIFACT", "--task", "sst2"]),
    ("fusion", ["fusion", "--artifact", "ARTIFACT", "--task", "sst2"]),
    ("init_scale", ["init-scale", "--task", "rte"])])
@pytest.mark.parametrize("existing", ["json", "png"])
def test_a_study_refuses_an_out_holding_its_earlier_result_before_any_work(tmp_path, capsys, study, argv,
                                                                           existing):
  """Nothing the user has is replaced without --overwrite; the check comes first, so missing inputs are not
  even read."""
  out = tmp_path / "out"
  out.mkdir()
  (out / f"{study}.{existing}").write_text("the user's")
  assert cli.main(["analyze", *argv, "--out", str(out)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and f"{study}.{existing} already" in err[0] and "--overwrite" in err[0], err
  assert (out / f"{study}.{existing}").read_text() == "the user's"
  assert sorted(os.listdir(out)) == [f"{study}.{existing}"]


@pytest.mark.parametrize("seed,refused", [(0, True), (1, False)])
def test_tradeoff_from_runs_refuses_only_exact_duplicates(tmp_path, capsys, seed, refused):
  runs = [_fake_run(tmp_path / "a", "rte", "adapter", 1e-3, 0, 0.7, size=8),
          _fake_run(tmp_path / "b", "rte", "adapter", 1e-3, seed, 0.6, size=8)]
  code = cli.main(["analyze", "tradeoff", "--from-runs", *runs, "--out", str(tmp_path / "out"), "--json"])
  if refused:
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keep one" in err[0] and "seed 0" in err[0], err
  else:
    assert code == 0
    (point,) = last_json(capsys)["curves"]["adapter"]
    assert (point["n_seeds"], point["score"]) == (2, pytest.approx(0.65))


def test_tradeoff_cli_over_seeds_and_learning_rates(tmp_path, capsys, glue_dir, one_layer_encoder_dir):
  out = tmp_path / "tradeoff"
  assert cli.main(["analyze", "tradeoff", "--task", "rte", "--data-dir", glue_dir, "--encoder",
                   one_layer_encoder_dir, *FAST_TRAINING, "--adapter-sizes", "2", "--seeds", "0", "1",
                   "--learning-rates", "1e-3", "1e-2", "--out", str(out), "--json"]) == 0
  result = last_json(capsys)
  written = json.loads((out / "tradeoff.json").read_text())
  assert {k: v for k, v in result.items() if k not in ("json", "png")} == written
  assert {(r["learning_rate"], r["seed"]) for r in written["runs"]} == {(lr, s) for lr in (1e-3, 1e-2)
                                                                         for s in (0, 1)}
  for lr in (1e-3, 1e-2):
    for seed in (0, 1):
      config = json.loads((out / "runs" / f"rte-adapter-2-lr{lr:g}-seed{seed}.json").read_text())["config"]
      assert (config["learning_rate"], config["seed"], config["adapter"]["size"]) == (lr, seed, 2)
  (point,) = written["curves"]["adapter"]
  assert point["n_seeds"] == 2 and point["seeds"] == [0, 1]
  means = {lr: np.mean([r["score"] for r in written["runs"] if r["learning_rate"] == lr]) for lr in (1e-3, 1e-2)}
  assert point["learning_rate"] == max(means, key=means.get)
  assert point["score"] == pytest.approx(means[point["learning_rate"]])
  _assert_png(out / "tradeoff.png")
