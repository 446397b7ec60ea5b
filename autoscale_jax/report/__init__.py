"""One report per study: the verdict first, then tables and figures.

Reads only what the stages wrote (ddo/*/mixture.json and runs.json,
project/mixture.json and estimates.json, final/comparison.json and the run
records; :mod:`.data`) and writes report/README.md and report/index.html with
the same content (:mod:`.sections`, :mod:`.render`), plus PNG figures next to
them (:mod:`.figures`). Every number shown is formatted from those files; the
one computed value is the seed verdict of workdirs whose comparison.json has
no ``"seeds"`` block.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from autoscale_jax import fileio
from autoscale_jax.report import data as data_lib
from autoscale_jax.report import figures as figures_lib
from autoscale_jax.report import render
from autoscale_jax.report import sections
from autoscale_jax.study import layout as layout_lib

markdown_to_html = render.markdown_to_html


@dataclasses.dataclass(frozen=True)
class Report:
  """A built report: its markdown, the figures written and what it read."""
  markdown: str
  figures: dict[str, figures_lib.Figure]
  files: data_lib.StudyFiles


def build_report(config: ml_collections.ConfigDict,
                 layout: layout_lib.Layout) -> Report:
  """Reads the study in ``layout``, draws its figures into report/ and
  returns the markdown (nothing else written)."""
  files = data_lib.load(config, layout)
  fileio.makedirs(layout.report_dir)
  figs = figures_lib.draw_all(files, layout.report_dir)
  return Report(sections.build(files, figs), figs, files)


def build_markdown(config: ml_collections.ConfigDict,
                   layout: layout_lib.Layout) -> tuple[str, dict[str, str]]:
  """Returns (markdown, {figure key: file name}) for the study."""
  rep = build_report(config, layout)
  return rep.markdown, {k: f.file for k, f in rep.figures.items()}


def write(config: ml_collections.ConfigDict, layout: layout_lib.Layout
          ) -> Report:
  """Writes report/README.md, report/index.html and the figures; returns
  the built report."""
  rep = build_report(config, layout)
  fileio.atomic_write_text(layout.report_markdown, rep.markdown)
  fileio.atomic_write_text(layout.report_html,
                           render.markdown_to_html(rep.markdown, config.study))
  return rep


def write_report(config: ml_collections.ConfigDict,
                 layout: layout_lib.Layout) -> str:
  """Writes the report (:func:`write`); returns the HTML path."""
  write(config, layout)
  return str(layout.report_html)
