"""Tests of the built-in baselines (the exports are in test_export.py)."""

import json

import pytest

from autoscale_jax.mixing import baselines as BL

RP = ["common_crawl", "c4", "github", "book", "wikipedia", "arxiv",
      "stack_exchange"]


def test_llama_mapping_spellings():
  out = BL.resolve_mixture("llama", RP, 1_000_000)
  assert out["weights"]["common_crawl"] == pytest.approx(0.67)
  assert out["weights"]["book"] == pytest.approx(0.045)
  assert out["weights"]["stack_exchange"] == pytest.approx(0.02)
  assert sum(out["tokens"].values()) == 1_000_000
  assert out["tokens"]["c4"] == 150_000
  assert "LLaMA-1" in out["source"]
  alt = ["CommonCrawl", "C4", "GitHub", "Books", "Wiki", "ArXiv",
         "StackExchange"]
  w = BL.resolve_mixture("LLaMA-1", alt, 10)["weights"]
  assert w["Wiki"] == pytest.approx(0.045)
  assert w["CommonCrawl"] == pytest.approx(0.67)
  assert BL.resolve_mixture("llama", ["cc", "c4"], 100)["weights"]["cc"] == \
      pytest.approx(0.67 / 0.82)


def test_llama_errors():
  with pytest.raises(BL.BaselineError, match="unknown domain.*python_docs"):
    BL.resolve_mixture("llama", ["c4", "python_docs"], 100)
  with pytest.raises(BL.BaselineError, match="'book' and 'books'"):
    BL.resolve_mixture("llama", ["book", "books"], 100)


def test_uniform_and_proportional_rounding():
  doms = ["a", "b", "c"]
  u = BL.resolve_mixture("uniform", doms, 100)
  assert u["tokens"] == {"a": 34, "b": 33, "c": 33}
  assert sum(u["weights"].values()) == pytest.approx(1.0)
  p = BL.resolve_mixture("proportional", doms, 1001,
                         available_tokens={"a": 1, "b": 2, "c": 4})
  assert p["weights"]["c"] == pytest.approx(4 / 7)
  assert sum(p["tokens"].values()) == 1001
  assert p["tokens"] == {"a": 143, "b": 286, "c": 572}
  with pytest.raises(BL.BaselineError, match="available_tokens"):
    BL.resolve_mixture("proportional", doms, 10)
  with pytest.raises(BL.BaselineError, match="lacks domain.*c"):
    BL.resolve_mixture("natural", doms, 10, available_tokens={"a": 1, "b": 1})


@pytest.mark.parametrize("budget", [1, 7, 999, 123457])
def test_largest_remainder_exact(budget):
  w = {"x": 0.1234, "y": 0.3, "z": 0.5766, "w": 1e-9}
  t = BL.largest_remainder(w, budget)
  assert sum(t.values()) == budget
  for d in w:
    assert abs(t[d] - w[d] / sum(w.values()) * budget) < 1


def test_ddo_small_and_user_files(tmp_path):
  doms = ["a", "b"]
  small = {"budget_tokens": 1e5, "weights": {"a": 0.25, "b": 0.75},
           "tokens": {"a": 2.5e4, "b": 7.5e4}}
  p = tmp_path / "mixture.json"
  p.write_text(json.dumps(small))
  out = BL.resolve_mixture("ddo_small", doms, 1000, ddo_small=str(p))
  assert out["tokens"] == {"a": 250, "b": 750} and out["name"] == "ddo_small"
  assert "100000" in out["source"]
  assert BL.resolve_mixture("ddo", doms, 4, ddo_small=small)["tokens"] == \
      {"a": 1, "b": 3}
  with pytest.raises(BL.BaselineError, match="ddo_small.*needs"):
    BL.resolve_mixture("ddo_small", doms, 10)
  plain = tmp_path / "mine.json"
  plain.write_text(json.dumps({"a": 2, "b": 6}))
  out = BL.resolve_mixture(str(plain), doms, 8)
  assert out["weights"] == {"a": 0.25, "b": 0.75} and out["name"] == "mine"
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"a": 1, "zz": 1}))
  with pytest.raises(BL.BaselineError, match=r"bad\.json lacks domain.*b.*zz"):
    BL.resolve_mixture(str(bad), doms, 8)
  neg = tmp_path / "neg.json"
  neg.write_text(json.dumps({"a": -1, "b": 1}))
  with pytest.raises(BL.BaselineError, match="'a'"):
    BL.resolve_mixture(str(neg), doms, 8)
  with pytest.raises(BL.BaselineError,
                     match="unknown mixture 'doremi'.*uniform"):
    BL.resolve_mixture("doremi", doms, 8)

