"""How TensorFlow should start in a process that uses adapter_keras; set before TensorFlow is imported.

Nothing here imports TensorFlow: `import adapter_keras` calls `configure_devices()`, so the
command lines, notebooks and benchmarks start TensorFlow alike, and the command lines' parsers
stay TensorFlow-free (tests/test_architecture.py).

TensorFlow's pip build includes CUDA. When it creates its devices it asks the CUDA driver for
GPUs, and on a machine without NVIDIA's driver that fails and is logged as an error on every run:
`E ... cuda_platform.cc:51] failed call to cuInit: ... UNKNOWN ERROR (303)` (303: libcuda.so.1
could not be loaded). The probe cannot find anything there, so instead of hiding the line (only
TF_CPP_MIN_LOG_LEVEL=3 could, and it hides every real error too) we leave the probe out with
TensorFlow's own switch, TF_ENABLED_DEVICE_TYPES, listing every device type but the CUDA ones.
"""
from __future__ import annotations

import ctypes
import os
import site
import sys
import sysconfig
from typing import MutableMapping, Optional

ENABLED_DEVICE_TYPES = "TF_ENABLED_DEVICE_TYPES"
# TPU VMs have no CUDA driver either: their device types stay, as does XLA_CPU (it only makes
# devices when TF_XLA_FLAGS asks for them). GPU and XLA_GPU are the ones left out.
NON_CUDA_DEVICE_TYPES = ("CPU", "XLA_CPU", "TPU", "TPU_SYSTEM")


def cuda_driver_loadable() -> bool:
  """Whether libcuda.so.1 loads: the library TensorFlow's cuInit goes through (loading is not init)."""
  try:
    ctypes.CDLL("libcuda.so.1")
  except OSError:
    return False
  return True


def _cuda_devices_hidden(environ: MutableMapping[str, str]) -> bool:
  # CUDA_VISIBLE_DEVICES="" or "-1" is the usual way to ask for a CPU run on a GPU machine;
  # cuInit then fails with "no device" and TensorFlow logs that as an error too.
  value = environ.get("CUDA_VISIBLE_DEVICES")
  return value is not None and value.strip() in ("", "-1")


def _pluggable_device_plugins(environ: MutableMapping[str, str]) -> bool:
  # A PluggableDevice plugin (tensorflow-metal, Intel's XPU extension, DirectML) can register
  # a "GPU" of its own without CUDA; TensorFlow loads them from these directories on import.
  if environ.get("TF_PLUGGABLE_DEVICE_LIBRARY_PATH"):
    return True
  directories = [p for p in sys.path if "site-packages" in p]
  if site.ENABLE_USER_SITE and site.USER_SITE:
    directories.append(site.USER_SITE)
  directories += site.getsitepackages()
  directories += [sysconfig.get_path(name) for name in ("purelib", "platlib")]
  return any(os.path.isdir(os.path.join(d, "tensorflow-plugins")) for d in directories if d)


def configure_devices(environ: Optional[MutableMapping[str, str]] = None,
                      driver_loadable=cuda_driver_loadable) -> Optional[str]:
  """Leaves TensorFlow's GPU device factories out where they cannot find a GPU.

  Only on Linux, only without a loadable CUDA driver (or with CUDA_VISIBLE_DEVICES hiding every
  GPU), only when no PluggableDevice plugin could bring a GPU of its own, and never over a
  TF_ENABLED_DEVICE_TYPES the user set. Returns the value it set, or None.
  """
  environ = os.environ if environ is None else environ
  if not sys.platform.startswith("linux") or ENABLED_DEVICE_TYPES in environ:
    return None
  if _pluggable_device_plugins(environ):
    return None
  if not _cuda_devices_hidden(environ) and driver_loadable():
    return None
  environ[ENABLED_DEVICE_TYPES] = ",".join(NON_CUDA_DEVICE_TYPES)
  return environ[ENABLED_DEVICE_TYPES]
