"""Loading a study config: a file path or a built-in name, one-line errors.

``--config`` takes a path to a Python file that defines ``get_config()``
returning :func:`autoscale_jax.config.base_config` with changes, or the name of
a built-in config (``demo``, ``micro``, ``gpt2_small_redpajama``, ...: the
files in the ``configs/`` directory next to the package). A config file in a
package directory (one with ``__init__.py``, as ``configs/``) may import its
siblings (``from configs import gpt2_small_redpajama``) from any working
directory: the directory above the package is on ``sys.path`` while it loads.

Every way a config can fail to load (no such file or name, a directory, a
syntax error, a failed import, no ``get_config``, a ``get_config`` that raises
or returns something else than a study ``ConfigDict``) is a
:class:`ConfigFileError`: one line naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import pathlib
import sys
import traceback
from typing import Iterator

import ml_collections

from autoscale_jax import config as config_lib
from autoscale_jax import errors

# The built-in configs: the configs/ directory beside the package.
BUILTIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
_MODULE_COUNTER = itertools.count()


class ConfigFileError(errors.UserError):
  """A config file that cannot be loaded (one line: the file and the fix).

  Not a ``ValueError``: absl's flag parser rewraps those into a generic
  "illegal flag value" message, and this one must reach ``main.py`` as is.
  """


def builtin_names() -> list[str]:
  """The names ``--config=NAME`` accepts (configs/*.py without the suffix)."""
  if not BUILTIN_DIR.is_dir():
    return []
  return sorted(p.stem for p in BUILTIN_DIR.glob("*.py")
                if not p.stem.startswith("_"))


def _choices() -> str:
  names = builtin_names()
  if not names:
    return "a path to a config file (configs/NAME.py in the source checkout)"
  return ("a path to a config file or a built-in name: " + ", ".join(names))


def resolve_path(spec: str) -> pathlib.Path:
  """The config file ``spec`` names: a path, else a built-in config's name.

  A path is read relative to the working directory. When nothing is there,
  ``NAME``, ``NAME.py`` and ``configs/NAME.py`` name the built-in config.

  Raises:
    ConfigFileError: nothing to load there (names the choices).
  """
  if not spec.strip():
    raise ConfigFileError(f"--config is empty; pass {_choices()}")
  path = pathlib.Path(spec).expanduser()
  if path.is_dir():
    raise ConfigFileError(
        f"config {spec} is a directory, not a config file; pass a .py file "
        f"that defines get_config(), e.g. {os.path.join(spec, 'NAME.py')}")
  if path.exists():
    return path
  parent = path.parent.as_posix()
  if parent in (".", "configs"):
    name = path.name[:-3] if path.name.endswith(".py") else path.name
    builtin = BUILTIN_DIR / f"{name}.py"
    if name in builtin_names() and builtin.is_file():
      return builtin
  raise ConfigFileError(
      f"config {spec} not found (no such file from {os.getcwd()} and no "
      f"built-in config of that name); pass {_choices()}")


@contextlib.contextmanager
def _package_root_on_path(path: pathlib.Path) -> Iterator[None]:
  """Puts the directory above ``path``'s package on sys.path while loading."""
  root = None
  if (path.parent / "__init__.py").is_file():
    root = str(path.parent.parent.resolve())
  if root is None or root in sys.path:
    yield
    return
  sys.path.insert(0, root)
  try:
    yield
  finally:
    with contextlib.suppress(ValueError):
      sys.path.remove(root)


def _line_in(path: pathlib.Path, tb) -> str:
  """' (line N)' of the innermost traceback frame in ``path``, or ''."""
  lines = [frame.lineno for frame in traceback.extract_tb(tb)
           if os.path.abspath(frame.filename) == os.path.abspath(path)]
  return f" (line {lines[-1]})" if lines else ""


def _load_module(path: pathlib.Path):
  name = f"_autoscale_jax_config_{next(_MODULE_COUNTER)}_{path.stem}"
  try:
    source = path.read_bytes()
  except OSError as e:
    raise ConfigFileError(
        f"config file {path} cannot be read: {e.strerror or e}; check its "
        "permissions") from None
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  try:
    code = compile(source, str(path), "exec")
  except SyntaxError as e:
    raise ConfigFileError(
        f"config file {path} has a syntax error at line {e.lineno}: {e.msg}; "
        "fix the file") from None
  except ValueError as e:  # e.g. null bytes in the source
    raise ConfigFileError(
        f"config file {path} is not Python source ({e}); pass a .py config "
        "file") from None
  sys.modules[name] = module  # as an import would (dataclasses need it)
  with _package_root_on_path(path):
    try:
      exec(code, module.__dict__)  # pylint: disable=exec-used
    except ImportError as e:
      raise ConfigFileError(
          f"config file {path}{_line_in(path, e.__traceback__)}: import "
          f"failed: {e}; install the module or fix the import") from None
    except errors.UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise ConfigFileError(
          f"config file {path}{_line_in(path, e.__traceback__)} raised "
          f"{type(e).__name__} when loaded: {e}; fix the file") from None
  return module


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads the study config ``spec`` names (path or built-in name).

  ``spec`` may end in ``:ARG``, passed to ``get_config(ARG)`` (as
  ml_collections' config flags do), unless the whole of it is a file.

  Raises:
    ConfigFileError: see the module doc.
  """
  arg = None
  if ":" in spec and not pathlib.Path(spec).exists():
    spec, arg = spec.split(":", 1)
  path = resolve_path(spec)
  module = _load_module(path)
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigFileError(
        f"config file {path} defines no get_config(); a study config defines "
        "get_config() returning autoscale_jax.config.base_config() with "
        "changes (see configs/micro.py)")
  try:
    config = get_config() if arg is None else get_config(arg)
  except errors.UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigFileError(
        f"config file {path}: get_config(){_line_in(path, e.__traceback__)} "
        f"raised {type(e).__name__}: {e}; fix the file") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigFileError(
        f"config file {path}: get_config() returned {type(config).__name__}, "
        "not an ml_collections.ConfigDict; return "
        "autoscale_jax.config.base_config() with changes")
  missing = [k for k in config_lib.base_config() if k not in config]
  if missing:
    raise ConfigFileError(
        f"config file {path}: get_config() returned a ConfigDict without "
        f"the study keys {', '.join(missing)}; start from "
        "autoscale_jax.config.base_config()")
  return config
