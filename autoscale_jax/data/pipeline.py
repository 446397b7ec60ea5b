"""Quota-mode data pipeline over seqio: exact per-domain token counts.

``prepare_data(config, workdir) -> DataBundle`` reads the documents (or the
user's seqio Tasks, ``data.source = "seqio"``), carves the held-out
documents, builds the tokenizer and the token store once, and serves:

* ``bundle.window_tasks()``: one registered seqio Task per domain whose
  source (``windows.WindowSource``) holds the domain's packed windows;
* ``bundle.quota_batches({domain: tokens}, seed)``: a run that trains on
  exactly that many target tokens per domain, its rows read by index from
  those Tasks. Batches are a pure function of the step (resume = start at
  step k), see :class:`QuotaBatches`; ``.mixture()``/``.dataset()`` stream
  the same batches through a seqio Mixture;
* ``bundle.eval_sets()``: fixed held-out rows per domain, identical for every
  run and mixture of a study.

Batch format (numpy, ``[B, L]``): ``inputs``, ``targets`` int32, ``weights``
float32, ``segment_ids`` int32 (0 = padding), ``positions`` int32; BERT adds
``token_type_ids``. Open-ended rate mixtures are in ``tasks.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from typing import Any, Mapping

import numpy as np

from autoscale_jax import distributed
from autoscale_jax import fileio
from autoscale_jax.data import fixture as fixture_lib
from autoscale_jax.data import seqio_source
from autoscale_jax.data import sources
from autoscale_jax.data import token_store
from autoscale_jax.data import tokenizers as tok_lib
from autoscale_jax.data import windows as windows_lib
from autoscale_jax.data.sources import DataError

log = logging.getLogger(__name__)

EVAL_MASK_SEED = 20240729  # BERT eval masking: fixed, independent of runs.


_domain_key = windows_lib.domain_key
_rng = windows_lib.rng


@dataclasses.dataclass(frozen=True)
class MLMSpec:
  """Special ids and settings for BERT masking."""
  cls_id: int
  sep_id: int
  mask_id: int
  pad_id: int
  probability: float
  normal_ids: np.ndarray  # ids a random replacement may draw


def mlm_mask(row: np.ndarray, content: np.ndarray, rng: np.random.Generator,
             spec: MLMSpec) -> tuple[np.ndarray, np.ndarray]:
  """BERT masking of one row: (masked inputs, weights of masked positions).

  Each content position is chosen with ``spec.probability``; a chosen one
  becomes [MASK] (80%), a random normal token (10%) or stays (10%).
  """
  n = row.shape[0]
  u = rng.random(n)
  kind = rng.random(n)
  rand_tok = spec.normal_ids[rng.integers(0, len(spec.normal_ids), n)]
  chosen = (u < spec.probability) & content
  inputs = row.copy()
  inputs[chosen & (kind < 0.8)] = spec.mask_id
  rep = chosen & (kind >= 0.8) & (kind < 0.9)
  inputs[rep] = rand_tok[rep]
  return inputs, chosen.astype(np.float32)


def _empty_batch(n: int, L: int, pad_id: int, bert: bool) -> dict:
  b = {
      "inputs": np.full((n, L), pad_id, np.int32),
      "targets": np.full((n, L), pad_id, np.int32),
      "weights": np.zeros((n, L), np.float32),
      "segment_ids": np.zeros((n, L), np.int32),
      "positions": np.zeros((n, L), np.int32),
  }
  if bert:
    b["token_type_ids"] = np.zeros((n, L), np.int32)
  return b


class QuotaBatches:
  """A run of exactly ``tokens[d]`` training tokens per domain, by step.

  The rows are the packed windows of each domain's seqio Task (see
  ``windows.py``), read from the Task's ``WindowSource`` by index, so
  ``batch(step)`` is a pure function of the step (resume = start at step k,
  no replay) and a host reads only the windows of its own rows.

  The window order is a permutation keyed by ``(seed, domain, epoch)`` only,
  so two runs that differ in one domain's quota read the same windows of the
  others (the smaller quota's windows are a prefix of the larger's). Domain
  ``d`` gets ``R_d = ceil(q_d / C)`` rows (C = L for LM, L - 2 for BERT); its
  last row counts only the remainder, so realised counts equal the quotas
  exactly:

  * LM: ``sum(weights)`` over domain ``d``'s rows equals ``q_d``;
  * BERT: the count of content tokens seen (``segment_ids > 0`` minus
    [CLS]/[SEP]) equals ``q_d``; ``weights`` mark the ~15% masked positions.

  Rows of all domains are interleaved by sorting on ``(j + u_d) / R_d`` (row
  ``j`` of domain ``d``, seeded offset ``u_d``), so every stretch of training
  sees the mixture. ``num_steps = ceil(total_rows / B)``; a final partial
  batch is padded with all-zero-weight rows (``padded_final_step``).
  :meth:`dataset` streams the same batches through a seqio Mixture of the
  domain Tasks.

  Args:
    sources: ``{domain: WindowSource}`` (``windows.get_window_source``).
    tokens: training tokens per domain (a subset of the sources' domains).
    seed: the run's seed (window order, interleave, BERT masking).
    batch_size: the global batch.
    pad_id: padding id.
    mlm: BERT masking (None for LM); must match the sources' layout.
    allow_repeat: allow quotas beyond the unique tokens (later epochs).
    task_names: ``{domain: registered Task name}`` (for :meth:`dataset`).
  """

  def __init__(self, sources: Mapping[str, object],
               tokens: Mapping[str, float], *, seed: int, batch_size: int,
               pad_id: int, mlm: MLMSpec | None = None,
               allow_repeat: bool = False,
               task_names: Mapping[str, str] | None = None):
    self.domains = list(sources)
    self._sources = dict(sources)
    self.task_names = dict(task_names or {})
    first = self._sources[self.domains[0]]
    self.seed = int(seed)
    self.seq_len = L = int(first.seq_len)
    self.batch_size = int(batch_size)
    self.pad_id = int(pad_id)
    self.mlm = mlm
    self.bert = mlm is not None
    if any(s.bert != self.bert or s.seq_len != L
           for s in self._sources.values()):
      raise ValueError("window sources disagree on seq_len or model kind")
    self.chunk = C = windows_lib.content_per_row(L, self.bert)
    if C < 1:
      raise DataError(f"train.seq_len={L} is too short for this model kind")
    self.tokens_per_domain: dict[str, int] = {}
    self.windows: dict[str, int] = {}
    self.rows_per_domain: dict[str, int] = {}
    self.epochs: dict[str, float] = {}
    for d, q in tokens.items():
      if d not in self._sources:
        raise DataError(f"quota names unknown domain {d!r}; known: "
                        f"{', '.join(self.domains)}")
      if not isinstance(q, (int, float, np.integer, np.floating)) or not (
          math.isfinite(q) and q >= 0):
        raise DataError(f"quota for domain {d!r} is {q!r}; token counts must "
                        "be finite and >= 0")
      q = int(round(float(q)))
      self.tokens_per_domain[d] = q
      w = self._sources[d].num_windows("train")
      avail = w * C
      self.windows[d] = w
      if q > avail and not allow_repeat:
        raise DataError(
            f"domain {d!r}: the run asks {q} training tokens but only {avail} "
            f"unique tokens are available (shortfall {q - avail}); lower its "
            "share or the budget, add data, or set ddo.allow_repeat=True")
      if q > 0 and w == 0:
        raise DataError(f"domain {d!r} has no full training window of "
                        f"{C} tokens; add data or lower train.seq_len")
      self.rows_per_domain[d] = -(-q // C)
      self.epochs[d] = q / avail if avail else 0.0
    if sum(self.tokens_per_domain.values()) <= 0:
      raise DataError(f"the run {dict(tokens)} asks for no tokens at all")
    self._build_order()
    self._perms: dict[tuple[str, int], np.ndarray] = {}

  def _build_order(self) -> None:
    keys, doms, rows = [], [], []
    self._dom_index = {d: i for i, d in enumerate(self.domains)}
    for d, r in self.rows_per_domain.items():
      if r == 0:
        continue
      u = _rng(self.seed, _domain_key(d), 0x0FF5E7).random()
      j = np.arange(r, dtype=np.int64)
      keys.append((j + u) / r)
      doms.append(np.full(r, self._dom_index[d], np.int32))
      rows.append(j)
    key = np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    self._row_domain = np.concatenate(doms)[order]
    self._row_j = np.concatenate(rows)[order]
    self.num_rows = int(len(order))
    self.num_steps = -(-self.num_rows // self.batch_size)
    self.padded_final_step = self.num_rows % self.batch_size != 0

  def _perm(self, d: str, epoch: int) -> np.ndarray:
    key = (d, epoch)
    if key not in self._perms:
      self._perms[key] = windows_lib.window_permutation(
          self.seed, d, epoch, self.windows[d])
    return self._perms[key]

  def _window_ids(self, d: str, j: np.ndarray) -> np.ndarray:
    w = self.windows[d]
    epoch = j // w
    out = np.empty(len(j), np.int64)
    for e in np.unique(epoch):
      sel = epoch == e
      out[sel] = self._perm(d, int(e))[j[sel] % w]
    return out

  def _rows(self, step: int, shard: int, num_shards: int) -> np.ndarray:
    if not 0 <= step < self.num_steps:
      raise IndexError(f"step {step} outside [0, {self.num_steps})")
    if num_shards < 1 or self.batch_size % num_shards or not (
        0 <= shard < num_shards):
      raise ValueError(f"shard {shard} of {num_shards} does not divide the "
                       f"global batch {self.batch_size}")
    per = self.batch_size // num_shards
    return step * self.batch_size + shard * per + np.arange(per)

  def batch_domains(self, step: int, shard: int = 0, num_shards: int = 1
                    ) -> np.ndarray:
    """Domain index (into ``self.domains``) of each row; -1 for padding."""
    rows = self._rows(step, shard, num_shards)
    out = np.full(len(rows), -1, np.int32)
    ok = rows < self.num_rows
    out[ok] = self._row_domain[rows[ok]]
    return out

  def batch_windows(self, step: int, shard: int = 0, num_shards: int = 1
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(domain index, per-domain row j, window id) of each row; -1 = pad."""
    rows = self._rows(step, shard, num_shards)
    dom = np.full(len(rows), -1, np.int32)
    jj = np.full(len(rows), -1, np.int64)
    win = np.full(len(rows), -1, np.int64)
    ok = rows < self.num_rows
    dom[ok] = self._row_domain[rows[ok]]
    jj[ok] = self._row_j[rows[ok]]
    for di in np.unique(dom[ok]):
      sel = dom == di
      win[sel] = self._window_ids(self.domains[int(di)], jj[sel])
    return dom, jj, win

  def batch(self, step: int, shard: int = 0, num_shards: int = 1
            ) -> dict[str, np.ndarray]:
    """The rows of ``shard`` (of ``num_shards``) at ``step``; pure function."""
    rows = self._rows(step, shard, num_shards)
    dom, jj, win = self.batch_windows(step, shard, num_shards)
    b = _empty_batch(len(rows), self.seq_len, self.pad_id, self.bert)
    for di in np.unique(dom[dom >= 0]):
      d = self.domains[int(di)]
      local = np.nonzero(dom == di)[0]
      w = self._sources[d].windows("train", win[local])
      # Tokens of each row that count: C, or the remainder on the last row.
      count = np.minimum(self.chunk,
                         self.tokens_per_domain[d] - jj[local] * self.chunk)
      self._fill(b, local, rows[local], count, w, step)
    return b

  def _fill(self, b: dict, local: np.ndarray, rows: np.ndarray,
            count: np.ndarray, w: np.ndarray, step: int) -> None:
    """Writes windows ``w`` (``count`` tokens counting) into rows ``local``."""
    L = self.seq_len
    if not self.bert:
      b["inputs"][local] = w[:, :-1]
      b["targets"][local] = w[:, 1:]
      b["weights"][local] = (np.arange(L)[None, :] < count[:, None])
      b["segment_ids"][local] = 1
      b["positions"][local] = np.arange(L)[None, :]
      return
    for k, r in enumerate(local):
      n = int(count[k])
      row = np.full(L, self.pad_id, np.int32)
      row[0] = self.mlm.cls_id
      row[1:n + 1] = w[k, :n]
      row[n + 1] = self.mlm.sep_id
      is_content = np.zeros(L, bool)
      is_content[1:n + 1] = True
      inp, wts = mlm_mask(row, is_content,
                          _rng(self.seed, step, int(rows[k]), 0xBE27),
                          self.mlm)
      b["inputs"][r] = inp
      b["targets"][r] = row
      b["weights"][r] = wts
      b["segment_ids"][r, :n + 2] = 1
      b["positions"][r, :n + 2] = np.arange(n + 2)

  def mixture(self):
    """Registers and returns this run's ``seqio.Mixture`` of the domain Tasks.

    Its ``sample_fn`` interleaves the Tasks' shuffled window streams in this
    run's row order (``tf.data.Dataset.choose_from_datasets``), so the
    Mixture yields exactly the rows of :meth:`batch`, in order: exact
    quotas, not per-example sampling. Needs ``task_names``.
    """
    import seqio  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    used = [d for d in self.domains if self.rows_per_domain.get(d, 0) > 0]
    if not all(d in self.task_names for d in used):
      raise ValueError("mixture() needs the domains' registered task_names")
    for d in used:
      src = self._sources[d]
      src.shuffled_epochs = max(src.shuffled_epochs, -(
          -self.rows_per_domain[d] // self.windows[d]))
    position = np.full(len(self.domains), -1, np.int64)
    position[[self._dom_index[d] for d in used]] = np.arange(len(used))
    choice = position[self._row_domain]

    def sample_fn(datasets, rates, seed):
      del rates, seed  # the order is the run's schedule, not sampled
      return tf.data.Dataset.choose_from_datasets(
          datasets, tf.data.Dataset.from_tensor_slices(choice),
          stop_on_empty_dataset=True)

    tag = hashlib.sha256(json.dumps(
        [self.seed, sorted(self.tokens_per_domain.items())]).encode())
    name = (f"{self.task_names[used[0]].rsplit('__', 2)[0]}__quota_"
            f"{tag.hexdigest()[:12]}")
    seqio.MixtureRegistry.remove(name)
    return seqio.MixtureRegistry.add(
        name, [(self.task_names[d], self.tokens_per_domain[d]) for d in used],
        sample_fn=sample_fn)

  def dataset(self, start_step: int = 0):
    """Batches ``start_step..num_steps - 1`` streamed through :meth:`mixture`.

    Equal to ``[batch(s) for s in range(start_step, num_steps)]`` (one host);
    starting late skips ``start_step * batch_size`` rows of the tf.data
    stream (cost linear in the rows skipped; :meth:`batch` is O(1) instead).
    """
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    ds = self.mixture().get_dataset(None, split="train", shuffle=True,
                                    seed=self.seed, num_epochs=1)
    counts = np.minimum(self.chunk, np.asarray(
        [self.tokens_per_domain[self.domains[d]] for d in self._row_domain])
        - self._row_j * self.chunk)
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices(counts)))
    ds = ds.skip(start_step * self.batch_size).batch(self.batch_size)
    for k, (ex, count) in enumerate(ds.as_numpy_iterator()):
      step = start_step + k
      n = len(count)
      rows = step * self.batch_size + np.arange(n)
      b = _empty_batch(self.batch_size, self.seq_len, self.pad_id, self.bert)
      self._fill(b, np.arange(n), rows, count, ex["targets"], step)
      yield b

  def __iter__(self):
    for s in range(self.num_steps):
      yield self.batch(s)

  def __len__(self) -> int:
    return self.num_steps


@dataclasses.dataclass
class DataBundle:
  """Everything the stages need from the data; see docs/architecture.md."""
  domains: list[str]
  tokenizer: tok_lib.Tokenizer
  available_tokens: dict[str, int]
  fingerprints: dict[str, str]
  seq_len: int
  batch_size: int
  model_kind: str
  mlm_probability: float
  heldout_max_sequences: int
  train_streams: dict[str, np.ndarray]
  heldout_streams: dict[str, np.ndarray]
  heldout_doc_ids: dict[str, np.ndarray]
  num_docs: dict[str, int]
  corpus_dir: str | None = None
  cache_dir: str | None = None
  seqio_vocabulary: object | None = None  # data.source=seqio: the Tasks'
  _eval_cache: dict | None = dataclasses.field(default=None, repr=False)

  @property
  def bert(self) -> bool:
    return self.model_kind == "bert"

  def mlm_spec(self) -> MLMSpec | None:
    if not self.bert:
      return None
    t = self.tokenizer
    if t.cls_id is None or t.sep_id is None or t.mask_id is None:
      raise DataError(f"tokenizer {t.name!r} has no [CLS]/[SEP]/[MASK]; use "
                      "sentencepiece or byte for BERT")
    return MLMSpec(t.cls_id, t.sep_id, t.mask_id, t.pad_id,
                   self.mlm_probability, t.normal_ids())

  @property
  def task_prefix(self) -> str:
    """Prefix of this data's window Task names (a function of the data)."""
    h = hashlib.sha256(json.dumps(
        [self.tokenizer.fingerprint, self.model_kind, self.seq_len,
         [[d, self.fingerprints[d], len(self.train_streams[d]),
           len(self.heldout_streams[d])] for d in self.domains]]).encode())
    return f"autoscale_{h.hexdigest()[:12]}"

  def window_tasks(self) -> dict[str, str]:
    """Registers one window Task per domain (once); ``{domain: task name}``.

    Each Task's ``train`` split is the domain's training stream and its
    ``validation`` split the held-out stream, cut into packed windows (see
    ``windows.py``); the vocabulary is the tokenizer's seqio vocabulary.
    """
    import seqio  # pylint: disable=g-import-not-at-top
    names = {d: windows_lib.window_task_name(self.task_prefix, d)
             for d in self.domains}
    if all(n in seqio.TaskRegistry.names() for n in names.values()):
      return names
    vocab = self.seqio_vocabulary or self.tokenizer.seqio_vocabulary()
    for d, name in names.items():
      source = windows_lib.window_source(
          d, {"train": self.train_streams[d],
              "validation": self.heldout_streams[d]},
          self.seq_len, self.bert)
      windows_lib.register_window_task(name, source, vocab)
    return names

  def quota_batches(self, tokens: Mapping[str, float], seed: int,
                    allow_repeat: bool = False) -> QuotaBatches:
    """A run of exactly ``tokens[d]`` training tokens per domain (seqio)."""
    names = self.window_tasks()
    return QuotaBatches(
        {d: windows_lib.get_window_source(names[d]) for d in self.domains},
        tokens, seed=seed, batch_size=self.batch_size,
        pad_id=self.tokenizer.pad_id, mlm=self.mlm_spec(),
        allow_repeat=allow_repeat, task_names=names)

  def eval_sets(self) -> dict[str, dict[str, np.ndarray]]:
    """Fixed held-out rows per domain (same for every run of the study).

    Rows are consecutive windows of the held-out documents' stream, up to
    ``data.heldout_max_sequences`` per domain, the last one possibly partial
    (zero weights beyond the data). ``num_bytes[i]`` is the UTF-8 bytes of
    row ``i``'s weighted target tokens (EOS counts 0), for bits per byte;
    BERT rows are masked with a fixed seed, and their bytes are those of the
    masked targets.
    """
    if self._eval_cache is None:
      self._eval_cache = {d: self._eval_domain(d) for d in self.domains}
    return {d: {k: v.copy() for k, v in s.items()}
            for d, s in self._eval_cache.items()}

  def _eval_domain(self, d: str) -> dict[str, np.ndarray]:
    L = self.seq_len
    s = self.heldout_streams[d]
    n_max = self.heldout_max_sequences
    byte_len = self.tokenizer.token_byte_lengths()
    spec = self.mlm_spec()
    C = L - 2 if self.bert else L
    usable = len(s) if self.bert else max(len(s) - 1, 0)
    n = min(n_max, -(-usable // C))
    b = _empty_batch(n, L, self.tokenizer.pad_id, self.bert)
    for i in range(n):
      cnt = min(C, usable - i * C)
      if not self.bert:
        w = s[i * C:i * C + cnt + 1]
        b["inputs"][i, :cnt] = w[:-1]
        b["targets"][i, :cnt] = w[1:]
        b["weights"][i, :cnt] = 1
        b["segment_ids"][i, :cnt] = 1
        b["positions"][i, :cnt] = np.arange(cnt)
      else:
        row = np.full(L, self.tokenizer.pad_id, np.int32)
        row[0] = spec.cls_id
        row[1:cnt + 1] = s[i * C:i * C + cnt]
        row[cnt + 1] = spec.sep_id
        is_content = np.zeros(L, bool)
        is_content[1:cnt + 1] = True
        inp, wts = mlm_mask(row, is_content,
                            _rng(EVAL_MASK_SEED, _domain_key(d), i), spec)
        b["inputs"][i], b["targets"][i], b["weights"][i] = inp, row, wts
        b["segment_ids"][i, :cnt + 2] = 1
        b["positions"][i, :cnt + 2] = np.arange(cnt + 2)
    b["num_bytes"] = (byte_len[b["targets"]] * b["weights"]).sum(
        axis=1).astype(np.float32)
    return b


def _corpus_dir(config, workdir: str) -> str | None:
  """The corpus directory (embedded/fixture; the fixture is built if absent)."""
  data = config.data
  if data.source not in ("embedded", "fixture"):
    return None
  corpus_dir = data.corpus_dir or fileio.join(workdir, "corpus")
  missing = [d for d in data.domains
             if not fileio.exists(sources.corpus_file(corpus_dir, d))]
  if data.source == "fixture" and missing:
    fixture_lib.make_fixture_corpus(
        corpus_dir, list(data.domains),
        docs_per_domain=max(40, int(data.heldout_docs) + 32))
  return corpus_dir


class _Documents:
  """The raw documents of each domain, read on first need (at most once)."""

  def __init__(self, config, corpus_dir: str | None):
    self.config = config
    self.corpus_dir = corpus_dir
    self._docs: dict[str, list[str]] = {}

  def __call__(self, domain: str) -> list[str]:
    if domain not in self._docs:
      data = self.config.data
      missing = [d for d in data.domains if data.source == "embedded" and
                 not fileio.exists(sources.corpus_file(self.corpus_dir, d))]
      if domain in missing:
        raise DataError(
            f"embedded corpus not found in {self.corpus_dir} (missing "
            f"{', '.join(missing)}); build it first with `python -m "
            f"autoscale_jax.data.corpus --out {self.corpus_dir}`")
      self._docs.update(sources.load_documents(self.config, self.corpus_dir,
                                               [domain]))
    return self._docs[domain]


def _source_spec_key(config, domain: str, corpus_dir: str | None) -> str:
  """Names where a domain's documents come from (not what they hold)."""
  data = config.data
  where = (data.paths.get(domain) if data.source == "jsonl" else
           data.tfds.get(domain) if data.source == "tfds" else corpus_dir)
  if hasattr(where, "to_dict"):
    where = where.to_dict()
  spec = [data.source, domain, where if isinstance(where, (str, type(None)))
          else list(where), data.text_field]
  return hashlib.sha256(json.dumps(spec).encode()).hexdigest()


def _corpus_identity(config, domain: str, cache_dir: str,
                     corpus_dir: str | None, documents: _Documents,
                     primary: bool) -> dict:
  """``{"docs_fingerprint", "num_docs"}`` of a domain, from its manifest.

  The raw text is read only the first time a file list is seen (then the
  identity is recorded under the cache); when the raw files are gone, the
  identity last recorded for the same source spec is used, with a warning.
  """
  spec_key = _source_spec_key(config, domain, corpus_dir)
  try:
    files = sources.list_files(config, corpus_dir, [domain])
  except DataError as missing:
    last = token_store.read_last_identity(cache_dir, domain, spec_key)
    if last is None:
      if config.data.source == "embedded":
        documents(domain)  # the embedded corpus error names the fix
      raise missing
    log.warning("%s; using the token cache built from it (%d documents, "
                "%s)", missing, last["num_docs"],
                last["docs_fingerprint"][:12])
    return last
  if files is None:  # TFDS: no file list to name the corpus by
    docs = documents(domain)
    return {"docs_fingerprint": token_store.documents_fingerprint(docs),
            "num_docs": len(docs)}
  manifest = token_store.source_manifest(domain, files[domain])
  ident = token_store.read_corpus_identity(cache_dir, manifest)
  if ident is None and not primary:
    ident = token_store.wait_for_identity(cache_dir, manifest)
  if ident is None:
    docs = documents(domain)
    ident = {"docs_fingerprint": token_store.documents_fingerprint(docs),
             "num_docs": len(docs)}
    token_store.write_corpus_identity(cache_dir, manifest, **ident)
  if primary:
    token_store.write_last_identity(cache_dir, domain, spec_key, ident)
  return ident


def _tokenizer(config, cache_dir: str, idents: Mapping[str, dict],
               held: Mapping[str, np.ndarray], documents: _Documents,
               primary: bool) -> tok_lib.Tokenizer:
  """The study's tokenizer; SentencePiece is trained once per corpus."""
  data = config.data
  if data.tokenizer != "sentencepiece":
    return tok_lib.build_tokenizer(data.tokenizer)
  sp_dir = fileio.join(cache_dir, "tokenizers")
  key = hashlib.sha256(json.dumps(
      [[d, idents[d]["docs_fingerprint"]] for d in sorted(idents)]
      + [int(data.heldout_docs), int(data.vocab_size)]).encode()).hexdigest()
  record = fileio.join(sp_dir, f"sentencepiece-{key[:16]}.json")
  if not fileio.exists(record) and not primary:
    token_store.wait_for_file(record, "the SentencePiece model")
  if fileio.exists(record):
    model = fileio.join(sp_dir, fileio.read_json(record)["model"])
    if fileio.exists(model):
      return tok_lib.SentencePieceTokenizer(model)
  train_docs = {}
  for d in data.domains:
    skip = set(held[d].tolist())
    train_docs[d] = [t for i, t in enumerate(documents(d)) if i not in skip]
  tokenizer = tok_lib.build_tokenizer(
      "sentencepiece", documents=train_docs, vocab_size=int(data.vocab_size),
      cache_dir=sp_dir)
  fileio.atomic_write_json(
      record, {"model": str(tokenizer.model_path).rsplit("/", 1)[-1]})
  return tokenizer


def _domain_tokens(domain: str, ident: Mapping[str, Any],
                   tokenizer: tok_lib.Tokenizer, cache_dir: str,
                   documents: _Documents, primary: bool
                   ) -> token_store.DomainTokens:
  """The domain's token store: loaded, else built (process 0) or awaited."""
  docs_fp = ident["docs_fingerprint"]
  fp = token_store.store_fingerprint(docs_fp, tokenizer.fingerprint)
  corrupt = None
  try:
    dt = token_store.load_domain(cache_dir, domain, fp, docs_fp)
  except token_store.TokenCacheError as e:
    dt, corrupt = None, e
  if dt is None and not primary:
    dt = token_store.wait_for_domain(cache_dir, domain, fp, docs_fp)
  if dt is None:
    if corrupt is not None:
      log.warning("%s; rebuilding it from the raw data", corrupt)
    try:
      docs = documents(domain)
    except DataError as unreadable:
      if corrupt is None:
        raise
      raise token_store.TokenCacheError(
          f"{corrupt}; the raw data to rebuild it is unreadable too "
          f"({unreadable})") from None
    if token_store.documents_fingerprint(docs) != docs_fp:
      raise DataError(
          f"the documents of domain {domain!r} changed but their files kept "
          f"their sizes and versions; delete {cache_dir}/manifests to "
          "re-read them")
    dt = token_store.build_domain(domain, docs, tokenizer, cache_dir, docs_fp)
  if dt.num_docs != ident["num_docs"]:
    raise token_store.TokenCacheError(
        f"token cache of domain {domain!r} holds {dt.num_docs} documents, its "
        f"corpus manifest {ident['num_docs']}; delete {cache_dir} to rebuild")
  return dt


def prepare_data(config, workdir: str) -> DataBundle:
  """Reads, splits, tokenizes (cached) and wraps the study's data.

  The corpus is named by its files' manifest (sizes and versions, no read);
  the raw text is read only to build what the cache lacks, by process 0
  (the other processes wait for its completion markers and read the cache).

  Args:
    config: the study config (``data.*``, ``train.seq_len``,
      ``train.global_batch_size``, ``model.kind``).
    workdir: the study directory (default corpus and cache locations; a
      local path or ``gs://...``).

  Returns:
    The :class:`DataBundle`.
  """
  t0 = time.time()
  data = config.data
  domains = list(data.domains)
  cache_dir = data.cache_dir or fileio.join(workdir, "cache")
  fileio.makedirs(cache_dir)
  if data.source == "seqio":
    return _prepare_seqio(config, cache_dir)
  primary = distributed.is_primary()
  corpus_dir = _corpus_dir(config, workdir)
  documents = _Documents(config, corpus_dir)
  idents = {d: _corpus_identity(config, d, cache_dir, corpus_dir, documents,
                                primary) for d in domains}

  # Held-out documents first: they depend on the text only, and the
  # SentencePiece model is trained on training documents only.
  held = {d: token_store.heldout_doc_ids(
      d, idents[d]["num_docs"], int(data.heldout_docs),
      idents[d]["docs_fingerprint"]) for d in domains}
  tokenizer = _tokenizer(config, cache_dir, idents, held, documents, primary)

  train_streams, heldout_streams, fps = {}, {}, {}
  for d in domains:
    dt = _domain_tokens(d, idents[d], tokenizer, cache_dir, documents,
                        primary)
    tr, ho, ids = token_store.split_train_heldout(dt, int(data.heldout_docs))
    assert np.array_equal(ids, held[d])
    train_streams[d], heldout_streams[d] = tr, ho
    fps[d] = dt.fingerprint
  bundle = _bundle(config, tokenizer, fps, train_streams, heldout_streams,
                   held, {d: idents[d]["num_docs"] for d in domains},
                   cache_dir, corpus_dir=corpus_dir)
  log.info("data ready in %.1f s: %s", time.time() - t0,
           ", ".join(f"{d}={n}" for d, n in bundle.available_tokens.items()))
  return bundle


def _bundle(config, tokenizer, fps, train_streams, heldout_streams, held,
            num_docs, cache_dir, corpus_dir=None, seqio_vocabulary=None
            ) -> DataBundle:
  kind = config.model.kind
  L = int(config.train.seq_len)
  c = windows_lib.content_per_row(L, kind == "bert")
  available = {d: windows_lib.num_windows(len(s), L, kind == "bert") * c
               for d, s in train_streams.items()}
  return DataBundle(
      domains=list(config.data.domains), tokenizer=tokenizer,
      available_tokens=available, fingerprints=fps, seq_len=L,
      batch_size=int(config.train.global_batch_size), model_kind=kind,
      mlm_probability=float(config.data.mlm_probability),
      heldout_max_sequences=int(config.data.heldout_max_sequences),
      train_streams=train_streams, heldout_streams=heldout_streams,
      heldout_doc_ids=held, num_docs=num_docs,
      corpus_dir=corpus_dir, cache_dir=cache_dir,
      seqio_vocabulary=seqio_vocabulary)


def _prepare_seqio(config, cache_dir: str) -> DataBundle:
  """``data.source = "seqio"``: the domains are the user's registered Tasks."""
  t0 = time.time()
  vocab, doms = seqio_source.read_tasks(config, cache_dir=cache_dir)
  tokenizer = tok_lib.SeqioVocabularyTokenizer(vocab)
  eos = tokenizer.eos_id
  train, held_out, held, fps = {}, {}, {}, {}
  for d, dom in doms.items():
    fps[d] = dom.fingerprint(tokenizer.fingerprint)
    train[d], held_out[d], held[d] = seqio_source.heldout_split(
        dom, eos, int(config.data.heldout_docs), fps[d],
        token_store.heldout_doc_ids)
  bundle = _bundle(config, tokenizer, fps, train, held_out, held,
                   seqio_source.num_train_docs(doms), cache_dir,
                   seqio_vocabulary=vocab)
  log.info("seqio data ready in %.1f s: %s", time.time() - t0,
           ", ".join(f"{d}={n}" for d, n in bundle.available_tokens.items()))
  return bundle
