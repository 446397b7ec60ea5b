"""A run's log in its workdir: metrics.jsonl, curve.jsonl, TensorBoard, result.json.

* ``metrics.jsonl``: one train record per log step (``train_record``).
* ``curve.jsonl``: one eval point per eval step (``{"step", "tokens",
  "domains", "aggregate"}``).
* TensorBoard event files (clu writer) with the same scalars: the train
  metrics, ``eval/<metric>`` (the aggregate) and ``eval/<domain>/<metric>``
  at every evaluation, and the run's mixture as hyperparameters
  (:func:`run_hparams`: weights, tokens per domain, budget, seeds).
* Weights & Biases (``config.log.wandb_project``, optional): the same
  scalars, and the hyperparameters as the W&B run's config
  (``wandb_writer``).
* ``result.json``: the finished run (``make_result``), written atomically
  last; a run whose ``result.json`` exists is finished (``read_finished``).

Process 0 alone writes these files; the other processes only log.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any, Mapping, TextIO

import jax
from absl import logging
from etils import epath

from autoscale_jax import records
from autoscale_jax.fileio import atomic_write_json, atomic_write_text
from autoscale_jax import config as config_lib
from autoscale_jax.train import metrics as metrics_lib
from autoscale_jax.train import wandb_writer


def read_jsonl(path: epath.Path) -> list[dict]:
  """The records of a JSON-lines file (none if it does not exist).

  A last line cut short (a kill during an append) is dropped: the run
  resumes from a checkpoint before it and logs that step again.

  Raises:
    RecordError: a line before the last is not JSON (the file was edited).
  """
  if not path.exists():
    return []
  text = path.read_bytes().decode("utf-8", errors="replace")
  lines = [line for line in text.splitlines() if line.strip()]
  out = []
  for i, line in enumerate(lines):
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        break
      raise records.RecordError(
          f"{path} line {i + 1} is not JSON ({e}); delete the run's directory "
          f"{path.parent} to train it again") from None
  return out


def keep_jsonl_upto(path: epath.Path, step: int) -> list[dict]:
  """Drops the lines of a step log past ``step`` (what a crash left behind).

  A run restarted from its checkpoint at ``step`` retrains the later steps and
  logs them again; without this, ``metrics.jsonl`` / ``curve.jsonl`` would
  hold those steps twice. Rewrites the file atomically only when it changes
  (steps dropped, or a last line cut short by a kill); returns the kept
  records.
  """
  logged = read_jsonl(path)
  kept = [r for r in logged if r["step"] <= step]
  text = "".join(json.dumps(r) + "\n" for r in kept)
  if path.exists() and (len(kept) != len(logged) or path.read_bytes()
                        != text.encode()):
    atomic_write_text(path, text)  # also drops a line cut short by a kill
  return kept


def read_finished(workdir: epath.Path, num_steps: int) -> dict | None:
  """The run's ``result.json`` if it finished (None otherwise).

  Raises:
    RecordError: result.json is corrupt, or holds a finished run of another
      length (a different run).
  """
  path = workdir / "result.json"
  if not path.exists():
    return None
  result = records.read_json(
      path, "delete it and run again: the run resumes from its last "
      "checkpoint")
  if not isinstance(result, dict):
    raise records.RecordError(
        f"{path} is not a run's result (a JSON object); delete it and run "
        "again: the run resumes from its last checkpoint")
  if result.get("steps") != num_steps:
    raise records.RecordError(
        f"{workdir} holds a finished run of {result.get('steps')} steps, but "
        f"this run has {num_steps}; use a fresh workdir for a different run")
  return result


def train_record(step: int, metrics: Mapping[str, Any], tokens: float,
                 tokens_per_s: float) -> dict:
  """One ``metrics.jsonl`` line from one step's train metrics."""
  return {"step": step, "loss": float(metrics["loss"]),
          "lr": float(metrics["lr"]), "grad_norm": float(metrics["grad_norm"]),
          "tokens": tokens, "tokens_per_s": tokens_per_s}


def make_result(num_steps: int, tokens_per_domain: Mapping[str, float],
                final: dict, curve: list[dict]) -> dict:
  """The run's result: ``{"steps", "tokens_per_domain", "final_eval", "curve"}``.

  ``final`` is the eval point at ``num_steps``; it ends the curve (replacing
  a point of that step already there).
  """
  return {"steps": num_steps,
          "tokens_per_domain": {d: float(t)
                                for d, t in tokens_per_domain.items()},
          "final_eval": {"domains": final["domains"],
                         "aggregate": final["aggregate"]},
          "curve": [c for c in curve if c["step"] < num_steps] + [final]}


def run_hparams(tokens_per_domain: Mapping[str, float], *,
                data_seed: int | None, init_seed: int | None
                ) -> dict[str, float | int]:
  """A run's mixture as flat hyperparameters.

  ``{"budget_tokens", "data_seed", "init_seed", "weight/<domain>",
  "tokens/<domain>"}`` (a seed that is None is left out); the weights are the
  tokens' shares of the budget.
  """
  budget = float(sum(float(t) for t in tokens_per_domain.values()))
  hparams: dict[str, float | int] = {"budget_tokens": budget}
  for key, seed in (("data_seed", data_seed), ("init_seed", init_seed)):
    if seed is not None:
      hparams[key] = int(seed)
  for d, t in tokens_per_domain.items():
    hparams[f"weight/{d}"] = float(t) / budget if budget else 0.0
  for d, t in tokens_per_domain.items():
    hparams[f"tokens/{d}"] = float(t)
  return hparams


def eval_scalars(point: Mapping[str, Any]) -> dict[str, float]:
  """An eval point's scalars: ``eval/<metric>`` (aggregate) and
  ``eval/<domain>/<metric>``."""
  out = {f"eval/{k}": v for k, v in point["aggregate"].items()
         if v is not None}
  for d, values in point.get("domains", {}).items():
    out.update({f"eval/{d}/{k}": v for k, v in values.items()
                if v is not None})
  return out


class RunLog:
  """Writes one run's log files (process 0), TensorBoard and W&B scalars.

  Args:
    workdir: the run's directory.
    hparams: the run's hyperparameters (:func:`run_hparams`), written once
      at opening (TensorBoard's hparams, W&B's config).
    wandb: W&B settings (None: no W&B run).
    wandb_config: more W&B config (e.g. the recipe) beside ``hparams``.
  """

  def __init__(self, workdir: str | os.PathLike, *,
               hparams: Mapping[str, Any] | None = None,
               wandb: wandb_writer.WandbSettings | None = None,
               wandb_config: Mapping[str, Any] | None = None):
    self.workdir = epath.Path(workdir)
    self.primary = jax.process_index() == 0
    self.metrics_path = self.workdir / "metrics.jsonl"
    self.curve_path = self.workdir / "curve.jsonl"
    extra = []
    if wandb is not None and self.primary:
      extra.append(wandb_writer.open_writer(
          wandb, name=self.workdir.name, run_dir=os.fspath(self.workdir),
          config={**dict(wandb_config or {}), **dict(hparams or {})}))
    self.writer = metrics_lib.create_writer(self.workdir,
                                            just_logging=not self.primary,
                                            extra=extra)
    if hparams:
      self.writer.write_hparams(dict(hparams))

  @classmethod
  def for_run(cls, config: Any, workdir: str | os.PathLike,
              tokens_per_domain: Mapping[str, float], *,
              data_seed: int | None, init_seed: int | None) -> RunLog:
    """The log of one training run of ``config`` (its mixture as hparams)."""
    settings = wandb_writer.WandbSettings.from_config(config)
    return cls(workdir,
               hparams=run_hparams(tokens_per_domain, data_seed=data_seed,
                                   init_seed=init_seed),
               wandb=settings,
               wandb_config=config_lib.recipe(config) if settings else None)

  def resume(self, step: int) -> list[dict]:
    """The curve points up to ``step``; drops both logs' lines past it."""
    curve = [c for c in read_jsonl(self.curve_path) if c["step"] <= step]
    if self.primary:
      keep_jsonl_upto(self.metrics_path, step)
      keep_jsonl_upto(self.curve_path, step)
    return curve

  def _append(self, path: epath.Path, record: dict) -> None:
    if self.primary:
      with path.open("a") as f:
        f.write(json.dumps(record) + "\n")

  def log_train(self, record: dict) -> None:
    """A ``train_record``: to TensorBoard and ``metrics.jsonl``."""
    self.writer.write_scalars(record["step"], {k: v for k, v in record.items()
                                               if k != "step"})
    self._append(self.metrics_path, record)

  def log_eval(self, point: dict) -> None:
    """An eval point: to ``curve.jsonl`` and the writers (:func:`eval_scalars`)."""
    self._append(self.curve_path, point)
    self.writer.write_scalars(point["step"], eval_scalars(point))

  def write_result(self, result: dict) -> None:
    """Writes ``result.json`` atomically (the run is finished from now on)."""
    if self.primary:
      atomic_write_json(self.workdir / "result.json", result)

  def close(self) -> None:
    self.writer.flush()
    self.writer.close()


class Speedometer:
  """Tokens per second between log steps, and the time left."""

  def __init__(self, start_step: int):
    self.t0 = self.t_last = time.time()
    self.start = self.s_last = start_step

  def tokens_per_s(self, step: int, tokens_per_step: float) -> float:
    """Tokens per second since the last call (or the start); resets the mark."""
    now = time.time()
    rate = (step - self.s_last) * tokens_per_step / max(now - self.t_last,
                                                        1e-9)
    self.t_last, self.s_last = now, step
    return rate

  def eta(self, step: int, num_steps: int) -> float:
    """Seconds left at the average speed since the start."""
    done = max(step - self.start, 1)
    return (time.time() - self.t0) / done * (num_steps - step)


def fmt_time(seconds: float) -> str:
  """``H:MM:SS``."""
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_line(label: str, step: int, num_steps: int, record: dict,
                  eta_s: float) -> str:
  """``[####....] step s/n loss .. lr .. tok/s .. eta ..`` after ``label``."""
  filled = int(20 * step / num_steps)
  bar = "#" * filled + "." * (20 - filled)
  return (f"{label}[{bar}] step {step}/{num_steps} loss {record['loss']:.4f} "
          f"lr {record['lr']:.2e} tok/s {record['tokens_per_s']:,.0f} "
          f"eta {fmt_time(eta_s)}")


def steps_verbose() -> bool:
  """Whether per-step lines are printed as lines (absl ``--verbosity>=1``)."""
  return logging.get_verbosity() >= 1


class StepLine:
  """Per-step progress: redrawn on one terminal line, or not shown at all.

  On a terminal (``stream.isatty()``) each :meth:`show` redraws the line in
  place (``\\r``) and :meth:`clear` wipes it; with ``--verbosity=1`` every
  step is printed as its own line (the old behaviour); otherwise (a log file,
  a pipe) nothing is printed per step. Process 0 only.
  """

  def __init__(self, stream: TextIO | None = None,
               verbose: bool | None = None):
    self.stream = stream if stream is not None else sys.stdout
    self.verbose = steps_verbose() if verbose is None else verbose
    self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
    self.enabled = jax.process_index() == 0 and (self.verbose or self.tty)
    self.drawn = False

  def show(self, line: str) -> None:
    if not self.enabled:
      return
    if self.verbose:
      print(line, file=self.stream, flush=True)
      return
    width = shutil.get_terminal_size((120, 24)).columns - 1
    self.stream.write("\r" + line[:width] + "\x1b[K")
    self.stream.flush()
    self.drawn = True

  def clear(self) -> None:
    """Wipes a redrawn line (so the next printed line starts clean)."""
    if self.drawn:
      self.stream.write("\r\x1b[K")
      self.stream.flush()
      self.drawn = False
