"""What each stage's output was made from, and the checks a later stage makes.

A DDO optimum (``ddo/budget_<k>/mixture.json``) and the projection
(``project/mixture.json``) carry a ``"provenance"`` dict: the config values,
data and tokenizer fingerprints and input files they were made from. The
stage that reads them compares it with what the current config gives and
refuses a stale input with one line naming the stage to re-run
(:class:`options.StageError`). ``--stage=all`` never sees a stale input: it
re-runs ddo and project before final.

Files written before provenance existed are checked on what they hold
(``budget_tokens``), nothing more.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping

from etils import epath

from autoscale_jax.study import options as options_lib

# Relative tolerance on token budgets (a DDO budget's base run sums integer
# quotas, so its total can differ from the config's float by round-off).
BUDGET_RTOL = 1e-3


def same_budget(found: Any, expected: float) -> bool:
  """Whether a file's budget ``found`` is the config's ``expected`` budget."""
  try:
    found = float(found)
  except (TypeError, ValueError):
    return False
  return math.isfinite(found) and abs(found - expected) <= BUDGET_RTOL * abs(
      expected)


def file_sha256(path: epath.PathLike) -> str:
  """sha256 hex of a file's bytes."""
  return hashlib.sha256(epath.Path(path).read_bytes()).hexdigest()


def read_json(path: epath.PathLike, rerun: str) -> dict[str, Any]:
  """A stage input's JSON object; a missing or corrupt file is a StageError."""
  path = epath.Path(path)
  if not path.exists():
    raise options_lib.StageError(f"{path} is missing: run {rerun} first")
  try:
    obj = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise options_lib.StageError(
        f"{path} is not valid JSON ({e}); run {rerun} again to rewrite it"
    ) from None
  if not isinstance(obj, dict):
    raise options_lib.StageError(
        f"{path} is not a JSON object; run {rerun} again to rewrite it")
  return obj


def _short(value: Any) -> str:
  text = json.dumps(value, sort_keys=True, default=str)
  return text if len(text) <= 60 else text[:57] + "..."


def first_difference(made: Mapping[str, Any], now: Mapping[str, Any]
                     ) -> str | None:
  """The first key of ``now`` whose recorded value in ``made`` differs.

  Keys missing from ``made`` are not compared (older files record less).
  Returns a phrase ``"KEY was V, the config now gives W"`` or None.
  """
  for key, want in now.items():
    if key not in made:
      continue
    had = made[key]
    if json.loads(json.dumps(had, default=str)) != json.loads(
        json.dumps(want, default=str)):
      if key == "runs":
        return ("its runs' fingerprints differ from the config's (the "
                "model, training, data or seed settings changed)")
      if key == "ddo_mixtures":
        return "a DDO optimum it was projected from has changed since"
      return f"{key} was {_short(had)}, the config now gives {_short(want)}"
  return None


def check_ddo_optimum(path: epath.PathLike, optimum: Mapping[str, Any],
                      budget_tokens: float, expected: Mapping[str, Any]
                      ) -> None:
  """Refuses a DDO optimum made for another budget or config.

  Args:
    path: the optimum's file (for the message).
    optimum: its content.
    budget_tokens: the config's budget (``config.ddo.budgets[k]``).
    expected: the provenance the current config gives (see
      :func:`autoscale_jax.study.ddo.provenance`).
  """
  found = optimum.get("budget_tokens")
  _check(path, optimum, expected,
         "run --stage=ddo (or --stage=fit) to redo it for the current config",
         None if same_budget(found, budget_tokens) else
         f"was made for a {_short(found)}-token budget but config.ddo.budgets "
         f"gives {budget_tokens:.6g}")


def check_projection(path: epath.PathLike, projected: Mapping[str, Any],
                     target_tokens: float, expected: Mapping[str, Any]
                     ) -> None:
  """Refuses a projection made for another target or config.

  Args:
    path: project/mixture.json (for the message).
    projected: its content.
    target_tokens: ``config.project.target_tokens``.
    expected: the provenance the current config gives (see
      :func:`autoscale_jax.study.project.provenance`).
  """
  found = projected.get("budget_tokens")
  _check(path, projected, expected,
         "run --stage=project (or --stage=all) to redo it for the current "
         "config",
         None if same_budget(found, target_tokens) else
         f"was made for a target of {_short(found)} tokens but "
         f"config.project.target_tokens is {target_tokens:.6g}")


def _check(path: epath.PathLike, content: Mapping[str, Any],
           expected: Mapping[str, Any], fix: str,
           budget_mismatch: str | None) -> None:
  """Raises StageError for a budget mismatch, else for stale provenance."""
  if budget_mismatch:
    raise options_lib.StageError(f"{path} {budget_mismatch}: {fix}")
  made = content.get("provenance")
  if isinstance(made, Mapping):
    diff = first_difference(made, expected)
    if diff:
      raise options_lib.StageError(f"{path} is stale ({diff}): {fix}")
