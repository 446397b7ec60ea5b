"""Experiment store: fingerprints, atomic records, stale detection, RUNS.json."""

import os

import pytest
from etils import epath
from etils.epath import testing as epath_testing

from autoscale_jax.experiments import store
from autoscale_jax.mixing import ddo


def _record(name, fp, tokens=None, seed=0, ppl=10.0):
  tokens = tokens or {"a": 100, "b": 100}
  return {"name": name, "fingerprint": fp, "tokens": tokens, "seed": seed,
          "final_eval": {"domains": {d: {"loss": 2.0, "ppl_seq": ppl,
                                         "ppl_tok": ppl, "bpb": 1.0}
                                     for d in tokens}}}


def test_fingerprint_is_canonical():
  f1 = store.fingerprint({"b": [1, 2.0], "a": {"y": 1, "x": "s"}})
  f2 = store.fingerprint({"a": {"x": "s", "y": 1}, "b": (1, 2.0)})
  assert f1 == f2 and len(f1) == 64
  assert store.fingerprint({"a": 1}) != store.fingerprint({"a": 2})
  with pytest.raises(store.StoreError, match="non-finite"):
    store.fingerprint({"a": float("nan")})


def test_put_get_records_and_no_temp_files(tmp_path):
  s = store.ExperimentStore(str(tmp_path / "store"))
  fp = store.fingerprint({"run": 1})
  s.put(_record("base_s0", fp))
  assert s.get("base_s0", fp)["tokens"] == {"a": 100, "b": 100}
  assert s.get("base_s0", store.fingerprint({"run": 2})) is None
  assert [r["name"] for r in s.records()] == ["base_s0"]
  assert os.listdir(tmp_path / "store") == [f"base_s0__{fp[:16]}.json"]


def test_interrupted_write_leaves_old_record(tmp_path):
  s = store.ExperimentStore(epath.Path(tmp_path))
  fp = store.fingerprint({"run": 1})
  s.put(_record("r", fp, ppl=10.0))

  def boom(original_fn, path, *args, **kwargs):
    raise OSError("killed mid-rename")

  with epath_testing.mock_epath(replace=boom, rename=boom):
    with pytest.raises(OSError, match="killed"):
      s.put(_record("r", fp, ppl=99.0))
  rec = s.get("r", fp)
  assert rec["final_eval"]["domains"]["a"]["ppl_seq"] == 10.0
  assert sorted(os.listdir(tmp_path)) == [f"r__{fp[:16]}.json"]


def test_status_reports_stale_never_reuses(tmp_path):
  s = store.ExperimentStore(tmp_path)
  old, new = store.fingerprint({"lr": 1}), store.fingerprint({"lr": 2})
  s.put(_record("base_s0", new))
  s.put(_record("a_x3_s0", old))
  st = s.status([("base_s0", new), ("a_x3_s0", new), ("b_x3_s0", new)])
  assert st["done"] == ["base_s0"]
  assert st["missing"] == ["a_x3_s0", "b_x3_s0"]
  assert st["stale"] == [{"name": "a_x3_s0", "fingerprint": old,
                          "expected": new}]
  assert s.get("a_x3_s0", new) is None


def test_bad_names_and_corrupt_files(tmp_path):
  s = store.ExperimentStore(tmp_path)
  with pytest.raises(store.StoreError, match="run name"):
    s.put(_record("bad/name", store.fingerprint(1)))
  (tmp_path / "x__0123456789abcdef.json").write_text("{oops")
  with pytest.raises(store.StoreError, match="x__0123456789abcdef.json"):
    s.records()


def test_gs_style_root_is_an_epath():
  """gs:// roots resolve through epath (no network: only path arithmetic)."""
  s = store.ExperimentStore("gs://bucket/study/runs")
  assert isinstance(s.root, epath.Path)
  fp = store.fingerprint({"run": 1})
  assert os.fspath(s._path("base_s0", fp)) == (
      f"gs://bucket/study/runs/base_s0__{fp[:16]}.json")


def test_to_runs_json_feeds_load_runs():
  recs = [_record("base_s0", "0" * 64, {"a": 100, "b": 100}, ppl=10.0),
          _record("a_x0.2_s0", "1" * 64, {"a": 20, "b": 100}, ppl=11.0),
          _record("a_x3_s0", "2" * 64, {"a": 300, "b": 100}, ppl=9.5),
          _record("b_x0.2_s0", "3" * 64, {"a": 100, "b": 20}, ppl=10.5),
          _record("b_x3_s0", "4" * 64, {"a": 100, "b": 300}, ppl=9.8)]
  doc = store.to_runs_json(recs, "ppl_seq")
  assert doc["metric"] == "ppl" and doc["runs"][1]["eval"]["a"] == 11.0
  data = ddo.load_runs(doc)
  assert data.bases == {0: "base_s0"}
  assert store.to_runs_json(recs, "loss")["metric"] == "loss"
  with pytest.raises(store.StoreError, match="metric"):
    store.to_runs_json(recs, "acc")
