"""Tokenizers and the token store."""

import os

import numpy as np
import pytest

from autoscale_jax.data import fixture
from autoscale_jax.data import sources
from autoscale_jax.data import token_store
from autoscale_jax.data import tokenizers


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("fx"))
  fixture.make_fixture_corpus(d, ["alpha", "beta"], 10)
  return sources.read_corpus_dir(d, ["alpha", "beta"])


def test_gpt2_offline_hello_world():
  tok = tokenizers.GPT2Tokenizer()
  np.testing.assert_array_equal(tok.encode("Hello world"), [15496, 995])
  assert tok.encode("Hello world").dtype == np.int32
  assert tok.decode([15496, 995]) == "Hello world"
  assert tok.vocab_size == 50257 and tok.eos_id == 50256
  assert tok.mask_id is None
  assert tokenizers._gpt2_pinned_hashes() == (
      tokenizers.GPT2_ENCODER_JSON_SHA256, tokenizers.GPT2_VOCAB_BPE_SHA256)


def test_byte_tokenizer_matches_seqio_ids():
  tok = tokenizers.ByteTokenizer()
  text = "héllo, wörld ✓\n"
  ids = tok.encode(text)
  assert tok.decode(ids) == text
  assert ids.min() >= 3 and ids.max() < 259
  assert tok.token_byte_lengths()[ids].sum() == len(text.encode())
  assert {tok.pad_id, tok.eos_id, tok.cls_id, tok.sep_id, tok.mask_id} == {
      0, 1, 259, 260, 261}
  assert tok.vocab_size == 262


def test_sentencepiece_settings_cache_and_roundtrip(docs, tmp_path):
  p1 = tokenizers.train_sentencepiece(docs, 400, str(tmp_path))
  mtime = os.path.getmtime(p1)
  p2 = tokenizers.train_sentencepiece(docs, 400, str(tmp_path))
  assert p1 == p2 and os.path.getmtime(p2) == mtime  # cached, not retrained
  tok = tokenizers.SentencePieceTokenizer(p1)
  assert (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
  assert None not in (tok.cls_id, tok.sep_id, tok.mask_id)
  assert tok.vocab_size <= 400
  text = docs["alpha"][0] + "  Ünïcode ✓ 12345\ttab"
  ids = tok.encode(text)
  assert tok.decode(ids) == text  # identity normalisation + byte fallback
  assert tok.token_byte_lengths()[ids].sum() == len(text.encode())
  assert 2 not in ids.tolist()  # no unk thanks to byte fallback
  other = tokenizers.train_sentencepiece({"alpha": docs["alpha"]}, 400,
                                         str(tmp_path))
  assert other != p1


def test_token_store_cached_and_fingerprinted(docs, tmp_path):
  tok = tokenizers.ByteTokenizer()
  s1 = token_store.build_token_store(docs, tok, str(tmp_path))
  files = sorted(os.listdir(tmp_path / "tokens"))
  s2 = token_store.build_token_store(docs, tok, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "tokens")) == files
  assert not any(f.endswith(".tmp") for f in files)
  for d in docs:
    assert s1[d].fingerprint == s2[d].fingerprint
    np.testing.assert_array_equal(s1[d].tokens, s2[d].tokens)
    assert s1[d].num_docs == len(docs[d])
    np.testing.assert_array_equal(s1[d].doc(3)[:-1], tok.encode(docs[d][3]))
    assert s1[d].doc(3)[-1] == tok.eos_id
  changed = dict(docs, alpha=docs["alpha"][:-1])
  s3 = token_store.build_token_store(changed, tok, str(tmp_path))
  assert s3["alpha"].fingerprint != s1["alpha"].fingerprint
  assert s3["beta"].fingerprint == s1["beta"].fingerprint


def test_heldout_choice_is_fixed_and_checked():
  a = token_store.heldout_doc_ids("x", 50, 5, "f" * 64)
  b = token_store.heldout_doc_ids("x", 50, 5, "f" * 64)
  np.testing.assert_array_equal(a, b)
  assert len(set(a.tolist())) == 5
  with pytest.raises(sources.DataError, match="heldout_docs"):
    token_store.heldout_doc_ids("x", 5, 5, "f" * 64)
