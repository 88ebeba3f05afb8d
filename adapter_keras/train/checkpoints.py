"""Step checkpoints of a training run: what they hold, how they are written and read.

A `train --out DIR` run keeps its newest checkpoint under `DIR/checkpoint/`:

  latest.json        names the newest complete checkpoint (written last)
  step-<N>[-end]/    one checkpoint (`-end`: taken at the end of an epoch)
    state.index, state.data-*   tf.train.Checkpoint of the trained variables
                                (trainable + adapter BatchNorm statistics), the
                                optimizer (Adam moments, iteration counter) and
                                the dropout layers' random-generator states
    best.safetensors            the best epoch's weights so far (if any epoch ended)
    progress.json               step, epoch, position in the epoch, the epoch's
                                running loss/metric sums, the best-epoch
                                tracker's history and best metrics

The frozen base is not saved: it is reloaded from the encoder, whose
fingerprint the checkpoint records and checks.

Atomicity: a checkpoint is written into a temporary sibling directory, every
file is fsynced and the directory renamed into place; only then is
`latest.json` replaced (temp file, fsync, rename), and only after that are
older checkpoints deleted. A kill at any moment therefore leaves `latest.json`
naming a complete checkpoint (or no `latest.json`, before the first one);
stray temporary directories are removed by the next save.

Multi-worker runs (MultiWorkerMirroredStrategy): every worker saves at the
same steps, since writing the state may read sync-on-read variables, a
collective op; the chief writes into the run's directory, every other worker
into a temporary directory it deletes right after (train/distribute.py). On
resume every worker restores from the run's directory, i.e. the chief's last
checkpoint, so all continue from the same state.

Exact resume needs the dropout masks to continue where they stopped. tf_keras
draws them by default with stateful TF ops whose state lives inside the
traced train function and is lost with the process; layers built inside
`resumable_randomness()` draw them from a `tf.random.Generator` instead, whose
state is a variable that the checkpoint saves.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from adapter_keras import _model_garden
from adapter_keras.artifacts import adapter_statistics
from adapter_keras.io import commit_directory, staging_directory, write_json_atomic
from adapter_keras.train import distribute

FORMAT_VERSION = 1
LATEST_FILE = "latest.json"
PROGRESS_FILE = "progress.json"
BEST_FILE = "best.safetensors"
STATE_PREFIX = "state"


class CheckpointError(ValueError):
  """A checkpoint cannot be resumed from (another base, other data layout...)."""


@contextlib.contextmanager
def resumable_randomness():
  """Layers built inside draw their dropout masks from a checkpointable tf.random.Generator."""
  experimental = tf_keras.backend.experimental
  was_enabled = experimental.is_tf_random_generator_enabled()
  experimental.enable_tf_random_generator()
  try:
    yield
  finally:
    if not was_enabled:
      experimental.disable_tf_random_generator()


def trained_variables(model) -> List[tf.Variable]:
  """What training changes: the trainable variables and adapter BatchNorm statistics."""
  return list(model.trainable_variables) + adapter_statistics(model)


def dropout_generator_states(model) -> List[tf.Variable]:
  """State variables of the tf.random.Generators behind the model's dropout layers.

  Empty for layers built outside `resumable_randomness()` (their randomness
  cannot be checkpointed; a resumed run then draws other dropout masks).
  """
  states = (_model_garden.dropout_generator_state(layer) for layer in model.submodules)
  return [state for state in states if state is not None]


def metric_sums(model) -> Dict[str, List[float]]:
  """The running (total, count) of the model's Mean-type metrics (the loss included)."""
  return {m.name: [float(v.numpy()) for v in m.variables] for m in model.metrics
          if isinstance(m, tf_keras.metrics.Mean)}


def add_metric_sums(model, sums: Dict[str, List[float]]) -> None:
  """Adds saved (total, count) sums into the model's metrics.

  A Mean's state is a sum, so adding the sums of the batches before a resume
  to those after it gives the uninterrupted epoch's value (float addition is
  commutative, so exactly). Assigning the sum instead of assign_add also works
  for the SUM-aggregated metric variables of a MirroredStrategy.
  """
  for metric in model.metrics:
    if metric.name in sums and isinstance(metric, tf_keras.metrics.Mean):
      for variable, value in zip(metric.variables, sums[metric.name]):
        variable.assign(variable.read_value() + tf.cast(value, variable.dtype))


class StepCheckpoint:
  """Writes and reads the step checkpoints of one run in `directory` (see module docstring).

  On a non-chief worker of the model's strategy, saves go to a temporary
  directory deleted at once, and `restore` reads the chief's, in `directory`.
  """

  def __init__(self, directory: str, model, fingerprint: Optional[str] = None):
    self.directory = directory
    self.fingerprint = fingerprint
    self._strategy = model.distribute_strategy
    self._variables = trained_variables(model)
    self._checkpoint = tf.train.Checkpoint(variables=self._variables, optimizer=model.optimizer,
                                           rng=dropout_generator_states(model))
    self._best_epoch_written: Optional[int] = None
    self.last_step: Optional[int] = None

  def latest(self, directory: Optional[str] = None) -> Optional[str]:
    """The newest complete checkpoint's directory in `directory` (default: the run's), or None."""
    directory = directory or self.directory
    path = os.path.join(directory, LATEST_FILE)
    if not os.path.exists(path):
      return None
    with open(path, encoding="utf-8") as f:
      return os.path.join(directory, json.load(f)["checkpoint"])

  def save(self, progress: Dict, best_epoch: int, best_weights: Optional[List[np.ndarray]]) -> Optional[str]:
    """Writes a checkpoint of the variables now and `progress` (JSON), then points latest.json at it.

    Returns the checkpoint's directory; None on a non-chief worker, whose
    save is written only for the collective ops it takes and deleted.
    """
    with distribute.worker_scratch(self.directory, self._strategy) as directory:
      final = self._save(directory, progress, best_epoch, best_weights)
    self._best_epoch_written = best_epoch
    self.last_step = progress["global_step"]
    return final if directory == self.directory else None

  def _save(self, directory: str, progress: Dict, best_epoch: int,
            best_weights: Optional[List[np.ndarray]]) -> str:
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    name = f"step-{progress['global_step']}" + ("-end" if progress["step_in_epoch"] == 0 else "")
    final = os.path.join(directory, name)
    os.makedirs(directory, exist_ok=True)
    previous = self.latest(directory)
    # A save cut short (an exception here, or kill -9) leaves `tmp` behind,
    # unreferenced; the next save removes it.
    tmp = staging_directory(final)
    self._checkpoint.write(os.path.join(tmp, STATE_PREFIX))
    if best_weights is not None:
      previous_best = os.path.join(previous, BEST_FILE) if previous else None
      if best_epoch == self._best_epoch_written and previous_best and os.path.exists(previous_best):
        try:
          os.link(previous_best, os.path.join(tmp, BEST_FILE))  # unchanged since the last checkpoint
        except OSError:  # a file system without hard links
          shutil.copyfile(previous_best, os.path.join(tmp, BEST_FILE))
      else:
        save_file({f"{i:05d}": np.ascontiguousarray(w) for i, w in enumerate(best_weights)},
                  os.path.join(tmp, BEST_FILE))
    with open(os.path.join(tmp, PROGRESS_FILE), "w", encoding="utf-8") as f:
      json.dump(dict(progress, format_version=FORMAT_VERSION, base_fingerprint=self.fingerprint,
                     best_epoch=best_epoch), f, indent=2, sort_keys=True)
    commit_directory(tmp, final)
    write_json_atomic(os.path.join(directory, LATEST_FILE),
                      dict(checkpoint=name, global_step=progress["global_step"]))
    for entry in os.listdir(directory):  # older checkpoints and stray temporary directories
      if entry not in (name, LATEST_FILE):
        path = os.path.join(directory, entry)
        if os.path.isdir(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.remove(path)
    return final

  def restore(self) -> Optional[Dict]:
    """Loads the newest checkpoint into the variables; returns its progress, or None if none.

    Every worker of a multi-worker run reads the same one, the chief's.
    """
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    path = self.latest()
    if path is None:
      return None
    with open(os.path.join(path, PROGRESS_FILE), encoding="utf-8") as f:
      progress = json.load(f)
    if progress.get("format_version") != FORMAT_VERSION:
      raise CheckpointError(f"{path} has checkpoint format {progress.get('format_version')}, this version "
                            f"reads {FORMAT_VERSION}; delete {self.directory} to start the run over")
    if self.fingerprint and progress.get("base_fingerprint") != self.fingerprint:
      raise CheckpointError(f"{path} was written on another base encoder (fingerprint "
                            f"{progress.get('base_fingerprint')}, now {self.fingerprint}); "
                            f"delete {self.directory} to start the run over")
    try:
      status = self._checkpoint.read(os.path.join(path, STATE_PREFIX))
      status.expect_partial()  # checked just below; silences TF's own warnings on a mismatch
      status.assert_consumed()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
      raise CheckpointError(f"{path} does not match this model ({str(e).splitlines()[0]}); "
                            f"delete {self.directory} to start the run over") from e
    best_file = os.path.join(path, BEST_FILE)
    progress["best_weights"] = None
    if os.path.exists(best_file):
      tensors = load_file(best_file)
      progress["best_weights"] = [tensors[k] for k in sorted(tensors)]
    self._best_epoch_written = progress.get("best_epoch")
    self.last_step = progress["global_step"]
    return progress

  @staticmethod
  def remove(directory: str) -> None:
    """Deletes the checkpoints in `directory` (a finished run needs none)."""
    if os.path.isdir(directory):
      shutil.rmtree(directory)
