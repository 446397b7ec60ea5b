"""Weights & Biases, optional: one W&B run per training run, as a clu writer.

``config.log.wandb_project`` turns it on (off by default). Each training run
(a DDO proxy run, a final run) becomes one W&B run named like its directory
(``runs/<name>-<fingerprint>``), in the group ``config.log.wandb_group``
(default: the study name). It receives the same scalars as TensorBoard
(``loss``, ``lr``, ..., ``eval/<metric>``, ``eval/<domain>/<metric>``) and
the run's mixture (weights, tokens per domain, budget, seeds) plus the
recipe (``model``, ``train``) as its W&B config. W&B's files go under
``$WANDB_DIR`` when set, else the run's directory.

wandb is an extra (``pip install 'autoscale_jax[wandb]'``); without it a set
``wandb_project`` is a one-line error (``config.validate`` says so before any
work, :func:`open_writer` again if reached another way).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from clu.metric_writers import interface

from autoscale_jax import errors


class WandbMissing(errors.UserError, ImportError):
  """``log.wandb_project`` is set but wandb is not installed."""


@dataclasses.dataclass(frozen=True)
class WandbSettings:
  """``config.log``'s W&B keys (``project`` non-empty: W&B is on)."""
  project: str
  entity: str = ""
  group: str = ""
  mode: str = ""  # "" = wandb's default (WANDB_MODE)

  @classmethod
  def from_config(cls, config: Any) -> WandbSettings | None:
    """The settings of ``config.log``; None when W&B is off."""
    log = config.get("log") if hasattr(config, "get") else None
    if log is None or not log.get("wandb_project", ""):
      return None
    return cls(project=str(log.wandb_project),
               entity=str(log.get("wandb_entity", "") or ""),
               group=str(log.get("wandb_group", "") or config.get("study", "")
                         or ""),
               mode=str(log.get("wandb_mode", "") or ""))


def _import_wandb(project: str):
  try:
    import wandb  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise WandbMissing(
        f"config.log.wandb_project={project!r} needs Weights & Biases, which "
        "is not installed: pip install 'autoscale_jax[wandb]' (or leave "
        "log.wandb_project empty)") from None
  return wandb


class WandbWriter(interface.MetricWriter):
  """A clu ``MetricWriter`` over one W&B run: scalars and hparams."""

  def __init__(self, run: Any):
    self.run = run

  def write_summaries(self, step: int, values: Mapping[str, Any],
                      metadata: Mapping[str, Any] | None = None) -> None:
    del step, values, metadata  # the trainer writes scalars only

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self.run.log({k: float(v) for k, v in scalars.items()}, step=int(step))

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    del step, images

  def write_videos(self, step: int, videos: Mapping[str, Any]) -> None:
    del step, videos

  def write_audios(self, step: int, audios: Mapping[str, Any], *,
                   sample_rate: int) -> None:
    del step, audios, sample_rate

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    del step, texts

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Mapping[str, int] | None = None) -> None:
    del step, arrays, num_buckets

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    self.run.config.update(dict(hparams), allow_val_change=True)

  def flush(self) -> None:
    pass  # wandb streams in its own process

  def close(self) -> None:
    self.run.finish()


def open_writer(settings: WandbSettings, *, name: str, run_dir: str,
                config: Mapping[str, Any] | None = None) -> WandbWriter:
  """Starts the W&B run ``name`` (its files under $WANDB_DIR or ``run_dir``).

  Raises:
    WandbMissing: wandb is not installed.
  """
  wandb = _import_wandb(settings.project)
  run = wandb.init(
      project=settings.project, entity=settings.entity or None,
      group=settings.group or None, name=name, mode=settings.mode or None,
      dir=os.environ.get("WANDB_DIR") or run_dir,
      config=dict(config or {}), reinit="create_new",
      settings=wandb.Settings(silent=True))  # no lines per run in the log
  return WandbWriter(run)
