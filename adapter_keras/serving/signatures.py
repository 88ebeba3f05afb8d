"""What an export is made of, without TensorFlow: signature names, its manifest, where it may go.

`export` (serving/export.py) and `predict` (serving/predict.py) agree through
this module, which imports no TensorFlow so that the command line can refuse a
bad `--out`, task name or `--model` before paying for TensorFlow's import.

An export directory holds the SavedModel and `EXPORT_MANIFEST`:

  format, format_version, library_version
  tasks     [{name, signature, is_pair, task_type, label_names}] in export order
  router    "mixed" for a multi-task export with a sentence-level task, else null
  all_tasks "all" for a multi-task export (every task's outputs for the same texts
            in one call: serving/export.py), else null; absent in exports written
            before it existed
  files     every file and directory the export wrote ("dir/" for directories),
            so that `--overwrite` can tell an earlier export from files that
            someone put there, and replace only the former
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Optional, Sequence

from adapter_keras.io import read_format_file

EXPORT_MANIFEST = "adapter_keras_export.json"
EXPORT_FORMAT = "adapter_keras.export"
EXPORT_FORMAT_VERSION = 1
ROUTER_SIGNATURE = "mixed"
ALL_SIGNATURE = "all"
DEFAULT_SIGNATURE = "serving_default"
RESERVED_SIGNATURES = (ROUTER_SIGNATURE, ALL_SIGNATURE, DEFAULT_SIGNATURE)
# What marks a directory as a training run (train/run_dir.py) or an artifact (artifacts.py); copies,
# because those modules import TensorFlow.
RUN_DIRECTORY_FILES = ("run.json", "metrics.json", "checkpoint")
ARTIFACT_FILES = ("manifest.json", "weights.safetensors")


def signature_name(task_name: str) -> str:
  """A task's signature in a multi-task export: its name with every non-identifier character as `_`."""
  name = re.sub(r"[^A-Za-z0-9_]", "_", task_name)
  return name if name and name[0].isalpha() else f"task_{name}"


def signature_names(task_names: Sequence[str]) -> Dict[str, str]:
  """Task name -> signature name for a multi-task export.

  Raises ValueError naming every task whose signature would be reserved or
  shared with another task: tf.saved_model.save keeps the last signature of
  a name, so one task would silently answer for the other.
  """
  problems = []
  duplicated = sorted({n for n in task_names if list(task_names).count(n) > 1})
  problems += [f"task {n!r} is given twice" for n in duplicated]
  by_signature: Dict[str, List[str]] = {}
  for name in dict.fromkeys(task_names):
    by_signature.setdefault(signature_name(name), []).append(name)
  for signature, names in by_signature.items():
    if signature in RESERVED_SIGNATURES:
      problems.append(_reserved(names[0]))
    if len(names) > 1:
      problems.append(f"tasks {' and '.join(repr(n) for n in names)} would all be signature {signature!r}")
  if problems:
    raise ValueError("cannot export these tasks together: " + "; ".join(problems) +
                     "; rename the tasks (train them under another --task name)")
  return {name: signature_name(name) for name in task_names}


def _reserved(task_name: str) -> str:
  return (f"task {task_name!r} would be signature {signature_name(task_name)!r}, which is reserved "
          f"({', '.join(RESERVED_SIGNATURES[:-1])} and {RESERVED_SIGNATURES[-1]} serve every task)")


def check_task_name(task_name: str) -> None:
  """Raises ValueError when a task exported alone has a name whose signature is reserved.

  Alone it is served as serving_default anyway, but the same artifact could
  not be exported with others (signature_names), and README promises that
  such names are refused: every export refuses them alike.
  """
  if signature_name(task_name) in RESERVED_SIGNATURES:
    raise ValueError(f"cannot export this task: {_reserved(task_name)} in a multi-task export; rename the task "
                     "(train it under another --task name)")


# ---------------------------------------------------------------- the manifest


def export_manifest(tasks: List[dict], router: Optional[str], directory: str, library_version: str,
                    all_tasks: Optional[str] = None) -> dict:
  """The manifest of the export written to `directory` (its `files` are listed from it).

  Raises ValueError for a single-task export of a task with a reserved name
  (check_task_name; a multi-task export's names went through signature_names).
  """
  if router is None:
    for task in tasks:
      check_task_name(task["name"])
  return dict(format=EXPORT_FORMAT, format_version=EXPORT_FORMAT_VERSION, library_version=library_version,
              tasks=tasks, router=router, all_tasks=all_tasks, files=sorted(_entries(directory)))


def _entries(directory: str) -> List[str]:
  """Relative paths of everything under `directory`, directories with a trailing `/`, links as files."""
  entries = []
  for root, dirs, files in os.walk(directory):
    relative = os.path.relpath(root, directory)
    prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
    for d in list(dirs):
      if os.path.islink(os.path.join(root, d)):  # a link is never one of ours; list it, do not enter it
        dirs.remove(d)
        entries.append(prefix + d)
      else:
        entries.append(prefix + d + "/")
    entries += [prefix + f for f in files]
  return entries


def read_export_manifest(directory: str) -> Optional[dict]:
  """The manifest of the export in `directory`, or None when it holds none.

  Raises ValueError for a manifest that is not one (not an object, another
  format, a version this library cannot read).
  """
  path = os.path.join(directory, EXPORT_MANIFEST)
  if not os.path.isfile(path):
    return None
  manifest = read_format_file(path, "an export manifest of adapter_keras", EXPORT_FORMAT, EXPORT_FORMAT_VERSION)
  tasks = manifest.get("tasks")
  if (not isinstance(tasks, list) or not tasks or not isinstance(manifest.get("files"), list)
      or not all(isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("signature"), str)
                 and isinstance(t.get("is_pair"), bool) for t in tasks)):
    raise ValueError(f"{path} is malformed: it needs tasks (name, signature, is_pair) and files")
  return manifest


# ---------------------------------------------------------------- where an export may go


def _what_it_is(directory: str, entries: List[str]) -> Optional[str]:
  if any(f in entries for f in RUN_DIRECTORY_FILES):
    found = [f for f in RUN_DIRECTORY_FILES + ("artifact",) if f in entries]
    return f"a training run directory (it holds {', '.join(found)})"
  if all(f in entries for f in ARTIFACT_FILES):
    return "an artifact directory"
  return None


def check_export_destination(out_dir: str, overwrite: bool = False) -> None:
  """Fails, before anything is written, unless an export may go to `out_dir`.

  `out_dir` may be new or empty. With `overwrite` it may also hold an
  earlier export, which is replaced as a whole; anything else (a run or an
  artifact directory, a directory with other files, an export that someone
  added files to) is refused, so an export never deletes what it did not write.
  """
  if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
    raise FileExistsError(f"--out {out_dir} is a file; choose an empty or new directory")
  # The export is renamed into place, so the parent must be writable (and be a directory).
  existing = os.path.dirname(os.path.abspath(out_dir))
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise NotADirectoryError(f"cannot export to {out_dir}: {existing} is a file, not a directory")
  if not os.access(existing, os.W_OK):
    raise PermissionError(f"cannot export to {out_dir}: {existing} is not writable")
  if not os.path.isdir(out_dir):
    return
  entries = os.listdir(out_dir)
  if not entries:
    return
  what = _what_it_is(out_dir, entries)
  if what:
    raise FileExistsError(f"--out {out_dir} is {what}; an export never replaces one: "
                          "choose an empty or new directory")
  try:
    manifest = read_export_manifest(out_dir)
  except ValueError:
    manifest = None
  if manifest is None:
    raise FileExistsError(f"--out {out_dir} is not empty and holds no earlier export (--overwrite replaces "
                          "only an export written by adapter-keras export); choose an empty or new directory")
  written = set(manifest["files"]) | {EXPORT_MANIFEST}
  foreign = [e for e in _entries(out_dir) if e not in written]
  if foreign:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    raise FileExistsError(f"--out {out_dir} holds an earlier export plus files it did not write ({shown}); "
                          "move them away or choose an empty or new directory")
  if not overwrite:
    raise FileExistsError(f"--out {out_dir} holds an earlier export; pass --overwrite to replace it, "
                          "or choose an empty or new directory")
