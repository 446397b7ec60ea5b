"""Document sources: corrupt/empty files, bring-your-own JSONL/txt, TFDS."""

import gzip
import json
import os

import numpy as np
import pytest

from autoscale_jax import config as config_lib
from autoscale_jax.data import fixture
from autoscale_jax.data import pipeline
from autoscale_jax.data import sources
from autoscale_jax.data.sources import DataError


def _write_jsonl(path, texts, field="text"):
  with open(path, "w", encoding="utf-8") as f:
    for t in texts:
      f.write(json.dumps({field: t, "meta": 1}) + "\n")


def test_fixture_is_deterministic_and_distinct(tmp_path):
  a = fixture.make_fixture_corpus(str(tmp_path / "a"), ["x", "y"], 5, seed=0)
  b = fixture.make_fixture_corpus(str(tmp_path / "b"), ["x", "y"], 5, seed=0)
  for d in ("x", "y"):
    assert open(os.path.join(a, f"{d}.jsonl"), "rb").read() == open(
        os.path.join(b, f"{d}.jsonl"), "rb").read()
  docs = sources.read_corpus_dir(a, ["x", "y"])
  assert all(len(t) >= 1000 for d in docs.values() for t in d)
  words = {d: set(" ".join(docs[d]).split()) for d in docs}
  assert len(words["x"] & words["y"]) < 0.1 * len(words["x"])
  assert json.load(open(os.path.join(a, "manifest.json")))["domains"]["x"][
      "documents"] == 5


def test_corrupt_json_names_file_and_line(tmp_path):
  p = tmp_path / "bad.jsonl"
  p.write_text('{"text": "ok"}\n{"text": "broken\n', encoding="utf-8")
  with pytest.raises(DataError) as e:
    sources.read_jsonl(str(p))
  assert f"{p}:2:" in str(e.value) and "corrupt JSON" in str(e.value)
  assert "\n" not in str(e.value)


def test_empty_missing_and_fieldless_files(tmp_path):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n", encoding="utf-8")
  with pytest.raises(DataError, match=f"{empty}: empty"):
    sources.read_jsonl(str(empty))
  with pytest.raises(DataError, match="file not found"):
    sources.read_jsonl(str(tmp_path / "nope.jsonl"))
  nofield = tmp_path / "f.jsonl"
  _write_jsonl(nofield, ["abc"], field="content")
  with pytest.raises(DataError, match=r"f.jsonl:1: no field 'text'"):
    sources.read_jsonl(str(nofield))
  bad_gz = tmp_path / "x.jsonl.gz"
  bad_gz.write_bytes(b"not gzip at all")
  with pytest.raises(DataError, match="x.jsonl.gz"):
    sources.read_jsonl(str(bad_gz))
  blank_txt = tmp_path / "t.txt"
  blank_txt.write_text("  \n", encoding="utf-8")
  with pytest.raises(DataError, match="empty text file"):
    sources.read_txt(str(blank_txt))


def test_corrupt_corpus_file_fails_prepare_data(tmp_path):
  corpus = fixture.make_fixture_corpus(str(tmp_path / "corpus"), ["a", "b"], 8)
  with open(os.path.join(corpus, "b.jsonl"), "a", encoding="utf-8") as f:
    f.write("{oops\n")
  c = config_lib.base_config()
  c.data.source = "fixture"
  c.data.domains = ["a", "b"]
  c.data.tokenizer = "byte"
  c.data.heldout_docs = 2
  with pytest.raises(DataError, match=r"b.jsonl:9: corrupt JSON"):
    pipeline.prepare_data(c, str(tmp_path))


def test_byo_jsonl_txt_gz_through_prepare_data(tmp_path):
  src = fixture.make_fixture_corpus(str(tmp_path / "fx"), ["p", "q"], 12)
  docs = sources.read_corpus_dir(src, ["p", "q"])
  # RedPajama layout: a folder per domain; mixed .jsonl, .jsonl.gz and .txt.
  (tmp_path / "byo" / "p").mkdir(parents=True)
  (tmp_path / "byo" / "q").mkdir(parents=True)
  _write_jsonl(tmp_path / "byo" / "p" / "part0.jsonl", docs["p"][:6], "body")
  with gzip.open(tmp_path / "byo" / "p" / "part1.jsonl.gz", "wt") as f:
    for t in docs["p"][6:]:
      f.write(json.dumps({"body": t}) + "\n")
  for i, t in enumerate(docs["q"]):
    (tmp_path / "byo" / "q" / f"{i:02d}.txt").write_text(t, encoding="utf-8")
  c = config_lib.base_config()
  c.data.source = "jsonl"
  c.data.domains = ["p", "q"]
  c.data.paths.p = str(tmp_path / "byo" / "p")
  c.data.paths.q = str(tmp_path / "byo" / "q" / "*.txt")
  c.data.text_field = "body"
  c.data.tokenizer = "byte"
  c.data.heldout_docs = 2
  c.train.seq_len = 32
  c.model.max_len = 32
  config_lib.validate(c)
  got = sources.load_documents(c)
  assert got == docs
  b = pipeline.prepare_data(c, str(tmp_path / "wd"))
  qb = b.quota_batches({"p": 100, "q": 50}, seed=0)
  total = sum(float(qb.batch(s)["weights"].sum()) for s in range(qb.num_steps))
  assert total == 150
  c.data.paths.q = str(tmp_path / "byo" / "none*.jsonl")
  with pytest.raises(DataError, match="matches no"):
    sources.load_documents(c)


def test_tfds_spec_parsing():
  assert sources.parse_tfds_spec("wiki40b:en/train") == ("wiki40b", "en",
                                                         "train")
  assert sources.parse_tfds_spec("lm1b/test[:10%]") == ("lm1b", None,
                                                        "test[:10%]")
  for bad in ("lm1b", "/train", "a:b:c/train", "lm1b/"):
    with pytest.raises(DataError, match="name\\[:config\\]/split"):
      sources.parse_tfds_spec(bad)


def test_tfds_source_through_prepare_data(tmp_path):
  """A registered TFDS builder with tfds.testing.mock_data: no download."""
  tfds = pytest.importorskip("tensorflow_datasets")
  c = config_lib.base_config()
  c.data.source = "tfds"
  c.data.domains = ["one", "two"]
  c.data.tfds.one = "lm1b/train"
  c.data.tfds.two = "lm1b/test"
  c.data.tokenizer = "byte"
  c.data.heldout_docs = 2
  c.data.heldout_max_sequences = 2
  c.train.seq_len = 8
  c.model.max_len = 8
  config_lib.validate(c)
  with tfds.testing.mock_data(num_examples=12):
    b = pipeline.prepare_data(c, str(tmp_path))
  assert b.num_docs == {"one": 12, "two": 12}
  qb = b.quota_batches({"one": 8, "two": 3}, seed=0)
  w = np.concatenate([qb.batch(s)["weights"] for s in range(qb.num_steps)])
  assert w.sum() == 11
  with tfds.testing.mock_data(num_examples=3):
    with pytest.raises(DataError, match="no feature 'body'"):
      sources.read_tfds("lm1b/train", "body")
