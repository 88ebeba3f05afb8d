"""Task registry: GLUE semantics, aliases, user tasks, metrics against hand-computed values."""
import dataclasses
import math

import numpy as np
import pytest

from adapter_keras import tasks
from adapter_keras.tasks import GLUE_TASKS, classification_task, compute_metrics, get_task, regression_task


def one_hot_logits(predictions, num_classes):
  logits = np.full((len(predictions), num_classes), -1.0, np.float32)
  logits[np.arange(len(predictions)), predictions] = 2.0
  return logits


@pytest.mark.parametrize("name,glue_dir,task_type,labels,primary,metrics,dev_splits,pair,average", [
    ("cola", "CoLA", "classification", ("0", "1"), "mcc", ("mcc",), ("dev",), False, True),
    ("sst2", "SST-2", "classification", ("0", "1"), "accuracy", ("accuracy",), ("dev",), False, True),
    ("mrpc", "MRPC", "classification", ("0", "1"), "f1", ("f1", "accuracy"), ("dev",), True, True),
    ("stsb", "STS-B", "regression", None, "spearman", ("pearson", "spearman"), ("dev",), True, True),
    ("qqp", "QQP", "classification", ("0", "1"), "f1", ("f1", "accuracy"), ("dev",), True, True),
    ("mnli", "MNLI", "classification", ("contradiction", "entailment", "neutral"), "accuracy",
     ("accuracy",), ("dev_matched", "dev_mismatched"), True, True),
    ("qnli", "QNLI", "classification", ("entailment", "not_entailment"), "accuracy", ("accuracy",),
     ("dev",), True, True),
    ("rte", "RTE", "classification", ("entailment", "not_entailment"), "accuracy", ("accuracy",),
     ("dev",), True, True),
    ("wnli", "WNLI", "classification", ("0", "1"), "accuracy", ("accuracy",), ("dev",), True, False),
])
def test_glue_registry(name, glue_dir, task_type, labels, primary, metrics, dev_splits, pair, average):
  spec = GLUE_TASKS[name]
  assert (spec.name, spec.glue_dir, spec.task_type, spec.label_names, spec.primary_metric,
          spec.metrics, spec.dev_splits, spec.is_pair, spec.in_average) == (
              name, glue_dir, task_type, labels, primary, metrics, dev_splits, pair, average)
  assert spec.num_outputs == (len(labels) if labels else 1)
  assert get_task(glue_dir) is spec


def test_registry_has_exactly_the_nine_glue_tasks():
  assert sorted(GLUE_TASKS) == sorted(
      ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"])
  assert [t.name for t in GLUE_TASKS.values() if not t.in_average] == ["wnli"]


@pytest.mark.parametrize("alias,name", [
    ("SST-2", "sst2"), ("sst-2", "sst2"), ("STS-B", "stsb"), ("sts-b", "stsb"), ("CoLA", "cola"),
    ("MNLI", "mnli"), (" rte ", "rte"), ("Sst_2", "sst2"),
])
def test_get_task_aliases(alias, name):
  assert get_task(alias).name == name


def test_unknown_task_lists_known_ones():
  with pytest.raises(ValueError, match="Unknown task 'squad'.*cola.*wnli"):
    get_task("squad")


def test_splits():
  assert get_task("mnli").splits == ("train", "dev_matched", "dev_mismatched", "test_matched",
                                     "test_mismatched")
  assert get_task("rte").splits == ("train", "dev", "test")


def test_specs_are_frozen_and_validated():
  with pytest.raises(dataclasses.FrozenInstanceError):
    GLUE_TASKS["rte"].name = "x"
  with pytest.raises(ValueError, match="primary metric"):
    dataclasses.replace(GLUE_TASKS["rte"], primary_metric="f1")
  with pytest.raises(ValueError, match="do not apply to regression"):
    dataclasses.replace(GLUE_TASKS["stsb"], metrics=("accuracy",), primary_metric="accuracy")


# --------------------------------------------------------------------- metrics
# Hand computation for labels [1,0,1,1,0], predictions [1,0,0,1,1]:
# TP=2 (0,3), TN=1 (1), FP=1 (4), FN=1 (2) -> accuracy 3/5, precision = recall = 2/3,
# F1 = 2/3, MCC = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
BINARY_LABELS = np.array([1, 0, 1, 1, 0])
BINARY_PREDICTIONS = np.array([1, 0, 0, 1, 1])


def test_binary_metrics_mrpc_and_qqp():
  for name in ("mrpc", "qqp"):
    result = compute_metrics(get_task(name), one_hot_logits(BINARY_PREDICTIONS, 2), BINARY_LABELS)
    assert result == pytest.approx({"f1": 2 / 3, "accuracy": 0.6})
    assert all(type(v) is float for v in result.values())


def test_mcc_cola():
  result = compute_metrics(get_task("cola"), one_hot_logits(BINARY_PREDICTIONS, 2), BINARY_LABELS)
  assert result == pytest.approx({"mcc": 1 / 6})


def test_f1_positive_class_is_label_one():
  # Swapping the classes changes binary F1: TP=1 (1), FP=1 (2), FN=1 (4) -> 1/2.
  result = compute_metrics(get_task("mrpc"), one_hot_logits(1 - BINARY_PREDICTIONS, 2), 1 - BINARY_LABELS)
  assert result["f1"] == pytest.approx(0.5)


def test_accuracy_uses_argmax_of_logits_mnli():
  logits = np.array([[0.1, 3.0, 0.2], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 1.0]])
  result = compute_metrics(get_task("mnli"), logits, np.array([1, 0, 1, 2]))
  assert result == {"accuracy": 0.5}


def test_pearson_and_spearman_stsb():
  # predictions [1,2,3,4], labels [1,2,3,10]: ranks agree -> Spearman 1;
  # deviations [-1.5,-.5,.5,1.5] and [-3,-2,-1,6]: cov 14, var 5 and 50 -> Pearson 14/sqrt(250).
  predictions = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)
  result = compute_metrics(get_task("stsb"), predictions, np.array([1.0, 2.0, 3.0, 10.0]))
  assert result == pytest.approx({"pearson": 14 / math.sqrt(250), "spearman": 1.0})
  flat = compute_metrics(get_task("stsb"), predictions[:, 0], np.array([1.0, 3.0, 2.0, 4.0]))
  # label deviations [-1.5,.5,-.5,1.5]: cov 4, var 5 and 5 -> 0.8; ranks equal the values.
  assert flat == pytest.approx({"pearson": 0.8, "spearman": 0.8})


def test_constant_predictions_give_nan_correlation():
  result = compute_metrics(get_task("stsb"), np.ones(3), np.array([1.0, 2.0, 3.0]))
  assert math.isnan(result["pearson"]) and math.isnan(result["spearman"])


def test_macro_f1_multi_class_user_task():
  # labels [0,0,1,1,2,2], predictions [0,1,1,1,2,0]: per-class F1 0.5, 0.8, 2/3.
  task = classification_task("topics", ["a", "b", "c"])
  assert task.metrics == ("accuracy", "macro_f1") and task.primary_metric == "accuracy"
  result = compute_metrics(task, one_hot_logits([0, 1, 1, 1, 2, 0], 3), np.array([0, 0, 1, 1, 2, 2]))
  assert result == pytest.approx({"accuracy": 4 / 6, "macro_f1": (0.5 + 0.8 + 2 / 3) / 3})


def test_user_tasks():
  binary = classification_task("spam", ("ham", "spam"), primary_metric="mcc", is_pair=True)
  assert binary.metrics == ("mcc", "accuracy", "f1") and binary.is_pair and binary.in_average
  assert binary.label_names == ("ham", "spam") and binary.num_outputs == 2
  result = compute_metrics(binary, one_hot_logits(BINARY_PREDICTIONS, 2), BINARY_LABELS)
  assert result == pytest.approx({"mcc": 1 / 6, "accuracy": 0.6, "f1": 2 / 3})
  score = regression_task("rating")
  assert (score.task_type, score.label_names, score.num_outputs, score.primary_metric) == (
      "regression", None, 1, "spearman")
  with pytest.raises(ValueError, match="binary f1 needs exactly 2 labels"):
    classification_task("t", ["a", "b", "c"], primary_metric="f1")
  with pytest.raises(ValueError, match="at least 2 label names"):
    classification_task("t", ["a"])
  with pytest.raises(ValueError, match="duplicate"):
    classification_task("t", ["a", "a"])
  with pytest.raises(ValueError, match="non-empty"):
    regression_task(" ")


def test_metric_input_errors():
  with pytest.raises(ValueError, match=r"logits \[N, 3\]"):
    compute_metrics(get_task("mnli"), np.zeros((4, 2)), np.zeros(4))
  with pytest.raises(ValueError, match="unlabelled test"):
    compute_metrics(get_task("rte"), np.zeros((2, 2)), np.array([-1, -1]))
  with pytest.raises(ValueError, match="NaN"):
    compute_metrics(get_task("stsb"), np.zeros(2), np.array([np.nan, 1.0]))
  with pytest.raises(ValueError, match="3 predictions"):
    compute_metrics(get_task("rte"), np.zeros((3, 2)), np.zeros(2))
  with pytest.raises(ValueError, match=r"\[N\] or \[N, 1\]"):
    compute_metrics(get_task("stsb"), np.zeros((3, 2)), np.zeros(3))


def test_predictions_from_outputs():
  logits = np.array([[0.0, 1.0], [2.0, 1.0]])
  assert tasks.predictions_from_outputs(get_task("rte"), logits).tolist() == [1, 0]
  assert tasks.predictions_from_outputs(get_task("stsb"), np.array([[0.5], [1.5]])).tolist() == [0.5, 1.5]
