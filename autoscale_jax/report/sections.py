"""The report's markdown, section by section, in the order a reader wants:
the verdict, the final comparison, the DDO optima and their noise, the
projection (every estimator side by side), the fits, provenance and, last,
the limits. Every number is formatted from the stages' files."""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from autoscale_jax import records
from autoscale_jax.mixing import verdict as verdict_lib
from autoscale_jax.report import data as data_lib
from autoscale_jax.report import figures as figures_lib

# A fit whose RMS residual (relative to the base run's metric) exceeds this is
# flagged in the fit table.
LARGE_RESIDUAL = 0.02
# Projecting further than this multiple of the largest DDO budget is flagged.
FAR_EXTRAPOLATION = 10.0

# "domain 'x': ..." warnings of a DDO fit belong to that domain's fit row.
_DOMAIN_WARNING = re.compile(r"^domain '([^']+)': (.*)$")
# A parenthesised aside (one with a space: not a formula like "(x+a)").
_ASIDE = re.compile(r"\s*\([^()]* [^()]*\)")

Figures = Mapping[str, figures_lib.Figure]


def fmt(x: float | None, digits: int = 4) -> str:
  if x is None or x != x or x in (float("inf"), float("-inf")):
    return "n/a"
  return f"{x:.{digits}f}"


_MARKUP = re.compile(r"[*`\[\]<]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def plain(text: str) -> str:
  """Free text (a warning, a note) as markdown that renders it literally:
  ``*``, backticks, brackets, ``<`` and word-boundary underscores escaped
  (``ddo_small`` stays as it is)."""
  return _MARKUP.sub(lambda m: "&lt;" if m.group() == "<" else
                     "\\" + m.group(), text)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]],
          align: str = "---") -> str:
  head = "| " + " | ".join(columns) + " |"
  sep = "|" + "|".join(align for _ in columns) + "|"
  return "\n".join([head, sep] + ["| " + " | ".join(r) + " |" for r in rows])


def image(figs: Figures, key: str) -> list[str]:
  if key not in figs:
    return []
  return [f"![{figs[key].caption}]({figs[key].file})", ""]


# ---------------------------------------------------------------- verdict


def verdict_paragraph(files: data_lib.StudyFiles) -> list[str]:
  """The report's first paragraph: one sentence per baseline."""
  v = files.verdict
  if not v:
    why = files.verdict_source
    return [f"**Verdict:** none yet ({why}; run `--stage=final`).", ""]
  seeds = max((m["n"] for m in v["mixtures"].values()), default=0)
  sentences = "; ".join(plain(x) for x in v["sentences"]) or (
      "no baseline to compare with")
  return [f"**Verdict** (final aggregate `{v['metric']}`, lower is better, "
          f"{seeds} seed{'s' if seeds != 1 else ''} per mixture): "
          f"{sentences}.", ""]


def summary(files: data_lib.StudyFiles) -> list[str]:
  c = files.config
  # Configs from before config.init_seeds existed ran "shared".
  init = ("each seed its own initialization"
          if c.get("init_seeds", "shared") == "per_seed" else
          f"every run initialized from seed {c.seed}")
  return [f"Model: {c.model.kind}, {c.model.num_layers} layers, width "
          f"{c.model.d_model}; tokenizer {c.data.tokenizer}; study metric "
          f"`{files.metric}`. DDO budgets: "
          + ", ".join(f"{b:.4g}" for b in c.ddo.budgets)
          + f" tokens; target budget {c.project.target_tokens:.4g} tokens. "
          f"Seeds: {len(c.ddo.seeds)} per DDO run, {len(c.final.seeds)} per "
          f"final mixture; {init}.",
          ""]


def final_section(files: data_lib.StudyFiles, figs: Figures) -> list[str]:
  if not files.comparison:
    return []
  md = ["## Final runs at the target budget", ""]
  if files.verdict:
    sentences = {f"- {s}" for s in files.verdict["sentences"]}
    body = [line for line in verdict_lib.to_markdown(files.verdict)
            .splitlines() if line not in sentences]
    md += body + ["", f"(Verdict from {files.verdict_source}.)", ""]
  md += image(figs, "final_curves") + image(figs, "per_domain")
  return md


# -------------------------------------------------------------- DDO optima


def _weight_cell(m: records.Mixture, d: str) -> str:
  cell = fmt(m.weights[d])
  iv = (m.intervals or {}).get(d)
  return cell + (f" [{fmt(iv[0])}, {fmt(iv[1])}]" if iv else "")


def _noise_block(m: records.Mixture) -> list[str]:
  noise = m.noise
  head = f"Noise at {m.budget_tokens:.4g} tokens: "
  if not noise:
    return [head + "noise not measured (one seed).", ""]
  s = noise["num_seeds"]
  ratio = ("unknown" if noise.get("signal_to_noise") is None else
           f"{noise['signal_to_noise']:.2f}x its standard error")
  md = [head + f"{s} seed{'s' if s != 1 else ''} of `{noise['metric']}`; "
        f"seed noise {fmt(noise.get('seed_noise'))}, common effect "
        f"{fmt(noise.get('common_effect'))}, domain signal "
        f"{fmt(noise.get('domain_signal'))} ({ratio}).", ""]
  rows = []
  for d, r in noise["domains"].items():
    flag = {True: "yes", False: "no", None: "n/a"}[r.get("signal")]
    rows.append([d, f"{r['low_x']:.3g}x to {r['high_x']:.3g}x",
                 fmt(r["effect"]), f"{r['specific_effect']:+.4f}",
                 fmt(r.get("se")), fmt(r.get("snr"), 2), flag])
  md += [table(["domain", "factors", "effect", "domain-specific", "SE",
                "SNR", "signal"], rows), ""]
  md += [f"Note: {plain(n)}" for n in noise.get("notes", [])]
  return md + ([""] if noise.get("notes") else [])


def _replication_block(files: data_lib.StudyFiles) -> list[str]:
  """Where a replicate study's DDO optima would fall (90%), if stored."""
  reps = [(m, m.extra.get("replication_intervals") or {})
          for _, m in files.ddo]
  if not any(r for _, r in reps):
    return []
  cols = ["domain"] + [f"replicate at {m.budget_tokens:.4g}" for m, _ in reps]
  rows = [[d] + [(f"[{fmt(r[d][0])}, {fmt(r[d][1])}]" if d in r else "")
                 for _, r in reps] for d in files.domains]
  return [table(cols, rows), "",
          "Where the optimum of a replicate study (same design, new seeds) "
          "would fall, 90% of the time: each end sqrt(2) times as far from "
          "the weight as the interval's, since the replicate has noise of "
          "its own. A 90% interval holds a replicate's optimum only about 75% "
          "of the time; check a second study against these.", ""]


def ddo_section(files: data_lib.StudyFiles, figs: Figures) -> list[str]:
  if not files.ddo:
    return []
  md = ["## DDO optima", ""]
  cols = ["domain"] + [f"w* at {m.budget_tokens:.4g}" for _, m in files.ddo]
  rows = [[d] + [_weight_cell(m, d) for _, m in files.ddo]
          for d in files.domains]
  md += [table(cols, rows), "",
         "Brackets: 90% intervals (bootstrap over runs and seeds); none "
         "when the runs give no noise estimate.", ""]
  md += _replication_block(files)
  for _, m in files.ddo:
    md += _noise_block(m)
  md += image(figs, "weights")
  return md


# -------------------------------------------------------------- projection


def _estimates_table(files: data_lib.StudyFiles) -> list[str]:
  est = files.estimates
  if not est:
    return ["Other estimators: not computed (no project/estimates.json).",
            ""]
  ok = {n: e for n, e in est.items() if "weights" in e}
  chosen = (files.projected.extra.get("estimator") if files.projected
            else None)
  cols = ["domain"] + [f"**{n}** (used)" if n == chosen else n for n in ok]
  rows = [[d] + [fmt(e["weights"].get(d)) for e in ok.values()]
          for d in files.domains]
  md = ["Every estimator's recommendation at the target (weights):", "",
        table(cols, rows), ""]
  md += [f"- `{n}` failed: {plain(e.get('error', 'no weights'))}"
         for n, e in est.items() if n not in ok]
  return md + ([""] if len(ok) < len(est) else [])


def projection_section(files: data_lib.StudyFiles, figs: Figures
                       ) -> list[str]:
  proj = files.projected
  if not proj:
    return []
  extra = proj.extra
  estimator = extra.get("estimator") or "paper"
  md = ["## Projection", "",
        f"Estimator `{estimator}` (method: {extra.get('method', 'n/a')}); "
        f"target {proj.budget_tokens:.4g} tokens, "
        f"{fmt(extra.get('extrapolation_factor'), 2)}x the largest DDO "
        "budget.", ""]
  bands = proj.intervals or {}
  md += [table(["domain", "weight", "tokens", "band"],
               [[d, fmt(proj.weights[d]), f"{proj.tokens[d]:.4g}",
                 (f"[{fmt(bands[d][0])}, {fmt(bands[d][1])}]" if d in bands
                  else "n/a")] for d in files.domains]), ""]
  md += _estimates_table(files)
  md += image(figs, "tokens_loglog") + image(figs, "trajectory")
  return md


# -------------------------------------------------------------------- fits


def fit_warnings(m: records.Mixture) -> tuple[dict[str, list[str]],
                                             list[str]]:
  """A DDO mixture's warnings split into per-domain ones and the rest."""
  per_domain: dict[str, list[str]] = {}
  rest = []
  for w in m.warnings:
    hit = _DOMAIN_WARNING.match(w)
    if hit:
      per_domain.setdefault(hit.group(1), []).append(hit.group(2))
    else:
      rest.append(w)
  return per_domain, rest


def _short(warning: str) -> str:
  """The first clause of a warning, for a table cell."""
  text = _ASIDE.sub("", warning.split(";")[0]).strip()
  return plain(text.replace("|", "/"))


def fits_section(files: data_lib.StudyFiles, figs: Figures) -> list[str]:
  fitted = [(k, m) for k, m in files.ddo if m.extra.get("fits")]
  if not fitted:
    return []
  md = ["## Fits", "",
        "Per domain d, the relative metric y = metric / base run as "
        "y(x) = (x + a)^(-b) + c of x = d's tokens / base tokens.", ""]
  md += image(figs, "fits_absolute") + image(figs, "predicted_observed")
  for k, m in fitted:
    per_domain, _ = fit_warnings(m)
    bound = m.bound_domains or {}
    rows = []
    for d, f in m.extra["fits"].items():
      notes = [_short(w) for w in per_domain.get(d, [])]
      if f.get("rms", 0.0) > LARGE_RESIDUAL:
        notes.append("large residual")
      if d in bound:
        notes.append(f"optimum at its {bound[d]} bound")
      rows.append([d, fmt(f["a"]), fmt(f["b"]), fmt(f["c"]),
                   f"{f['rms']:.2e}", "; ".join(dict.fromkeys(notes)) or "-"])
    md += [f"Budget {k + 1} ({m.budget_tokens:.4g} tokens):", "",
           table(["domain", "a", "b", "c", "rms", "warnings"], rows), ""]
    md += image(figs, f"fits_{k}")
  return md


# -------------------------------------------------------------- provenance


def provenance_section(files: data_lib.StudyFiles) -> list[str]:
  md = ["## Provenance", ""]
  ident = files.identity
  if ident:
    md += [f"- tokenizer fingerprint: `{ident.get('tokenizer', 'n/a')}`"]
    data = ident.get("data") or {}
    md += ["- data fingerprints: " + ", ".join(
        f"`{d}` `{fp[:12]}`" for d, fp in sorted(data.items()))]
  md += [f"- runs in the store: {files.num_records}", "",
         "Config:", "", "```",
         files.config.to_json_best_effort(indent=1, sort_keys=True), "```",
         ""]
  return md


# ------------------------------------------------------------------ limits


def limits(files: data_lib.StudyFiles) -> list[str]:
  """What a reader must know before trusting the numbers, condensed: one
  bullet per distinct issue, naming every budget it applies to."""
  by_text: dict[str, list[float]] = {}

  def add(text: str, budget: float | None = None) -> None:
    by_text.setdefault(text, [])
    if budget is not None:
      by_text[text].append(budget)

  for _, m in files.ddo:
    _, rest = fit_warnings(m)
    for w in rest:
      add(plain(w), m.budget_tokens)
    per_domain, _ = fit_warnings(m)
    flagged = sorted(set(per_domain) | set(m.bound_domains or {}) |
                     {d for d, f in (m.extra.get("fits") or {}).items()
                      if f.get("rms", 0.0) > LARGE_RESIDUAL})
    if flagged:
      add("fit warnings for " + ", ".join(f"`{d}`" for d in flagged) +
          " (see the warnings column of the fit tables)", m.budget_tokens)
    iv, base = m.intervals or {}, m.extra.get("base_weights") or {}
    total = sum(base.values()) or 1.0
    inside = [d for d in iv if d in base and
              iv[d][0] <= base[d] / total <= iv[d][1]]
    if iv and len(inside) == len(iv):
      add("every domain's 90% interval contains its base weight: these runs "
          "do not tell the optimum from the base mixture", m.budget_tokens)
  proj = files.projected
  if proj:
    budgets = [m.budget_tokens for _, m in files.ddo]
    ratio = proj.budget_tokens / max(budgets) if budgets else 0.0
    if ratio > FAR_EXTRAPOLATION:
      add(f"the target budget is {ratio:.1f}x the largest DDO budget: far "
          "beyond the fitted range")
    for d in proj.extra.get("capped_domains") or []:
      add(f"`{d}` is capped by the tokens available at the target")
    for note in proj.notes:
      add(plain(note))
  for note in (files.verdict or {}).get("notes", []):
    add(plain(note))
  out = []
  for text, budgets in by_text.items():
    where = ""
    if budgets:
      where = "At " + " and ".join(f"{b:.4g}" for b in budgets) + " tokens: "
    out.append(f"- {where}{text}")  # text: plain() or our own markdown
  return ["## Limits", ""] + (out or ["- None detected."]) + [""]


def build(files: data_lib.StudyFiles, figs: Figures) -> str:
  """The whole report as markdown."""
  md = [f"# AutoScale report: study `{files.config.study}`", ""]
  md += verdict_paragraph(files)
  md += summary(files)
  for section in (final_section, ddo_section, projection_section,
                  fits_section):
    md += section(files, figs)
  md += provenance_section(files)
  md += limits(files)
  return "\n".join(md)
