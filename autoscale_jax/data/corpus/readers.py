"""Readers for the binary data files some packages ship; none of them runs code.

* R: `r_unserialize` reads R's XDR serialization (the subset data files use)
  and `read_rdb` every object of a lazy-load database (`Rdata.rdx` + `.rdb`).
* Pickles: `safe_unpickle` maps every class a pickle names to an inert dict
  stub, so loading one imports and runs nothing.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, Iterable

from autoscale_jax.data.corpus.domains import CorpusError

# --------------------------------------------------------- R unserialization

class RVector(list):
  """An R vector (list of values) with its attributes (`attrs`)."""

  def __init__(self, values: Iterable[Any] = (), rtype: int = 0):
    super().__init__(values)
    self.rtype = rtype
    self.attrs: dict[str, Any] = {}

  @property
  def names(self) -> list[str] | None:
    return self.attrs.get("names")


class _XDR:
  """Reads the subset of R's XDR serialization format that data files use."""

  def __init__(self, data: bytes):
    self.d = data
    self.i = 0
    self.refs: list[Any] = []

  def int(self) -> int:
    (v,) = struct.unpack_from(">i", self.d, self.i)
    self.i += 4
    return v

  def length(self) -> int:
    n = self.int()
    if n == -1:
      hi, lo = self.int(), self.int()
      n = (hi << 32) + lo
    return n

  def bytes(self, n: int) -> bytes:
    b = self.d[self.i:self.i + n]
    self.i += n
    return b

  def header(self) -> None:
    if self.bytes(2) != b"X\n":
      raise CorpusError("R data is not in XDR serialization format ('X\\n'); "
                        "re-save it with saveRDS(compress=TRUE)")
    version = self.int()
    self.int()
    self.int()
    if version == 3:
      self.bytes(self.int())

  def item(self) -> Any:
    flags = self.int()
    t = flags & 0xFF
    has_attr, has_tag = flags & (1 << 9), flags & (1 << 10)
    if t in (254, 253, 252, 251, 250, 242, 241):  # NULL and special envs.
      return None
    if t == 255:  # REFSXP
      idx = flags >> 8 or self.int()
      return self.refs[idx - 1]
    if t in (247, 249, 248):  # PERSIST/NAMESPACE/PACKAGE: string vector.
      self.int()
      v = [self.item() for _ in range(self.int())]
      self.refs.append(v)
      return v
    if t == 1:  # SYMSXP
      v = self.item()
      self.refs.append(v)
      return v
    if t in (2, 6, 3, 5, 17, 239, 240):  # Pairlist-like.
      if has_attr:
        self.item()  # Pairlist attributes are not needed.
      tag = self.item() if has_tag else None
      car = self.item()
      cdr = self.item()
      cell = [(tag, car)] + (cdr if isinstance(cdr, list) else [])
      return cell
    if t == 9:  # CHARSXP
      n = self.int()
      if n == -1:
        return None
      raw = self.bytes(n)
      levels = flags >> 12
      return raw.decode("latin-1" if levels & 4 else "utf-8", errors="replace")
    if t == 4:  # ENVSXP
      env: dict[str, Any] = {}
      self.refs.append(env)
      self.int()
      self.item()
      frame = self.item()
      hashtab = self.item()
      self.item()
      for cell in (frame or []) + [c for v in (hashtab or []) if v for c in v]:
        if isinstance(cell, tuple):
          env[cell[0]] = cell[1]
      return env
    if t == 238:  # ALTREP
      info = self.item()
      state = self.item()
      self.item()
      cls = info[0][1] if info else None
      if cls == "compact_intseq":
        n, start, step = (int(x) for x in state[:3])
        return RVector(range(start, start + n * step, step), 13)
      if cls == "compact_realseq":
        n, start, step = state[:3]
        return RVector([start + k * step for k in range(int(n))], 14)
      if isinstance(cls, str) and cls.startswith("wrap_"):
        return state[0]
      if cls == "deferred_string":
        return RVector([str(x) for x in state[0]], 16)
      raise CorpusError(f"unsupported R ALTREP class {cls!r} in R data; "
                        "re-save the object without ALTREP")
    if t in (10, 13):  # LGLSXP, INTSXP
      n = self.length()
      v = RVector(struct.unpack_from(f">{n}i", self.d, self.i), t)
      self.i += 4 * n
    elif t == 14:  # REALSXP
      n = self.length()
      v = RVector(struct.unpack_from(f">{n}d", self.d, self.i), t)
      self.i += 8 * n
    elif t == 15:  # CPLXSXP
      n = self.length()
      vals = struct.unpack_from(f">{2 * n}d", self.d, self.i)
      self.i += 16 * n
      v = RVector([complex(a, b) for a, b in zip(vals[::2], vals[1::2])], t)
    elif t in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
      n = self.length()
      v = RVector([self.item() for _ in range(n)], t)
    elif t == 24:  # RAWSXP
      v = RVector([self.bytes(self.length())], t)
    else:
      raise CorpusError(f"unsupported R SEXP type {t} in R data; only "
                        "vectors, lists and pairlists are read")
    if has_attr:
      for tag, val in self.item() or []:
        v.attrs[str(tag)] = val
    return v


def r_unserialize(data: bytes) -> Any:
  """Unserializes an R object from XDR bytes (gzip/zlib wrappers accepted)."""
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  r = _XDR(data)
  r.header()
  return r.item()


def read_rdb(rdx: Path) -> dict[str, Any]:
  """Reads every object of an R lazy-load database (`Rdata.rdx` + `.rdb`)."""
  index = r_unserialize(rdx.read_bytes())
  names = dict(zip(index.names, index))
  variables = names["variables"]
  db = rdx.with_suffix(".rdb").read_bytes()
  out = {}
  for name, (offset, length) in sorted(zip(variables.names, variables)):
    blob = db[int(offset):int(offset) + int(length)]
    body = blob[4:]
    if body[:1] in (b"Z", b"2", b"X", b"0") and body[1:2] != b"\x9c":
      kind, body = body[:1], body[1:]
    else:
      kind = b"Z"
    raw = {b"Z": zlib.decompress, b"2": bz2.decompress,
           b"X": lzma.decompress, b"0": lambda b: b}[kind](body)
    out[name] = r_unserialize(raw)
  return out


# ---------------------------------------------------------- safe unpickling

class _Stub(dict):
  """Stand-in for any class a pickle names: keeps its data, runs no code."""

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__()
    self.args = args

  def __setstate__(self, state: Any) -> None:
    if isinstance(state, dict):
      self.update(state)
    else:
      self.state = state


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
  """Safe `copyreg._reconstructor`: builds stub/dict objects only."""
  obj = cls() if isinstance(cls, type) and issubclass(cls, dict) else _Stub()
  if isinstance(state, dict):
    obj.update(state)
  return obj


class SafeUnpickler(pickle.Unpickler):
  """Unpickler that maps every non-builtin class to an inert dict stub."""

  SAFE = {("builtins", "dict"): dict, ("__builtin__", "dict"): dict,
          ("builtins", "list"): list, ("__builtin__", "list"): list,
          ("copy_reg", "_reconstructor"): _reconstructor,
          ("copyreg", "_reconstructor"): _reconstructor,
          ("builtins", "object"): _Stub, ("__builtin__", "object"): _Stub}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in self.SAFE:
      return self.SAFE[(module, name)]
    return type(name, (_Stub,), {"__module__": "stub." + module})


def safe_unpickle(data: bytes) -> Any:
  """Loads a pickle with `SafeUnpickler` (latin-1 for Python 2 strings)."""
  return SafeUnpickler(io.BytesIO(data), encoding="latin-1").load()
