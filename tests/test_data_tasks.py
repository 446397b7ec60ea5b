"""seqio integration: per-domain Tasks, rate mixtures, packed numpy batches."""

import numpy as np
import pytest

from autoscale_jax import config as config_lib
from autoscale_jax.data import pipeline
from autoscale_jax.data import tasks

seqio = pytest.importorskip("seqio")


def _bundle(tmp, tokenizer, kind):
  c = config_lib.base_config()
  c.data.source = "fixture"
  c.data.domains = ["alpha", "beta", "gamma"]
  c.data.tokenizer = tokenizer
  c.data.vocab_size = 512
  c.data.heldout_docs = 4
  c.model.kind = kind
  c.model.max_len = 32
  c.train.seq_len = 32
  c.train.global_batch_size = 8
  return pipeline.prepare_data(c, tmp)


@pytest.fixture(scope="module")
def lm_bundle(tmp_path_factory):
  return _bundle(str(tmp_path_factory.mktemp("wd")), "sentencepiece", "gpt2")


def test_tasks_registered_explicitly_and_reregistered(lm_bundle):
  names = tasks.register_domain_tasks(lm_bundle, "t_study")
  assert names == ["t_study__alpha", "t_study__beta", "t_study__gamma"]
  assert tasks.register_domain_tasks(lm_bundle, "t_study") == names
  ds = seqio.get_mixture_or_task(names[0]).get_dataset(
      {"targets": 32}, split="validation", shuffle=False)
  ex = next(ds.as_numpy_iterator())
  assert ex["targets"].dtype == np.int32 and 0 < len(ex["targets"]) <= 32
  # Validation rows are exactly the held-out stream (split at EOS / 32).
  first = lm_bundle.heldout_streams["alpha"][:len(ex["targets"])]
  np.testing.assert_array_equal(ex["targets"], first)


def test_rate_mixture_proportions(lm_bundle):
  rates = {"alpha": 0.6, "beta": 0.3, "gamma": 0.1}
  mix = tasks.rate_mixture(lm_bundle, "t_study", rates)
  counts = tasks.sample_domain_counts(lm_bundle, mix, seed=0,
                                      num_examples=3000)
  total = sum(counts.values())
  for d, r in rates.items():
    assert abs(counts[d] / total - r) < 0.03, (counts, rates)


def test_rate_batches_lm_format_and_sharding(lm_bundle):
  mix = tasks.rate_mixture(lm_bundle, "t_study", {"alpha": 1, "beta": 1})
  b = next(tasks.rate_batches(lm_bundle, mix, seed=1))
  assert set(b) == {"inputs", "targets", "weights", "segment_ids",
                    "positions"}
  for v in b.values():
    assert v.shape == (8, 32)
  assert b["weights"].dtype == np.float32 and b["inputs"].dtype == np.int32
  np.testing.assert_array_equal(b["weights"] > 0, b["segment_ids"] > 0)
  again = next(tasks.rate_batches(lm_bundle, mix, seed=1))
  np.testing.assert_array_equal(b["targets"], again["targets"])
  half = next(tasks.rate_batches(lm_bundle, mix, seed=1, shard=1,
                                 num_shards=2))
  assert half["inputs"].shape == (4, 32)


def test_rate_batches_bert(tmp_path):
  bundle = _bundle(str(tmp_path), "byte", "bert")
  mix = tasks.rate_mixture(bundle, "t_bert", {"alpha": 1, "gamma": 2})
  it = tasks.rate_batches(bundle, mix, seed=0)
  b = next(it)
  tok = bundle.tokenizer
  assert "token_type_ids" in b
  assert (b["targets"][:, 0] == tok.cls_id).all()
  w = b["weights"] > 0
  assert w.any() and (b["segment_ids"][w] > 0).all()
  assert not np.isin(b["targets"][w], [tok.cls_id, tok.sep_id]).any()
  assert (b["inputs"][~w] == b["targets"][~w]).all()
