"""study.provenance: the checks between stages, on plain dicts."""

import pytest

from autoscale_jax import errors
from autoscale_jax.study import options
from autoscale_jax.study import provenance


def test_same_budget_allows_quota_round_off_only():
  assert provenance.same_budget(4095.0, 4096.0)  # integer quotas
  assert not provenance.same_budget(8192.0, 16384.0)
  assert not provenance.same_budget(None, 4096.0)
  assert not provenance.same_budget("x", 4096.0)
  assert not provenance.same_budget(float("nan"), 4096.0)


def test_first_difference_names_the_key_and_skips_unrecorded_keys():
  made = {"budget_tokens": 4096.0, "estimator": "paper"}
  assert provenance.first_difference(made, {"budget_tokens": 4096.0,
                                            "estimator": "paper",
                                            "new_key": 1}) is None
  diff = provenance.first_difference(made, {"estimator": "joint"})
  assert diff == 'estimator was "paper", the config now gives "joint"'
  diff = provenance.first_difference({"runs": {"a": "1"}}, {"runs": {"a": "2"}})
  assert "fingerprints differ" in diff


def test_check_ddo_optimum_refuses_other_budget_and_other_runs():
  optimum = {"budget_tokens": 8191.0,
             "provenance": {"budget_tokens": 8192.0, "runs": {"b1": "f1"}}}
  provenance.check_ddo_optimum("m.json", optimum, 8192.0,
                               {"budget_tokens": 8192.0, "runs": {"b1": "f1"}})
  with pytest.raises(options.StageError) as e:
    provenance.check_ddo_optimum("m.json", optimum, 16384.0, {})
  assert isinstance(e.value, errors.UserError)
  msg = str(e.value)
  assert "m.json" in msg and "16384" in msg and "--stage=ddo" in msg
  assert "\n" not in msg
  with pytest.raises(options.StageError, match="m.json is stale .*runs'"):
    provenance.check_ddo_optimum("m.json", optimum, 8192.0,
                                 {"budget_tokens": 8192.0,
                                  "runs": {"b1": "f2"}})
  # A file without provenance is checked on its budget alone.
  provenance.check_ddo_optimum("m.json", {"budget_tokens": 8192.0}, 8192.0,
                               {"runs": {"b1": "f2"}})


def test_check_projection_names_the_stage_to_rerun():
  projected = {"budget_tokens": 32768.0,
               "provenance": {"target_tokens": 32768.0, "estimator": "paper",
                              "ddo_mixtures": [{"sha256": "a"}]}}
  ok = {"target_tokens": 32768.0, "estimator": "paper",
        "ddo_mixtures": [{"sha256": "a"}]}
  provenance.check_projection("p.json", projected, 32768.0, ok)
  with pytest.raises(options.StageError, match="target of 32768.0 tokens.*"
                     "65536.*--stage=project"):
    provenance.check_projection("p.json", projected, 65536.0, ok)
  with pytest.raises(options.StageError, match="DDO optimum .* changed"):
    provenance.check_projection("p.json", projected, 32768.0,
                                {**ok, "ddo_mixtures": [{"sha256": "b"}]})


def test_read_json_names_missing_and_corrupt_files(tmp_path):
  with pytest.raises(options.StageError, match="missing: run --stage=ddo"):
    provenance.read_json(tmp_path / "none.json", "--stage=ddo")
  bad = tmp_path / "bad.json"
  bad.write_text('{"weights": ')
  with pytest.raises(options.StageError, match="not valid JSON"):
    provenance.read_json(bad, "--stage=ddo")
  bad.write_text("[1]")
  with pytest.raises(options.StageError, match="not a JSON object"):
    provenance.read_json(bad, "--stage=ddo")
