"""Training a trial: its budget in steps, and datasets that take class ids only."""
import numpy as np
import pytest

from adapter_keras.tasks.data import TextExamples
from automl_baseline import training


def test_training_budget():
  budget = training.TrainingBudget()
  assert budget.train_steps(100_000, 128, 10) == 782
  assert training.TrainingBudget(sample_scale=0.01).train_steps(200_000, 256, 10) == 8
  capped = training.TrainingBudget(sample_scale=0.01, max_epochs=2)
  assert capped.train_steps(2_000_000, 128, 1000) == 16  # 2 passes over 1,000 examples
  assert capped.train_steps(2_000_000, 128, 1000, fraction=1 / 9) == 16
  assert training.TrainingBudget(sample_scale=1e-9).train_steps(100_000, 128, 10) == 1
  with pytest.raises(ValueError, match="sample_scale"):
    training.TrainingBudget(sample_scale=0)


def test_labels_must_be_class_ids():
  examples = TextExamples(["a", "b"], np.asarray([0.5, 1.2], np.float32))
  with pytest.raises(ValueError, match="regression"):
    training.make_dataset(examples, 2, 8)
  with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
    training.make_dataset(TextExamples(["a"], [2]), 2, 8)
