"""records: the typed contracts read and write exactly the project's JSON."""

import ast
import json
import pathlib

import pytest

from autoscale_jax import errors, records
from autoscale_jax.experiments import store
from autoscale_jax.mixing import baselines, ddo, noise, projection, simulate

DOMS = ["a", "b", "c"]


def _ddo_mixture(tmp_path, seeds=(0,), noise=0.0,
                 factors=(0.2, 0.5, 2.0, 3.0)):
  plan = ddo.plan_runs(DOMS, 3000, factors=factors, seeds=seeds)
  truth = simulate.PowerLawTruth.from_relative(
      DOMS, [0.5, 0.3, 0.1], [1.0, 0.7, 0.4], budget=3000)
  mix = ddo.fit_and_solve(simulate.simulate_runs(plan, truth, noise=noise,
                                                 seed=1), bootstrap=20)
  path = tmp_path / "mixture.json"
  ddo.write_mixture(path, mix)
  return json.loads(path.read_text())


def _roundtrip(cls, obj):
  typed = cls.from_json(obj)
  assert typed.to_json() == obj
  assert cls.from_json(typed.to_json()) == typed
  return typed


def test_ddo_mixture_roundtrip_with_intervals(tmp_path):
  obj = _ddo_mixture(tmp_path, seeds=(0, 1), noise=0.003)
  assert obj["intervals"]  # the bootstrap ran
  m = _roundtrip(records.Mixture, obj)
  assert m.intervals == obj["intervals"]
  assert m.bound_domains == obj["bound_domains"]
  assert m.warnings == obj["warnings"]


def test_ddo_mixture_noise_roundtrips_as_a_field(tmp_path):
  plan = ddo.plan_runs(DOMS, 3000, factors=(0.2, 3.0), seeds=(0, 1))
  truth = simulate.PowerLawTruth.from_relative(
      DOMS, [0.5, 0.3, 0.1], [1.0, 0.7, 0.4], budget=3000)
  runs = simulate.simulate_runs(plan, truth, noise=0.003, seed=1)
  obj = ddo.fit_and_solve(runs, bootstrap=0)
  obj["noise"] = noise.measure_noise(runs)
  path = tmp_path / "mixture.json"
  ddo.write_mixture(path, obj)
  obj = json.loads(path.read_text())
  m = _roundtrip(records.Mixture, obj)
  assert m.noise == obj["noise"] and "noise" not in m.extra
  assert m.noise["num_seeds"] == 2 and m.noise["seed_noise"] > 0
  # A null noise (or none at all) is no field, and still round-trips.
  assert _roundtrip(records.Mixture, {**obj, "noise": None}).noise is None
  assert records.Mixture.from_json({"weights": {}, "tokens": {}}).noise is None


def test_ddo_mixture_roundtrip_without_intervals(tmp_path):
  obj = _ddo_mixture(tmp_path, factors=(0.5, 2.0))  # no noise estimate
  assert obj["intervals"] == {}
  assert _roundtrip(records.Mixture, obj).intervals == {}


def test_projected_mixture_roundtrip_and_bands_are_the_intervals(tmp_path):
  optima = []
  for budget, scale in ((100.0, 0.9), (400.0, 1.1)):
    tok = {"a": 0.5 * budget, "b": 0.3 * budget, "c": 0.2 * budget}
    w = {d: t / budget for d, t in tok.items()}
    optima.append({"budget_tokens": budget, "tokens": tok, "weights": w,
                   "intervals": {d: [v * 0.9, v * 1.1 * scale]
                                 for d, v in w.items()}})
  obj = json.loads(json.dumps(projection.project(optima, 2000.0)))
  assert obj["bands"] and "intervals" not in obj
  m = _roundtrip(records.Mixture, obj)
  assert m.intervals == obj["bands"]["weights"]
  assert m.bound_domains is None
  assert m.notes == obj["notes"]
  no_bands = json.loads(json.dumps(projection.project(
      [{k: v for k, v in o.items() if k != "intervals"} for o in optima],
      2000.0)))
  assert no_bands["bands"] is None
  assert _roundtrip(records.Mixture, no_bands).intervals is None


def test_baseline_mixture_roundtrip():
  obj = baselines.resolve_mixture("uniform", DOMS, 1000)
  m = _roundtrip(records.Mixture, obj)
  assert m.name == "uniform" and m.budget_tokens == 1000


def test_old_spellings_read_into_one_canonical_field():
  base = {"weights": {"a": 0.5, "b": 0.5}, "tokens": {"a": 5, "b": 5}}
  for key, val, want in (
      ("bound_domains", {"a": "lower", "b": None}, {"a": "lower"}),
      ("at_bound", ["a", "b"], {"a": "bound", "b": "bound"}),
      ("pinned_domains", {"b": "upper"}, {"b": "upper"}),
      ("pinned_domains", {"b": True}, {"b": "bound"})):
    m = records.Mixture.from_json({**base, key: val})
    assert m.bound_domains == want, key
    assert m.to_json() == {**base, "bound_domains": want}
  iv = {"a": [0.4, 0.6], "b": [0.4, 0.6]}
  for obj in ({**base, "intervals": iv},
              {**base, "intervals": {"weights": iv}},
              {**base, "bands": {"weights": iv, "method": "m"}}):
    assert records.Mixture.from_json(obj).intervals == iv
    assert records.weight_intervals(obj) == iv


def test_projection_reads_every_pinned_spelling_alike():
  opt = [{"budget_tokens": b, "tokens": {"a": 0.6 * b, "b": 0.4 * b},
          "weights": {"a": 0.6, "b": 0.4}} for b in (100.0, 300.0)]
  flags = []
  for key, val in (("bound_domains", {"a": "bound"}), ("at_bound", ["a"]),
                   ("pinned_domains", {"a": "bound"})):
    out = projection.project([{**opt[0], key: val}, opt[1]], 1000.0)
    flags.append(out["bound_flags"])
  assert flags[0] == flags[1] == flags[2] and set(flags[0]) == {"a"}


def test_planned_run_roundtrip():
  plan = ddo.plan_runs(DOMS, 3000, factors=(0.5, 2.0), seeds=(0, 3))
  runs = [_roundtrip(records.PlannedRun, r) for r in plan]
  assert runs[0].domain is None and runs[0].factor == 1.0
  assert {r.seed for r in runs} == {0, 3}


def test_run_record_roundtrip_through_the_store(tmp_path):
  mixture = baselines.resolve_mixture("uniform", DOMS, 30)
  final_eval = {"aggregate": {"loss": 2.0, "ppl_seq": 7.0, "bpb": 1.0},
                "domains": {d: {"loss": 2.0, "ppl_seq": 7.0} for d in DOMS}}
  rec = records.RunRecord(
      name="final_uniform", fingerprint="ab" * 32,
      identity={"name": "final_uniform", "seed": 0}, tokens=mixture["tokens"],
      seed=0, steps=3, tokens_trained=mixture["tokens"], final_eval=final_eval,
      curve=[{"step": 3, "aggregate": {"ppl_seq": 7.0}}], wall_seconds=1.5,
      run_dir="/x/runs/final_uniform-abababab", kind="final",
      mixture=records.Mixture.from_json(mixture))
  s = store.ExperimentStore(tmp_path / "store")
  s.put(rec.to_json())
  stored = s.get(rec.name, rec.fingerprint)
  # The store adds its checksum; it is store metadata, not record content.
  assert records.CHECKSUM_KEY in stored
  stored = {k: v for k, v in stored.items() if k != records.CHECKSUM_KEY}
  assert records.RunRecord.from_json(
      {**stored, records.CHECKSUM_KEY: "x"}) == records.RunRecord.from_json(stored)
  back = _roundtrip(records.RunRecord, stored)
  assert back == rec and back.display_name == "uniform"
  ddo_rec = {**stored, "kind": "ddo", "budget_index": 0, "domain": None,
             "factor": 1.0, "plan_seed": 0}
  del ddo_rec["mixture"]
  back = _roundtrip(records.RunRecord, ddo_rec)
  assert back.extra == {"budget_index": 0, "domain": None, "factor": 1.0,
                        "plan_seed": 0}
  assert back.display_name == "final_uniform"


def test_missing_field_is_a_user_error():
  with pytest.raises(records.RecordError, match="'tokens'") as e:
    records.Mixture.from_json({"weights": {"a": 1.0}}, "x.json")
  assert isinstance(e.value, errors.UserError) and "x.json" in str(e.value)
  with pytest.raises(records.RecordError, match="expected a JSON object"):
    records.RunRecord.from_json([1, 2])


def _imports(path):
  """(module-level imports, function-local imports) of a source file."""
  tree = ast.parse(path.read_text())
  top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
  local = [n for n in ast.walk(tree) if isinstance(n, (ast.Import,
                                                       ast.ImportFrom))
           and n not in top]

  def names(nodes):
    out = set()
    for n in nodes:
      if isinstance(n, ast.ImportFrom):
        out |= {f"{n.module}.{a.name}" for a in n.names}
      else:
        out |= {a.name for a in n.names}
    return out
  return names(top), names(local)


def test_layers_mixing_and_records_stay_below_the_study():
  pkg = pathlib.Path(records.__file__).parent
  forbidden = ("autoscale_jax.study", "autoscale_jax.train",
               "autoscale_jax.models", "autoscale_jax.data")
  for path in [pkg / "records.py", *sorted((pkg / "mixing").glob("*.py"))]:
    top, local = _imports(path)
    bad = [m for m in top | local if m.startswith(forbidden)]
    assert not bad, f"{path.name} imports {bad}"
  top, _ = _imports(pkg / "records.py")
  assert {m for m in top if m.startswith("autoscale_jax")} == {
      "autoscale_jax.errors"}


def test_study_has_no_function_local_imports():
  paths = sorted((pathlib.Path(records.__file__).parent / "study").glob("*.py"))
  assert len(paths) >= 8
  for path in paths:
    _, local = _imports(path)
    assert not local, f"{path.name}: move {sorted(local)} to the module top"
