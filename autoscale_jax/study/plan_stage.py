"""Stage ``plan`` with the data: the unique tokens of the study's token store.

The file-only form (``--available_tokens=FILE``) is :func:`plan.plan_from_files`;
both write the same files (:func:`plan.write_plan`).
"""

from __future__ import annotations

from autoscale_jax.study import core
from autoscale_jax.study import plan as plan_lib


def run_plan(study: core.Study) -> bool:
  """Writes ``<workdir>/plan/`` counting the tokens of the prepared data."""
  bundle = study.bundle
  plan_lib.write_plan(study.config, study.layout.plan_dir,
                      dict(bundle.available_tokens),
                      allow_repeat=study.options.allow_repeat,
                      corpus_dir=bundle.corpus_dir,
                      source="from the study's token store")
  return True
