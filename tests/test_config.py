"""Config validation: one test per rule, each asserting the message names the key."""

import ml_collections
import pytest

from autoscale_jax import config as config_lib
from configs import bert_base, demo, gpt2_large_redpajama, gpt2_small_redpajama
from configs import micro


def _base():
  return micro.get_config()


@pytest.mark.parametrize("module", [demo, micro, gpt2_small_redpajama,
                                    gpt2_large_redpajama, bert_base])
def test_shipped_configs_validate(module):
  config_lib.validate(module.get_config(), num_devices=8)


def _set(c, key, value):
  node = c
  parts = key.split(".")
  for p in parts[:-1]:
    node = node[p]
  node[parts[-1]] = value


RULES = [
    # (key to set, value, key expected in the message, words expected)
    ("study", "my study!", "study", "letters"),
    ("data.source", "s3", "data.source", "allowed"),
    ("data.domains", ["only"], "data.domains", "at least 2"),
    ("data.domains", ["a", "a"], "data.domains", "unique"),
    ("data.tokenizer", "word", "data.tokenizer", "allowed"),
    ("data.heldout_docs", 0, "data.heldout_docs", ">= 1"),
    ("model.kind", "t5", "model.kind", "allowed"),
    ("model.num_layers", 0, "model.num_layers", ">= 1"),
    ("model.d_model", 33, "model.d_model", "divisible"),
    ("model.dropout", 1.5, "model.dropout", "[0, 1)"),
    ("train.seq_len", 64, "train.seq_len", "model.max_len"),
    ("train.global_batch_size", 0, "train.global_batch_size", ">= 1"),
    ("train.learning_rate", -1.0, "train.learning_rate", "> 0"),
    ("train.warmup_frac", 1.0, "train.warmup_frac", "[0, 1)"),
    ("train.schedule", "step", "train.schedule", "allowed"),
    ("run.steps_per_call", 0, "run.steps_per_call", ">= 1"),
    ("run.log_every_steps", 0, "run.log_every_steps", ">= 1"),
    ("run.checkpoint_every_steps", 0, "run.checkpoint_every_steps", ">= 1"),
    ("run.keep_checkpoints", 0, "run.keep_checkpoints", ">= 1"),
    ("run.eval_batch_size", 0, "run.eval_batch_size", ">= 1"),
    ("run.eval_batch_size", 12, "run.eval_batch_size",
     "divisible by the data-parallel size 8"),
    ("run.swarm", "on", "run.swarm", "allowed: auto, off, vmap, scan"),
    ("mesh.shape", [-1, -1, 1], "mesh.shape", "at most one -1"),
    ("mesh.shape", [1, 1], "mesh.shape", "one size per axis"),
    ("ddo.budgets", [1000.0, -5.0], "ddo.budgets[1]", "> 0"),
    ("ddo.budgets", [], "ddo.budgets", "at least one"),
    ("ddo.budgets", [10.0, 10.0], "ddo.budgets", "distinct"),
    ("ddo.factors", [0.2, 1.0], "ddo.factors", "!= 1"),
    ("ddo.factors", [2.0, 3.0], "ddo.factors", "one factor < 1"),
    ("ddo.metric", "accuracy", "ddo.metric", "allowed"),
    ("project.target_tokens", 0.0, "project.target_tokens", "> 0"),
    ("project.target_tokens", 100.0, "project.target_tokens",
     "largest DDO budget"),
    ("project.estimator", "median", "project.estimator",
     "allowed: paper, joint, shrink"),
    ("final.mixtures", [], "final.mixtures", "at least one"),
    ("final.seeds", (), "final.seeds", "at least one seed"),
    ("final.seeds", (0, -1), "final.seeds", "integers >= 0 (bad: -1)"),
    ("final.seeds", (0, 1.5), "final.seeds", "integers >= 0 (bad: 1.5)"),
    ("final.seeds", (0, True), "final.seeds", "integers >= 0 (bad: True)"),
    ("final.seeds", (1, 2, 1), "final.seeds", "unique"),
]


@pytest.mark.parametrize("key,value,named,words", RULES,
                         ids=[f"{r[0]}={r[1]!r}" for r in RULES])
def test_rule_names_key(key, value, named, words):
  c = _base()
  _set(c, key, value)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c, num_devices=8)
  msg = str(e.value)
  assert f"config.{named}=" in msg
  assert words in msg
  assert "\n" not in msg


def test_sentencepiece_vocab_size():
  c = _base()
  c.data.tokenizer = "sentencepiece"
  c.data.vocab_size = 10
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.vocab_size=10.*260"):
    config_lib.validate(c)


def test_unknown_domain_in_weights():
  c = _base()
  c.ddo.base_weights = {"alpha": 1.0, "web": 2.0}
  with pytest.raises(config_lib.ConfigError, match=r"config\.ddo\.base_weights\.web=.*unknown domain 'web'"):
    config_lib.validate(c)


def test_negative_weight():
  c = _base()
  c.ddo.base_weights = {"alpha": -1.0, "beta": 1.0, "gamma": 1.0}
  with pytest.raises(config_lib.ConfigError, match=r"config\.ddo\.base_weights\.alpha=-1\.0.*>= 0"):
    config_lib.validate(c)


def test_all_zero_weights():
  c = _base()
  c.ddo.base_weights = {"alpha": 0.0, "beta": 0.0, "gamma": 0.0}
  with pytest.raises(config_lib.ConfigError, match=r"config\.ddo\.base_weights=.*at least one weight"):
    config_lib.validate(c)


def test_base_weights_must_cover_every_domain():
  c = _base()
  c.ddo.base_weights = {"alpha": 1.0, "beta": 1.0}
  with pytest.raises(config_lib.ConfigError, match=r"config\.ddo\.base_weights=.*gamma"):
    config_lib.validate(c)


def test_batch_not_divisible_by_devices():
  c = _base()
  c.train.global_batch_size = 12
  with pytest.raises(config_lib.ConfigError, match=r"config\.train\.global_batch_size=12.*data-parallel size 8"):
    config_lib.validate(c, num_devices=8)


def test_batch_divisible_with_tensor_parallel_mesh():
  c = _base()
  c.train.global_batch_size = 4
  c.run.eval_batch_size = 4
  c.mesh.shape = [2, 2, 2]
  config_lib.validate(c, num_devices=8)


def test_mesh_does_not_fit_devices():
  c = _base()
  c.mesh.shape = [3, 1, 1]
  with pytest.raises(config_lib.ConfigError, match=r"config\.mesh\.shape=.*8 devices"):
    config_lib.validate(c, num_devices=8)


def test_grad_accum_must_divide_batch():
  c = _base()
  c.train.grad_accum_steps = 3
  with pytest.raises(config_lib.ConfigError, match=r"config\.train\.global_batch_size=8.*grad_accum_steps=3"):
    config_lib.validate(c)


def test_jsonl_needs_paths_for_every_domain():
  c = _base()
  c.data.source = "jsonl"
  c.data.paths = {"alpha": "a/*.jsonl"}
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.paths\.beta="):
    config_lib.validate(c)


def test_embedded_unknown_domain():
  c = demo.get_config()
  c.data.domains = ["code", "news"]
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.domains=\['news'\].*embedded corpus has"):
    config_lib.validate(c)


def test_bert_rejects_gpt2_tokenizer():
  c = bert_base.get_config()
  c.data.tokenizer = "gpt2"
  with pytest.raises(config_lib.ConfigError, match=r"config\.data\.tokenizer='gpt2'.*BERT"):
    config_lib.validate(c)


def test_resolve_mesh_shape_fills():
  assert config_lib.resolve_mesh_shape([-1, 2, 1], 8) == (4, 2, 1)
  assert config_lib.resolve_mesh_shape([2, 2, 2], 8) == (2, 2, 2)


def test_final_seeds_must_be_a_tuple():
  c = _base()
  # ml_collections refuses `c.final.seeds = 3`; a config that rebuilds
  # c.final can still hold a bare integer.
  c.final = ml_collections.ConfigDict({**c.final.to_dict(), "seeds": 3})
  with pytest.raises(config_lib.ConfigError,
                     match=r"config\.final\.seeds=3 .*tuple of integers"):
    config_lib.validate(c)


def test_final_seeds_defaults():
  assert config_lib.base_config().final.seeds == (0,)
  assert demo.get_config().final.seeds == (0, 1, 2, 3, 4)
