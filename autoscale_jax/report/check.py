"""Checks a written report the way a reader sees it (``make report-check``).

    python -m autoscale_jax.report.check WORKDIR/report \
        --screenshot=WORKDIR/report_screenshot.png

Two checks, both must pass (exit status 1 otherwise, 2 without Chromium):

1. files: every ``<img src>`` of index.html is a file next to it and a valid
   PNG (signature and a non-empty IHDR size);
2. browser: headless Chromium loads a copy of index.html (in the same
   directory, so relative paths resolve the same) with a small script that,
   on the load event, lists every image whose ``naturalWidth`` is 0 (a broken
   image) and the page height, read back with ``--dump-dom``; then it saves a
   full-page screenshot of index.html at 1280 px wide.
"""

from __future__ import annotations

import argparse
import html
import html.parser
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys

_PNG = b"\x89PNG\r\n\x1a\n"
_PROBE_ID = "report-check-result"
_PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) {
    return !(i.complete && i.naturalWidth > 0);
  }).map(function (i) { return i.getAttribute("src"); });
  var out = document.createElement("pre");
  out.id = "%s";
  out.textContent = JSON.stringify({images: imgs.length, broken: broken,
      height: document.documentElement.scrollHeight});
  document.body.appendChild(out);
});
</script>
""" % _PROBE_ID
_MAX_HEIGHT = 30000


class _Images(html.parser.HTMLParser):

  def __init__(self):
    super().__init__()
    self.srcs: list[str] = []

  def handle_starttag(self, tag, attrs):
    if tag == "img":
      self.srcs.append(dict(attrs).get("src") or "")


def image_sources(page: str) -> list[str]:
  """The ``src`` of every ``<img>`` of an HTML page."""
  parser = _Images()
  parser.feed(page)
  return parser.srcs


def png_size(path: pathlib.Path) -> tuple[int, int] | None:
  """(width, height) of a valid PNG file, None otherwise."""
  try:
    head = path.read_bytes()[:24]
  except OSError:
    return None
  if len(head) < 24 or head[:8] != _PNG or head[12:16] != b"IHDR":
    return None
  width, height = struct.unpack(">II", head[16:24])
  return (width, height) if width and height else None


def check_files(report_dir: pathlib.Path) -> tuple[list[str], list[str]]:
  """(image sources, problems) of report_dir/index.html."""
  srcs = image_sources((report_dir / "index.html").read_text())
  problems = []
  for src in srcs:
    if not src or "://" in src or src.startswith("/"):
      problems.append(f"{src!r}: not a relative path")
    elif png_size(report_dir / src) is None:
      problems.append(f"{src}: missing or not a valid PNG")
  return srcs, problems


def chromium_binary() -> str | None:
  for name in ("chromium", "chromium-browser", "google-chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


def _chromium(binary: str, *args: str, timeout: int = 120) -> str:
  cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu",
         "--hide-scrollbars", "--disable-dev-shm-usage", *args]
  r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                     check=False)
  if r.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): "
                       f"{r.stderr.strip()[-500:]}")
  return r.stdout


def browser_probe(binary: str, report_dir: pathlib.Path) -> dict:
  """What Chromium saw: ``{"images", "broken", "height"}``."""
  page = (report_dir / "index.html").read_text()
  probe = report_dir / ".report_check.html"
  probe.write_text(page.replace("</body>", _PROBE + "</body>", 1))
  try:
    dom = _chromium(binary, "--virtual-time-budget=10000", "--dump-dom",
                    probe.resolve().as_uri())
  finally:
    probe.unlink()
  hit = re.search(rf'<pre id="{_PROBE_ID}">(.*?)</pre>', dom, re.S)
  if not hit:
    raise RuntimeError("the page's load event never reported (is "
                       "index.html complete?)")
  return json.loads(html.unescape(hit.group(1)))


def screenshot(binary: str, report_dir: pathlib.Path, out: pathlib.Path,
               height: int, width: int = 1280) -> None:
  out.parent.mkdir(parents=True, exist_ok=True)
  _chromium(binary, f"--window-size={width},{min(height, _MAX_HEIGHT)}",
            f"--screenshot={out.resolve()}", "--virtual-time-budget=10000",
            (report_dir / "index.html").resolve().as_uri())
  _shrink(out)


def _shrink(path: pathlib.Path) -> None:
  """Re-encodes a screenshot with a 256-colour palette (a page of text,
  tables and plots loses nothing visible; the file is about 3x smaller)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    small = im.convert("RGB").quantize(colors=256,
                                       method=Image.Quantize.MEDIANCUT,
                                       dither=Image.Dither.NONE)
  small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("report_dir", type=pathlib.Path)
  ap.add_argument("--screenshot", type=pathlib.Path, default=None,
                  help="full-page PNG to write (default: "
                       "<report_dir>/../report_screenshot.png)")
  args = ap.parse_args(argv)
  report_dir = args.report_dir
  if not (report_dir / "index.html").exists():
    print(f"error: {report_dir / 'index.html'} is missing; run "
          "--stage=report (or make demo) first", file=sys.stderr)
    return 2
  srcs, problems = check_files(report_dir)
  print(f"files: {len(srcs)} images referenced, "
        f"{len(srcs) - len(problems)} valid PNGs next to index.html")
  binary = chromium_binary()
  if binary is None:
    print("error: chromium is missing; install it with "
          "`apt-get install -y chromium` (as root)", file=sys.stderr)
    return 2
  seen = browser_probe(binary, report_dir)
  print(f"browser: {seen['images']} images, {len(seen['broken'])} broken, "
        f"page height {seen['height']} px")
  problems += [f"{src}: broken in the browser" for src in seen["broken"]]
  if seen["images"] != len(srcs):
    problems.append(f"the browser shows {seen['images']} images, the page "
                    f"references {len(srcs)}")
  shot = args.screenshot or report_dir.parent / "report_screenshot.png"
  screenshot(binary, report_dir, shot, int(seen["height"]))
  print(f"screenshot: {shot} ({os.path.getsize(shot) / 1024:.0f} KB)")
  for p in problems:
    print(f"problem: {p}", file=sys.stderr)
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main())
