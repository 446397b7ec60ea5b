"""Names that several layers look up, kept in one leaf module.

The seqio Task names the study registers (and the exports write), the
target estimators' names (``config.project.estimator``), which the config
checks without importing the mixing maths, and the names of final-run
mixtures, which the final stage gives its runs and the report looks up.
"""

from __future__ import annotations

import pathlib
import re

# The target estimators of ``autoscale_jax.mixing.estimators`` (its registry
# has exactly these keys, in this order; "paper" is the paper's rule).
ESTIMATOR_NAMES = ("paper", "joint", "shrink", "project_shrink", "ddo_last")


def seqio_task_name(study_name: str, domain: str) -> str:
  """Registry name of a domain's seqio Task (letters, digits, '_' only).

  ``data/tasks.py`` registers the study's Tasks under this name and
  ``mixing/export.py`` writes Mixtures over it, so both use this one rule.
  """
  return re.sub(r"[^\w]", "_", f"{study_name}__{domain}")


def mixture_label(name: str) -> str:
  """A final mixture's name in the verdict and tables: a file path's stem."""
  if "/" in name or name.endswith(".json"):
    return pathlib.PurePosixPath(name).stem
  return name


def mixture_slug(name: str) -> str:
  """The store-safe part of a final run's name (``final_<slug>...``)."""
  return "".join(ch if ch.isalnum() or ch in "-_" else "_"
                 for ch in mixture_label(name))
