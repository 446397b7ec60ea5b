"""Mixture weights exported for other training stacks, each loadable as written.

`export_all` writes, into one directory (usually ``project/export/``):

* ``mixture_weights.json``: plain ``{domain: weight}`` (any JSON reader; also
  ``--config.final.mixtures=<file>``).
* ``mixture_plain.json``: weights, integer tokens, max epochs, paths.
* ``mixture.csv``: ``domain,weight,tokens,max_epochs,available_tokens,path``.
* ``mixture_seqio.py``: seqio ``MixtureRegistry.add`` over the study's Task
  names (``names.seqio_task_name``, as ``data/tasks.py`` registers them) or the user's.
* ``mixture_grain.txt``: MaxText ``grain_train_files``
  (``path,weight;path,weight``).
* ``mixture_grain.json``: MaxText ``grain_train_mixture_config_path``.
* ``mixture_levanter.yaml``: levanter/marin ``data:`` section
  (``LMMixtureDatasetConfig``: ``configs``, ``train_weights``).
* ``mixture_megatron.sh``: Megatron-LM ``--data-path w1 p1 w2 p2 ...`` as a
  bash array; ``mixture_megatron_data_args.txt`` (``--data-args-path``) and
  ``mixture_megatron_per_split.json`` (``--per-split-data-args-path``).
* ``mixture_olmo_core.json``: OLMo-core ``SourceMixtureDatasetConfig``
  fields; ``mixture_olmix.yaml``: olmix ``data.sources`` and ``mix``.
* ``mixture_hf.py``: Hugging Face ``interleave_datasets(probabilities=...)``.
* ``README.md``: each file, the flag that consumes it, and notes.

Weights are rounded to ``decimals`` places by largest remainder on integer
units, so in every file they sum to exactly 1 as decimal numbers; token counts
are integers summing to the budget. Domain order is the mixture's. Sampler
formats (seqio, MaxText, Megatron, OLMo-core, olmix, Hugging Face) leave out
domains whose rounded weight is 0; JSON, CSV and levanter list every domain.
Data paths come from ``paths`` (the config's ``data.paths``); a domain without
one is written under its own name and the README says so.
"""

from __future__ import annotations

import csv
import dataclasses
import decimal
import io
import json
import math
import numbers
import os
import re
import shlex
from typing import Any, Callable, Mapping

from autoscale_jax.errors import UserError
from autoscale_jax.fileio import atomic_write_text
from autoscale_jax.names import seqio_task_name as task_name
from autoscale_jax.mixing.baselines import largest_remainder

WEIGHTS_FILE = "mixture_weights.json"
PLAIN_FILE = "mixture_plain.json"
CSV_FILE = "mixture.csv"
SEQIO_FILE = "mixture_seqio.py"
GRAIN_FILE = "mixture_grain.txt"
GRAIN_JSON_FILE = "mixture_grain.json"
LEVANTER_FILE = "mixture_levanter.yaml"
MEGATRON_SH_FILE = "mixture_megatron.sh"
MEGATRON_ARGS_FILE = "mixture_megatron_data_args.txt"
MEGATRON_SPLIT_FILE = "mixture_megatron_per_split.json"
OLMO_CORE_FILE = "mixture_olmo_core.json"
OLMIX_FILE = "mixture_olmix.yaml"
HF_FILE = "mixture_hf.py"
README_FILE = "README.md"

DEFAULT_DECIMALS = 6


class ExportError(UserError, ValueError):
  """A one-line user error about an export."""


@dataclasses.dataclass(frozen=True)
class ExportTable:
  """The mixture as every export writes it.

  Attributes:
    domains: domain names in the mixture's order.
    units: rounded weight per domain in units of ``10**-decimals``; they sum
      to ``10**decimals``.
    decimals: decimal places of the weights.
    tokens: integer tokens per domain summing to the budget, or None.
    max_epochs: allowed passes over a domain's unique tokens, or None.
    available_tokens: unique tokens per domain, or None.
    paths: data paths (or globs) per domain; the domain name where unknown.
    missing_paths: domains without a configured path, in order.
    budget_tokens: total training tokens, or None.
  """
  domains: tuple[str, ...]
  units: Mapping[str, int]
  decimals: int
  tokens: Mapping[str, int] | None
  max_epochs: float | None
  available_tokens: Mapping[str, int] | None
  paths: Mapping[str, tuple[str, ...]]
  missing_paths: tuple[str, ...]
  budget_tokens: int | None

  def weight_text(self, domain: str) -> str:
    """The rounded weight as a plain decimal literal (no exponent)."""
    d = decimal.Decimal(self.units[domain]).scaleb(-self.decimals)
    return format(d.normalize(), "f") if d else "0"

  def weight(self, domain: str) -> float:
    return float(self.weight_text(domain))

  def sampled(self) -> tuple[str, ...]:
    """Domains with a positive rounded weight (what samplers are given)."""
    return tuple(d for d in self.domains if self.units[d] > 0)

  def dropped(self) -> tuple[str, ...]:
    return tuple(d for d in self.domains if self.units[d] == 0)

  def multi_path(self) -> tuple[str, ...]:
    """Sampled domains with several paths (no single-path format fits)."""
    return tuple(d for d in self.sampled() if len(self.paths[d]) > 1)

  def path(self, domain: str) -> str:
    """The domain's one path, for formats that take one per domain."""
    p = self.paths[domain]
    if len(p) != 1:
      raise ExportError(
          f"domain {domain!r} has {len(p)} paths {list(p)}; MaxText and "
          "Megatron-LM take one per domain: give one glob in data.paths")
    return p[0]


def _number(value: Any, what: str) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ExportError(f"{what} is {value!r}; expected a finite number >= 0")
  v = float(value)
  if not (math.isfinite(v) and v >= 0):
    raise ExportError(f"{what} is {value!r}; expected a finite number >= 0")
  return v


def _weights(mixture: Mapping[str, Any]) -> dict[str, float]:
  w = mixture.get("weights") if isinstance(mixture, Mapping) else None
  if not isinstance(w, Mapping) or not w:
    raise ExportError("mixture has no 'weights' {domain: weight}; pass a "
                      "mixture.json content")
  out = {str(d): _number(v, f"weight of domain {d!r}") for d, v in w.items()}
  if not sum(out.values()) > 0:
    raise ExportError("mixture weights sum to 0; give at least one positive "
                      "weight")
  return out


def _check_paths(paths: Mapping[str, Any] | None,
                 domains: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
  paths = {str(d): p for d, p in dict(paths or {}).items()}
  unknown = [d for d in paths if d not in domains]
  if unknown:
    raise ExportError("paths given for unknown domain(s) " + ", ".join(unknown)
                      + "; mixture domains: " + ", ".join(domains))
  out = {}
  for d, given in paths.items():
    many = given if isinstance(given, (list, tuple)) else (given,)
    if not many:
      raise ExportError(f"paths of domain {d!r} are empty; give a path or "
                        "glob")
    for p in many:
      if not isinstance(p, str) or not p or any(ch.isspace() for ch in p):
        raise ExportError(f"path of domain {d!r} is {p!r}; give a non-empty "
                          "path without whitespace (Megatron splits on it)")
    out[d] = tuple(many)
  return out


def _tokens(mixture: Mapping[str, Any], weights: Mapping[str, float]
            ) -> tuple[dict[str, int] | None, int | None]:
  tokens = mixture.get("tokens")
  if isinstance(tokens, Mapping) and all(d in tokens for d in weights):
    raw = {d: _number(tokens[d], f"tokens of domain {d!r}") for d in weights}
    budget = int(round(sum(raw.values())))
    if sum(raw.values()) > 0:
      return largest_remainder(raw, budget), budget
  budget = mixture.get("budget_tokens")
  if budget is None:
    return None, None
  budget = int(round(_number(budget, "mixture budget_tokens")))
  return largest_remainder(weights, budget), budget


def _max_epochs(mixture: Mapping[str, Any], max_epochs: float | None
                ) -> float | None:
  if max_epochs is None:
    caps = mixture.get("caps")
    if isinstance(caps, Mapping):
      max_epochs = caps.get("max_epochs")
  if max_epochs is None:
    return None
  v = _number(max_epochs, "max_epochs")
  if v <= 0:
    raise ExportError(f"max_epochs is {max_epochs!r}; expected a number > 0 "
                      "(config.project.max_epochs)")
  return v


def _available(mixture: Mapping[str, Any],
               available_tokens: Mapping[str, float] | None,
               max_epochs: float | None, domains: tuple[str, ...]
               ) -> dict[str, int] | None:
  if available_tokens is None:
    caps = mixture.get("caps")
    cap_tokens = caps.get("tokens") if isinstance(caps, Mapping) else None
    if not (isinstance(cap_tokens, Mapping) and max_epochs
            and all(d in cap_tokens for d in domains)):
      return None
    available_tokens = {d: _number(cap_tokens[d], f"cap of domain {d!r}")
                        / max_epochs for d in domains}
  missing = [d for d in domains if d not in available_tokens]
  if missing:
    raise ExportError("available_tokens lacks domain(s) " + ", ".join(missing)
                      + "; give unique tokens for every mixture domain")
  return {d: int(round(_number(available_tokens[d],
                               f"available tokens of domain {d!r}")))
          for d in domains}


def prepare(mixture: Mapping[str, Any],
            paths: Mapping[str, Any] | None = None,
            max_epochs: float | None = None,
            available_tokens: Mapping[str, float] | None = None,
            decimals: int = DEFAULT_DECIMALS) -> ExportTable:
  """Rounds and checks a mixture once for every export format.

  Args:
    mixture: mixture.json content: "weights" and, optionally, "tokens",
      "budget_tokens" and "caps" ({"max_epochs", "tokens"}).
    paths: data path or glob (or a list of them) per domain
      (``config.data.paths``).
    max_epochs: allowed passes over each domain's unique tokens; default the
      mixture's ``caps.max_epochs``.
    available_tokens: unique tokens per domain; default derived from the
      mixture's caps.
    decimals: decimal places of the exported weights (1..12).

  Returns:
    The ExportTable.

  Raises:
    ExportError: a bad mixture, path or argument (one line, with the fix).
  """
  if isinstance(decimals, bool) or not isinstance(decimals, int) or not (
      1 <= decimals <= 12):
    raise ExportError(f"decimals is {decimals!r}; expected an integer in "
                      "[1, 12]")
  weights = _weights(mixture)
  domains = tuple(weights)
  units = largest_remainder(weights, 10**decimals)
  path_map = _check_paths(paths, domains)
  tokens, budget = _tokens(mixture, weights)
  epochs = _max_epochs(mixture, max_epochs)
  avail = _available(mixture, available_tokens, epochs, domains)
  return ExportTable(
      domains=domains, units=units, decimals=decimals, tokens=tokens,
      max_epochs=epochs, available_tokens=avail,
      paths={d: path_map.get(d, (d,)) for d in domains},
      missing_paths=tuple(d for d in domains if d not in path_map),
      budget_tokens=budget)


def _table(mixture_or_table: Mapping[str, Any] | ExportTable,
           paths: Mapping[str, Any] | None = None) -> ExportTable:
  if isinstance(mixture_or_table, ExportTable):
    return mixture_or_table
  return prepare(mixture_or_table, paths)


def _epochs_text(value: float | None) -> str:
  return "" if value is None else repr(float(value))


def _comment_lines(t: ExportTable, prefix: str) -> list[str]:
  """One comment line per domain with its tokens and epochs."""
  lines = []
  if t.budget_tokens is not None:
    lines.append(f"{prefix} budget_tokens: {t.budget_tokens}")
  if t.max_epochs is not None:
    lines.append(f"{prefix} max_epochs (passes over unique tokens): "
                 f"{t.max_epochs:g}")
  for d in t.domains:
    parts = [f"weight {t.weight_text(d)}"]
    if t.tokens is not None:
      parts.append(f"tokens {t.tokens[d]}")
    if t.available_tokens is not None:
      parts.append(f"available {t.available_tokens[d]}")
    lines.append(f"{prefix} {d}: " + ", ".join(parts))
  return lines


# ---------------------------------------------------------------- plain ---


def _one_or_list(t: ExportTable, domain: str) -> str | list[str]:
  p = t.paths[domain]
  return p[0] if len(p) == 1 else list(p)


def weights_json(mixture: Mapping[str, Any] | ExportTable) -> str:
  """``{domain: weight}`` (rounded; sums to exactly 1)."""
  t = _table(mixture)
  return json.dumps({d: t.weight(d) for d in t.domains}, indent=2) + "\n"


def plain_json(mixture: Mapping[str, Any] | ExportTable,
               paths: Mapping[str, Any] | None = None) -> str:
  """Weights, tokens, max epochs, available tokens and paths as JSON."""
  t = _table(mixture, paths)
  doc = {
      "budget_tokens": t.budget_tokens,
      "max_epochs": t.max_epochs,
      "weights": {d: t.weight(d) for d in t.domains},
      "tokens": None if t.tokens is None else dict(t.tokens),
      "available_tokens": (None if t.available_tokens is None
                           else dict(t.available_tokens)),
      "paths": {d: (None if d in t.missing_paths else _one_or_list(t, d))
                for d in t.domains},
  }
  return json.dumps(doc, indent=2) + "\n"


def csv_text(mixture: Mapping[str, Any] | ExportTable,
             paths: Mapping[str, Any] | None = None) -> str:
  """``domain,weight,tokens,max_epochs,available_tokens,path`` rows.

  Several paths of one domain are joined by a space.
  """
  t = _table(mixture, paths)
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(["domain", "weight", "tokens", "max_epochs", "available_tokens",
              "path"])
  for d in t.domains:
    w.writerow([
        d, t.weight_text(d), "" if t.tokens is None else t.tokens[d],
        _epochs_text(t.max_epochs),
        "" if t.available_tokens is None else t.available_tokens[d],
        "" if d in t.missing_paths else " ".join(t.paths[d])])
  return buf.getvalue()


# ---------------------------------------------------------------- seqio ---


def _seqio_names(t: ExportTable, task_prefix: str,
                 task_names: Mapping[str, str] | None) -> dict[str, str]:
  if task_names is None:
    return {d: task_name(task_prefix, d) for d in t.domains}
  unknown = [d for d in task_names if d not in t.domains]
  missing = [d for d in t.sampled() if d not in task_names]
  if unknown or missing:
    raise ExportError(
        "task_names must name a seqio Task for every mixture domain"
        + (f"; lacks {', '.join(missing)}" if missing else "")
        + (f"; unknown domain(s) {', '.join(unknown)}" if unknown else ""))
  return {d: str(task_names[d]) for d in t.domains if d in task_names}


def seqio_snippet(mixture: Mapping[str, Any] | ExportTable, task_prefix: str,
                  mixture_name: str | None = None,
                  task_names: Mapping[str, str] | None = None,
                  tasks_module: str | None = None) -> str:
  """Python source registering the mixture with seqio.

  Args:
    mixture: a dict with "weights" (or a prepared ExportTable).
    task_prefix: the study name; Tasks are named
      ``data.tasks.task_name(task_prefix, domain)``, as
      ``data.tasks.register_domain_tasks`` registers them.
    mixture_name: registered name (default ``<task_prefix>_autoscale``).
    task_names: the user's own Task name per domain, instead.
    tasks_module: a module whose import registers the Tasks (optional).

  Returns:
    The file text.
  """
  t = _table(mixture)
  names = _seqio_names(t, task_prefix, task_names)
  name = mixture_name or re.sub(r"[^\w.:]", "_", f"{task_prefix}_autoscale")
  if tasks_module is not None and not re.fullmatch(
      r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", tasks_module):
    raise ExportError(f"tasks_module {tasks_module!r} is not a module name; "
                      "give a dotted Python module path")
  lines = [
      '"""seqio Mixture generated by autoscale_jax (AutoScale projection).',
      "",
      "Import this file after the Tasks are registered; then",
      f"seqio.get_mixture_or_task({name!r}) is the mixture.",
      '"""',
      "",
      "import seqio",
  ]
  if tasks_module:
    lines.append(f"import {tasks_module}  # noqa: F401  registers the Tasks")
  lines.append("")
  lines += _comment_lines(t, "#")
  if t.dropped():
    lines.append("# left out (rounded weight 0): " + ", ".join(t.dropped()))
  lines += ["seqio.MixtureRegistry.add(", f"    {name!r},", "    ["]
  for d in t.sampled():
    lines.append(f"        ({names[d]!r}, {t.weight_text(d)}),")
  lines += ["    ],", ")", ""]
  return "\n".join(lines)


# --------------------------------------------------------------- MaxText ---


def grain_string(mixture: Mapping[str, Any] | ExportTable,
                 paths: Mapping[str, Any] | None = None) -> str:
  """MaxText ``grain_train_files``: ``path,weight;path,weight``.

  Args:
    mixture: a dict with "weights" (or a prepared ExportTable).
    paths: data path per domain; the domain name where absent.
  """
  t = _table(mixture, paths)
  parts = []
  for d in t.sampled():
    p = t.path(d)
    if "," in p or ";" in p:
      raise ExportError(f"path of domain {d!r} contains ',' or ';' ({p!r}), "
                        "which MaxText's grain_train_files cannot hold; "
                        "rename the files or use mixture_grain.json")
    parts.append(f"{p},{t.weight_text(d)}")
  return ";".join(parts)


def grain_json(mixture: Mapping[str, Any] | ExportTable,
               paths: Mapping[str, Any] | None = None) -> str:
  """MaxText ``grain_train_mixture_config_path``: {name: {path, weight}}."""
  t = _table(mixture, paths)
  doc = {d: {"path": t.path(d), "weight": t.weight(d)} for d in t.sampled()}
  return json.dumps(doc, indent=2) + "\n"


# -------------------------------------------------------------- levanter ---


def levanter_yaml(mixture: Mapping[str, Any] | ExportTable,
                  paths: Mapping[str, Any] | None = None) -> str:
  """levanter/marin ``data:`` section (an ``LMMixtureDatasetConfig``).

  ``configs`` holds one ``UrlDatasetSourceConfig`` (``train_urls``) per
  domain and ``train_weights`` the weights; tokens and epochs, which the
  schema has no field for, are comments.
  """
  t = _table(mixture, paths)
  lines = ["# levanter LMMixtureDatasetConfig generated by autoscale_jax.",
           "# Merge into a levanter train_lm config (or pass train_weights to",
           "# marin's lm_mixture_data_config)."]
  lines += _comment_lines(t, "#")
  lines += ["data:", "  configs:"]
  for d in t.domains:
    lines.append(f"    {json.dumps(d)}:")
    if d in t.missing_paths:
      lines.append("      # no data path configured: replace this URL")
    urls = ", ".join(json.dumps(p) for p in t.paths[d])
    lines.append(f"      train_urls: [{urls}]")
  lines.append("  train_weights:")
  for d in t.domains:
    lines.append(f"    {json.dumps(d)}: {t.weight_text(d)}")
  return "\n".join(lines) + "\n"


# -------------------------------------------------------------- Megatron ---


def _megatron_prefix(path: str) -> str:
  for ext in (".bin", ".idx"):
    if path.endswith(ext):
      return path[:-len(ext)]
  return path


def megatron_blend(mixture: Mapping[str, Any] | ExportTable,
                   paths: Mapping[str, Any] | None = None) -> list[str]:
  """``[w1, prefix1, w2, prefix2, ...]`` as Megatron-LM's ``--data-path``."""
  t = _table(mixture, paths)
  out = []
  for d in t.sampled():
    out += [t.weight_text(d), _megatron_prefix(t.path(d))]
  return out


def megatron_sh(mixture: Mapping[str, Any] | ExportTable,
                paths: Mapping[str, Any] | None = None) -> str:
  """A bash file defining ``MEGATRON_DATA_ARGS=(--data-path w1 p1 ...)``."""
  t = _table(mixture, paths)
  blend = megatron_blend(t)
  lines = ["# shellcheck shell=bash",
           "# Megatron-LM blend generated by autoscale_jax. Usage:",
           "#   source mixture_megatron.sh",
           '#   python pretrain_gpt.py "${MEGATRON_DATA_ARGS[@]}" ...',
           "# Paths are indexed-dataset prefixes (<prefix>.bin/.idx from",
           "# tools/preprocess_data.py)."]
  lines += _comment_lines(t, "#")
  lines.append("# shellcheck disable=SC2034  # read by the sourcing script")
  lines.append("MEGATRON_DATA_ARGS=(--data-path")
  for i in range(0, len(blend), 2):
    lines.append(f"  {blend[i]} {shlex.quote(blend[i + 1])}")
  lines.append(")")
  return "\n".join(lines) + "\n"


def megatron_data_args(mixture: Mapping[str, Any] | ExportTable,
                       paths: Mapping[str, Any] | None = None) -> str:
  """``--data-args-path`` file: ``weight prefix`` per line."""
  blend = megatron_blend(_table(mixture, paths))
  return "".join(f"{blend[i]} {blend[i + 1]}\n"
                 for i in range(0, len(blend), 2))


def megatron_per_split(mixture: Mapping[str, Any] | ExportTable,
                       paths: Mapping[str, Any] | None = None) -> str:
  """``--per-split-data-args-path`` JSON (train blend; no valid/test)."""
  blend = megatron_blend(_table(mixture, paths))
  return json.dumps({"train": blend, "valid": None, "test": None},
                    indent=2) + "\n"


# -------------------------------------------------------- OLMo-core/olmix ---


def _repetition(t: ExportTable) -> tuple[float, float]:
  """(max_repetitions, max_source_fraction) for OLMo-core from max_epochs."""
  if t.max_epochs is None:
    return 1.0, 1.0
  if t.max_epochs >= 1:
    return float(t.max_epochs), 1.0
  return 1.0, float(t.max_epochs)


def olmo_core_json(mixture: Mapping[str, Any] | ExportTable,
                   paths: Mapping[str, Any] | None = None) -> str:
  """OLMo-core ``SourceMixtureDatasetConfig`` fields as JSON.

  ``source_configs`` are ``SourceMixtureConfig`` fields (source_name, paths,
  target_ratio, max_repetitions = max epochs when >= 1, else
  max_source_fraction = max epochs); ``requested_tokens`` the budget.
  ``global_batch_size`` (tokens) is the user's to add.
  """
  t = _table(mixture, paths)
  reps, fraction = _repetition(t)
  doc: dict[str, Any] = {"source_configs": [
      {"source_name": d, "paths": list(t.paths[d]),
       "target_ratio": t.weight(d), "max_repetitions": reps,
       "max_source_fraction": fraction}
      for d in t.sampled()]}
  if t.budget_tokens is not None:
    doc["requested_tokens"] = t.budget_tokens
  return json.dumps(doc, indent=2) + "\n"


def olmix_yaml(mixture: Mapping[str, Any] | ExportTable,
               paths: Mapping[str, Any] | None = None) -> str:
  """olmix ``data.sources`` (name, paths) and ``mix`` (weight,
  repetition_factor = max epochs)."""
  t = _table(mixture, paths)
  reps = 1.0 if t.max_epochs is None else float(t.max_epochs)
  lines = ["# olmix data sources and mix generated by autoscale_jax; merge",
           "# into an olmix launch config."]
  lines += _comment_lines(t, "#")
  lines += ["data:", "  sources:"]
  for d in t.sampled():
    urls = ", ".join(json.dumps(p) for p in t.paths[d])
    lines += [f"    - name: {json.dumps(d)}", f"      paths: [{urls}]"]
  lines.append("mix:")
  for d in t.sampled():
    lines += [f"  {json.dumps(d)}:", f"    weight: {t.weight_text(d)}",
              f"    repetition_factor: {reps!r}"]
  return "\n".join(lines) + "\n"


# ---------------------------------------------------------- Hugging Face ---


def hf_snippet(mixture: Mapping[str, Any] | ExportTable,
               paths: Mapping[str, Any] | None = None) -> str:
  """Python source building ``datasets.interleave_datasets`` over the data."""
  t = _table(mixture, paths)
  doms = t.sampled()
  lines = [
      '"""Hugging Face datasets mixture generated by autoscale_jax.',
      "",
      "    from mixture_hf import build",
      "    ds = build()  # an IterableDataset sampling the domains",
      '"""',
      "",
      "from datasets import interleave_datasets, load_dataset",
      "",
  ]
  lines += _comment_lines(t, "#")
  lines.append("DATA_FILES = {")
  for d in doms:
    lines.append(f"    {d!r}: {_one_or_list(t, d)!r},")
  lines += ["}", "PROBABILITIES = ["]
  for d in doms:
    lines.append(f"    {t.weight_text(d)},  # {d}")
  lines += [
      "]",
      "",
      "",
      'def build(seed=0, stopping_strategy="all_exhausted", builder="json",',
      "          **load_kwargs):",
      '  """interleave_datasets over one streamed dataset per domain."""',
      "  parts = [load_dataset(builder, data_files=files, split=\"train\",",
      "                        streaming=True, **load_kwargs)",
      "           for files in DATA_FILES.values()]",
      "  return interleave_datasets(parts, probabilities=PROBABILITIES,",
      "                             seed=seed,",
      "                             stopping_strategy=stopping_strategy)",
      "",
  ]
  return "\n".join(lines)


# ---------------------------------------------------------------- README ---

_CONSUMERS: tuple[tuple[str, str], ...] = (
    (WEIGHTS_FILE, "plain `{domain: weight}`; any JSON reader, and "
     "`--config.final.mixtures=<this file>` of autoscale_jax"),
    (PLAIN_FILE, "weights, integer tokens, max_epochs, available tokens, "
     "paths (JSON)"),
    (CSV_FILE, "one row per domain: domain, weight, tokens, max_epochs, "
     "available_tokens, path"),
    (SEQIO_FILE, "seqio: `import` it after the Tasks are registered "
     "(t5x: add it to your gin `MIXTURE_OR_TASK_MODULE`); "
     "`seqio.get_mixture_or_task(<name>)`"),
    (GRAIN_FILE, "MaxText: `dataset_type=grain grain_file_type=arrayrecord "
     "grain_train_files=\"$(cat mixture_grain.txt)\"` (MaxText rounds these "
     "weights to 4 decimals)"),
    (GRAIN_JSON_FILE, "MaxText: `grain_train_mixture_config_path="
     "mixture_grain.json` (full precision)"),
    (LEVANTER_FILE, "levanter: the `data:` section of a train_lm config "
     "(`LMMixtureDatasetConfig`: `configs.<name>.train_urls`, "
     "`train_weights`); marin: `train_weights` for `lm_mixture_data_config`"),
    (MEGATRON_SH_FILE, "Megatron-LM: `source mixture_megatron.sh; python "
     "pretrain_gpt.py \"${MEGATRON_DATA_ARGS[@]}\" ...` (`--data-path w1 p1 "
     "w2 p2 ...`)"),
    (MEGATRON_ARGS_FILE, "Megatron-LM: `--data-args-path "
     "mixture_megatron_data_args.txt`"),
    (MEGATRON_SPLIT_FILE, "Megatron-LM: `--per-split-data-args-path "
     "mixture_megatron_per_split.json` (train blend only; add valid/test)"),
    (OLMO_CORE_FILE, "OLMo-core: `SourceMixtureDatasetConfig(source_configs="
     "[SourceMixtureConfig(**s) for s in d[\"source_configs\"]], "
     "requested_tokens=d[\"requested_tokens\"], global_batch_size=...)`"),
    (OLMIX_FILE, "olmix: the `data.sources` and `mix` sections of a launch "
     "config"),
    (HF_FILE, "Hugging Face datasets: `from mixture_hf import build; ds = "
     "build()` (`interleave_datasets(probabilities=...)`)"),
)


def readme(t: ExportTable, task_prefix: str, files: list[str]) -> str:
  """The export directory's README: each file, its consumer, and notes."""
  lines = [
      "# Mixture exports",
      "",
      f"Study `{task_prefix}`. Weights are rounded to {t.decimals} decimals "
      "and sum to exactly 1 in every file; tokens are integers summing to "
      "the budget"
      + (f" ({t.budget_tokens})" if t.budget_tokens is not None else "")
      + ".",
      "",
      "| file | consumed by |",
      "| --- | --- |",
  ]
  for name, consumer in _CONSUMERS:
    if name in files:
      lines.append(f"| `{name}` | {consumer} |")
  lines += ["", "| domain | weight | tokens | path |",
            "| --- | --- | --- | --- |"]
  for d in t.domains:
    tok = "" if t.tokens is None else str(t.tokens[d])
    path = ("(none)" if d in t.missing_paths
            else " ".join(f"`{p}`" for p in t.paths[d]))
    lines.append(f"| {d} | {t.weight_text(d)} | {tok} | {path} |")
  lines += ["", "## Notes", ""]
  if t.max_epochs is not None:
    lines.append(
        f"- Max epochs (passes over a domain's unique tokens): "
        f"{t.max_epochs:g}; OLMo-core `max_repetitions` / "
        "`max_source_fraction` and olmix `repetition_factor` carry it.")
  else:
    lines.append("- No max epochs known: OLMo-core/olmix repetition is 1.")
  if t.missing_paths:
    lines.append(
        "- No data path configured for " + ", ".join(t.missing_paths)
        + ": the domain name stands in for the path in every file; replace "
        "it (set `data.paths.<domain>` or pass `paths=` to `export_all`).")
  if t.dropped():
    lines.append("- Rounded weight 0, left out of the sampler formats: "
                 + ", ".join(t.dropped()) + ".")
  if t.multi_path():
    lines.append(
        "- Not written: the MaxText and Megatron-LM files, which take one "
        "path per domain; " + ", ".join(t.multi_path()) + " have several "
        "(give one glob per domain in `data.paths`).")
  lines.append(
      "- Megatron-LM reads indexed datasets: its paths must be the "
      "`<prefix>` of `<prefix>.bin/.idx` (tools/preprocess_data.py); "
      "`.bin`/`.idx` endings are stripped, other paths are written as given.")
  lines.append(
      "- MaxText's grain mixtures need `grain_file_type=arrayrecord`; "
      "OLMo-core and olmix read pre-tokenized numpy files; Hugging Face "
      "`build()` uses "
      "the `json` builder (pass `builder=` for others).")
  return "\n".join(lines) + "\n"


def export_all(mixture: Mapping[str, Any], out_dir: str, task_prefix: str,
               paths: Mapping[str, Any] | None = None,
               max_epochs: float | None = None,
               available_tokens: Mapping[str, float] | None = None,
               task_names: Mapping[str, str] | None = None,
               tasks_module: str | None = None,
               decimals: int = DEFAULT_DECIMALS) -> list[str]:
  """Writes every export and a README into out_dir (each file atomically).

  Args:
    mixture: mixture.json content (needs "weights").
    out_dir: directory (local or any etils.epath path).
    task_prefix: the study name (seqio Task names, mixture name).
    paths: data path or glob (or a list of them) per domain
      (``dict(config.data.paths)``). MaxText and Megatron files are left out
      (README says why) when a domain has several.
    max_epochs: allowed passes over each domain's unique tokens
      (``config.project.max_epochs``); default the mixture's caps.
    available_tokens: unique tokens per domain; default from the caps.
    task_names: the user's seqio Task name per domain (default
      ``data.tasks.task_name(task_prefix, domain)``).
    tasks_module: module the seqio snippet imports to register the Tasks.
    decimals: decimal places of the weights.

  Returns:
    The written file paths.

  Raises:
    ExportError: a bad mixture or argument (nothing is written).
  """
  t = prepare(mixture, paths, max_epochs, available_tokens, decimals)
  one_path_only = {GRAIN_FILE, GRAIN_JSON_FILE, MEGATRON_SH_FILE,
                   MEGATRON_ARGS_FILE, MEGATRON_SPLIT_FILE}
  writers: dict[str, Callable[[], str]] = {
      WEIGHTS_FILE: lambda: weights_json(t),
      PLAIN_FILE: lambda: plain_json(t),
      CSV_FILE: lambda: csv_text(t),
      SEQIO_FILE: lambda: seqio_snippet(t, task_prefix, task_names=task_names,
                                        tasks_module=tasks_module),
      GRAIN_FILE: lambda: grain_string(t) + "\n",
      GRAIN_JSON_FILE: lambda: grain_json(t),
      LEVANTER_FILE: lambda: levanter_yaml(t),
      MEGATRON_SH_FILE: lambda: megatron_sh(t),
      MEGATRON_ARGS_FILE: lambda: megatron_data_args(t),
      MEGATRON_SPLIT_FILE: lambda: megatron_per_split(t),
      OLMO_CORE_FILE: lambda: olmo_core_json(t),
      OLMIX_FILE: lambda: olmix_yaml(t),
      HF_FILE: lambda: hf_snippet(t),
  }
  texts = {name: make() for name, make in writers.items()  # fail before I/O
           if not (t.multi_path() and name in one_path_only)}
  texts[README_FILE] = readme(t, task_prefix, list(texts))
  written = []
  for name, text in texts.items():
    path = os.path.join(out_dir, name)
    atomic_write_text(path, text)
    written.append(path)
  return written
