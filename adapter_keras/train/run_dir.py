"""A run directory (`train --out DIR`, `train-squad --out DIR`, a sweep trial): its files and rules.

  run.json         what makes the run this run: task, TrainConfig and the
                   sha256 of its data (`identity`); written before training
  checkpoint/      while training: the newest step checkpoint (train/checkpoints.py)
  logs/            TensorBoard
  artifact/        the trained model (artifacts.py)
  metrics.json     written last: it marks the run finished
  .lock            while a run is in progress: its exclusive flock (io.lock_file),
                   which a second run on the same directory fails on at once,
                   naming the first one's pid; deleted when the run ends

A directory holding another run (or unrelated files) is refused; the same
finished run asked for again only reports its metrics; an unfinished one
resumes from its checkpoint. Only files the run itself writes are created
or replaced. A finished run whose artifact/ is gone or incomplete (deleted
to save space, say) is refused rather than reported as if it held a model,
and not silently trained again: that could take hours, and the user decides
(delete metrics.json to train it again).

In a multi-worker run (`--strategy multi-worker`) only the chief writes
here (and holds the lock); every other worker reads this directory (to find the finished run, or
the chief's checkpoint to resume from) and writes its copies of these files
into a temporary directory it deletes (train/distribute.py: worker_scratch).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Dict, Iterator, Optional

from adapter_keras.artifacts import MANIFEST_FILE, WEIGHTS_FILE
from adapter_keras.io import LockHeldError, lock_file, release_lock_file, write_json_atomic
from adapter_keras.train import checkpoints
from adapter_keras.train.config import TrainResult

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoint"
LOGS_DIR = "logs"
ARTIFACT_DIR = "artifact"
LOCK_FILE = ".lock"


@contextlib.contextmanager
def locked(out_dir: Optional[str], chief: bool = True) -> Iterator[None]:
  """Holds `out_dir`'s lock for the block (nothing without `out_dir`, or on a worker that is not the chief).

  Raises FileExistsError, naming the holder's pid, when another run holds it.
  Creates `out_dir` to hold its lock file; a directory this call created and
  the run left empty (it failed before writing anything) is removed again,
  so that refused input leaves no --out behind.
  """
  if not out_dir or not chief:
    yield
    return
  if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
    raise FileExistsError(f"--out {out_dir} is a file; choose a directory")
  created = []  # the directories made here, deepest first
  path = os.path.abspath(out_dir)
  while not os.path.isdir(path):
    created.append(path)
    path = os.path.dirname(path)
  os.makedirs(out_dir, exist_ok=True)
  lock = os.path.join(out_dir, LOCK_FILE)
  try:
    fd = lock_file(lock)
  except LockHeldError as e:
    holder = f"pid {e.pid}" if e.pid is not None else "a process whose pid it did not record"
    raise FileExistsError(f"--out {out_dir} is in use by another training run ({holder}); wait for it to end, "
                          "or choose another --out") from None
  except BaseException:
    _remove_empty(created)
    raise
  try:
    yield
  finally:
    release_lock_file(lock, fd)
    _remove_empty(created)


def _remove_empty(directories) -> None:
  for path in directories:
    try:
      os.rmdir(path)  # only if empty: never what the run (or anyone) wrote
    except OSError:
      return


# TrainConfig fields that do not change what a run computes: a run resumed with another value is the same run.
NOT_IDENTITY = ("worker_timeout",)


def identity(task: Dict, config, data_sha256: str) -> Dict:
  """run.json's content: the task (as a dict), the TrainConfig (less NOT_IDENTITY) and the digest of the data."""
  config = {k: v for k, v in config.to_dict().items() if k not in NOT_IDENTITY}
  return dict(task=task, config=config, data_sha256=data_sha256)


def check_run_directory(out_dir: str, identity: Dict) -> Optional[Dict]:
  """Returns the finished run's metrics if `out_dir` holds this very run.

  Raises FileExistsError if it holds another run (or unrelated files).
  """
  if not os.path.exists(out_dir):
    return None
  if not os.path.isdir(out_dir):
    raise FileExistsError(f"--out {out_dir} is a file; choose a directory")
  run_file = os.path.join(out_dir, RUN_FILE)
  if not os.path.exists(run_file):
    if [name for name in os.listdir(out_dir) if name != LOCK_FILE]:  # the lock: of this run, or of one starting
      raise FileExistsError(f"--out {out_dir} exists and holds other files; choose an empty or new directory")
    return None
  with open(run_file, encoding="utf-8") as f:
    previous = json.load(f)
  if previous != json.loads(json.dumps(identity)):
    changed = sorted(k for k in identity if previous.get(k) != json.loads(json.dumps(identity[k])))
    raise FileExistsError(f"--out {out_dir} holds a different run (differs in {', '.join(changed)}); "
                          "choose another --out or delete it")
  metrics_file = os.path.join(out_dir, METRICS_FILE)
  if os.path.exists(metrics_file):
    with open(metrics_file, encoding="utf-8") as f:
      return json.load(f)
  return None


def finished_run(out_dir: str, identity: Dict, verbose: bool = True,
                 log_prefix: str = "[train] ", chief: bool = True,
                 with_artifact: bool = True) -> Optional[TrainResult]:
  """The result of the finished run `out_dir` holds, if it is this run (`identity`); None to train.

  Raises FileExistsError when `out_dir` holds another run (check_run_directory),
  or, `with_artifact` (the run saves a model), when the finished run's
  artifact/ lacks its manifest or weights.
  Only the `chief` (of a multi-worker run) removes what a kill left behind.
  """
  finished = check_run_directory(out_dir, identity)
  if finished is None:
    return None
  if with_artifact:
    artifact = os.path.join(out_dir, ARTIFACT_DIR)
    lacking = [f for f in (MANIFEST_FILE, WEIGHTS_FILE) if not os.path.isfile(os.path.join(artifact, f))]
    if lacking:
      raise FileExistsError(
          f"--out {out_dir} holds this run, finished, but its {ARTIFACT_DIR}/ is incomplete (no "
          f"{' or '.join(lacking)}; deleted?): delete {os.path.join(out_dir, METRICS_FILE)} to train it "
          "again, or choose another --out")
  if verbose:
    print(f"{log_prefix}{out_dir} already holds this finished run; reporting it", flush=True)
  if chief:  # left only by a kill between writing metrics.json and deleting it
    checkpoints.StepCheckpoint.remove(os.path.join(out_dir, CHECKPOINT_DIR))
  fields = {f.name for f in dataclasses.fields(TrainResult)}
  return TrainResult(**{k: v for k, v in finished.items() if k in fields})




def write_run_file(out_dir: str, run_identity: Dict) -> None:
  """Creates `out_dir` if needed and records the run (before training starts)."""
  os.makedirs(out_dir, exist_ok=True)
  write_json_atomic(os.path.join(out_dir, RUN_FILE), run_identity)


def finish(out_dir: str, metrics: Dict) -> None:
  """Writes metrics.json, which marks the run finished, then deletes the no longer needed checkpoint."""
  write_json_atomic(os.path.join(out_dir, METRICS_FILE), metrics)
  checkpoints.StepCheckpoint.remove(os.path.join(out_dir, CHECKPOINT_DIR))
