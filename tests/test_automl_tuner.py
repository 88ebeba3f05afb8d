"""The keras-tuner search over tf_keras wide & deep models: reports, resuming, oracles."""
import csv
import json
import os
import re

import pytest

from adapter_keras.tasks.data import TextExamples
from automl_baseline import modules, tuner
from automl_baseline.export import predict_labels
from automl_baseline.search_space import SearchSpace, SearchSpaceHyperModel, TrialConfig
from automl_baseline.towers import ModelSettings
from automl_baseline.training import TrainingBudget

BUDGET = TrainingBudget(sample_scale=0.001, max_epochs=2)


def _read_csv(path):
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))


def test_search_reports_and_resumes_without_redoing_trials(word_module_dir, sentiment_examples, tmp_path):
  train, dev = sentiment_examples
  out = str(tmp_path / "search")
  kwargs = dict(space=SearchSpace(embedding_modules=(word_module_dir,)), oracle="random", seed=0,
                budget=BUDGET, wide_buckets=256)
  lines, rows_when_reported = [], []

  def progress(line):  # trials.csv is up to date whenever a trial's line appears
    lines.append(line)
    if line.startswith("trial "):
      rows_when_reported.append(len(_read_csv(os.path.join(out, "trials.csv"))))

  best = tuner.run_search(train, dev, out, max_trials=2, progress=progress, **kwargs)

  trial_lines = [l for l in lines if l.startswith("trial ")]
  assert [l.split(":")[0] for l in trial_lines] == ["trial 1/2", "trial 2/2"]
  assert rows_when_reported == [1, 2]
  for number, line in enumerate(trial_lines, 1):
    # trial 1/2: val_accuracy 0.6250 (best 0.6250) in 2s (1 steps) | completed 1, elapsed 3s, ETA 3s [...]
    assert re.match(r"trial \d/2: val_accuracy [01]\.\d{4} \(best [01]\.\d{4}\) in \d+s "
                    r"\(\d+ steps\) \| completed (\d), elapsed \d+s, ETA \d+s \[.+ lr .+\]$", line), line
    assert re.search(r"completed (\d)", line).group(1) == str(number)
  assert trial_lines[-1].split("ETA ")[1].startswith("0s")
  rows = _read_csv(os.path.join(out, "trials.csv"))
  assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
  assert list(rows[0])[:8] == ["trial", "trial_id", "status", "val_accuracy", "val_loss",
                               "train_steps", "train_seconds", "trial_seconds"]
  assert [int(r["trial"]) for r in rows] == [1, 2]
  for row in rows:  # numeric columns hold plain numbers, so the file sorts as numbers
    assert float(row["val_accuracy"]) == pytest.approx(float(row["val_accuracy"]))
    int(row["train_steps"])
    int(row["training_samples"])
    float(row["deep_learning_rate"])
    float(row["trial_seconds"])
  assert {"trial_id", "val_accuracy", "embedding_module", "hidden_layers", "training_samples",
          "conv_filters"} <= set(rows[0])
  with open(os.path.join(out, "best.json"), encoding="utf-8") as f:
    assert json.load(f) == best
  assert best["val_accuracy"] == pytest.approx(max(float(r["val_accuracy"]) for r in rows))
  assert best["trials_completed"] == 2 and best["trials_run_now"] == 2
  assert TrialConfig.from_hyperparameters(best["hyperparameters"]).embedding_module == word_module_dir
  assert set(predict_labels(best["model_dir"], ["good fun", "awful"])) <= {"neg", "pos"}
  saved_model = os.path.join(best["model_dir"], "saved_model.pb")
  written = os.path.getmtime(saved_model)

  # The same search again: every trial is done, and best_model/ already is the best one.
  lines = []
  again = tuner.run_search(train, dev, out, max_trials=2, progress=lines.append, **kwargs)
  assert again["trials_run_now"] == 0 and not any(l.startswith("trial ") for l in lines)
  assert not any("re-training" in l for l in lines)
  assert again["val_accuracy"] == best["val_accuracy"]
  assert os.path.getmtime(saved_model) == written

  # One more trial: only the new one runs.
  more = tuner.run_search(train, dev, out, max_trials=3, progress=lines.append, **kwargs)
  assert more["trials_run_now"] == 1 and more["trials_completed"] == 3
  assert len(_read_csv(os.path.join(out, "trials.csv"))) == 3

  with pytest.raises(ValueError, match="different seed"):
    tuner.run_search(train, dev, out, max_trials=3, **dict(kwargs, seed=1))
  other_space = SearchSpace(embedding_modules=(word_module_dir,), batch_sizes=(256,))
  with pytest.raises(ValueError, match="different search_space"):
    tuner.run_search(train, dev, out, max_trials=3, **dict(kwargs, space=other_space))


@pytest.mark.parametrize("oracle", ["bayesian", "hyperband"])
def test_other_oracles(word_module_dir, sentiment_examples, tmp_path, oracle):
  train, dev = sentiment_examples
  search = tuner.WideDeepTuner(
      tuner.make_oracle(oracle, max_trials=2, seed=0), SearchSpace(embedding_modules=(word_module_dir,)),
      ModelSettings(num_classes=2, wide_buckets=256), BUDGET, directory=str(tmp_path),
      progress=lambda line: None)
  search.search(train, dev, verbose=0)
  completed = search.completed_trials()
  assert len(completed) == 2 and len(search.trials_run) == 2
  if oracle == "hyperband":
    # Hyperband's first rounds give a trial a share of its training budget.
    assert all(0 < tuner.budget_fraction(t.hyperparameters.values) < 1 for t in completed)


@pytest.mark.parametrize("oracle", tuner.ORACLES)
def test_oracles_are_seeded(oracle, tmp_path):
  def first_proposals(seed, run):
    search_oracle = tuner.make_oracle(oracle, max_trials=3, seed=seed)
    search_oracle._set_project_dir(str(tmp_path / f"{seed}-{run}"), "p")  # pylint: disable=protected-access
    hypermodel = SearchSpaceHyperModel(SearchSpace(embedding_modules=("m",)))
    space = search_oracle.get_space()
    hypermodel.build(space)
    search_oracle.update_space(space)
    return [search_oracle.populate_space(str(i))["values"] for i in range(3)]

  assert first_proposals(0, "a") == first_proposals(0, "b")  # keras-tuner alone: 0 = unseeded
  assert first_proposals(0, "a") != first_proposals(1, "a")


def test_module_problems_stop_the_search_before_any_trial(sentiment_examples, tmp_path):
  train, dev = sentiment_examples
  with pytest.raises(modules.ModuleError, match="neither a directory nor a TF Hub handle"):
    tuner.run_search(train, dev, str(tmp_path / "a"), max_trials=1,
                     space=SearchSpace(embedding_modules=(str(tmp_path / "missing"),)))
  tf1 = tmp_path / "tf1"
  tf1.mkdir()
  (tf1 / "tfhub_module.pb").write_bytes(b"")  # searched frozen, but this one does not even load
  with pytest.raises(modules.ModuleError, match="cannot embed text"):
    tuner.run_search(train, dev, str(tmp_path / "b"), max_trials=1,
                     space=SearchSpace(embedding_modules=(str(tf1),)))
  assert not os.path.exists(tmp_path / "b" / "trials.csv")


def test_data_checks(word_module_dir, tmp_path):
  space = SearchSpace(embedding_modules=(word_module_dir,))
  scores = TextExamples(["a", "b"], [0.5, 1.5])
  with pytest.raises(ValueError, match="regression"):
    tuner.run_search(scores, scores, str(tmp_path), max_trials=1, space=space)
  single, pairs = TextExamples(["a"], [0]), TextExamples(["a"], [1], text_b=["b"])
  with pytest.raises(ValueError, match="both pairs"):
    tuner.run_search(single, pairs, str(tmp_path), max_trials=1, space=space)


def test_worker_detection(monkeypatch):
  monkeypatch.delenv("KERASTUNER_ORACLE_IP", raising=False)
  assert not tuner.is_worker()
  monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
  monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner1")
  assert tuner.is_worker()
  monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
  assert not tuner.is_worker()


def test_trials_csv_sorts_trials_numerically_and_formats_durations(word_module_dir, sentiment_examples, tmp_path):
  """keras-tuner pads trial ids to the width of max_trials: "9" then "10" after a resume."""
  train, dev = sentiment_examples
  search = tuner.WideDeepTuner(
      tuner.make_oracle("random", max_trials=9, seed=0), SearchSpace(embedding_modules=(word_module_dir,)),
      ModelSettings(num_classes=2, wide_buckets=256), BUDGET, directory=str(tmp_path),
      progress=lambda line: None)
  hypermodel_space = search.oracle.get_space()
  search.hypermodel.build(hypermodel_space)
  search.oracle.update_space(hypermodel_space)
  for number in range(11):
    if number == 9:
      search.oracle.max_trials = 11  # what run_search does when a search resumes with more trials
    search.oracle.create_trial(f"tuner{number}")
  path = str(tmp_path / "trials.csv")
  tuner.write_trials_csv(search, path)
  rows = _read_csv(path)
  assert [r["trial"] for r in rows] == [str(n) for n in range(1, 12)]
  assert [r["trial_id"] for r in rows][-2:] == ["09", "10"]
  assert [tuner.format_duration(s) for s in (0.4, 59, 61, 3599, 3600, 7325)] == [
      "0s", "59s", "1m01s", "59m59s", "1h00m", "2h02m"]
