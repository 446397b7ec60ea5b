"""--config loads a file from any working directory, or a built-in by name.

The CLI's error lines for configs that cannot be loaded are in
tests/test_fault_battery.py; these tests check what loads.
"""

import os
import pathlib
import sys

import pytest

from autoscale_jax import config_file

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
  """Another working directory, with the repository's configs/ package not
  importable (as for a user outside the checkout)."""
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(sys, "path", [
      p for p in sys.path
      if p not in ("", ".") and pathlib.Path(p).resolve() != REPO])
  for name in [m for m in sys.modules
               if m == "configs" or m.startswith("configs.")]:
    monkeypatch.delitem(sys.modules, name)
  with pytest.raises(ImportError):
    __import__("configs.gpt2_small_redpajama")
  return tmp_path


def test_config_importing_a_sibling_loads_by_absolute_path(elsewhere):
  del elsewhere
  c = config_file.load(str(REPO / "configs" / "bert_base.py"))
  assert c.model.kind == "bert" and c.study == "bert_base"
  assert len(c.data.domains) == 7  # from configs/gpt2_small_redpajama.py
  large = config_file.load(str(REPO / "configs" / "gpt2_large_redpajama.py"))
  assert list(large.data.domains) == list(c.data.domains)


@pytest.mark.parametrize("spec", ["bert_base", "bert_base.py",
                                  "configs/bert_base.py"])
def test_builtin_config_by_name(elsewhere, spec):
  del elsewhere
  assert config_file.load(spec).study == "bert_base"


def test_builtin_names_are_the_shipped_configs():
  names = config_file.builtin_names()
  assert {"demo", "micro", "gpt2_small_redpajama", "gpt2_large_redpajama",
          "bert_base"} <= set(names)
  for name in names:
    assert config_file.load(name).study  # every built-in loads


def test_a_local_file_wins_over_a_builtin_name(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "micro.py").write_text(
      "from autoscale_jax import config as config_lib\n\n"
      "def get_config():\n  c = config_lib.base_config()\n"
      "  c.study = 'mine'\n  return c\n")
  assert config_file.load("micro.py").study == "mine"
  assert config_file.load("micro").study == "micro"  # no such file: built-in
  assert os.getcwd() == str(tmp_path)
