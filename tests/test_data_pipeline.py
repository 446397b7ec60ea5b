"""Quota-mode pipeline: exact counts, fixed held-out sets, determinism, resume."""

import numpy as np
import pytest

from autoscale_jax import config as config_lib
from autoscale_jax.data import pipeline
from autoscale_jax.data.sources import DataError

DOMAINS = ["alpha", "beta", "gamma"]


def _config(tokenizer="byte", kind="gpt2", **data):
  c = config_lib.base_config()
  c.data.source = "fixture"
  c.data.domains = DOMAINS
  c.data.tokenizer = tokenizer
  c.data.vocab_size = 512
  c.data.heldout_docs = 4
  c.data.heldout_max_sequences = 4
  c.model.kind = kind
  c.model.max_len = 32
  c.train.seq_len = 32
  c.train.global_batch_size = 8
  for k, v in data.items():
    c.data[k] = v
  return c


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("wd"))


@pytest.fixture(scope="module", params=["byte", "sentencepiece"])
def bundle(request, workdir):
  return pipeline.prepare_data(_config(request.param), workdir)


@pytest.fixture(scope="module")
def bert_bundle(workdir):
  return pipeline.prepare_data(_config("sentencepiece", "bert"), workdir)


def _realised(qb, bert=False):
  got = {d: 0 for d in qb.domains}
  for s in range(qb.num_steps):
    b, dom = qb.batch(s), qb.batch_domains(s)
    for i, d in enumerate(qb.domains):
      rows = dom == i
      if bert:
        got[d] += int((b["segment_ids"][rows] > 0).sum()) - 2 * int(rows.sum())
      else:
        got[d] += float(b["weights"][rows].sum())
  return got


def test_realised_counts_equal_quotas(bundle):
  quota = {"alpha": 1000, "beta": 2345, "gamma": 1}
  qb = bundle.quota_batches(quota, seed=3)
  assert qb.tokens_per_domain == quota
  assert _realised(qb) == quota
  assert qb.num_steps == -(-sum(-(-q // 32) for q in quota.values()) // 8)


def test_bert_counts_and_masking(bert_bundle):
  quota = {"alpha": 700, "beta": 301, "gamma": 0}
  qb = bert_bundle.quota_batches(quota, seed=1)
  assert _realised(qb, bert=True) == quota
  tok = bert_bundle.tokenizer
  b = qb.batch(0)
  assert (b["targets"][:, 0][qb.batch_domains(0) >= 0] == tok.cls_id).all()
  assert set(b) >= {"inputs", "targets", "weights", "segment_ids",
                    "positions", "token_type_ids"}
  assert not b["token_type_ids"].any()
  # Masking statistics over the whole run: ~15%, of which ~80% [MASK].
  chosen = masked = content = 0
  for s in range(qb.num_steps):
    b = qb.batch(s)
    c = (b["segment_ids"] > 0) & (b["targets"] != tok.cls_id) & (
        b["targets"] != tok.sep_id)
    content += c.sum()
    w = b["weights"] > 0
    assert not (w & ~c).any()
    chosen += w.sum()
    masked += (w & (b["inputs"] == tok.mask_id)).sum()
    assert (b["inputs"][~w] == b["targets"][~w]).all()
  assert 0.11 < chosen / content < 0.19
  assert 0.7 < masked / chosen < 0.9
  # Deterministic per (seed, step, row); another seed masks differently.
  again = bert_bundle.quota_batches(quota, seed=1).batch(2)
  np.testing.assert_array_equal(again["inputs"], qb.batch(2)["inputs"])
  other = bert_bundle.quota_batches(quota, seed=2).batch(2)
  assert not np.array_equal(other["inputs"], again["inputs"])
  ev = bert_bundle.eval_sets()
  np.testing.assert_array_equal(ev["alpha"]["inputs"],
                                bert_bundle.eval_sets()["alpha"]["inputs"])
  assert ev["alpha"]["weights"].sum() > 0


def test_same_seed_same_batches_other_seed_differs(bundle):
  quota = {"alpha": 900, "beta": 900, "gamma": 900}
  a = bundle.quota_batches(quota, seed=7)
  b = bundle.quota_batches(quota, seed=7)
  c = bundle.quota_batches(quota, seed=8)
  for s in range(a.num_steps):
    for k, v in a.batch(s).items():
      np.testing.assert_array_equal(v, b.batch(s)[k])
  assert any(not np.array_equal(a.batch(s)["inputs"], c.batch(s)["inputs"])
             for s in range(a.num_steps))


def test_resume_at_step_k(bundle):
  quota = {"alpha": 1500, "beta": 600, "gamma": 900}
  unbroken = [b for b in bundle.quota_batches(quota, seed=1)]
  resumed = bundle.quota_batches(quota, seed=1)  # a fresh process
  for k in range(4, resumed.num_steps):
    for key, v in resumed.batch(k).items():
      np.testing.assert_array_equal(v, unbroken[k][key])


def test_lm_rows_are_shifted_windows_and_padding(bundle):
  qb = bundle.quota_batches({"alpha": 32 * 3 + 5, "beta": 64}, seed=0)
  assert qb.padded_final_step == (qb.num_rows % 8 != 0)
  b = qb.batch(0)
  dom = qb.batch_domains(0)
  real = dom >= 0
  np.testing.assert_array_equal(b["inputs"][real, 1:], b["targets"][real, :-1])
  assert (b["segment_ids"][real] == 1).all()
  assert not b["weights"][~real].any() and not b["segment_ids"][~real].any()


def test_sharding_concatenates_to_global_batch(bundle):
  qb = bundle.quota_batches({"alpha": 2000, "beta": 700, "gamma": 300}, seed=5)
  for s in (0, qb.num_steps - 1):
    full = qb.batch(s)
    shards = [qb.batch(s, shard=i, num_shards=4) for i in range(4)]
    for k, v in full.items():
      np.testing.assert_array_equal(np.concatenate([x[k] for x in shards]), v)
  with pytest.raises(ValueError):
    qb.batch(0, shard=0, num_shards=3)


def test_nested_prefix_and_interleaving(bundle):
  small = bundle.quota_batches({"alpha": 640, "beta": 640, "gamma": 640}, 4)
  big = bundle.quota_batches({"alpha": 640, "beta": 3200, "gamma": 640}, 4)

  def rows_of(qb, domain):
    i = qb.domains.index(domain)
    out = set()
    for s in range(qb.num_steps):
      b, dom = qb.batch(s), qb.batch_domains(s)
      out |= {r.tobytes() for r in b["targets"][dom == i]}
    return out

  assert rows_of(small, "alpha") == rows_of(big, "alpha")
  assert rows_of(small, "beta") <= rows_of(big, "beta")
  # Every quarter of the big run contains every domain.
  doms = np.concatenate([big.batch_domains(s) for s in range(big.num_steps)])
  doms = doms[doms >= 0]
  for part in np.array_split(doms, 4):
    assert set(part.tolist()) == {0, 1, 2}


def test_shortfall_error_and_allow_repeat(bundle):
  avail = bundle.available_tokens["beta"]
  with pytest.raises(DataError) as e:
    bundle.quota_batches({"alpha": 10, "beta": avail + 100}, seed=0)
  msg = str(e.value)
  assert "'beta'" in msg and str(avail + 100) in msg and str(avail) in msg
  assert "shortfall 100" in msg and "\n" not in msg
  qb = bundle.quota_batches({"alpha": 10, "beta": 2 * avail + 7}, seed=0,
                            allow_repeat=True)
  assert qb.epochs["beta"] == pytest.approx((2 * avail + 7) / avail)
  assert _realised(qb)["beta"] == 2 * avail + 7
  with pytest.raises(DataError, match="unknown domain"):
    bundle.quota_batches({"delta": 10}, seed=0)


def test_heldout_disjoint_fixed_and_eval_format(bundle):
  for d in bundle.domains:
    held = set(bundle.heldout_doc_ids[d].tolist())
    assert len(held) == 4
    eos = bundle.tokenizer.eos_id
    assert (bundle.heldout_streams[d] == eos).sum() == 4
    assert (bundle.train_streams[d] == eos).sum() == bundle.num_docs[d] - 4
  ev1 = bundle.eval_sets()
  bundle.quota_batches({"alpha": 5000, "beta": 10}, seed=1)
  ev2 = bundle.eval_sets()
  for d in bundle.domains:
    for k in ("inputs", "targets", "weights", "segment_ids", "positions",
              "num_bytes"):
      np.testing.assert_array_equal(ev1[d][k], ev2[d][k])
    assert ev1[d]["inputs"].shape == (4, 32)
    assert ev1[d]["num_bytes"].dtype == np.float32
    assert (ev1[d]["num_bytes"] > 0).all()


def test_heldout_docs_disjoint_from_training_text(workdir):
  b = pipeline.prepare_data(_config("byte"), workdir)
  from autoscale_jax.data import sources
  docs = sources.read_corpus_dir(b.corpus_dir, DOMAINS)
  for d in DOMAINS:
    train_text = b.tokenizer.decode(b.train_streams[d])
    for i in b.heldout_doc_ids[d]:
      assert docs[d][i] not in train_text
    for i in sorted(set(range(len(docs[d]))) - set(b.heldout_doc_ids[d])):
      assert docs[d][i] in train_text
  # Held-out choice does not depend on the tokenizer.
  sp = pipeline.prepare_data(_config("sentencepiece"), workdir)
  for d in DOMAINS:
    np.testing.assert_array_equal(sp.heldout_doc_ids[d], b.heldout_doc_ids[d])


def test_embedded_missing_corpus_is_clear(tmp_path):
  c = _config()
  c.data.source = "embedded"
  c.data.domains = ["code", "wiki"]
  with pytest.raises(DataError, match="python -m autoscale_jax.data.corpus"):
    pipeline.prepare_data(c, str(tmp_path))
