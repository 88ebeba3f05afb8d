"""Atomic writes: the one place that knows how to put a file or a directory on disk safely.

Every writer of the library and of automl_baseline goes through here:

* `write_json_atomic` / `write_text_atomic`: a temporary file in the same
  directory, fsynced, renamed over the target, the directory fsynced.
* `atomic_directory(final)`: a context manager yielding an empty temporary
  sibling directory; on success its files are fsynced and it is renamed into
  place (replacing an old `final`), on any error it is deleted. So an
  interrupted save leaves either the old directory or the new one, never a
  half-written one.
* `staging_directory` + `commit_directory`: the same in two steps, for
  writers that need to decide between them (step checkpoints).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator


def fsync_directory(path: str) -> None:
  """Makes a rename or a new entry in `path` durable."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def write_text_atomic(path: str, text: str, newline: str | None = None) -> None:
  """Writes `text` to a temp file in the same directory, fsyncs, renames over `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  fsync_directory(directory)


def write_json_atomic(path: str, data: Any) -> None:
  """`data` as indented, key-sorted JSON at `path`, atomically (write_text_atomic)."""
  write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def staging_directory(final_dir: str) -> str:
  """A new empty temporary directory next to `final_dir` (same filesystem)."""
  parent = os.path.dirname(os.path.abspath(final_dir)) or "."
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.normpath(final_dir))}.tmp-", dir=parent)


def commit_directory(tmp_dir: str, final_dir: str) -> None:
  """Moves a fully written `tmp_dir` to `final_dir`, replacing any old one."""
  for root, _, files in os.walk(tmp_dir):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        os.fsync(f.fileno())
  fsync_directory(tmp_dir)
  parent = os.path.dirname(os.path.abspath(final_dir))
  old = None
  if os.path.exists(final_dir):
    old = tempfile.mkdtemp(prefix=".old-", dir=parent)
    os.rmdir(old)
    os.rename(final_dir, old)
  os.rename(tmp_dir, final_dir)
  fsync_directory(parent)
  if old:
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(final_dir: str) -> Iterator[str]:
  """Yields a temporary directory that becomes `final_dir` when the block ends without error."""
  tmp = staging_directory(final_dir)
  try:
    yield tmp
    commit_directory(tmp, final_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
