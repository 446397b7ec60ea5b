"""The one entry point of the stages: :func:`run_stage`."""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections

from autoscale_jax import config as config_lib
from autoscale_jax.study import console
from autoscale_jax.study import core
from autoscale_jax.study import ddo
from autoscale_jax.study import files
from autoscale_jax.study import final
from autoscale_jax.study import layout as layout_lib
from autoscale_jax.study import options as options_lib
from autoscale_jax.study import plan_stage
from autoscale_jax.study import project
from autoscale_jax.study import report_stage

# Each stage: Study -> whether it completed (False: wait for other workers).
STAGES: dict[str, Callable[[core.Study], bool]] = {
    "plan": plan_stage.run_plan,
    "ddo": ddo.run_ddo,
    "fit": ddo.run_fit,
    "project": project.run_project,
    "final": final.run_final,
    "report": report_stage.run_report,
}
# What --stage=all runs, in order, resuming what the workdir holds.
ALL = ("ddo", "project", "final", "report")


def run_stage(stage: str, config: ml_collections.ConfigDict | None,
              options: options_lib.Options) -> None:
  """Validates inputs early, then runs ``stage`` (a name or an alias)."""
  stage = config_lib.STAGE_ALIASES.get(stage, stage)
  if files.handles(stage, options):
    files.run(stage, options, config)
    return
  if config is None:
    raise options_lib.StageError(
        f"--stage={stage} needs --config=configs/NAME.py "
        "(see configs/ for the available studies)")
  options_lib.require(options.workdir, "--workdir", "the study directory")
  config_lib.validate(config, num_devices=jax.device_count())
  study = core.Study(config, layout_lib.Layout.of(options.workdir), options)
  if stage in ("ddo", "all"):
    study.progress.expect(ddo.planned_tokens(study))
  if stage in ("final", "all"):
    study.progress.expect(final.planned_tokens(study))
  if stage != "all":
    if STAGES[stage](study) and stage == "final":
      console.print_summary(study.layout)
    return
  for k, name in enumerate(ALL, 1):
    console.say(f"\n=== stage {k}/{len(ALL)}: {name} ===")
    if STAGES[name](study) is False:
      console.say(f"stage {name} did not complete; stopping before the next "
                  "stage.")
      return
  console.print_summary(study.layout)
