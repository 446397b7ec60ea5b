"""The command line run in the test's own process (no interpreter start-up,
and JAX's compiled programs are shared with the other tests)."""

import contextlib
import io
import subprocess
import sys
from unittest import mock

from absl import flags

from autoscale_jax import main as main_lib


def cli(*args: str) -> int:
  """Runs ``python -m autoscale_jax.main *args`` in-process; its exit status.

  Flags are reset first, so one call's flags never leak into the next.
  """
  argv = ["autoscale_jax", *args]
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith("config.")]:
    delattr(flags.FLAGS, name)  # the last call's overrides, defined anew
  try:
    # ml_collections finds the --config.* overrides in sys.argv.
    with mock.patch.object(sys, "argv", argv):
      argv = main_lib._parse_flags(argv)  # pylint: disable=protected-access
    main_lib.main(argv)
  except SystemExit as e:
    return int(e.code)
  return 0


def run(*args: str) -> subprocess.CompletedProcess:
  """Like ``subprocess.run([python, -m, autoscale_jax.main, *args])`` with
  ``capture_output=True, text=True``, in-process: exit status, stdout and
  stderr (what the command printed while it ran)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli(*args)
  return subprocess.CompletedProcess(["autoscale_jax", *args], code,
                                     out.getvalue(), err.getvalue())
