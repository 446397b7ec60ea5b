"""Run identity from the config's structure: recipe vs execution settings.

``config.recipe`` is the one source of both the store fingerprint's config
part (``study.core.run_identity``) and the trainer's compile-cache key
(``config.compile_key`` = recipe + ``PROGRAM_RUN_KEYS``). Execution settings
(``config.run``, ``config.mesh``) never change a fingerprint.
"""

import types

import jax
import pytest
from flax import nnx

from autoscale_jax import config as config_lib
from autoscale_jax.experiments import store
from autoscale_jax.study import core
from autoscale_jax.train import sharding, trainer
from configs import bert_base, gpt2_large_redpajama, micro

# A stand-in data bundle: run_identity reads only these two fingerprints.
BUNDLE = types.SimpleNamespace(
    tokenizer=types.SimpleNamespace(fingerprint="tok-fp"),
    fingerprints={"alpha": "fa", "beta": "fb", "gamma": "fc"})
TOKENS = {"alpha": 1024, "beta": 2048, "gamma": 512}

# Fingerprints computed with the code before config.run existed (execution
# keys in config.train / config.model, left out by hand-kept lists). They
# must never change: every finished run in every existing store is keyed by
# them, and a change would silently retrain all of them. If this test fails,
# fix run_identity / config.recipe until the old fingerprints come back; do
# not update these values.
GOLDEN = {
    "micro": "bfc78c66ff3ad9d985bc9ba28529cfeb525e5a7f210f7810c780e1e45db06a03",
    "bert_base":
        "5ed90ba1ed17cf7a87cd775506dd4b2d83bd301aeba55d9b40de2c91c90c99c7",
    "gpt2_large_redpajama":
        "35edc2dfdddce39815edec221e1dad1238bc1dd4b02cc581d31d586d5e491363",
}
GOLDEN_BASE = "f4a4405ee743171892102bbe35a20bb8f6bd41db7ec66f9edbc41a80ee511bbb"

# A different valid value for every execution key (config.run).
RUN_CHANGES = {"steps_per_call": 3, "swarm": "off", "log_every_steps": 7,
               "checkpoint_every_steps": 11, "keep_checkpoints": 5,
               "eval_batch_size": 32, "remat": True,
               "keep_after_finish": "all"}


def _fingerprint(c, name="ddo_b1_base_s0", seed=0, eval_every=8,
                 allow_repeat=False):
  return store.fingerprint(core.run_identity(c, BUNDLE, name, TOKENS, seed,
                                             eval_every, allow_repeat))


@pytest.mark.parametrize("module", [micro, bert_base, gpt2_large_redpajama],
                         ids=lambda m: m.__name__.split(".")[-1])
def test_fingerprints_equal_the_old_code(module):
  name = module.__name__.split(".")[-1]
  assert _fingerprint(module.get_config()) == GOLDEN[name]


def test_base_config_fingerprint_equals_the_old_code():
  c = config_lib.base_config()
  assert _fingerprint(c, name="x", seed=1, eval_every=0,
                      allow_repeat=True) == GOLDEN_BASE


def test_identity_keeps_its_model_and_train_parts():
  c = micro.get_config()
  identity = core.run_identity(c, BUNDLE, "r", TOKENS, 0, 0, False)
  assert identity["model"] == c.model.to_dict()
  assert identity["train"] == c.train.to_dict()
  assert "run" not in identity and "mesh" not in identity
  for moved in config_lib.MOVED_KEYS:
    section, key = moved.split(".")
    assert key not in identity[section]


def test_every_run_key_is_classified():
  # A new config.run key needs a row here (and, if the compiled program is
  # built from it, an entry in config.PROGRAM_RUN_KEYS).
  assert set(config_lib.base_config().run) == set(RUN_CHANGES)
  assert set(config_lib.PROGRAM_RUN_KEYS) <= set(RUN_CHANGES)
  for moved, new in config_lib.MOVED_KEYS.items():
    assert new == "run." + moved.split(".")[1]


@pytest.mark.parametrize("key", sorted(RUN_CHANGES))
def test_execution_key_changes_no_fingerprint(key):
  base = micro.get_config()
  changed = micro.get_config()
  changed.run[key] = RUN_CHANGES[key]
  assert changed.run[key] != base.run[key]
  config_lib.validate(changed, num_devices=8)
  assert config_lib.recipe(changed) == config_lib.recipe(base)
  assert _fingerprint(changed) == _fingerprint(base)
  # The compile key changes exactly for the keys the program is built from.
  differs = config_lib.compile_key(changed) != config_lib.compile_key(base)
  assert differs == (key in config_lib.PROGRAM_RUN_KEYS)


def test_mesh_changes_neither_fingerprint_nor_compile_key():
  base = micro.get_config()
  changed = micro.get_config()
  changed.mesh.shape = (2, 2, 2)
  assert _fingerprint(changed) == _fingerprint(base)
  # The trainer keys its cache on the mesh object itself, not on the config.
  assert config_lib.compile_key(changed) == config_lib.compile_key(base)


def _other(value):
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value * 2 + 1
  return value + "_other"


@pytest.mark.parametrize("section", config_lib.RECIPE_SECTIONS)
def test_every_recipe_key_changes_fingerprint_and_compile_key(section):
  base = micro.get_config()
  for key, value in base[section].items():
    changed = micro.get_config()
    changed[section][key] = _other(value)
    assert _fingerprint(changed) != _fingerprint(base), f"{section}.{key}"
    assert config_lib.compile_key(changed) != config_lib.compile_key(base), (
        f"{section}.{key}")


@pytest.mark.parametrize("old_key", sorted(config_lib.MOVED_KEYS))
def test_moved_key_at_its_old_place_is_a_one_line_error(old_key):
  c = micro.get_config()
  section, key = old_key.split(".")
  c[section][key] = RUN_CHANGES[key]
  new_key = config_lib.MOVED_KEYS[old_key]
  expected = f"config.{old_key} moved to config.{new_key}"
  for check in (config_lib.recipe, config_lib.validate):
    with pytest.raises(config_lib.ConfigError, match=expected.replace(".", r"\.")
                       ) as e:
      check(c)
    assert "\n" not in str(e.value)
    assert f"set config.{new_key} instead" in str(e.value)


def test_trainer_cache_follows_the_compile_key():
  vocab = 64
  c = micro.get_config()
  c.mesh.shape = (1, 1, 1)
  mesh = sharding.make_mesh(c.mesh.shape, jax.devices()[:1])
  compiled = trainer.get_compiled(c, vocab, mesh)
  # Execution keys outside the program: the same compiled bundle.
  c.run.log_every_steps = 3
  c.run.swarm = "off"
  assert trainer.get_compiled(c, vocab, mesh) is compiled
  # A key the program is built from: a new one, carrying the new value.
  c.run.steps_per_call = 4
  other = trainer.get_compiled(c, vocab, mesh)
  assert other is not compiled and other.steps_per_call == 4
  c.run.steps_per_call = compiled.steps_per_call
  assert trainer.get_compiled(c, vocab, mesh) is compiled
  # remat: a new program whose model recomputes activations.
  c.run.remat = True
  remat = trainer.get_compiled(c, vocab, mesh)
  abstract = trainer.abstract_params(c.model, vocab)[1]
  assert remat is not compiled
  assert nnx.merge(remat.graphdef, abstract).remat
  assert not nnx.merge(compiled.graphdef, abstract).remat
  c.run.remat = False
  # A recipe key: a new one too.
  c.train.learning_rate = 1e-4
  assert trainer.get_compiled(c, vocab, mesh) is not compiled
