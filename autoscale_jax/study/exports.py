"""A mixture written in every trainer's format, with the config's data paths.

Used by the study's ``project`` stage, the file-only stages and the plan
(one export directory per planned proxy run).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from autoscale_jax.data import seqio_source
from autoscale_jax.mixing import export

# Task prefix of the exports when no config names the study.
DEFAULT_STUDY = "study"


def export_paths(config: ml_collections.ConfigDict,
                 corpus_dir: str | None) -> dict[str, Any] | None:
  """The real data path(s) of each domain, for the exports (None: none).

  ``data.paths`` for jsonl; ``<corpus_dir>/<domain>.jsonl`` for the embedded
  and fixture corpora; none for tfds and seqio (their exports name Tasks).
  """
  source = config.data.source
  if source == "jsonl":
    return {d: (list(p) if isinstance(p, (list, tuple)) else p)
            for d, p in dict(config.data.paths).items()}
  if source in ("embedded", "fixture") and corpus_dir:
    return {d: f"{corpus_dir}/{d}.jsonl" for d in config.data.domains}
  return None


def write_exports(config: ml_collections.ConfigDict | None,
                  mixture: dict[str, Any], out_dir: str,
                  corpus_dir: str | None,
                  available_tokens: dict[str, float] | None,
                  max_epochs: float | None = None) -> list[str]:
  """Every export of ``mixture`` (:func:`export.export_all`) into out_dir.

  Without a config the exports name domains, not data paths, and take the
  max epochs from ``max_epochs`` or the mixture's caps (if any).

  Args:
    config: the study config, or None.
    mixture: mixture.json content.
    out_dir: the export directory.
    corpus_dir: the embedded or fixture corpus directory (for its paths).
    available_tokens: unique tokens per domain, or None.
    max_epochs: allowed passes over a domain's unique tokens; default
      ``config.project.max_epochs`` (the target run's), else the caps'.
  """
  if config is None:
    return export.export_all(mixture, out_dir, task_prefix=DEFAULT_STUDY,
                             max_epochs=max_epochs,
                             available_tokens=available_tokens)
  seqio = config.data.source == "seqio"
  paths = export_paths(config, corpus_dir)
  if paths is not None:  # a file-only stage's mixture may have fewer domains
    paths = {d: p for d, p in paths.items() if d in mixture["weights"]}
  if max_epochs is None:
    max_epochs = float(config.project.max_epochs)
  return export.export_all(
      mixture, out_dir, task_prefix=config.study, paths=paths or None,
      max_epochs=max_epochs, available_tokens=available_tokens,
      task_names=seqio_source.task_names(config.data) if seqio else None,
      tasks_module=config.data.seqio_module or None)
