"""Stage ``report``: report/index.html and report/README.md with figures."""

from __future__ import annotations

from autoscale_jax import distributed
from autoscale_jax import report
from autoscale_jax.study import console
from autoscale_jax.study import core


def run_report(study: core.Study) -> bool:
  path = distributed.write_once(
      "report", lambda: report.write_report(study.config, study.layout))
  if path:
    console.say(f"report written: {path}")
  return True
