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


# ------------------------------------------------- integrity (checksums)


def _file(s, name, fp):
  return epath.Path(s.root) / f"{name}__{fp[:16]}.json"


def test_put_adds_checksum_of_content_and_get_verifies(tmp_path):
  import hashlib
  import json
  s = store.ExperimentStore(tmp_path)
  fp = store.fingerprint({"run": 1})
  rec = _record("base_s0", fp)
  rec["checksum"] = "0" * 64  # a caller's field of that name is replaced
  s.put(rec)
  on_disk = json.loads(_file(s, "base_s0", fp).read_text())
  content = {k: v for k, v in on_disk.items() if k != "checksum"}
  assert on_disk["checksum"] == hashlib.sha256(
      store.canonical_json(content).encode()).hexdigest()
  assert content == store._canonical({k: v for k, v in rec.items()
                                      if k != "checksum"})
  assert s.get("base_s0", fp)["final_eval"] == rec["final_eval"]
  assert s.status([("base_s0", fp)])["done"] == ["base_s0"]
  assert s.unverified == []


def test_edited_record_is_reported_never_reused(tmp_path):
  import json
  s = store.ExperimentStore(tmp_path)
  fp = store.fingerprint({"run": 1})
  s.put(_record("a_x3_s0", fp, ppl=10.0))
  path = _file(s, "a_x3_s0", fp)
  rec = json.loads(path.read_text())
  rec["final_eval"]["domains"]["a"]["ppl_seq"] *= 0.7  # still valid JSON
  path.write_text(json.dumps(rec, indent=2))
  for read in (lambda: s.get("a_x3_s0", fp), s.records,
               lambda: s.status([("a_x3_s0", fp)])):
    with pytest.raises(store.StoreError) as e:
      read()
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert "edited after it was written (checksum mismatch)" in msg
    assert "delete it to retrain run 'a_x3_s0'" in msg
  # An edit to a number JSON allows but the store cannot hold is an edit too.
  path.write_text(path.read_text().replace('"bpb": 1.0', '"bpb": NaN', 1))
  with pytest.raises(store.StoreError, match="checksum mismatch"):
    s.get("a_x3_s0", fp)


def test_record_without_checksum_is_used_with_a_note_not_rewritten(
    tmp_path, caplog):
  import json
  s = store.ExperimentStore(tmp_path)
  fp = store.fingerprint({"run": 1})
  path = _file(s, "base_s0", fp)
  legacy = json.dumps(_record("base_s0", fp), indent=2, sort_keys=True)
  path.write_text(legacy)
  with caplog.at_level("WARNING", logger=store.__name__):
    assert s.get("base_s0", fp)["tokens"] == {"a": 100, "b": 100}
    assert s.status([("base_s0", fp)])["done"] == ["base_s0"]
  notes = [r.getMessage() for r in caplog.records if str(path) in
           r.getMessage()]
  assert len(notes) == 1 and "has no checksum" in notes[0]
  assert s.unverified == [str(path)]
  assert path.read_text() == legacy  # not rewritten behind the user's back


def test_truncated_or_garbage_record_names_the_file(tmp_path):
  from autoscale_jax.errors import UserError
  s = store.ExperimentStore(tmp_path)
  fp = store.fingerprint({"run": 1})
  s.put(_record("r", fp))
  path = _file(s, "r", fp)
  whole = path.read_bytes()
  for content in (whole[:len(whole) // 2], b"\xff\xfe\x00garbage", b"",
                  b"[1, 2]"):
    path.write_bytes(content)
    with pytest.raises(store.StoreError) as e:
      s.get("r", fp)
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert "delete it" in str(e.value)
