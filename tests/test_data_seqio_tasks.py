"""``data.source = "seqio"``: the user's own registered seqio Tasks as domains.

The Tasks are registered here from text files (one document per line) with
their own ``seqio.SentencePieceVocabulary`` (a tiny model trained in the
test), by a module named in ``config.data.seqio_module``. ``alpha`` has a
validation split (the held-out set comes from it); ``beta`` and ``gamma``
have none (held-out documents are carved as for the other sources).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from autoscale_jax import config as config_lib
from autoscale_jax.data import fixture
from autoscale_jax.data import pipeline
from autoscale_jax.data.sources import DataError

seqio = pytest.importorskip("seqio")
spm = pytest.importorskip("sentencepiece")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS = ["alpha", "beta", "gamma"]

MODULE = textwrap.dedent("""
  import seqio
  import tensorflow as tf

  VOCAB = seqio.SentencePieceVocabulary({model!r})
  FEATURES = {{"targets": seqio.Feature(VOCAB, add_eos=True, dtype=tf.int32)}}


  def _to_targets(ds):
    return ds.map(lambda line: {{"targets": line}})


  for _name, _splits in {splits!r}.items():
    seqio.TaskRegistry.remove(_name)
    seqio.TaskRegistry.add(
        _name, source=seqio.TextLineDataSource(_splits),
        preprocessors=[_to_targets, seqio.preprocessors.tokenize,
                       seqio.preprocessors.append_eos],
        output_features=FEATURES, metric_fns=[])
""")


def _write_user_tasks(root, prefix, docs_per_domain=150):
  """Text files, a SentencePiece model and a module registering the Tasks."""
  corpus = fixture.make_fixture_corpus(os.path.join(root, "corpus"), DOMAINS,
                                       docs_per_domain)
  splits, all_lines = {}, []
  for d in DOMAINS:
    with open(os.path.join(corpus, f"{d}.jsonl"), encoding="utf-8") as f:
      lines = [" ".join(json.loads(x)["text"].split()) for x in f]
    all_lines += lines
    files = {"train": lines[:-6], "validation": lines[-6:]}
    if d != "alpha":
      files = {"train": lines}
    splits[f"{prefix}{d}"] = {}
    for split, rows in files.items():
      path = os.path.join(root, f"{d}.{split}.txt")
      with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
      splits[f"{prefix}{d}"][split] = path
  with open(os.path.join(root, "sp.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(all_lines) + "\n")
  spm.SentencePieceTrainer.train(
      input=os.path.join(root, "sp.txt"),
      model_prefix=os.path.join(root, "sp"), vocab_size=300,
      model_type="bpe", user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
      minloglevel=2)
  module = f"{prefix}tasks"
  with open(os.path.join(root, f"{module}.py"), "w", encoding="utf-8") as f:
    f.write(MODULE.format(model=os.path.join(root, "sp.model"),
                          splits=splits))
  return module, splits


def _config(module, prefix, kind="gpt2"):
  c = config_lib.base_config()
  c.data.source = "seqio"
  c.data.domains = DOMAINS
  c.data.seqio_module = module
  for d in DOMAINS:
    c.data.seqio_tasks[d] = f"{prefix}{d}"
  c.data.heldout_docs = 4
  c.data.heldout_max_sequences = 4
  c.model.kind = kind
  c.model.max_len = 32
  c.train.seq_len = 32
  c.train.global_batch_size = 8
  return config_lib.validate(c)


@pytest.fixture(scope="module")
def user_tasks(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("user_tasks"))
  sys.path.insert(0, root)
  try:
    module, splits = _write_user_tasks(root, "h8u_")
    yield root, module, splits
  finally:
    sys.path.remove(root)


def test_prepare_data_and_quota_draw_over_user_tasks(user_tasks, tmp_path):
  root, module, splits = user_tasks
  b = pipeline.prepare_data(_config(module, "h8u_"), str(tmp_path))
  vocab = seqio.get_mixture_or_task("h8u_alpha").output_features[
      "targets"].vocabulary
  sp = spm.SentencePieceProcessor(model_file=os.path.join(root, "sp.model"))
  # The vocabulary is the Tasks': same ids, same EOS, seqio's pad.
  assert b.tokenizer.vocab_size == vocab.vocab_size == sp.get_piece_size()
  assert b.tokenizer.eos_id == vocab.eos_id == sp.eos_id()
  assert b.tokenizer.pad_id == vocab.pad_id
  assert b.seqio_vocabulary is vocab
  # Streams are the Tasks' tokenized lines, each followed by one EOS.
  with open(splits["h8u_alpha"]["validation"], encoding="utf-8") as f:
    val = f.read().splitlines()
  want = np.concatenate([np.r_[sp.encode(t), sp.eos_id()] for t in val])
  np.testing.assert_array_equal(b.heldout_streams["alpha"], want)
  with open(splits["h8u_alpha"]["train"], encoding="utf-8") as f:
    train = f.read().splitlines()
  want = np.concatenate([np.r_[sp.encode(t), sp.eos_id()] for t in train])
  np.testing.assert_array_equal(b.train_streams["alpha"], want)
  # alpha's held-out set is its validation split; beta's is carved.
  assert len(b.heldout_doc_ids["alpha"]) == 0
  assert len(b.heldout_doc_ids["beta"]) == 4
  assert (b.heldout_streams["beta"] == sp.eos_id()).sum() == 4
  assert b.num_docs["beta"] == 150
  # A quota draw: exact counts, rows decode to the user's text.
  quota = {"alpha": 900, "beta": 333, "gamma": 64}
  qb = b.quota_batches(quota, seed=0)
  got = {d: 0 for d in DOMAINS}
  for s in range(qb.num_steps):
    x, dom = qb.batch(s), qb.batch_domains(s)
    for i, d in enumerate(DOMAINS):
      got[d] += int(x["weights"][dom == i].sum())
  assert got == quota
  # Each row is a window of its domain's tokenized training text.
  x, dom = qb.batch(0), qb.batch_domains(0)
  for r in np.nonzero(dom >= 0)[0]:
    stream = b.train_streams[DOMAINS[dom[r]]]
    hits = np.nonzero(stream[:-32] == x["inputs"][r, 0])[0]
    assert any(np.array_equal(stream[h:h + 33], np.r_[x["inputs"][r, :1],
                                                      x["targets"][r]])
               for h in hits)
  ev = b.eval_sets()
  assert ev["alpha"]["weights"].sum() > 0 and (ev["alpha"]["num_bytes"] > 0
                                               ).all()


def test_bert_over_user_tasks(user_tasks, tmp_path):
  _, module, _ = user_tasks
  b = pipeline.prepare_data(_config(module, "h8u_", "bert"), str(tmp_path))
  qb = b.quota_batches({"alpha": 300, "beta": 300}, seed=1)
  x = qb.batch(0)
  tok = b.tokenizer
  assert (x["targets"][:, 0][qb.batch_domains(0) >= 0] == tok.cls_id).all()
  w = x["weights"] > 0
  assert w.any() and not np.isin(x["targets"][w], [tok.cls_id,
                                                   tok.sep_id]).any()


def test_missing_task_and_module_are_one_line_errors(user_tasks, tmp_path):
  _, module, _ = user_tasks
  c = _config(module, "h8u_")
  c.data.seqio_tasks.beta = "no_such_task"
  with pytest.raises(DataError, match="seqio_tasks.beta='no_such_task'"
                     ) as e:
    pipeline.prepare_data(c, str(tmp_path))
  assert "\n" not in str(e.value)
  c = _config(module, "h8u_")
  c.data.seqio_module = "no_such_module_h8"
  with pytest.raises(DataError, match="seqio_module='no_such_module_h8'"):
    pipeline.prepare_data(c, str(tmp_path))
  c = _config(module, "h8u_")
  c.data.seqio_tasks.delta = "x"
  with pytest.raises(config_lib.ConfigError, match="seqio_tasks.delta"):
    config_lib.validate(c)


def test_whole_study_through_the_cli_over_user_tasks(tmp_path):
  """DDO, projection, final runs and the report over user Tasks named like
  the domains (no seqio_tasks), through the command line."""
  root = str(tmp_path / "tasks")
  os.makedirs(root)
  module, _ = _write_user_tasks(root, "", docs_per_domain=200)
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join([root, ROOT]))
  env.pop("XLA_FLAGS", None)
  workdir = tmp_path / "wd"
  r = subprocess.run(
      [sys.executable, "-m", "autoscale_jax.main", "--stage=all",
       "--config=configs/micro.py", f"--workdir={workdir}",
       "--config.data.source=seqio", f"--config.data.seqio_module={module}",
       "--config.data.domains=('alpha', 'beta')", "--config.ddo.bootstrap=0",
       "--config.run.swarm=off", "--config.project.target_tokens=16384"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  domains = ["alpha", "beta"]  # two of the Tasks (fewer runs: faster)
  with open(workdir / "ddo" / "budget_0" / "mixture.json") as f:
    mix = json.load(f)
  assert set(mix["weights"]) == set(domains)
  records = os.listdir(workdir / "store")
  # 2 budgets x (2m + 1) DDO runs, then the final runs: projected, uniform.
  assert len(records) == 2 * (2 * len(domains) + 1) + 2
  with open(workdir / "project" / "mixture.json") as f:
    projected = json.load(f)
  assert set(projected["weights"]) == set(domains)
  assert projected["budget_tokens"] == pytest.approx(16384, rel=1e-3)
  with open(workdir / "final" / "comparison.json") as f:
    comparison = json.load(f)
  assert set(comparison["final_eval"]) == {"projected", "uniform"}
  # The exported seqio mixture names the user's Tasks.
  export = (workdir / "project" / "export").rglob("*seqio*")
  assert any(all(f'"{d}"' in p.read_text() or f"'{d}'" in p.read_text()
                 for d in domains) for p in export if p.is_file())
  assert (workdir / "report" / "index.html").exists()
  assert r.stdout.splitlines()[-1].startswith("comparison:")
  # The Tasks were read once: later stages used the cached token streams.
  assert len(os.listdir(workdir / "cache" / "seqio")) == len(domains)


def _register_counting_tasks(prefix, lines, vocab, calls):
  """Tasks over ``lines`` whose source counts its reads in ``calls``."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def dataset_fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    calls.append(split)
    return tf.data.Dataset.from_tensor_slices(lines).map(
        lambda line: {"targets": line})

  for d in DOMAINS:
    seqio.TaskRegistry.remove(f"{prefix}{d}")
    seqio.TaskRegistry.add(
        f"{prefix}{d}", source=seqio.FunctionDataSource(dataset_fn, ["train"]),
        preprocessors=[seqio.preprocessors.tokenize,
                       seqio.preprocessors.append_eos],
        output_features={"targets": seqio.Feature(vocab, add_eos=True)},
        metric_fns=[])


def test_second_prepare_data_reads_the_cache_not_the_tasks(user_tasks,
                                                           tmp_path):
  _, module, splits = user_tasks
  with open(splits["h8u_alpha"]["train"], encoding="utf-8") as f:
    lines = f.read().splitlines()
  vocab = seqio.get_mixture_or_task("h8u_alpha").output_features[
      "targets"].vocabulary
  calls = []
  _register_counting_tasks("h8c_", lines, vocab, calls)
  c = _config(module, "h8c_")
  first = pipeline.prepare_data(c, str(tmp_path))
  assert calls == ["train"] * len(DOMAINS)  # each Task read once
  cached = os.listdir(tmp_path / "cache" / "seqio")
  assert len(cached) == len(DOMAINS)
  # A second stage of the study: no read of any Task, the same data.
  second = pipeline.prepare_data(c, str(tmp_path))
  assert calls == ["train"] * len(DOMAINS)
  assert second.fingerprints == first.fingerprints
  for d in DOMAINS:
    np.testing.assert_array_equal(second.train_streams[d],
                                  first.train_streams[d])
    np.testing.assert_array_equal(second.heldout_streams[d],
                                  first.heldout_streams[d])
  # Another workdir has its own cache (keyed under the workdir).
  pipeline.prepare_data(c, str(tmp_path / "other"))
  assert calls == ["train"] * 2 * len(DOMAINS)


def test_changed_task_file_is_read_again(user_tasks, tmp_path):
  _, module, splits = user_tasks
  c = _config(module, "h8u_")
  first = pipeline.prepare_data(c, str(tmp_path))
  path = splits["h8u_beta"]["train"]
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    with open(path, "w", encoding="utf-8") as f:  # one document fewer
      f.write("\n".join(text.splitlines()[1:]) + "\n")
    second = pipeline.prepare_data(c, str(tmp_path))
  finally:
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
  assert second.num_docs["beta"] == first.num_docs["beta"] - 1
  assert second.fingerprints["beta"] != first.fingerprints["beta"]
  assert second.fingerprints["alpha"] == first.fingerprints["alpha"]
  assert len(os.listdir(tmp_path / "cache" / "seqio")) == len(DOMAINS) + 1
