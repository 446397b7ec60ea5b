"""A study's stages over one workdir (ddo, fit, project, final, report).

Modules, from the bottom up:

  layout.py        every workdir path (:class:`layout.Layout`)
  options.py       command-line options, :class:`options.StageError`
  progress.py      whole-study progress (runs done, ETA), one line per run
  console.py       what the stages print: mixtures, the closing summary
  exports.py       a mixture in every trainer's format (project, plan, files)
  plan.py          the DDO design of a config and the plan/ files
  files.py         the file-only stages (plan --available_tokens,
                   fit --results, project from files)
  core.py          the :class:`core.Study` context: config, layout, options,
                   lazy data bundle, store, run identity, train-or-load
  plan_stage.py    stage ``plan`` from the study's data
  ddo.py           stages ``ddo`` and ``fit`` (proxy runs, fit and solve)
  project.py       stage ``project`` (projection to the target budget)
  final.py         stage ``final`` (target-budget runs and the comparison)
  report_stage.py  stage ``report``
  runner.py        :func:`runner.run_stage`, the one entry point

This package imports nothing itself, so ``import autoscale_jax.study`` is
cheap; ``main.py`` imports ``files`` for the file-only stages and ``runner``
(which pulls in the training stack) for the rest.
"""
