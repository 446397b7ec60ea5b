"""Registry names the study gives to things other stacks look up by name."""

from __future__ import annotations

import re


def seqio_task_name(study_name: str, domain: str) -> str:
  """Registry name of a domain's seqio Task (letters, digits, '_' only).

  ``data/tasks.py`` registers the study's Tasks under this name and
  ``mixing/export.py`` writes Mixtures over it, so both use this one rule.
  """
  return re.sub(r"[^\w]", "_", f"{study_name}__{domain}")
