"""Distribution strategies by name, TPU resolution, and who writes what in a multi-worker job.

Strategies (`TrainConfig.strategy`, `--strategy`):

* `default`: one device; `mirrored`: every local GPU (or logical CPU);
* `multi-worker`: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG;
* `tpu`: TPUStrategy on the TPU named by `--tpu` (a name, `grpc://HOST:PORT`,
  or `local` on a TPU VM; without it, what the environment names);
* `auto`: a TPU if one resolves, a MirroredStrategy with more than one GPU,
  else the default strategy.

A TPU system is initialised once per process (`initialize_tpu_system` wipes
the TPU's memory, so a second call would lose the first strategy's
variables); strategies for the same TPU share it. When a TPU does not
resolve, the error is one line naming what was tried.

Multi-worker writes follow tf.distribute's rule: every worker runs the same
saves (reading sync-on-read variables, such as BatchNorm statistics, is a
collective op that needs every worker), the chief into the real place and
the others into temporary directories they delete (`worker_scratch`). Who
the chief is: `is_chief(strategy)`, or `will_be_chief(name)` from TF_CONFIG
before the strategy exists (a run checks its directory before building
anything, and a finished run must not wait for the other workers).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shutil
import tempfile
from typing import Dict, Iterator, Optional

import tensorflow as tf

from adapter_keras.train.config import STRATEGIES

# TPU cluster resolvers whose system this process has initialised, by the --tpu they came from.
_INITIALISED_TPUS: Dict[str, tf.distribute.cluster_resolver.TPUClusterResolver] = {}


def _tpu_description(tpu: Optional[str]) -> str:
  if tpu == "local":
    return "--tpu local (this machine's own TPU chips, as on a TPU VM)"
  if tpu:
    return f"--tpu {tpu}"
  return "the environment (no --tpu given: TPU_NAME, or a Cloud TPU VM's metadata)"


def resolve_tpu(tpu: Optional[str]) -> tf.distribute.cluster_resolver.TPUClusterResolver:
  """The TPU's cluster resolver, its system initialised (once per process).

  Raises ValueError, one line naming what was tried, when no TPU answers.
  """
  key = tpu or ""
  if key in _INITIALISED_TPUS:
    return _INITIALISED_TPUS[key]
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=key)
    if key != "local":
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except Exception as e:  # pylint: disable=broad-except
    # The resolver fails with ValueError, URLError, NotFoundError... depending on what was asked.
    reason = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0].rstrip(".")[:200]
    raise ValueError(f"no TPU found from {_tpu_description(tpu)}: {reason} ({type(e).__name__}); on a TPU VM "
                     "use --tpu local, elsewhere --tpu NAME or --tpu grpc://HOST:8470") from None
  _INITIALISED_TPUS[key] = resolver
  return resolver


def _tpu_resolves_from_environment() -> bool:
  try:
    tf.distribute.cluster_resolver.TPUClusterResolver()
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def get_strategy(name: str = "auto", tpu: Optional[str] = None) -> tf.distribute.Strategy:
  """The tf.distribute strategy called `name` (see the module docstring)."""
  if name not in STRATEGIES:
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
  if name == "auto":
    if tpu is not None or _tpu_resolves_from_environment():
      return tf.distribute.TPUStrategy(resolve_tpu(tpu))
    if len(tf.config.list_logical_devices("GPU")) > 1:
      return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi-worker":
    # Reads the cluster from TF_CONFIG, as every tf.distribute multi-worker job.
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.TPUStrategy(resolve_tpu(tpu))


def is_tpu(strategy: tf.distribute.Strategy) -> bool:
  return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


def worker_identity(strategy: tf.distribute.Strategy) -> Optional[tuple]:
  """(task type, task id) of this process in a multi-worker cluster; None outside one."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not getattr(resolver, "task_type", None) or is_tpu(strategy):
    return None
  return resolver.task_type, resolver.task_id


def _is_chief_task(task_type: Optional[str], task_id: Optional[int], cluster: Dict) -> bool:
  # As tf.distribute defines it: the "chief" task, or worker 0 of a cluster without one.
  return task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes a run's files: always, unless it is a non-chief task of a cluster
  (the "chief" task, or worker 0 of a cluster without one, is the chief)."""
  identity = worker_identity(strategy)
  if identity is None:
    return True
  return _is_chief_task(*identity, strategy.cluster_resolver.cluster_spec().as_dict())


def will_be_chief(strategy_name: str) -> bool:
  """`is_chief` of the strategy `get_strategy(strategy_name)` will make, from TF_CONFIG alone.

  Only "multi-worker" makes a cluster; without TF_CONFIG it runs as a single
  worker, which is its own chief.
  """
  if strategy_name != "multi-worker":
    return True
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  if not resolver.task_type:
    return True
  return _is_chief_task(resolver.task_type, resolver.task_id, resolver.cluster_spec().as_dict())


@contextlib.contextmanager
def worker_scratch(path: Optional[str], strategy: tf.distribute.Strategy) -> Iterator[Optional[str]]:
  """Where this process writes what belongs at `path`: `path` itself on the chief; on another worker
  a new temporary directory (under TMPDIR), deleted when the block ends.

  A worker killed inside the block cannot delete its directory; the same
  worker entering a block for the same `path` again (the restarted run)
  deletes what it left there.
  """
  if path is None or is_chief(strategy):
    yield path
    return
  task_type, task_id = worker_identity(strategy)
  key = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
  prefix = os.path.join(tempfile.gettempdir(), f"adapter_keras-{task_type}{task_id}-{key}-")
  for stale in glob.glob(glob.escape(prefix) + "*"):
    shutil.rmtree(stale, ignore_errors=True)
  scratch = tempfile.mkdtemp(prefix=os.path.basename(prefix))
  try:
    yield os.path.join(scratch, os.path.basename(os.path.normpath(path)))
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def wait_for_all_workers(strategy: tf.distribute.Strategy) -> None:
  """Returns once every worker of a multi-worker cluster has called it (a no-op elsewhere).

  At the end of a run: the workers then exit together. TensorFlow's
  coordination service (in the chief) takes a worker that stopped sending
  heartbeats, as one that exited 10 s earlier has, for a crashed one and
  logs "The tasks have crashed" on the others.
  """
  if worker_identity(strategy) is None:
    return
  # An all-reduce needs every worker: the simplest barrier of the public API
  # (in a tf.function: run eagerly, TensorFlow warns of its overhead).
  tf.function(lambda: strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)),
                                      axis=None))()
