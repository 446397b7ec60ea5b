"""Seed noise against domain signal in one DDO budget's runs.

The DDO fit sees ``y = aggregate / aggregate of the same seed's base run``
(:func:`autoscale_jax.mixing.ddo.fit_and_solve`). The optimizer acts on how
*differently* the domains respond to their perturbation, so this module
measures, from the runs of one budget over several seeds:

* seed noise: per run (one domain and factor), the standard deviation of y
  across seeds; the budget's pooled value (root mean square over the
  perturbed runs, weighted by degrees of freedom).
* per domain, the effect ``mean y at the lowest factor - mean y at the
  highest``, the common effect (mean over domains, what more tokens of any
  domain do) and the domain-specific effect ``effect - common effect``.
* the standard error of each domain-specific effect and its signal-to-noise
  ratio ``|domain-specific effect| / standard error``, flagged ``signal`` when
  it exceeds a threshold (default 2).
* the budget's ratio "domain signal / noise": the standard deviation across
  domains of the effect over the standard error of one domain's effect. It is
  about 1 when every domain responds alike (its square follows an F
  distribution with ``m - 1`` and ``(m - 1)(S - 1)`` degrees of freedom), so
  values near 1 mean the optimizer would act on noise.

Standard errors come from the per-seed effects, not from the seed noise: the
effects of one seed share that seed's base run, so the part of the noise that
is common to a seed cancels in the domain-specific effects. Each seed's
domain-specific effects ``e[d, s] - mean_k e[k, s]`` are compared with their
mean over seeds; the residual mean square (the domain x seed interaction of a
two-way layout, ``(m - 1)(S - 1)`` degrees of freedom) estimates the variance
``v`` of one seed's effect. Only when fewer than two seeds have every domain's
pair does it fall back to ``v = 2 noise^2`` (independent runs), and says so.
With one seed the noise is unknown: every noise-derived value is None and the
notes say so; nothing is invented.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Mapping, Sequence

import numpy as np

from autoscale_jax.mixing import ddo

_X_DIGITS = 9  # x values are grouped as ddo.load_runs compares them


def normalised_values(data: ddo.RunsData, metric: str | None = None,
                      target_domains: Mapping[str, float] | None = None
                      ) -> tuple[dict[str, float], str, dict[str, float]]:
  """Each run's y exactly as :func:`ddo.fit_and_solve` defines it.

  Args:
    data: validated runs of one budget (:func:`ddo.load_runs`).
    metric: ``ppl`` or ``loss`` (config names ppl_seq / ppl_tok accepted);
      None uses the file's.
    target_domains: ``{eval domain: weight}``; default every training domain,
      equally.

  Returns:
    ``({run name: aggregate / its seed's base aggregate}, metric used,
    normalised target weights)``.
  """
  agg, base_agg, used_metric, targets = ddo.aggregates(data, metric,
                                                       target_domains)
  y = {r["name"]: agg[r["name"]] / base_agg[r["seed"]] for r in data.runs}
  return y, used_metric, targets


def _per_seed_means(data: ddo.RunsData, y: Mapping[str, float]
                    ) -> dict[tuple[str, float], dict[int, float]]:
  """``{(domain, x): {seed: mean y}}`` over the perturbed runs."""
  cells = collections.defaultdict(lambda: collections.defaultdict(list))
  for r in data.runs:
    if r["domain"] is not None:
      cells[(r["domain"], round(r["x"], _X_DIGITS))][r["seed"]].append(
          y[r["name"]])
  return {key: {s: float(np.mean(v)) for s, v in by_seed.items()}
          for key, by_seed in cells.items()}


def _interaction_variance(effects: Mapping[str, Mapping[int, float]],
                          domains: Sequence[str]) -> tuple[float, int] | None:
  """Variance of one seed's effect from the domain x seed interaction."""
  complete = sorted(set.intersection(*(set(effects[d]) for d in domains)))
  dof = (len(domains) - 1) * (len(complete) - 1)
  if dof < 1:
    return None
  e = np.array([[effects[d][s] for s in complete] for d in domains])
  specific = e - e.mean(axis=0, keepdims=True)
  resid = specific - specific.mean(axis=1, keepdims=True)
  return float(np.sum(resid ** 2) / dof), dof


def measure_noise(runs: ddo.RunsData | str | Mapping[str, Any],
                  metric: str | None = None,
                  target_domains: Mapping[str, float] | None = None,
                  snr_threshold: float = 2.0) -> dict[str, Any]:
  """Seed noise, domain effects and their signal-to-noise ratios of a budget.

  Args:
    runs: one budget's runs: validated :class:`ddo.RunsData`, a RUNS.json
      path or its dict (every seed has its base run).
    metric: as for :func:`ddo.fit_and_solve` (None: the file's).
    target_domains: as for :func:`ddo.fit_and_solve` (None: all, equal).
    snr_threshold: a domain-specific effect whose SNR exceeds this is flagged
      ``signal``.

  Returns:
    A JSON-ready dict for mixture.json's ``"noise"``: ``budget_tokens``,
    ``metric``, ``target_domains``, ``seeds``, ``num_seeds``,
    ``seed_noise`` (pooled sd of y, None with one seed), ``seed_noise_dof``,
    ``runs`` (per perturbed run: ``domain, x, seeds, mean, sd``),
    ``domains`` (per domain: ``low_x, high_x, seeds, effect,
    specific_effect, se, snr, signal``), ``common_effect``,
    ``domain_signal`` (sd across domains of the effect), ``effect_se`` (the
    standard error of one domain's effect), ``signal_to_noise``
    (``domain_signal / effect_se``), ``signal_to_seed_noise``
    (``domain_signal / seed_noise``, the research note's column),
    ``effect_noise_sd`` and ``effect_noise_dof`` (one seed's effect),
    ``se_method``, ``snr_threshold``, ``signal_domains`` and ``notes``.
  """
  data = runs if isinstance(runs, ddo.RunsData) else ddo.load_runs(runs)
  if snr_threshold <= 0 or not math.isfinite(snr_threshold):
    raise ValueError(f"snr_threshold={snr_threshold!r}: must be a finite "
                     "number > 0")
  y, used_metric, targets = normalised_values(data, metric, target_domains)
  domains = list(data.domains)
  seeds = sorted(data.bases)
  cells = _per_seed_means(data, y)
  notes: list[str] = []

  # ---- seed noise per perturbed run and pooled
  run_rows, ss, dof = [], 0.0, 0
  for (d, x), by_seed in sorted(cells.items(), key=lambda kv: (
      domains.index(kv[0][0]), kv[0][1])):
    v = np.array(list(by_seed.values()))
    sd = float(np.std(v, ddof=1)) if v.size > 1 else None
    if sd is not None:
      ss += sd ** 2 * (v.size - 1)
      dof += v.size - 1
    run_rows.append({"domain": d, "x": float(x), "seeds": int(v.size),
                     "mean": float(v.mean()), "sd": sd})
  seed_noise = math.sqrt(ss / dof) if dof else None

  # ---- effects per domain: lowest factor minus highest
  effect, per_seed, low_x, high_x, n_seeds = {}, {}, {}, {}, {}
  for d in domains:
    xs = sorted(x for dd, x in cells if dd == d)
    lo, hi = cells[(d, xs[0])], cells[(d, xs[-1])]
    low_x[d], high_x[d] = xs[0], xs[-1]
    effect[d] = float(np.mean(list(lo.values())) - np.mean(list(hi.values())))
    per_seed[d] = {s: lo[s] - hi[s] for s in lo if s in hi}
    n_seeds[d] = min(len(lo), len(hi))
  m = len(domains)
  common = float(np.mean([effect[d] for d in domains]))
  specific = {d: effect[d] - common for d in domains}
  domain_signal = float(np.std([effect[d] for d in domains], ddof=1)) \
      if m > 1 else None

  # ---- variance of one seed's effect
  inter = _interaction_variance(per_seed, domains) if m > 1 else None
  if inter is not None:
    var1, var_dof = inter
    se_method = ("domain x seed interaction of the per-seed effects "
                 f"({var_dof} dof; seed-shared noise cancels)")
  elif seed_noise is not None:
    var1, var_dof = 2.0 * seed_noise ** 2, dof
    se_method = ("sqrt(2 / seeds) x seed noise (independent runs assumed: "
                 "fewer than 2 seeds have every domain's pair)")
    notes.append("fewer than 2 seeds have both factors of every domain: "
                 "standard errors assume independent runs")
  else:
    var1, var_dof, se_method = None, 0, "none"
  if len(seeds) < 2:
    notes.append(f"one seed ({seeds[0]}): the seed noise is unknown, so no "
                 "standard errors or signal flags; repeat the budget's runs "
                 "with >= 2 seeds (3 recommended)")
  elif m < 2:
    notes.append("one domain: no domain-specific effect to measure")

  inv_mean = sum(1.0 / n_seeds[d] for d in domains) / m
  domain_rows = {}
  for d in domains:
    se = snr = signal = None
    if var1 is not None:
      # var(e_d - mean_k e_k) for independent effects of variance v / S_k.
      var_spec = var1 * ((1.0 - 2.0 / m) / n_seeds[d] + inv_mean / m)
      se = math.sqrt(var_spec) if var_spec > 0 else None
      if se:
        snr = abs(specific[d]) / se
        signal = bool(snr > snr_threshold)
    domain_rows[d] = {"low_x": float(low_x[d]), "high_x": float(high_x[d]),
                      "seeds": int(n_seeds[d]), "effect": effect[d],
                      "specific_effect": specific[d], "se": se, "snr": snr,
                      "signal": signal}
  effect_se = math.sqrt(var1 * inv_mean) if var1 is not None else None
  ratio = (domain_signal / effect_se if effect_se and domain_signal is not None
           else None)
  ratio_seed = (domain_signal / seed_noise if seed_noise and
                domain_signal is not None else None)
  if ratio is not None and len(seeds) >= 2:
    flagged = [d for d in domains if domain_rows[d]["signal"]]
    if not flagged:
      notes.append(f"no domain's specific effect exceeds {snr_threshold:g} "
                   "standard errors: the optimum at this budget follows noise")
  budget = float(np.mean([sum(data.base_tokens(s).values()) for s in seeds]))
  return {
      "budget_tokens": budget,
      "metric": used_metric,
      "target_domains": targets,
      "seeds": seeds,
      "num_seeds": len(seeds),
      "seed_noise": seed_noise,
      "seed_noise_dof": dof,
      "runs": run_rows,
      "domains": domain_rows,
      "common_effect": common,
      "domain_signal": domain_signal,
      "effect_se": effect_se,
      "signal_to_noise": ratio,
      "signal_to_seed_noise": ratio_seed,
      "effect_noise_sd": math.sqrt(var1) if var1 is not None else None,
      "effect_noise_dof": var_dof,
      "se_method": se_method,
      "snr_threshold": float(snr_threshold),
      "signal_domains": [d for d in domains if domain_rows[d]["signal"]],
      "notes": notes,
  }


def _num(v: float | None, spec: str) -> str:
  return "n/a" if v is None else format(v, spec)


def format_noise_table(noise: Mapping[str, Any], title: str | None = None
                       ) -> str:
  """Plain-text table of :func:`measure_noise`: a summary, one line a domain.

  Args:
    noise: :func:`measure_noise`'s dict (or mixture.json's ``"noise"``).
    title: first words of the summary (default "noise at <budget> tokens").
  """
  rows = noise["domains"]
  lows = {f"{r['low_x']:.3g}" for r in rows.values()}
  highs = {f"{r['high_x']:.3g}" for r in rows.values()}
  span = (f"{lows.pop()}x->{highs.pop()}x" if len(lows) == len(highs) == 1
          else "low->high factor")
  title = title or f"noise at {noise['budget_tokens']:.4g} tokens"
  s = noise["num_seeds"]
  ratio = ("noise unknown" if noise["signal_to_noise"] is None else
           f"{noise['signal_to_noise']:.2f}x its noise (SE "
           f"{noise['effect_se']:.4f})")
  head = (f"{title}, {noise['metric']} ({s} seed{'s' if s != 1 else ''}): "
          f"seed noise {_num(noise['seed_noise'], '.4f')}; mean effect "
          f"{span} {noise['common_effect']:.4f}; domain signal "
          f"{_num(noise['domain_signal'], '.4f')}, {ratio}")
  width = max([len(d) for d in rows] + [6])
  lines = [head,
           f"  {'domain':<{width}}  {'effect':>8}  {'specific':>9}  "
           f"{'SE':>7}  {'SNR':>5}  signal"]
  for d, r in rows.items():
    flag = {True: "yes", False: "no", None: "n/a"}[r["signal"]]
    lines.append(
        f"  {d:<{width}}  {r['effect']:>8.4f}  {r['specific_effect']:>+9.4f}"
        f"  {_num(r['se'], '.4f'):>7}  {_num(r['snr'], '.2f'):>5}  {flag}")
  lines += [f"  note: {n}" for n in noise.get("notes", [])]
  return "\n".join(lines)
