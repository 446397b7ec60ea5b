"""Test set-up: 8 virtual CPU devices, set before JAX is imported anywhere."""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# SciPy references (SLSQP) otherwise fight XLA for the 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest  # noqa: E402

import micro_study  # noqa: E402


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: takes more than ~30 s on 2 cores")
  _share_compiled_programs()


def _share_compiled_programs():
  """JAX's persistent compilation cache, one per session, for this process
  and every process it starts (xdist workers, the CLI processes the tests
  run: they inherit the environment).

  Most of a micro study's time is compiling the same small programs in every
  process; a cached executable is the one XLA compiled for the same program
  (the key covers the program, devices and options), so results are the
  same. A temporary directory, removed when the session ends; runs before
  any test module imports JAX. An inherited JAX_COMPILATION_CACHE_DIR (an
  xdist worker's: the controller's) is used as it is.
  """
  if "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return
  path = tempfile.mkdtemp(prefix="autoscale_jax_tests_xla_cache_")
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path
  # Every program, however quick to compile (the default caches >= 1 s).
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


# Finished micro studies shared by the modules (tests/micro_study.py): built
# once per session (once for all xdist workers); never change one in place.
@pytest.fixture(scope="session")
def micro_base(tmp_path_factory):
  return micro_study.build(micro_study.shared_root(tmp_path_factory), "base")


@pytest.fixture(scope="session")
def micro_seeds(tmp_path_factory):
  return micro_study.build(micro_study.shared_root(tmp_path_factory), "seeds")


@pytest.fixture(scope="session")
def micro_report(tmp_path_factory):
  return micro_study.build(micro_study.shared_root(tmp_path_factory),
                           "report")
