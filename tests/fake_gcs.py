"""A fake ``gs://`` for tests: no network, every byte in a local directory.

How etils.epath reaches ``gs://`` (etils 1.15, ``etils/epath/gpath.py``):
with TensorFlow installed it uses ``tf.io.gfile`` (its own GCS client, which
nothing in-process can fake); otherwise, or with ``EPATH_USE_TF=false``, it
uses fsspec's ``gcs`` filesystem (gcsfs), looked up by protocol name. So the
fake turns TensorFlow off for epath and registers, for ``gs`` and ``gcs``, an
fsspec ``DirFileSystem`` over a local directory: ``gs://bucket/a/b`` is
``<root>/bucket/a/b``. The code under test only ever sees ``gs://`` strings,
so any ``os``-level use of such a path (``open``, ``os.makedirs``) misses the
files and leaves a local directory named ``gs:`` behind, which tests check.

A directory rather than fsspec's ``memory://`` store: the bucket is visible
to other processes (multi-process tests) and to the two clients that do not
go through epath: tensorstore (orbax's checkpoint arrays) and TensorFlow's
summary writer (TensorBoard). :func:`route_trainer_io` points those two at
the bucket's directory.
"""

from __future__ import annotations

import importlib
import os

import fsspec
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem


class FakeGCS(DirFileSystem):
  """``gs://`` over the local directory :attr:`root`."""

  protocol = ("gs", "gcs")
  cachable = False
  root: str | None = None

  def __init__(self, *args, **kwargs):
    del args, kwargs  # gcsfs options (e.g. finalize_on_close)
    if FakeGCS.root is None:
      raise RuntimeError("fake_gcs.install(root) first")
    super().__init__(path=FakeGCS.root, fs=LocalFileSystem(auto_mkdir=True))


def install(root: str, monkeypatch=None) -> None:
  """Serves ``gs://`` from ``root`` in this process (epath and fsspec).

  With pytest's ``monkeypatch`` the changes are undone after the test (call
  :func:`forget_filesystems` at teardown too); without it (a child process)
  they last for the process.
  """
  os.makedirs(root, exist_ok=True)
  registry = importlib.import_module("fsspec.registry")._registry  # pylint: disable=protected-access
  if monkeypatch is None:
    FakeGCS.root = root
    for protocol in FakeGCS.protocol:
      fsspec.register_implementation(protocol, FakeGCS, clobber=True)
    gpath._is_tf_installed = lambda: False  # pylint: disable=protected-access
  else:
    monkeypatch.setattr(FakeGCS, "root", root)
    for protocol in FakeGCS.protocol:
      monkeypatch.setitem(registry, protocol, FakeGCS)
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  forget_filesystems()


def forget_filesystems() -> None:
  """Drops the filesystem epath cached per protocol (one from another root)."""
  epath_backend._FileSystemSpecBackend._get_filesystem.cache_clear()  # pylint: disable=protected-access


def local(uri: str | os.PathLike) -> str:
  """The local path of ``gs://bucket/x`` in the fake bucket."""
  uri = os.fspath(uri)
  if not uri.startswith("gs://"):
    return uri
  return os.path.join(FakeGCS.root, uri[len("gs://"):])


def route_trainer_io(monkeypatch) -> None:
  """Points orbax (tensorstore) and TensorBoard (tf) at the fake bucket.

  Both talk to GCS with clients of their own, outside epath and fsspec; the
  run's other files (metrics.jsonl, result.json) go through epath.
  """
  from autoscale_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  from autoscale_jax.train import metrics  # pylint: disable=g-import-not-at-top
  manager, create_writer = checkpoint.manager, metrics.create_writer
  monkeypatch.setattr(checkpoint, "manager",
                      lambda d, **kw: manager(local(d), **kw))
  monkeypatch.setattr(metrics, "create_writer",
                      lambda d, **kw: create_writer(local(d), **kw))
