"""A DDO optimum's replication intervals: printed by the stage, in the report.

The numbers are ``mixing.ddo.replication_intervals`` (tested in test_ddo.py);
here: they reach the console line and the report's DDO section, and a
mixture without them (an older workdir) shows neither.
"""

from __future__ import annotations

import types

from autoscale_jax import records
from autoscale_jax.mixing import ddo
from autoscale_jax.report import sections
from autoscale_jax.study import console

WEIGHTS = {"books": 0.24, "code": 0.76}
INTERVALS = {"books": [0.22, 0.25], "code": [0.75, 0.78]}


def _mixture(with_replication: bool) -> records.Mixture:
  obj = {"budget_tokens": 4e5, "weights": WEIGHTS,
         "tokens": {d: w * 4e5 for d, w in WEIGHTS.items()},
         "intervals": INTERVALS}
  if with_replication:
    obj["replication_intervals"] = ddo.replication_intervals(WEIGHTS,
                                                             INTERVALS)
  return records.Mixture.from_json(obj)


def test_console_prints_the_replicate_study_interval(capsys) -> None:
  console.print_mixture("DDO optimum", _mixture(True))
  out = capsys.readouterr().out.splitlines()
  books = next(line for line in out if "books" in line)
  lo, hi = ddo.replication_intervals(WEIGHTS, INTERVALS)["books"]
  assert "90% [0.220, 0.250]" in books
  assert f"replicate study [{lo:.3f}, {hi:.3f}]" in books
  console.print_mixture("DDO optimum", _mixture(False))
  assert "replicate study" not in capsys.readouterr().out


def test_report_shows_the_replication_table_only_when_stored() -> None:
  files = types.SimpleNamespace(ddo=[(0, _mixture(True))],
                                domains=list(WEIGHTS))
  md = "\n".join(sections._replication_block(files))  # pylint: disable=protected-access
  lo, hi = ddo.replication_intervals(WEIGHTS, INTERVALS)["code"]
  assert "replicate at 4e+05" in md
  assert f"[{sections.fmt(lo)}, {sections.fmt(hi)}]" in md
  assert "75%" in md  # says why a 90% interval is not the check
  files.ddo = [(0, _mixture(False))]
  assert sections._replication_block(files) == []  # pylint: disable=protected-access
