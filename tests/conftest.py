"""Test set-up: 8 virtual CPU devices, set before JAX is imported anywhere."""

import os

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
