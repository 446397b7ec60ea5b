"""The plan writer and the results reader (RUNS.json or CSV) it pairs with."""

import csv
import io
import json
import re

import pytest

from autoscale_jax import config as config_lib
from autoscale_jax.experiments import results
from autoscale_jax.mixing import ddo
from autoscale_jax.study import plan as plan_lib
from configs import micro
from inprocess import cli

DOMAINS = ["alpha", "beta", "gamma"]
AVAILABLE = {"alpha": 50_000, "beta": 50_000, "gamma": 50_000}


def _config(**ddo_settings):
  c = micro.get_config()
  for k, v in ddo_settings.items():
    setattr(c.ddo, k, v)
  return config_lib.validate(c)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  c = _config(seeds=(0, 3))
  out = tmp_path_factory.mktemp("plan") / "plan"
  runs = plan_lib.write_plan(c, out, AVAILABLE)
  return c, out, runs


# ------------------------------------------------------------------- plan


def test_plan_is_the_ddo_design_with_the_study_names_and_seeds(written):
  c, _, runs = written
  assert len(runs) == len(c.ddo.budgets) * 2 * (1 + 3 * 2)
  for k, budget in enumerate(c.ddo.budgets):
    design = ddo.plan_runs(DOMAINS, budget, factors=c.ddo.factors,
                           seeds=(0, 3))
    mine = [r for r in runs if r["budget_index"] == k]
    assert [r["name"] for r in mine] == [f"b{k}_{d['name']}" for d in design]
    assert [r["tokens"] for r in mine] == [d["tokens"] for d in design]
    assert [r["seed"] for r in mine] == [c.seed + d["seed"] for d in design]
    for r in mine:
      assert sum(r["weights"].values()) == pytest.approx(1.0)
      assert r["budget"] == budget


def test_plan_steps_are_the_packed_rows_over_the_batch(written):
  c, _, runs = written
  base = next(r for r in runs if r["name"] == "b0_base_s0")
  # 1365 tokens per domain: ceil(1365 / 32) = 43 rows each, 129 rows / 8.
  assert base["tokens"] == {d: 1365 for d in DOMAINS}
  assert base["steps"] == 17
  c.model.kind = "bert"  # BERT rows hold seq_len - 2 content tokens
  assert plan_lib.run_steps(c, base["tokens"]) == -(-3 * -(-1365 // 30) // 8)
  c.model.kind = "gpt2"


def test_plan_files_round_trip_through_the_results_reader(written, tmp_path):
  c, out, runs = written
  with pytest.raises(results.ResultsError, match="every metric column is "
                     "empty"):  # the skeleton as written: nothing to fit
    results.read_results(out / "runs.csv")
  text = (out / "runs.csv").read_text()
  header = next(csv.reader(io.StringIO(text)))
  assert header == results.csv_header(DOMAINS, "ppl")
  filled = tmp_path / "runs.csv"  # the user fills in each run's aggregate
  filled.write_text("\n".join(line + "12.5" if i else line for i, line in
                              enumerate(text.splitlines())) + "\n")
  from_csv = results.read_results(filled)
  assert sorted(from_csv) == [float(b) for b in c.ddo.budgets]
  by_name = {r["name"]: r for g in from_csv.values() for r in g["runs"]}
  for r in runs:
    assert by_name[r["name"]]["tokens"] == r["tokens"]
    assert by_name[r["name"]]["seed"] == r["seed"]
    assert by_name[r["name"]]["eval"] == {"aggregate": 12.5}
  skeleton = json.loads((out / "runs.json").read_text())
  assert skeleton["metric"] == "ppl"
  assert all(set(r["eval"]) == set(DOMAINS) | {"aggregate"} and
             all(v is None for v in r["eval"].values())
             for r in skeleton["runs"])
  assert json.loads((out / "available_tokens.json").read_text()) == AVAILABLE
  readme = (out / "README.md").read_text()
  assert "--stage=fit" in readme and "b1_gamma_x3_s3" in readme


def test_each_planned_run_is_exported_for_every_stack(written):
  _, out, runs = written
  run = next(r for r in runs if r["name"] == "b1_beta_x0.2_s0")
  export = out / "budget_1" / run["name"]
  plain = json.loads((export / "mixture_plain.json").read_text())
  assert sum(float(v) for v in json.loads(
      (export / "mixture_weights.json").read_text()).values()) == 1.0
  text = json.dumps(plain)
  assert str(run["tokens"]["beta"]) in text
  for name in ("mixture_levanter.yaml", "mixture_grain.json",
               "mixture_megatron.sh", "mixture_olmo_core.json",
               "mixture_olmix.yaml", "mixture_hf.py", "mixture_seqio.py",
               "mixture.csv", "README.md"):
    assert (export / name).exists(), name


def test_plan_stops_on_a_shortfall_like_the_ddo_stage(tmp_path):
  c = _config()
  short = dict(AVAILABLE, beta=5000)  # beta x3 at 8192: 8193 tokens
  with pytest.raises(ddo.AvailabilityError, match="beta needs 3,193 more"):
    plan_lib.write_plan(c, tmp_path / "plan", short)
  assert not (tmp_path / "plan").exists()
  plan_lib.write_plan(c, tmp_path / "plan", short, allow_repeat=True)
  assert (tmp_path / "plan" / "runs.csv").exists()


@pytest.mark.parametrize("content,words", [
    ("nope", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"alpha": 5, "beta": -1, "gamma": 3}', "domain 'beta' has -1"),
    ('{"alpha": 5, "beta": 1}', "lacks domain(s) gamma"),
])
def test_available_tokens_file_errors(tmp_path, content, words):
  p = tmp_path / "a.json"
  p.write_text(content)
  with pytest.raises(plan_lib.AvailableTokensError,
                     match=re.escape(words)) as e:
    plan_lib.read_available_tokens(str(p), DOMAINS)
  assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_plan_from_the_data_counts_the_token_store(tmp_path):
  """Without --available_tokens the plan reads the study's token store, and
  its steps are the steps this project's batches take."""
  from autoscale_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  assert cli("--stage=plan", "--config=configs/micro.py",
             f"--workdir={tmp_path}") == 0
  c = _config()
  bundle = pipeline.prepare_data(c, str(tmp_path))
  assert json.loads((tmp_path / "plan" / "available_tokens.json").read_text()
                    ) == dict(bundle.available_tokens)
  runs = json.loads((tmp_path / "plan" / "runs.json").read_text())["runs"]
  for r in runs[:3] + runs[-2:]:
    batches = bundle.quota_batches(r["tokens"], seed=r["seed"])
    assert r["steps"] == batches.num_steps, r["name"]


# ---------------------------------------------------------------- results


HEADER = ("name,budget,seed,tokens.a,tokens.b,ppl.a,ppl.b,ppl.aggregate\n")
ROWS = ("base_s0,200,0,100,100,10,12,\n"
        "a_lo,200,0,20,100,11,12,\n"
        "a_hi,200,0,300,100,9.5,12,\n"
        "b_lo,200,0,100,20,10,13,\n"
        "b_hi,200,0,100,300,10,11.5,\n")


def _read(tmp_path, text, name="runs.csv"):
  p = tmp_path / name
  p.write_text(text)
  return results.read_results(p)


def test_csv_reader_builds_runs_json_per_budget(tmp_path):
  more = ROWS.replace(",200,", ",400,").replace("_s0", "_s0x").replace(
      "a_", "a2_").replace("b_", "b2_")
  groups = _read(tmp_path, HEADER + ROWS + more)
  assert sorted(groups) == [200.0, 400.0]
  runs = groups[200.0]
  assert runs["metric"] == "ppl" and len(runs["runs"]) == 5
  first = runs["runs"][0]
  assert first == {"name": "base_s0", "budget": 200.0, "seed": 0,
                   "tokens": {"a": 100.0, "b": 100.0},
                   "eval": {"a": 10.0, "b": 12.0}}  # empty aggregate dropped
  data = ddo.load_runs(runs)
  assert data.domains == ["a", "b"] and data.bases == {0: "base_s0"}


def test_csv_aggregate_alone_is_the_fit_target(tmp_path):
  text = ("name,budget,seed,tokens.a,tokens.b,loss.aggregate,steps\n"
          "base,200,0,100,100,2.0,3\n"
          "a_lo,200,0,20,100,2.2,3\n"
          "a_hi,200,0,300,100,1.9,3\n"
          "b_lo,200,0,100,20,2.1,3\n"
          "b_hi,200,0,100,300,1.95,3\n")
  (runs,) = _read(tmp_path, text).values()
  data = ddo.load_runs(runs)
  assert runs["metric"] == "loss" and data.eval_domains == ["aggregate"]
  agg, base, _, targets = ddo.aggregates(data)
  assert targets == {"aggregate": 1.0} and base == {0: 2.0}
  assert agg["a_lo"] == 2.2
  with pytest.raises(ddo.RunsError, match="target domain"):
    ddo.aggregates(data, target_domains={"a": 1.0})


@pytest.mark.parametrize("text,words", [
    ("", "empty CSV"),
    ("name,seed,tokens.a,ppl.a\nx,0,1,2\n", "missing column(s) budget"),
    ("name,budget,seed,ppl.a\nx,1,0,2\n", "no tokens.<domain> column"),
    ("name,budget,seed,tokens.a\nx,1,0,2\n", "no metric column"),
    ("name,budget,seed,tokens.a,ppl.a,loss.b\nx,1,0,2,3,4\n",
     "mix loss and ppl"),
    ("name,budget,seed,tokens.a,ppl.a,note\nx,1,0,2,3,hi\n",
     "unknown column(s) 'note'"),
    ("name,budget,seed,tokens.a,tokens.a,ppl.a\nx,1,0,2,2,3\n",
     "'tokens.a' appears twice"),
    ("name,budget,seed,tokens.a,ppl.a\n", "no runs below the header"),
    ("name,budget,seed,tokens.a,ppl.a\nx,1,0,2\n", "line 2 has 4 cells"),
    ("name,budget,seed,tokens.a,ppl.a\nx,1,0,2,3\nx,1,0,2,3\n",
     "run 'x' appears twice (lines 2 and 3)"),
    ("name,budget,seed,tokens.a,ppl.a\nx,1,0,2,abc\n",
     "run 'x' (line 2): column ppl.a='abc' is not a number"),
    ("name,budget,seed,tokens.a,ppl.a\nx,1,0,two,3\n",
     "column tokens.a='two' is not a number"),
    ("name,budget,seed,tokens.a,ppl.a\nx,-4,0,2,3\n", "column budget='-4'"),
    ("name,budget,seed,tokens.a,ppl.a\nx,1,0.5,2,3\n", "column seed='0.5'"),
    ("name,budget,seed,tokens.a,ppl.a\nx,1,0,2,3\ny,1,0,2,\n",
     "run 'y' (line 3): column ppl.a is empty"),
    ("name,budget,seed,tokens.a,ppl.a\nx,1,0,2,\n",
     "every metric column is empty"),
    ("name,budget,seed,tokens.a,ppl.a\n,1,0,2,3\n", "column name is empty"),
])
def test_csv_reader_errors_are_one_line(tmp_path, text, words):
  with pytest.raises(results.ResultsError) as e:
    _read(tmp_path, text)
  msg = str(e.value)
  assert words in msg and "\n" not in msg and "runs.csv" in msg, msg


def test_json_results_group_by_budget_and_drop_unset_evals(tmp_path):
  runs = [{"name": n, "budget": 100, "tokens": {"a": 1}, "seed": 0,
           "eval": {"a": 1.0, "aggregate": None}} for n in ("x", "y")]
  groups = _read(tmp_path, json.dumps({"metric": "ppl", "runs": runs}),
                 "runs.json")
  assert list(groups) == [100.0]
  assert [r["eval"] for r in groups[100.0]["runs"]] == [{"a": 1.0}] * 2
  legacy = _read(tmp_path, json.dumps({"metric": "ppl", "runs": [
      {"name": "x", "tokens": {"a": 1}, "eval": {"a": 1.0}}]}), "legacy.json")
  assert list(legacy) == [None]
  runs[1].pop("budget")
  with pytest.raises(results.ResultsError, match="has no budget"):
    _read(tmp_path, json.dumps({"metric": "ppl", "runs": runs}), "r.json")
  with pytest.raises(results.ResultsError, match="no such results file"):
    results.read_results(tmp_path / "missing.csv")
