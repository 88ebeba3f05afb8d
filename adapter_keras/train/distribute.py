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

Waiting for peers is bounded (`TrainConfig.worker_timeout`, `--worker-timeout`)
and interruptible. TensorFlow's own wait, in MultiWorkerMirroredStrategy()
(every task of TF_CONFIG must register) or for `--tpu grpc://HOST:PORT`, has
no limit, holds the GIL and, for multi-worker, installs a SIGTERM handler that
only records the signal: a worker that never came meant a process that hung
for ever and ignored SIGTERM. So before TensorFlow is asked, this module waits
in Python, printing what it waits for, until every peer accepts a TCP
connection (`_wait_for_addresses`): a multi-worker task listens on its own
TF_CONFIG port meanwhile (it accepts and drops connections, so that its peers
see it up), then frees the port for TensorFlow's server. SIGTERM and SIGINT
act as usual while it waits, and the SIGTERM handler is put back once the
strategy exists. TF_CONFIG itself is checked first (`tf_config`): malformed,
it is one error line naming TF_CONFIG.

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
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from typing import Dict, Iterator, List, Optional, Tuple

import tensorflow as tf

from adapter_keras.train.config import DEFAULT_WORKER_TIMEOUT, STRATEGIES

# The jobs whose tasks a MultiWorkerMirroredStrategy coordinates (as tf.distribute counts workers).
_COORDINATED_JOBS = ("chief", "worker")

# TPU cluster resolvers whose system this process has initialised, by the --tpu they came from.
_INITIALISED_TPUS: Dict[str, tf.distribute.cluster_resolver.TPUClusterResolver] = {}


def _tpu_description(tpu: Optional[str]) -> str:
  if tpu == "local":
    return "--tpu local (this machine's own TPU chips, as on a TPU VM)"
  if tpu:
    return f"--tpu {tpu}"
  return "the environment (no --tpu given: TPU_NAME, or a Cloud TPU VM's metadata)"


# ---------------------------------------------------------------- waiting for peers, bounded


def _host_port(address: str) -> Tuple[str, int]:
  """("host", port) of "host:port" or "[v6]:port"; ValueError when it is not one."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"{address!r} is not HOST:PORT")
  return host.strip("[]"), int(port)


def _answers(address: str, timeout: float) -> bool:
  try:
    with socket.create_connection(_host_port(address), timeout=max(0.05, timeout)):
      return True
  except OSError:
    return False


def _wait_for_addresses(peers: Dict[str, str], timeout: float, what: str) -> None:
  """Returns once every peer (description -> HOST:PORT) accepts a TCP connection; ValueError naming those that
  did not within `timeout` seconds. Plain Python, so that signals act while it waits."""
  print(f"[distribute] waiting up to {timeout:g} s (--worker-timeout) for {what}: "
        + ", ".join(f"{name} at {address}" for name, address in peers.items()), flush=True)
  deadline = time.monotonic() + timeout
  pending = dict(peers)
  while True:
    for name, address in list(pending.items()):
      if _answers(address, min(1.0, deadline - time.monotonic())):
        del pending[name]
    if not pending:
      return
    if time.monotonic() >= deadline:
      missing = ", ".join(f"{name} at {address}" for name, address in pending.items())
      raise TimeoutError(missing)
    time.sleep(0.2)


@contextlib.contextmanager
def _listening(port: int, task: str, address: str) -> Iterator[None]:
  """Accepts (and at once drops) connections on `port` for the block, so that peers waiting for this task see it
  up before TensorFlow's server takes the port."""
  try:
    if socket.has_dualstack_ipv6():
      server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
    else:
      server = socket.create_server(("", port))
  except OSError as e:
    raise ValueError(f"TF_CONFIG gives this process ({task}) the address {address}, but port {port} cannot be "
                     f"listened on here ({e.strerror or e}): another process holds it, or it is another "
                     "machine's address") from None
  server.settimeout(0.2)
  stop = threading.Event()

  def accept():
    while not stop.is_set():
      try:
        connection, _ = server.accept()
      except OSError:  # the timeout, or the server closed
        continue
      # Reset rather than closed: no TIME_WAIT left on the port TensorFlow's server binds next.
      connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
      connection.close()

  thread = threading.Thread(target=accept, name="adapter_keras-worker-listener", daemon=True)
  thread.start()
  try:
    yield
  finally:
    stop.set()
    thread.join()
    server.close()


# ---------------------------------------------------------------- TF_CONFIG


def tf_config() -> Optional[Dict]:
  """TF_CONFIG's {"cluster": {job: [HOST:PORT, ...]}, "task": {"type", "index"}}, checked; None when it is unset
  or names no cluster. Raises ValueError, one line naming TF_CONFIG, when it is malformed."""
  text = os.environ.get("TF_CONFIG", "").strip()
  if not text:
    return None
  try:
    config = json.loads(text)
  except ValueError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e}); it must be an object with \"cluster\" and \"task\"") from None
  if not isinstance(config, dict):
    raise ValueError(f"TF_CONFIG holds a JSON {type(config).__name__}, not an object with \"cluster\" and \"task\"")
  cluster, task = config.get("cluster") or {}, config.get("task")
  if not isinstance(cluster, dict):
    raise ValueError(f"TF_CONFIG's cluster must be an object of job name -> list of HOST:PORT, got {cluster!r}")
  jobs = {}
  for job, addresses in cluster.items():
    if isinstance(addresses, dict):  # tf.train.ClusterSpec's sparse form: {index: address}
      addresses = [addresses[k] for k in sorted(addresses, key=int)] if all(
          str(k).isdigit() for k in addresses) else None
    if not isinstance(addresses, list) or not addresses:
      raise ValueError(f"TF_CONFIG's cluster job {job!r} must be a non-empty list of HOST:PORT, got {addresses!r}")
    for address in addresses:
      try:
        _host_port(address if isinstance(address, str) else "")
      except ValueError:
        raise ValueError(f"TF_CONFIG's cluster job {job!r} lists {address!r}, which is not HOST:PORT") from None
    jobs[job] = addresses
  if not jobs:
    return None
  if not isinstance(task, dict) or not isinstance(task.get("type"), str) or isinstance(task.get("index"), bool) \
      or not isinstance(task.get("index", 0), int):
    raise ValueError(f"TF_CONFIG names a cluster but its task is {task!r}: it needs this process's task, "
                     "{\"type\": JOB, \"index\": N}")
  task_type, index = task["type"], task.get("index", 0)
  if task_type not in jobs or not 0 <= index < len(jobs[task_type]):
    raise ValueError(f"TF_CONFIG's task {task_type} {index} is not in its cluster ("
                     + ", ".join(f"{job}: {len(a)} task(s)" for job, a in jobs.items()) + ")")
  return dict(cluster=jobs, task=dict(type=task_type, index=index))


def _coordinated_peers(config: Dict) -> List[Tuple[str, str]]:
  """(task, HOST:PORT) of every other task the strategy waits for."""
  own = (config["task"]["type"], config["task"]["index"])
  cluster = config["cluster"]
  return [(f"{job} {i}", address) for job in _COORDINATED_JOBS for i, address in enumerate(cluster.get(job, ()))
          if (job, i) != own]


def _multi_worker_strategy(timeout: float) -> tf.distribute.Strategy:
  """MultiWorkerMirroredStrategy over TF_CONFIG's cluster, once every peer answers (module docstring)."""
  config = tf_config()
  if config is not None and config["task"]["type"] in _COORDINATED_JOBS and _coordinated_peers(config):
    task_type, index = config["task"]["type"], config["task"]["index"]
    address = config["cluster"][task_type][index]
    with _listening(_host_port(address)[1], f"{task_type} {index}", address):
      try:
        _wait_for_addresses(dict(_coordinated_peers(config)), timeout, f"the other tasks of TF_CONFIG ({task_type} "
                                                                       f"{index} is this one)")
      except TimeoutError as e:
        raise ValueError(f"--strategy multi-worker: {e} of TF_CONFIG did not answer within {timeout:g} s "
                         "(--worker-timeout); start every task TF_CONFIG lists, each with its own task index") from None
  main = threading.current_thread() is threading.main_thread()
  handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
  strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads the cluster from TF_CONFIG
  for sig, handler in handlers.items():  # TensorFlow's coordination service replaced SIGTERM's with one that records it
    if handler is not None:
      signal.signal(sig, handler)
  return strategy


def resolve_tpu(tpu: Optional[str],
                timeout: float = DEFAULT_WORKER_TIMEOUT) -> tf.distribute.cluster_resolver.TPUClusterResolver:
  """The TPU's cluster resolver, its system initialised (once per process).

  Raises ValueError, one line naming what was tried, when no TPU answers; a
  `grpc://HOST:PORT` TPU is given `timeout` seconds to accept a connection.
  """
  key = tpu or ""
  if key in _INITIALISED_TPUS:
    return _INITIALISED_TPUS[key]
  if key.startswith("grpc://"):
    address = key[len("grpc://"):].rstrip("/")
    try:
      _host_port(address)
      _wait_for_addresses({"the TPU": address}, timeout, f"--tpu {tpu}")
    except (ValueError, TimeoutError) as e:
      reason = (f"nothing answered at {address} within {timeout:g} s (--worker-timeout)"
                if isinstance(e, TimeoutError) else str(e))
      raise ValueError(f"no TPU found from {_tpu_description(tpu)}: {reason}; on a TPU VM use --tpu local, "
                       "elsewhere --tpu NAME or --tpu grpc://HOST:8470") from None
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


def get_strategy(name: str = "auto", tpu: Optional[str] = None,
                 worker_timeout: float = DEFAULT_WORKER_TIMEOUT) -> tf.distribute.Strategy:
  """The tf.distribute strategy called `name` (see the module docstring); `worker_timeout`: seconds to wait for
  the other workers (multi-worker) or a grpc:// TPU."""
  if name not in STRATEGIES:
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
  if name == "auto":
    if tpu is not None or _tpu_resolves_from_environment():
      return tf.distribute.TPUStrategy(resolve_tpu(tpu, worker_timeout))
    if len(tf.config.list_logical_devices("GPU")) > 1:
      return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi-worker":
    return _multi_worker_strategy(worker_timeout)
  return tf.distribute.TPUStrategy(resolve_tpu(tpu, worker_timeout))


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
  config = tf_config()  # checked here: the first place a run reads it
  if config is None:
    return True
  return _is_chief_task(config["task"]["type"], config["task"]["index"], config["cluster"])


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
