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
* `require_new_or_empty_directory`: the one check that an output directory
  holds nothing of the user's before a command writes into it.
* `lock_file` / `release_lock_file`: an exclusive flock on a lock file that
  holds its owner's pid, for the whole life of a job (a training run's --out:
  train/run_dir.py); a second taker fails at once, told the owner's pid.

Modes follow the umask, as with any other tool: a new file gets
0o666 & ~umask (0644 under umask 022, 0640 under 027), a directory
0o777 & ~umask, whatever mode tempfile (0600/0700) or the writer inside a
staged directory (TensorFlow, safetensors) used. A file that is replaced
keeps its mode, as a plain `open(path, "w")` would.

Staging names and stale ones. A staged directory of `final` is
`.<final>.tmp-XXXXXXXX` next to it, an old `final` being replaced briefly
`.<final>.old-XXXXXXXX`, and a temporary file of `path` `.<path>.tmp-XXXXXXXX`.
A kill (or power loss) leaves them behind; they are never taken for the real
thing, and the next write of the same `final` or `path` deletes them. A writer
holds an exclusive flock on its staging entry while it writes, and the cleanup
deletes only entries whose lock it can take, so a concurrent writer's staging
is never touched (a killed process's locks go away with it). Where the file
system cannot lock (some network file systems), only entries untouched for
`STALE_AFTER_SECONDS` are deleted.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from typing import Any, Dict, Iterator, Optional

# Where locks are not available, staging entries older than this are taken as left by a dead writer:
# far longer than any save takes, short enough that leftovers do not pile up.
STALE_AFTER_SECONDS = 24 * 3600
_STAGING_MARKERS = (".tmp-", ".old-")
_held_locks: Dict[str, int] = {}  # staging directory -> the fd holding its lock (staging -> commit)


def fsync_directory(path: str) -> None:
  """Makes a rename or a new entry in `path` durable."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


# ---------------------------------------------------------------- modes


def current_umask() -> int:
  """The process umask, read without changing it where the kernel shows it (Linux >= 4.7)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o022)  # elsewhere the only way to read it is to set it (and restore it at once)
  os.umask(mask)
  return mask


def new_file_mode() -> int:
  """The mode `open(path, "w")` gives a new file: 0o666 & ~umask."""
  return 0o666 & ~current_umask()


def new_directory_mode() -> int:
  """The mode `os.mkdir` gives a new directory: 0o777 & ~umask."""
  return 0o777 & ~current_umask()


def _apply_umask_modes(tree: str) -> None:
  """Gives every directory and regular file under `tree` (itself included) the umask-derived mode."""
  file_mode, dir_mode = new_file_mode(), new_directory_mode()
  os.chmod(tree, dir_mode)
  for root, dirs, files in os.walk(tree):
    for name in dirs:
      path = os.path.join(root, name)
      if not os.path.islink(path):
        os.chmod(path, dir_mode)
    for name in files:
      path = os.path.join(root, name)
      if not os.path.islink(path):
        os.chmod(path, file_mode)


# ---------------------------------------------------------------- staging entries and their locks


def _staging_prefix(path: str, marker: str = ".tmp-") -> str:
  return f".{os.path.basename(os.path.normpath(path))}{marker}"


# Prevents: a writer killed mid-save leaving `.name.tmp-*` staging behind forever, and a cleanup in another
# process deleting the staging a live writer is still filling (each writer holds its entry's lock).
def _lock(fd: int, blocking: bool) -> Optional[bool]:
  """True if locked, False if another process holds the lock, None if this file system cannot lock."""
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    return True
  except OSError as e:
    if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
      return False
    return None  # ENOLCK, EBADF (NFS wants a writable fd), EINVAL...


def _claim(path: str) -> Optional[int]:
  """Locks the staging entry this process just created; its fd (keep it open while writing).

  A cleanup in another process may have taken the lock first and deleted the
  entry between its creation and this lock: returns None then, and the caller
  creates another one. Where locks are unsupported the fd is returned unlocked.
  """
  fd = os.open(path, os.O_RDONLY)
  _lock(fd, blocking=True)  # waits only while a cleanup deletes it, which the check below sees
  try:
    if os.path.samestat(os.fstat(fd), os.lstat(path)):
      return fd
  except FileNotFoundError:
    pass
  os.close(fd)
  return None


def remove_stale_staging(target: str) -> None:
  """Deletes the staging entries of `target` (`.<name>.tmp-*`, `.<name>.old-*`) that no live writer holds.

  Only entries whose exclusive lock this process can take are deleted (see
  the module docstring); where locks are unsupported, entries older than
  STALE_AFTER_SECONDS. Symbolic links and anything else the library never
  creates are left alone.
  """
  parent = os.path.dirname(os.path.abspath(target))
  prefixes = tuple(_staging_prefix(target, m) for m in _STAGING_MARKERS)
  try:
    names = [n for n in os.listdir(parent) if n.startswith(prefixes)]
  except FileNotFoundError:
    return
  for name in names:
    path = os.path.join(parent, name)
    try:
      info = os.lstat(path)
      if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        continue
      fd = os.open(path, os.O_RDONLY)
    except OSError:
      continue  # gone already, or not ours to open
    try:
      locked = _lock(fd, blocking=False)
      if locked is False or (locked is None and time.time() - info.st_mtime < STALE_AFTER_SECONDS):
        continue
      if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path, ignore_errors=True)
      else:
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
    finally:
      os.close(fd)


# ---------------------------------------------------------------- files


def write_text_atomic(path: str, text: str, newline: str | None = None) -> None:
  """Writes `text` to a temp file in the same directory, fsyncs, renames over `path`.

  The file keeps the mode of the one it replaces; a new one gets the umask's.
  """
  directory = os.path.dirname(os.path.abspath(path))
  remove_stale_staging(path)
  try:
    mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.isfile(path) else new_file_mode()
  except FileNotFoundError:
    mode = new_file_mode()
  claimed = None
  while claimed is None:  # None: a concurrent cleanup deleted it before we locked it; make another
    fd, tmp = tempfile.mkstemp(prefix=_staging_prefix(path), dir=directory)
    os.close(fd)
    claimed = _claim(tmp)
  try:
    with open(tmp, "w", encoding="utf-8", newline=newline) as f:
      os.fchmod(f.fileno(), mode)
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  finally:
    os.close(claimed)  # held until the rename, so a cleanup never takes the file mid-write
  fsync_directory(directory)


def write_json_atomic(path: str, data: Any) -> None:
  """`data` as indented, key-sorted JSON at `path`, atomically (write_text_atomic)."""
  write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))


# ---------------------------------------------------------------- directories


def staging_directory(final_dir: str) -> str:
  """A new empty temporary directory next to `final_dir` (same filesystem), locked until committed.

  Deletes stale staging directories of `final_dir` first (module docstring).
  """
  parent = os.path.dirname(os.path.abspath(final_dir)) or "."
  os.makedirs(parent, exist_ok=True)
  remove_stale_staging(final_dir)
  while True:
    tmp = tempfile.mkdtemp(prefix=_staging_prefix(final_dir), dir=parent)
    fd = _claim(tmp)
    if fd is not None:
      break
  os.chmod(tmp, new_directory_mode())
  _held_locks[tmp] = fd
  return tmp


def _release(tmp_dir: str) -> None:
  fd = _held_locks.pop(tmp_dir, None)
  if fd is not None:
    os.close(fd)


def discard_staging(tmp_dir: str) -> None:
  """Deletes a staging directory that will not be committed, and releases its lock."""
  shutil.rmtree(tmp_dir, ignore_errors=True)
  _release(tmp_dir)


def commit_directory(tmp_dir: str, final_dir: str) -> None:
  """Moves a fully written `tmp_dir` to `final_dir`, replacing any old one.

  Its files get the umask-derived modes (module docstring) and are fsynced first.
  """
  _apply_umask_modes(tmp_dir)
  for root, _, files in os.walk(tmp_dir):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        os.fsync(f.fileno())
  fsync_directory(tmp_dir)
  parent = os.path.dirname(os.path.abspath(final_dir))
  old, old_fd = None, None
  if os.path.exists(final_dir):
    old = tempfile.mkdtemp(prefix=_staging_prefix(final_dir, ".old-"), dir=parent)
    os.rmdir(old)
    # Locked while it exists under its .old- name, so that a concurrent cleanup leaves it alone.
    old_fd = os.open(final_dir, os.O_RDONLY)
    _lock(old_fd, blocking=True)
    os.rename(final_dir, old)
  try:
    try:
      os.rename(tmp_dir, final_dir)
    except BaseException:
      if old:  # put the previous version back: a failed commit changes nothing
        os.rename(old, final_dir)
      raise
    fsync_directory(parent)
    if old:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    if old_fd is not None:
      os.close(old_fd)
  _release(tmp_dir)


@contextlib.contextmanager
def atomic_directory(final_dir: str) -> Iterator[str]:
  """Yields a temporary directory that becomes `final_dir` when the block ends without error."""
  tmp = staging_directory(final_dir)
  try:
    yield tmp
    commit_directory(tmp, final_dir)
  except BaseException:
    discard_staging(tmp)
    raise


# ---------------------------------------------------------------- lock files


class LockHeldError(FileExistsError):
  """Another process holds the lock file `path`; `pid` is the one it recorded (None if unreadable)."""

  def __init__(self, path: str, pid: Optional[int]):
    super().__init__(f"{path} is locked by process {pid if pid is not None else '(unknown)'}")
    self.path, self.pid = path, pid


def _recorded_pid(path: str) -> Optional[int]:
  # The holder writes its pid right after taking the lock: wait a moment for it.
  for _ in range(20):
    try:
      with open(path, encoding="ascii") as f:
        text = f.read().strip()
      if text:
        return int(text)
    except (OSError, ValueError):
      pass
    time.sleep(0.05)
  return None


def lock_file(path: str) -> Optional[int]:
  """Takes the exclusive flock of `path` (created if need be) without waiting and records this process's pid
  in it; the fd holding the lock (give it to release_lock_file), or None where the file system cannot lock.

  Raises LockHeldError when another process holds it. The lock goes away with
  the fd, so a killed holder never leaves it taken.
  """
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, new_file_mode())
    locked = _lock(fd, blocking=False)
    if locked is False:
      os.close(fd)
      raise LockHeldError(path, _recorded_pid(path))
    if locked is None:
      os.close(fd)
      return None
    try:
      current = os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
      current = False
    if current:
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
      return fd
    os.close(fd)  # its holder deleted it as it released it, after we opened it: lock the new one


def release_lock_file(path: str, fd: Optional[int]) -> None:
  """Deletes the lock file, then releases its lock (a process that opened it meanwhile sees it deleted)."""
  with contextlib.suppress(FileNotFoundError):
    os.remove(path)
  if fd is not None:
    os.close(fd)


def require_new_or_empty_directory(path: str, flag: str = "--out") -> None:
  """Refuses an output `path` that exists and is not an empty directory: nothing of the user's is replaced.

  Used by the commands that write a whole new directory (preprocess,
  automl-baseline make-module); raises FileExistsError naming `flag`.
  """
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
    raise FileExistsError(f"{flag} {path} exists and is not an empty directory; choose a new one")


def file_sha256(path: str) -> str:
  """sha256 of a file's bytes, read in 1 MiB blocks (weights files can be large)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def read_json_object(path: str, what: str, error: type = ValueError) -> Dict[str, Any]:
  """The JSON object in `path`, or `error` naming the file: unreadable, not UTF-8 JSON, or not an object
  (`what` says which object was expected)."""
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise error(f"{path} is not valid UTF-8 JSON ({reason})") from None
  if not isinstance(value, dict):
    raise error(f"{path} holds a JSON {type(value).__name__}, not {what}")
  return value


def read_format_file(path: str, what: str, format_name: str, version: int, remedy: str = "") -> Dict[str, Any]:
  """The JSON object in `path` after checking its "format" and "format_version" (the export manifest, the
  training-records spec): ValueError naming the file otherwise; `remedy` ends the version's message."""
  data = read_json_object(path, what)
  if data.get("format") != format_name:
    raise ValueError(f"{path} is not {what} ({format_name!r} expected)")
  if data.get("format_version") != version:
    raise ValueError(f"{path} has format version {data.get('format_version')!r}; this adapter_keras reads version "
                     f"{version}{remedy}")
  return data
