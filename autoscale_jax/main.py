r"""autoscale_jax command line: one entry point, one stage at a time.

  python -m autoscale_jax.main --stage=STAGE --config=configs/NAME.py \
      --workdir=DIR [--config.a.b=value ...]

Stages:
  plan     write every DDO budget's proxy runs for any trainer (plan/: runs.csv
           and runs.json to fill in, each run's mixture in every trainer's
           format); from the data, or --available_tokens=FILE.json without it.
  ddo      plan and train the 2m+1 proxy runs at every DDO budget (only the
           runs whose record is missing), then fit and solve each budget.
  fit      fit the power laws and solve the mixture, from the study's records
           or from any --results=RUNS.json or runs.csv (then --config is
           optional; with it the runs are checked against the plan).
  project  estimate the mixture at the target budget (config.project.estimator;
           from the study, from a workdir fitted with --results, or from
           --optima=A.json,B.json[,C.json] --target_tokens=T) and export it.
  final    train the target budget with each mixture in config.final.mixtures
           (or --mixture=NAME_OR_FILE, added to the comparison) once per seed of
           config.final.seeds and compare them (verdict over seeds, speed-up).
           --stage=train is an alias of final.
  report   write report/index.html and report/README.md with figures.
  all      ddo -> project -> final -> report, resuming what the workdir holds.

--config takes a file (configs/demo.py, from any directory) or the name of a
built-in config (demo, micro, gpt2_small_redpajama, ...).

A user error (bad config, bad input file, missing data, a path that cannot be
read or written) prints one line starting with "error:" and exits with
status 2.
"""

from __future__ import annotations

import ast
import errno
import os
import re
import signal
import sys
import threading

from autoscale_jax import tfenv

# Before anything imports TensorFlow (seqio / tfds / clu): quiet start-up.
tfenv.quiet_tf_startup()

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from autoscale_jax import config as config_lib  # noqa: E402
from autoscale_jax import config_file  # noqa: E402
from autoscale_jax import errors  # noqa: E402

_STAGE = flags.DEFINE_enum(
    "stage", None, list(config_lib.STAGES),
    "Which stage to run: " + ", ".join(config_lib.STAGES) + ".")


class _StudyConfigParser(flags.ArgumentParser):
  """--config: a config file path or a built-in name (config_file.load)."""

  def parse(self, argument: str):
    config = config_file.load(argument)
    config.lock()
    return config

  def flag_type(self) -> str:
    return "config object"


_CONFIG = config_flags.DEFINE_config_file(
    "config", None,
    "Study config: a file (configs/demo.py) or a built-in name (demo, micro, "
    "gpt2_small_redpajama, ...).",
    lock_config=True)
# ml_collections loads the file with its own parser (errors as tracebacks,
# paths relative to the working directory only); ours resolves built-in names
# and raises config_file.ConfigFileError, one line.
flags.FLAGS["config"].parser = _StudyConfigParser()
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Study directory (local path or gs://).")
_RESULTS = flags.DEFINE_string(
    "results", None,
    "fit: a RUNS.json or runs.csv from any training stack (--stage=plan "
    "writes both skeletons).")
_OPTIMA = flags.DEFINE_list(
    "optima", None, "project: comma-separated mixture.json files (>= 2).")
_TARGET_TOKENS = flags.DEFINE_float(
    "target_tokens", None, "project: target budget in tokens.")
_MIXTURE = flags.DEFINE_list(
    "mixture", None,
    "final: mixture names or files (default: config.final.mixtures).")
_ALLOW_REPEAT = flags.DEFINE_bool(
    "allow_repeat", False,
    "ddo/final: allow a domain's quota to exceed its unique tokens "
    "(repeated data, counted as epochs). Off by default: shortfalls stop.")
_AVAILABLE_TOKENS = flags.DEFINE_string(
    "available_tokens", None,
    "plan/fit/project without the data: a JSON file {domain: unique "
    "training tokens} (availability checks, caps and the exports).")
_ALLOW_INTERPOLATION = flags.DEFINE_bool(
    "allow_interpolation", False,
    "project from files: allow a target at or below the largest DDO budget "
    "(the paper's rule is meant to extrapolate).")
_WORKER_INDEX = flags.DEFINE_integer(
    "worker_index", None, "ddo: this worker's index for proxy fan-out.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", None, "ddo: number of workers sharing one store.")
_WORKER = flags.DEFINE_string(
    "worker", None,
    "ddo: lease fan-out: this worker's name (auto = host-pid); any number of "
    "workers claim runs from the shared workdir (a shared path or gs://) "
    "with leases (config.run.lease_seconds, config.run.lease_backend) and "
    "take over a dead worker's runs.")


class UsageError(errors.UserError, ValueError):
  """Wrong combination of command-line flags."""


def _check_workdir(workdir: str | None) -> None:
  """A local --workdir is a writable directory, or can be created.

  Checked before any work, so a workdir that is a file or cannot be written
  fails at once, not after a fit or a training run. Nothing is created here
  (a command that fails on a bad input leaves no workdir behind).
  """
  if not workdir or "://" in workdir:
    return
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise UsageError(f"--workdir={workdir} is a file, not a directory; pass "
                     "a directory (it is created when missing)")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UsageError(f"--workdir={workdir} cannot be created ({existing} is "
                     "a file); pass a directory you can write")
  if not os.access(existing, os.W_OK | os.X_OK):
    what = "is not writable" if existing == path else (
        f"cannot be created ({existing} is not writable)")
    raise UsageError(f"--workdir={workdir} {what}; pass a directory you can "
                     "write")
  if existing != path:  # try it (root passes os.access), then undo
    try:
      os.makedirs(path)
    except OSError as e:
      raise UsageError(f"--workdir={workdir} cannot be created ({e.strerror});"
                       " pass a directory you can write") from None
    made = path
    while made != existing:
      os.rmdir(made)
      made = os.path.dirname(made)


# What to do about an OSError on a user path, by errno.
_OS_ERROR_FIXES = {
    errno.EACCES: "check its permissions or choose another --workdir",
    errno.EPERM: "check its permissions or choose another --workdir",
    errno.EROFS: "the file system is read-only: choose another --workdir",
    errno.ENOTDIR: "a part of that path is a file, not a directory",
    errno.EISDIR: "a file is expected there, not a directory",
    errno.ENOENT: "check the path",
    errno.ENOSPC: "free some disk space and run the same command again "
                  "(finished runs are kept)",
    errno.EDQUOT: "free some disk space and run the same command again "
                  "(finished runs are kept)",
}


def os_error_message(e: OSError) -> str:
  """One line for an OSError on a path: the path, the reason, the fix."""
  where = str(e.filename)
  if e.filename2 is not None:
    where += f" -> {e.filename2}"
  fix = _OS_ERROR_FIXES.get(e.errno, "check the path and run again")
  return f"{where}: {e.strerror or e}; {fix}"


def _run(argv: list[str]) -> None:
  if len(argv) > 1:
    raise UsageError(f"unexpected arguments {argv[1:]}; flags start with --")
  stage = _STAGE.value
  if stage is None:
    raise UsageError("--stage is required: one of " +
                     ", ".join(config_lib.STAGES))
  # Imported here, not at the top: --help and flag errors answer without
  # importing JAX, and the file-only stages (fit --results, project --optima)
  # without the training stack (seconds of orbax/TensorFlow imports).
  from autoscale_jax import distributed  # pylint: disable=g-import-not-at-top
  from autoscale_jax.study import files  # pylint: disable=g-import-not-at-top
  from autoscale_jax.study import options as options_lib  # pylint: disable=g-import-not-at-top

  info = distributed.maybe_initialize()
  if info.initialized:
    print(f"multi-process run: process {info.process_index} of "
          f"{info.process_count} ({info.reason})", flush=True)

  options = options_lib.Options(
      workdir=_WORKDIR.value,
      results=_RESULTS.value,
      optima=_OPTIMA.value,
      target_tokens=_TARGET_TOKENS.value,
      mixtures=_MIXTURE.value,
      allow_repeat=_ALLOW_REPEAT.value,
      worker_index=_WORKER_INDEX.value,
      num_workers=_NUM_WORKERS.value,
      worker=_WORKER.value,
      available_tokens=_AVAILABLE_TOKENS.value,
      allow_interpolation=_ALLOW_INTERPOLATION.value,
  )
  stage = config_lib.STAGE_ALIASES.get(stage, stage)
  _check_workdir(options.workdir)
  if options.worker is not None and stage != "ddo":
    raise UsageError(
        f"--worker applies to --stage=ddo only (got --stage={stage}); run the "
        "later stages once, on one machine, after the workers finish")
  if options.available_tokens and stage not in ("plan", "fit", "project"):
    raise UsageError("--available_tokens is for --stage=plan, fit or project")
  if options.allow_interpolation and not (
      stage == "project" and files.handles(stage, options)):
    raise UsageError("--allow_interpolation is for --stage=project from "
                     "files (--optima, or a workdir fitted with --results)")
  if files.handles(stage, options):
    files.run(stage, options, _CONFIG.value)
    return
  from autoscale_jax.study import runner  # pylint: disable=g-import-not-at-top
  runner.run_stage(stage, _CONFIG.value, options)


def main(argv: list[str]) -> None:
  # Library INFO logs (orbax writes a dozen lines per checkpoint) drown the
  # progress lines; keep warnings unless the user asked for --verbosity.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  terminated: list[int] = []
  previous_sigterm = _sigterm_as_interrupt(terminated)
  try:
    _run(argv)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    if e.filename is None:  # not about a path: a bug, keep the traceback
      raise
    print(f"error: {os_error_message(e)}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    if terminated:
      print("terminated (SIGTERM): finished runs and the last checkpoint of "
            "the run in progress are kept; run the same command again to "
            "continue.", file=sys.stderr)
      sys.exit(128 + signal.SIGTERM)
    print("interrupted: finished runs are kept; run the same command again "
          "to continue.", file=sys.stderr)
    sys.exit(130)
  finally:
    if previous_sigterm is not None:
      signal.signal(signal.SIGTERM, previous_sigterm)


def _sigterm_as_interrupt(terminated: list[int]):
  """Makes SIGTERM raise KeyboardInterrupt until the old handler is restored.

  SIGTERM is how a preemption, ``scancel``, ``kubectl delete`` or ``docker
  stop`` asks a process to stop before a SIGKILL. Raised as KeyboardInterrupt
  it stops the study as Ctrl-C does: finished runs are kept and the run in
  progress resumes from its last checkpoint; while a checkpoint save is
  being started it is held until orbax has the save
  (``train.checkpoint.interrupts_held``). It does so even where SIGINT is
  ignored (a background job of a non-interactive shell). Each SIGTERM is
  appended to ``terminated``.

  Returns:
    The previous SIGTERM handler, or None outside the main thread (where
    handlers cannot be set; SIGTERM keeps its default action there).
  """
  if threading.current_thread() is not threading.main_thread():
    return None

  def on_sigterm(signum, frame):
    del frame
    terminated.append(signum)
    raise KeyboardInterrupt

  return signal.signal(signal.SIGTERM, on_sigterm)


def _override_keys(argv: list[str]) -> list[str]:
  """The KEY of every --config.KEY[=VALUE] argument, in order."""
  return [a[len("--config."):].split("=", 1)[0] for a in argv[1:]
          if a.startswith("--config.")]


def _moved_override(argv: list[str]) -> str | None:
  """The error for the first --config.KEY override whose KEY moved, or None."""
  for key in _override_keys(argv):
    if key in config_lib.MOVED_KEYS:
      return config_lib.moved_key_message(key, flag=True)
  return None


def _unknown_override_message(argv: list[str], e: Exception) -> str:
  """One plain line for a --config.* override naming no config key.

  ml_collections raises a KeyError/AttributeError whose text is the key's
  repr plus, when a key is close, 'Did you mean "KEY" instead of ...?'.
  """
  text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
  for _ in range(3):  # a KeyError re-raised from a KeyError holds its repr
    try:
      unquoted = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      break
    if not isinstance(unquoted, str):
      break
    text = unquoted
  first, _, rest = text.partition("\n")
  key = first.strip().strip("'\"")
  overrides = _override_keys(argv)
  path = next((o for o in overrides if key in o.split(".")), key)
  suggestion = re.search(r'Did you mean "([^"]+)"', rest)
  if suggestion:
    parts = path.split(".")
    fixed = ".".join(suggestion.group(1) if p == key else p for p in parts)
    fix = f"did you mean --config.{fixed}?"
  else:
    fix = "see the config file (or autoscale_jax/config.py) for the keys"
  return f"--config.{path}: no such config key; {fix}"


def _repeated_override(argv: list[str]) -> str | None:
  """The error for a --config.KEY override given twice, or None.

  absl takes the last of two scalar values but ml_collections joins two tuple
  values into one (``--config.final.seeds=(0,1) --config.final.seeds=(2,3)``
  gave ``[0, 1, 2, 3]``), so a repeated key is refused rather than guessed.
  """
  seen = set()
  for key in _override_keys(argv):
    if key in seen:
      return (f"--config.{key} is given twice; give it once (for a tuple "
              "the two values would be joined, not replaced)")
    seen.add(key)
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag or config override is a one-line error, exit 2."""
  repeated = _repeated_override(argv)
  if repeated:
    print(f"error: {repeated}", file=sys.stderr)
    sys.exit(2)
  try:
    return flags.FLAGS(argv)
  except errors.UserError as e:  # the config file (config_file.load)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except SystemExit as e:  # absl's --help exits with 1; help is not an error
    wants_help = any(a in ("--help", "-h", "--helpfull", "--helpshort")
                     for a in argv[1:])
    sys.exit(0 if wants_help else e.code)
  except (AttributeError, KeyError) as e:
    moved = _moved_override(argv)
    if moved:
      print(f"error: {moved}", file=sys.stderr)
      sys.exit(2)
    print(f"error: {_unknown_override_message(argv, e)}", file=sys.stderr)
    sys.exit(2)
  except (flags.Error, TypeError, ValueError) as e:
    msg = str(e).strip().splitlines()[0]
    print(f"error: bad command line: {msg} (see --help)", file=sys.stderr)
    sys.exit(2)


def run() -> None:
  """Console-script entry point."""
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
