"""The study's measurement wiring through the CLI on the micro config.

One micro study with two DDO seeds and two final seeds (`--stage=all`; the
session's shared one, tests/micro_study.py), then:
the DDO optima carry the measured noise, the projection names its estimator
and provenance and lists every estimator, the final stage gives a verdict
over seeds (first in the output and in comparison.md), stale inputs are
refused with one line, `--stage=fit` with nothing to fit fails, a partial
`--mixture=` run merges into the comparison, and the file-only stages honour
`--config` and write the exports. Tests that change the workdir run on a copy.
"""

import contextlib
import hashlib
import json
import os
import re

import pytest

from autoscale_jax.mixing import estimators
import inprocess
import micro_study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS = ("alpha", "beta", "gamma")
MICRO = "--config=configs/micro.py"
SEEDS = micro_study.SEEDS  # ddo.seeds=(0,1), final.seeds=(0,1)


def _cli(*args):
  """The CLI in-process, from the repository root (the shared study itself
  is made by a real `python -m autoscale_jax.main`, tests/micro_study.py)."""
  with contextlib.chdir(ROOT):
    return inprocess.run(*args)


def _ok(*args):
  r = _cli(*args)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  return r.stdout


def _one_line_error(r):
  """The stderr of a clean user error: exit 2, one line starting 'error:'."""
  assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
  lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
  errors = [ln for ln in lines if ln.startswith("error: ")]
  assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
  return errors[0]


def _json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture
def study(micro_seeds):
  """The shared micro study with seeds (tests/micro_study.py): workdir and
  the stdout of its `--stage=all`. Read only."""
  return micro_seeds.workdir, micro_seeds.out


@pytest.fixture
def copy(micro_seeds, tmp_path):
  """A private copy of the study's workdir (for tests that change it)."""
  return micro_study.copy_workdir(micro_seeds.workdir, tmp_path / "work")


def test_ddo_optima_carry_the_noise_and_print_it(study):
  workdir, out = study
  for k, budget in enumerate((4096.0, 8192.0)):
    mix = _json(workdir / "ddo" / f"budget_{k}" / "mixture.json")
    noise = mix["noise"]
    assert noise["num_seeds"] == 2 and noise["seeds"] == [42, 43]
    assert noise["seed_noise"] > 0 and noise["effect_se"] > 0
    assert set(noise["domains"]) == set(DOMAINS)
    for row in noise["domains"].values():
      assert row["snr"] >= 0 and isinstance(row["signal"], bool)
    # One line per budget, after that budget's optimum, naming each domain
    # with its SNR and whether its signal exceeds the noise.
    head = f"DDO budget {k + 1} noise at {budget:.4g} tokens"
    assert out.index(f"DDO optimum at {budget:.4g} tokens") < out.index(head)
    [line] = [ln for ln in out.splitlines() if ln.startswith(head)]
    for d, row in noise["domains"].items():
      verdict = "yes" if row["signal"] else "no"
      assert f" {d} {row['snr']:.2f} {verdict}" in line, line
    if not noise["signal_domains"]:
      assert "the optimum at this budget follows noise" in line
    assert mix["provenance"]["budget_tokens"] == budget
    assert mix["budget_tokens"] == pytest.approx(budget, rel=1e-3)
    assert len(mix["provenance"]["runs"]) == 2 * (2 * len(DOMAINS) + 1)


def test_project_names_estimator_provenance_and_every_estimate(study):
  workdir, out = study
  proj = _json(workdir / "project" / "mixture.json")
  assert proj["estimator"] == "paper"
  prov = proj["provenance"]
  assert prov["ddo_budgets"] == [4096.0, 8192.0]
  assert prov["target_tokens"] == proj["budget_tokens"] == 32768.0
  assert prov["estimator"] == "paper" and set(prov["data"]) == set(DOMAINS)
  for k, entry in enumerate(prov["ddo_mixtures"]):
    raw = (workdir / "ddo" / f"budget_{k}" / "mixture.json").read_bytes()
    assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
  estimates = _json(workdir / "project" / "estimates.json")
  assert set(estimates) == set(estimators.NAMES)
  assert estimates["paper"]["weights"] == proj["weights"]
  for name, mix in estimates.items():
    if "error" not in mix:
      assert abs(sum(mix["weights"].values()) - 1) < 1e-9
    assert re.search(rf"^ [ *]{name} +(alpha=|failed: )", out, re.M), name
  # Its inputs are named relative to the workdir, as the provenance names
  # them: a copied or moved study does not point at the old place.
  assert [i["path"] for i in proj["inputs"]] == [
      "ddo/budget_0/mixture.json", "ddo/budget_1/mixture.json"]
  for name in ("mixture.json", "estimates.json"):
    assert str(workdir) not in (workdir / "project" / name).read_text(), name
  grain = (workdir / "project" / "export" / "mixture_grain.txt").read_text()
  for d in DOMAINS:  # real data paths, not domain names
    assert f"{workdir}/corpus/{d}.jsonl," in grain


def test_final_verdict_over_seeds_comes_first(study):
  workdir, out = study
  comparison = _json(workdir / "final" / "comparison.json")
  block = comparison["seeds"]
  assert block["reference"] == "projected"
  assert set(block["mixtures"]) == {"projected", "uniform"}
  for m in block["mixtures"].values():
    assert m["seeds"] == [0, 1] and m["n"] == 2 and m["ci"] is not None
  assert [c["baseline"] for c in block["comparisons"]] == ["uniform"]
  assert block["sentences"] and block["sentences"][0].startswith(
      "projected vs uniform: ")
  # The seed-0 keys as before: the seed-0 runs' own numbers.
  store = {r: _json(workdir / "store" / r) for r in os.listdir(workdir /
                                                              "store")}
  by_name = {r["name"]: r for r in store.values()}
  assert set(by_name) >= {"final_projected", "final_projected_s1",
                          "final_uniform", "final_uniform_s1"}
  assert comparison["final_eval"]["projected"] == \
      by_name["final_projected"]["final_eval"]
  assert [r["baseline"] for r in comparison["rows"]] == ["uniform"]
  # Seed 0 keeps the identity final runs always had (stores stay valid).
  assert by_name["final_projected"]["identity"]["name"] == "final_projected"
  assert by_name["final_projected"]["seed"] == 42 == by_name[
      "final_projected"]["identity"]["seed"]
  assert by_name["final_projected_s1"]["seed"] == 43
  # Per-seed initialization (config.init_seeds): every run, DDO and final,
  # starts from its own training seed, so seed 1's runs from 43.
  assert {"b0_base_s1", "b1_base_s1"} <= set(by_name)
  for rec in by_name.values():
    assert rec["identity"]["init_seed"] == rec["seed"], rec["name"]
  values = block["mixtures"]["uniform"]["values"]
  assert values == [by_name["final_uniform"]["final_eval"]["aggregate"][
      "ppl_seq"], by_name["final_uniform_s1"]["final_eval"]["aggregate"][
          "ppl_seq"]]
  # Verdict first: in comparison.md and right after the final training.
  md = (workdir / "final" / "comparison.md").read_text()
  assert md.startswith(block["sentences"][0])
  assert md.index("**Verdict over seeds**") < md.index("Speed-up of")
  final_part = out[out.index("=== stage 3/4: final ==="):]
  last_training = max(m.end() for m in re.finditer(r"\[final \d/4\].*\n",
                                                   final_part))
  after = [ln for ln in final_part[last_training:].splitlines() if ln.strip()]
  assert after[0] == f"verdict: {block['sentences'][0]}"


def test_swarm_trains_each_seed_from_its_own_initialization(study, tmp_path):
  # The DDO swarm (one program for a budget's runs) gives every member its
  # own initialization seed, as the one-by-one runs of the shared study
  # have it: every run of both seeds matches, seed 1's included (with one
  # initialization for all members they would not).
  workdir, _ = study
  out = _ok("--stage=ddo", MICRO, f"--workdir={tmp_path}", SEEDS[0],
            "--config.run.swarm=vmap")
  assert out.count("training 14 runs as one program (vmap)") == 2, out
  for k in (0, 1):
    runs = _json(tmp_path / "ddo" / f"budget_{k}" / "runs.json")["runs"]
    assert any(r["name"].endswith("_s1") for r in runs)
    micro_study.assert_same_ddo_runs(tmp_path, workdir, DOMAINS, k)


def test_second_run_reuses_every_seed(copy):
  workdir = copy
  comparison = _json(workdir / "final" / "comparison.json")
  out = _ok("--stage=final", MICRO, f"--workdir={workdir}", *SEEDS)
  assert not re.search(r"\]: \S+ done in ", out)  # nothing trained
  assert "[final]: 4 of 4 runs reused from the store" in out
  assert _json(workdir / "final" / "comparison.json") == comparison


def test_partial_mixture_run_merges_into_the_comparison(micro_report):
  # The shared "report" study is this run on a copy of the seeds study:
  # `--stage=final MICRO --workdir=COPY SEEDS --mixture=ddo_small`.
  layer = micro_study.LAYERS["report"]
  assert layer.parent == "seeds" and layer.prepare is None
  assert layer.args == ("--stage=final", *SEEDS, "--mixture=ddo_small")
  out, copy = micro_report.out, micro_report.workdir
  assert len(re.findall(r"\]: final_ddo_small\S* done in ", out)) == 2
  comparison = _json(copy / "final" / "comparison.json")
  assert set(comparison["seeds"]["mixtures"]) == {"projected", "uniform",
                                                  "ddo_small"}
  assert comparison["reference"] == "projected"
  assert [r["baseline"] for r in comparison["rows"]] == ["uniform",
                                                         "ddo_small"]
  assert [c["baseline"] for c in comparison["seeds"]["comparisons"]] == [
      "uniform", "ddo_small"]
  assert set(comparison["final_eval"]) == {"projected", "uniform",
                                           "ddo_small"}


def test_a_file_mixture_is_named_by_its_stem_and_found_again(copy,
                                                              tmp_path):
  # The larger DDO budget's optimum reused from a file, as docs/results.md's
  # ddo_last runs were trained.
  mine = tmp_path / "files" / "mine.json"
  mine.parent.mkdir()
  mine.write_text((copy / "ddo" / "budget_1" / "mixture.json").read_text())
  out = _ok("--stage=final", MICRO, f"--workdir={copy}", *SEEDS,
            f"--mixture={mine}")
  verdicts = [ln for ln in out.splitlines() if ln.startswith("verdict: ")]
  assert any(ln.startswith("verdict: projected vs mine: ") for ln in verdicts)
  assert not any(str(tmp_path) in ln for ln in verdicts), verdicts
  comparison = _json(copy / "final" / "comparison.json")
  assert set(comparison["seeds"]["mixtures"]) == {"projected", "uniform",
                                                  "mine"}
  assert comparison["sources"] == {"mine": str(mine)}
  assert "projected vs mine: " in (copy / "final" / "comparison.md"
                                   ).read_text()
  # A later --mixture run finds the file's runs again through "sources".
  out = _ok("--stage=final", MICRO, f"--workdir={copy}", *SEEDS,
            "--mixture=uniform")
  assert "left out" not in out and not re.search(r"\]: \S+ done in ", out)
  again = _json(copy / "final" / "comparison.json")
  assert again["seeds"]["mixtures"] == comparison["seeds"]["mixtures"]
  # A file whose name is already taken in the comparison is refused (its
  # runs would be named like the other mixture's).
  clash = tmp_path / "other" / "uniform.json"
  clash.parent.mkdir()
  clash.write_text(mine.read_text())
  err = _one_line_error(_cli("--stage=final", MICRO, f"--workdir={copy}",
                             *SEEDS, f"--mixture={clash}"))
  assert str(clash) in err and "'uniform'" in err and "rename" in err, err
  assert _json(copy / "final" / "comparison.json") == again


def test_stale_ddo_optimum_is_refused_by_project(copy):
  before = (copy / "project" / "mixture.json").read_bytes()
  err = _one_line_error(_cli("--stage=project", MICRO, f"--workdir={copy}",
                             *SEEDS, "--config.ddo.budgets=(4096.,16384.)"))
  assert "budget_1/mixture.json" in err and "--stage=ddo" in err, err
  # A DDO optimum made from other runs (here: other DDO seeds) is stale too.
  err = _one_line_error(_cli("--stage=project", MICRO, f"--workdir={copy}"))
  assert "budget_0/mixture.json is stale" in err and "--stage=ddo" in err
  assert (copy / "project" / "mixture.json").read_bytes() == before


def test_final_refuses_a_projection_made_for_another_config(copy):
  err = _one_line_error(_cli("--stage=final", MICRO, f"--workdir={copy}",
                             *SEEDS, "--config.project.target_tokens=40000."))
  assert "project/mixture.json" in err and "--stage=project" in err, err
  err = _one_line_error(_cli("--stage=final", MICRO, f"--workdir={copy}",
                             *SEEDS, "--config.project.estimator=joint"))
  assert "estimator" in err and "--stage=project" in err, err
  # Projected with that estimator, the final stage accepts it.
  out = _ok("--stage=project", MICRO, f"--workdir={copy}", *SEEDS,
            "--config.project.estimator=joint")
  assert "(estimator joint)" in out
  assert _json(copy / "project" / "mixture.json")["estimator"] == "joint"


def test_fit_with_nothing_to_fit_fails(copy):
  err = _one_line_error(_cli("--stage=fit", MICRO, f"--workdir={copy}",
                             *SEEDS, "--config.train.learning_rate=0.001"))
  assert "fitted nothing" in err and "--stage=ddo" in err, err


def test_file_only_fit_honours_config_writes_noise_and_exports(study,
                                                                tmp_path):
  workdir, _ = study
  runs = _json(workdir / "ddo" / "budget_1" / "runs.json")
  both = tmp_path / "runs.json"
  both.write_text(json.dumps(runs))
  _ok("--stage=fit", f"--results={both}", f"--workdir={tmp_path}/plain")
  plain = _json(tmp_path / "plain" / "mixture.json")
  assert plain["metric"] == "ppl" and plain["bootstrap"]["replicates"] > 7
  assert plain["noise"]["num_seeds"] == 2
  assert (tmp_path / "plain" / "export" / "mixture_grain.txt").exists()
  _ok("--stage=fit", f"--results={both}", f"--workdir={tmp_path}/cfg", MICRO,
      "--config.ddo.metric=loss", "--config.ddo.bootstrap=7")
  cfg = _json(tmp_path / "cfg" / "mixture.json")
  assert cfg["metric"] == "loss" and cfg["noise"]["metric"] == "loss"
  assert 0 < cfg["bootstrap"]["replicates"] <= 7
  assert (tmp_path / "cfg" / "export" / "mixture_levanter.yaml").exists()
  # One seed: no noise numbers, and the note says so.
  one = tmp_path / "one.json"
  one.write_text(json.dumps({**runs, "runs": [r for r in runs["runs"]
                                              if r["seed"] == 42]}))
  out = _ok("--stage=fit", f"--results={one}", f"--workdir={tmp_path}/one")
  noise = _json(tmp_path / "one" / "mixture.json")["noise"]
  assert noise["num_seeds"] == 1 and noise["seed_noise"] is None
  assert any("one seed" in n for n in noise["notes"])
  assert "note: one seed (42): the seed noise is unknown" in out


def test_file_only_project_takes_the_target_from_the_config(study, tmp_path):
  workdir, _ = study
  optima = ",".join(str(workdir / "ddo" / f"budget_{k}" / "mixture.json")
                    for k in (0, 1))
  _ok("--stage=project", f"--optima={optima}", f"--workdir={tmp_path}", MICRO)
  mix = _json(tmp_path / "mixture.json")
  assert mix["budget_tokens"] == 32768.0
  assert mix["weights"] == _json(workdir / "project" / "mixture.json")[
      "weights"]
  assert (tmp_path / "export" / "mixture_weights.json").exists()
