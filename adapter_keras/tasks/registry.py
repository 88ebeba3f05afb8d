"""The task registry: what each GLUE task is, and how its results are scored.

A `TaskSpec` is everything the rest of the library needs to know about a task
besides its data: classification or regression, the label strings exactly as
they appear in the GLUE files (index = class id), which metrics are reported
and which one is primary, its dev splits, whether it is a sentence pair, and
whether it counts in the GLUE average (WNLI does not, as in the paper).

`classification_task` / `regression_task` build specs for user tasks loaded
from generic files; tasks/metrics.py scores model outputs for any spec.
To add a GLUE-style task: one `_glue(...)` line below (and its file layout
in tasks/data.py if it is not GLUE's).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence, Tuple

from adapter_keras.tasks.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS

TASK_TYPES = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task's semantics; see the module docstring."""

  name: str
  task_type: str
  label_names: Optional[Tuple[str, ...]]
  primary_metric: str
  metrics: Tuple[str, ...]
  dev_splits: Tuple[str, ...]
  is_pair: bool
  in_average: bool
  glue_dir: str

  def __post_init__(self):
    if self.task_type not in TASK_TYPES:
      raise ValueError(f"task_type must be one of {TASK_TYPES}, got {self.task_type!r}")
    if self.task_type == "classification":
      if not self.label_names or len(self.label_names) < 2:
        raise ValueError(f"classification task {self.name!r} needs at least 2 label names")
      if len(set(self.label_names)) != len(self.label_names):
        raise ValueError(f"task {self.name!r} has duplicate label names {self.label_names}")
      allowed = CLASSIFICATION_METRICS
    else:
      if self.label_names is not None:
        raise ValueError(f"regression task {self.name!r} must have label_names=None")
      allowed = REGRESSION_METRICS
    unknown = [m for m in self.metrics if m not in allowed]
    if unknown:
      raise ValueError(f"metrics {unknown} do not apply to {self.task_type}; choose from {allowed}")
    if self.primary_metric not in self.metrics:
      raise ValueError(f"primary metric {self.primary_metric!r} is not in {self.metrics}")
    if "f1" in self.metrics and self.num_outputs != 2:
      raise ValueError(f"binary f1 needs exactly 2 labels; task {self.name!r} has "
                       f"{self.num_outputs} (use macro_f1)")

  def to_dict(self) -> Dict[str, Any]:
    """JSON-friendly fields (tuples as lists), as artifact manifests and run.json store them."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, data: Dict[str, Any]) -> "TaskSpec":
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

  @property
  def num_outputs(self) -> int:
    return len(self.label_names) if self.label_names is not None else 1

  @property
  def test_splits(self) -> Tuple[str, ...]:
    """Unlabelled splits, named like the dev splits ("test", "test_matched"...)."""
    return tuple(split.replace("dev", "test", 1) for split in self.dev_splits)

  @property
  def splits(self) -> Tuple[str, ...]:
    return ("train",) + self.dev_splits + self.test_splits


_BINARY = ("0", "1")
_ENTAILMENT = ("entailment", "not_entailment")


def _glue(name, glue_dir, primary, metrics, is_pair, label_names=_BINARY, task_type="classification",
          dev_splits=("dev",), in_average=True) -> TaskSpec:
  return TaskSpec(name=name, task_type=task_type, label_names=label_names, primary_metric=primary,
                  metrics=metrics, dev_splits=dev_splits, is_pair=is_pair, in_average=in_average,
                  glue_dir=glue_dir)


GLUE_TASKS: Dict[str, TaskSpec] = {
    spec.name: spec for spec in (
        _glue("cola", "CoLA", "mcc", ("mcc",), is_pair=False),
        _glue("sst2", "SST-2", "accuracy", ("accuracy",), is_pair=False),
        _glue("mrpc", "MRPC", "f1", ("f1", "accuracy"), is_pair=True),
        _glue("stsb", "STS-B", "spearman", ("pearson", "spearman"), is_pair=True,
              label_names=None, task_type="regression"),
        _glue("qqp", "QQP", "f1", ("f1", "accuracy"), is_pair=True),
        _glue("mnli", "MNLI", "accuracy", ("accuracy",), is_pair=True,
              label_names=("contradiction", "entailment", "neutral"),
              dev_splits=("dev_matched", "dev_mismatched")),
        _glue("qnli", "QNLI", "accuracy", ("accuracy",), is_pair=True, label_names=_ENTAILMENT),
        _glue("rte", "RTE", "accuracy", ("accuracy",), is_pair=True, label_names=_ENTAILMENT),
        # WNLI's GLUE train/dev sets are adversarial; the paper leaves it out of averages.
        _glue("wnli", "WNLI", "accuracy", ("accuracy",), is_pair=True, in_average=False),
    )
}


def _alias_key(name: str) -> str:
  return name.strip().lower().replace("-", "").replace("_", "")


def get_task(name: str) -> TaskSpec:
  """The GLUE task called `name`, case-insensitively; "SST-2", "sts-b", "CoLA" work too."""
  spec = GLUE_TASKS.get(_alias_key(name))
  if spec is None:
    raise ValueError(f"Unknown task {name!r}; known tasks: {', '.join(GLUE_TASKS)}")
  return spec


def classification_task(name: str, label_names: Sequence[str], primary_metric: str = "accuracy",
                        is_pair: bool = False) -> TaskSpec:
  """A user classification task (e.g. from a CSV/JSONL file).

  Reports accuracy plus f1 (binary, positive class = label index 1) or
  macro_f1 (3+ classes); `primary_metric` may also be "mcc".
  """
  label_names = tuple(str(n) for n in label_names)
  default = ("accuracy", "f1") if len(label_names) == 2 else ("accuracy", "macro_f1")
  metrics = (primary_metric,) + tuple(m for m in default if m != primary_metric)
  return TaskSpec(name=_user_task_name(name), task_type="classification", label_names=label_names,
                  primary_metric=primary_metric, metrics=metrics, dev_splits=("dev",),
                  is_pair=is_pair, in_average=True, glue_dir="")


def regression_task(name: str, is_pair: bool = False) -> TaskSpec:
  """A user regression task, scored by Pearson (reported) and Spearman (primary) like STS-B."""
  return TaskSpec(name=_user_task_name(name), task_type="regression", label_names=None,
                  primary_metric="spearman", metrics=REGRESSION_METRICS, dev_splits=("dev",),
                  is_pair=is_pair, in_average=True, glue_dir="")


def _user_task_name(name: str) -> str:
  if not isinstance(name, str) or not name.strip():
    raise ValueError(f"task name must be a non-empty string, got {name!r}")
  return name.strip()
