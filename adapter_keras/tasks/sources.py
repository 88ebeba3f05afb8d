"""From what a user names to (TaskSpec, TextExamples): the CLI's data sources.

Three sources share one resolution step, used by `train`, `evaluate`, `sweep`,
`analyze` and the AutoML baseline (their flags: cli/flags.py, add_data_arguments):

* a GLUE task in the official directory layout (`--task T --data-dir DIR`),
* TensorFlow Datasets' `glue/<task>` (`--task T --tfds-data-dir DIR`),
* generic CSV/TSV/JSONL files (`--train F --dev F --text-column C
  [--text-b-column C] --label-column C [--regression]`), for the paper's
  additional classification tasks. The label vocabulary comes from the train
  file; evaluation files must not hold unseen labels.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional

from adapter_keras.tasks.data import TextExamples


@dataclasses.dataclass
class DataSource:
  task: Optional[str] = None
  data_dir: Optional[str] = None
  tfds_data_dir: Optional[str] = None
  train_file: Optional[str] = None
  dev_file: Optional[str] = None
  text_column: Optional[str] = None
  text_b_column: Optional[str] = None
  label_column: Optional[str] = None
  regression: bool = False
  label_names: Optional[List[str]] = None  # fixed label set (e.g. from an artifact)

  @property
  def is_generic(self) -> bool:
    return self.train_file is not None or self.dev_file is not None

  def validate(self, need_train: bool, need_dev: bool = True) -> None:
    if self.is_generic:
      if self.data_dir or self.tfds_data_dir:
        raise ValueError("give either --data-dir/--tfds-data-dir or --train/--dev files, not both")
      if need_train and not self.train_file:
        raise ValueError("--train FILE is required with generic data files")
      if need_dev and not self.dev_file:
        raise ValueError("--dev FILE is required with generic data files")
      if not self.text_column or not self.label_column:
        raise ValueError("generic data files need --text-column and --label-column")
    else:
      if not self.task:
        raise ValueError("name a task (--task) with --data-dir, or give --train/--dev files")
      if not (self.data_dir or self.tfds_data_dir):
        raise ValueError(f"task {self.task!r} needs --data-dir DIR (GLUE layout) or --tfds-data-dir DIR")


def _generic_task(source: DataSource, label_names):
  from adapter_keras.tasks import registry  # pylint: disable=import-outside-toplevel
  name = source.task or os.path.splitext(os.path.basename(source.train_file or source.dev_file))[0]
  is_pair = source.text_b_column is not None
  if source.regression:
    return registry.regression_task(name, is_pair=is_pair)
  return registry.classification_task(name, tuple(label_names), is_pair=is_pair)


def _load_file(source: DataSource, path: str, label_names) -> TextExamples:
  from adapter_keras.tasks import data  # pylint: disable=import-outside-toplevel
  return data.load_text_file(path, source.text_column, source.label_column,
                             text_b_column=source.text_b_column,
                             task_type="regression" if source.regression else "classification",
                             label_names=label_names)


def load_task_data(source: DataSource, need_train: bool = True, task=None, need_dev: bool = True):
  """Returns (task, train or None, {dev split: examples}; {} without `need_dev`).

  `task` (e.g. from an artifact) fixes the label set for generic files.
  `need_dev=False` (preprocess) reads no dev data and needs no --dev.
  """
  from adapter_keras.tasks import data, registry  # pylint: disable=import-outside-toplevel
  source.validate(need_train, need_dev)
  if source.is_generic:
    label_names = list(task.label_names) if task is not None and task.label_names else source.label_names
    train = None
    if need_train:
      train = _load_file(source, source.train_file, label_names)
      label_names = train.label_names
    dev = _load_file(source, source.dev_file, label_names) if need_dev else None
    if task is None:
      task = _generic_task(source, dev.label_names if need_dev else train.label_names)
    return task, train, {task.dev_splits[0]: dev} if need_dev else {}
  task = registry.get_task(source.task)
  if source.tfds_data_dir:
    load = lambda split: data.load_tfds_glue(task, split, data_dir=source.tfds_data_dir)  # noqa: E731
  else:
    load = lambda split: data.load_glue_split(source.data_dir, task, split)  # noqa: E731
  train = load("train") if need_train else None
  dev: Dict[str, TextExamples] = {split: load(split) for split in task.dev_splits} if need_dev else {}
  return task, train, dev
