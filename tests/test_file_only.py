"""A study on files alone: plan, then fit a filled-in runs.csv, then project.

No raw data, no training: ``--stage=plan`` with ``--available_tokens`` writes
the runs, their metrics come from a known power law
(:class:`autoscale_jax.mixing.simulate.PowerLawTruth`), ``--stage=fit
--results=runs.csv`` recovers the truth's DDO optimum at each budget, and
``--stage=project`` projects them with the availability caps, writing the
exports and a report at every step. The CLI runs in-process (``main.main``).
"""

import csv
import io
import json

import numpy as np
import pytest

from autoscale_jax.mixing import simulate
from inprocess import cli

MICRO = "--config=configs/micro.py"
DOMAINS = ("alpha", "beta", "gamma")
BUDGETS = (4096.0, 8192.0)
# The paper's surrogate with these (a, b) at the first budget: noise-free,
# the fit recovers them exactly there.
A, B = (0.5, 1.0, 2.0), (0.6, 1.0, 0.3)
NOISE = 0.001  # relative, per run: two seeds give the bootstrap its noise
# alpha's unique tokens bind the projection at 32768 tokens (max_epochs 1).
AVAILABLE = {"alpha": 9000, "beta": 40000, "gamma": 40000}
CONFIG = (MICRO, "--config.ddo.seeds=(0,1)", "--config.ddo.bootstrap=16")


def _truth():
  return simulate.PowerLawTruth.from_relative(
      list(DOMAINS), a=A, b=B, base_weights=[1 / 3] * 3, budget=BUDGETS[0],
      base_metric=20.0)


def fill_csv(text: str, truth, noise: float = NOISE) -> str:
  """The plan's runs.csv with its ppl.<domain> cells filled from ``truth``."""
  rows = list(csv.DictReader(io.StringIO(text)))
  out = io.StringIO()
  w = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
  w.writeheader()
  for i, row in enumerate(rows):
    tokens = {d: float(row[f"tokens.{d}"]) for d in DOMAINS}
    z = np.random.default_rng([7, i]).standard_normal()
    for d, v in truth.evals(tokens).items():
      row[f"ppl.{d}"] = repr(v * (1.0 + noise * z))
    w.writerow(row)
  return out.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  """plan -> fill runs.csv -> fit -> project, on files alone."""
  root = tmp_path_factory.mktemp("file_only")
  workdir = root / "study"
  avail = root / "available.json"
  avail.write_text(json.dumps(AVAILABLE))
  assert cli("--stage=plan", *CONFIG, f"--workdir={workdir}",
             f"--available_tokens={avail}") == 0
  runs_csv = root / "runs.csv"
  runs_csv.write_text(fill_csv((workdir / "plan" / "runs.csv").read_text(),
                               _truth()))
  assert cli("--stage=fit", *CONFIG, f"--workdir={workdir}",
             f"--results={runs_csv}", f"--available_tokens={avail}") == 0
  fit_report = (workdir / "report" / "README.md").read_text()
  assert cli("--stage=project", *CONFIG, f"--workdir={workdir}",
             f"--available_tokens={avail}") == 0
  return workdir, fit_report


def _json(path):
  return json.loads(path.read_text())


def test_plan_writes_the_runs_and_their_exports(study):
  workdir, _ = study
  plan = workdir / "plan"
  doc = _json(plan / "runs.json")
  # 2 budgets x 2 seeds x (1 base + 3 domains x 2 factors)
  assert len(doc["runs"]) == 2 * 2 * 7
  names = [r["name"] for r in doc["runs"]]
  assert len(set(names)) == len(names)
  for r in doc["runs"]:
    export = plan / f"budget_{r['budget_index']}" / r["name"]
    weights = _json(export / "mixture_weights.json")
    assert abs(sum(weights.values()) - 1) < 1e-12
    assert (export / "mixture_levanter.yaml").exists()
    assert (export / "mixture_megatron.sh").exists()
  assert _json(plan / "available_tokens.json") == AVAILABLE


def test_fit_recovers_the_truths_optimum_at_each_budget(study):
  workdir, _ = study
  truth = _truth()
  for k, budget in enumerate(BUDGETS):
    mix = _json(workdir / "ddo" / f"budget_{k}" / "mixture.json")
    assert mix["budget_tokens"] == pytest.approx(budget, rel=1e-3)  # rounded
    want = truth.optimum_relative({d: 1 / 3 for d in DOMAINS}, budget)
    # At the first budget the paper's surrogate is the truth (exact up to
    # the noise); at the second the truth's curves have an amplitude the
    # surrogate lacks, which costs about 0.02 of weight.
    tol = 0.005 if k == 0 else 0.03
    for d in DOMAINS:
      assert mix["weights"][d] == pytest.approx(want[d], abs=tol), (k, d)
      lo, hi = mix["intervals"][d]
      assert lo <= mix["weights"][d] <= hi
    assert mix["provenance"]["source"] == "results"
    assert (workdir / "ddo" / f"budget_{k}" / "export" /
            "mixture_olmix.yaml").exists()
    assert len(_json(workdir / "ddo" / f"budget_{k}" / "runs.json")[
        "runs"]) == 14


def test_project_applies_the_caps_and_writes_exports_and_report(study):
  workdir, fit_report = study
  mix = _json(workdir / "project" / "mixture.json")
  assert mix["budget_tokens"] == 32768.0 and mix["estimator"] == "paper"
  assert sum(mix["tokens"].values()) == pytest.approx(32768.0)
  assert mix["tokens"]["alpha"] <= AVAILABLE["alpha"] * (1 + 1e-9)
  assert "alpha" in mix["capped_domains"]
  estimates = _json(workdir / "project" / "estimates.json")
  assert set(estimates) >= {"paper", "joint", "ddo_last"}
  export = workdir / "project" / "export"
  weights = _json(export / "mixture_weights.json")
  assert abs(sum(weights.values()) - 1) < 1e-12
  assert "max_epochs" in (export / "README.md").read_text().lower()
  report = (workdir / "report" / "README.md").read_text()
  assert (workdir / "report" / "index.html").exists()
  assert "projected" in report.lower()
  assert "final" in report.lower()  # the missing final runs, said plainly
  assert "alpha" in fit_report


def test_fit_rejects_runs_that_are_not_the_plan(study, tmp_path, capsys):
  workdir, _ = study
  text = fill_csv((workdir / "plan" / "runs.csv").read_text(), _truth())
  bad = tmp_path / "runs.csv"
  bad.write_text(text.replace("b0_base_s0,", "b0_base_s9,", 1))
  assert cli("--stage=fit", *CONFIG, f"--workdir={tmp_path}/out",
             f"--results={bad}") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "b0_base_s9" in err[0] and "plan" in err[0], err
  lines = text.splitlines()
  bad.write_text("\n".join(lines[:-1]) + "\n")  # one planned run missing
  assert cli("--stage=fit", *CONFIG, f"--workdir={tmp_path}/out",
             f"--results={bad}") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "lacks 1 of 14 planned runs" in err[0], err
  bad.write_text(text.replace(",8192,", ",8000,"))
  assert cli("--stage=fit", *CONFIG, f"--workdir={tmp_path}/out",
             f"--results={bad}") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "budget 8000 is not one of" in err[0], err
  assert not (tmp_path / "out").exists()  # nothing written on a bad file


def test_file_only_flags_elsewhere_are_usage_errors(tmp_path, capsys):
  assert cli("--stage=ddo", MICRO, f"--workdir={tmp_path}",
             f"--available_tokens={tmp_path}/a.json") == 2
  assert cli("--stage=fit", MICRO, f"--workdir={tmp_path}",
             "--allow_interpolation") == 2
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
  assert err == [
      "error: --available_tokens is for --stage=plan, fit or project",
      "error: --allow_interpolation is for --stage=project from files "
      "(--optima, or a workdir fitted with --results)"], err


def test_allow_interpolation_flag(study, tmp_path, capsys):
  workdir, _ = study
  args = ("--stage=project", *CONFIG, f"--workdir={workdir}",
          "--target_tokens=6000")
  assert cli(*args) == 2
  err = capsys.readouterr().err
  assert "allow_interpolation" in err
  out = tmp_path / "interp"
  optima = ",".join(str(workdir / "ddo" / f"budget_{k}" / "mixture.json")
                    for k in (0, 1))
  assert cli("--stage=project", *CONFIG, f"--workdir={out}",
             f"--optima={optima}", "--target_tokens=6000",
             "--allow_interpolation") == 0
  mix = _json(out / "mixture.json")
  assert mix["budget_tokens"] == 6000.0
  assert _json(out / "project" / "mixture.json")["weights"] == mix["weights"]
