"""Tasks: what a task is (registry), how it is scored (metrics), where its data comes from (data,
sources), SQuAD's windows, decoding and scoring (squad), and token classification's CoNLL data, task and
scoring (tagging) and its sub-word windows (token_windows)."""
from adapter_keras.tasks.metrics import (CLASSIFICATION_METRICS, REGRESSION_METRICS, compute_metrics,
                                         predictions_from_outputs)
from adapter_keras.tasks.registry import (GLUE_TASKS, TASK_TYPES, TaskSpec, classification_task, get_task,
                                          regression_task)

__all__ = ["TaskSpec", "GLUE_TASKS", "TASK_TYPES", "get_task", "classification_task", "regression_task",
           "compute_metrics", "predictions_from_outputs", "CLASSIFICATION_METRICS", "REGRESSION_METRICS"]
