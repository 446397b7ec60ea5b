"""Names that several layers look up, kept in one leaf module.

The seqio Task names the study registers (and the exports write), and the
target estimators' names (``config.project.estimator``), which the config
checks without importing the mixing maths.
"""

from __future__ import annotations

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
