"""The report of a finished micro study, read as a researcher and a browser.

One micro study through the CLI (two DDO seeds, so the noise has numbers;
two final seeds, so the verdict has intervals; the session's shared one,
tests/micro_study.py, with a third final mixture). The report is built from
copies of it twice: as an older workdir wrote it (no DDO ``"noise"``, no
comparison ``"seeds"``, no project/estimates.json) and with those blocks
added from the study's own files by mixing/noise, mixing/verdict and
mixing/estimators.
"""

import glob
import json
import re
import shutil

import html5lib
import matplotlib
import pytest

from autoscale_jax import report
from autoscale_jax.mixing import estimators
from autoscale_jax.mixing import noise as noise_lib
from autoscale_jax.mixing import verdict as verdict_lib
from autoscale_jax.report import check
from autoscale_jax.report import sections
from autoscale_jax.study import layout as layout_lib
from configs import micro

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import micro_study  # pylint: disable=g-import-not-at-top,wrong-import-position

DOMAINS = ("alpha", "beta", "gamma")
MIXTURES = micro_study.REPORT_MIXTURES  # projected, uniform, ddo_small
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _config():
  c = micro.get_config()
  c.ddo.seeds = (0, 1)
  c.final.seeds = (0, 1)
  c.final.mixtures = list(MIXTURES)
  return c


def _json(path):
  with open(path) as f:
    return json.load(f)


def _write(path, obj):
  with open(path, "w") as f:
    json.dump(obj, f)


@pytest.fixture
def study(micro_report):
  """The shared study's workdir (read only: tests build reports on copies)."""
  return micro_report.workdir


def _copy(study, tmp_path, name):
  dst = tmp_path / name
  shutil.copytree(study, dst, ignore=shutil.ignore_patterns("runs", "cache",
                                                            "report"))
  return dst


def _strip_new_blocks(workdir):
  """Makes ``workdir`` look like an older study's (whatever the stages of
  this checkout write)."""
  for k in (0, 1):
    path = workdir / "ddo" / f"budget_{k}" / "mixture.json"
    mix = _json(path)
    mix.pop("noise", None)
    _write(path, mix)
  path = workdir / "final" / "comparison.json"
  comparison = _json(path)
  comparison.pop("seeds", None)
  _write(path, comparison)
  est = workdir / "project" / "estimates.json"
  if est.exists():
    est.unlink()


def _final_curves(workdir):
  """``{mixture: {seed: curve}}`` straight from the store's final records
  (``final_<mixture>`` for the first seed, ``final_<mixture>_s<k>`` after)."""
  curves = {}
  for path in glob.glob(str(workdir / "store" / "final_*.json")):
    rec = _json(path)
    name = re.sub(r"_s\d+$", "", rec["name"].removeprefix("final_"))
    curves.setdefault(name, {})[rec["seed"]] = rec["curve"]
  return curves


def _build(workdir):
  layout = layout_lib.Layout.of(workdir)
  rep = report.write(_config(), layout)
  html = (workdir / "report" / "index.html").read_text()
  md = (workdir / "report" / "README.md").read_text()
  return rep, md, html


def _parse(html):
  """The document, parsed strictly (any parse error raises)."""
  return html5lib.HTMLParser(
      strict=True, tree=html5lib.getTreeBuilder("etree"),
      namespaceHTMLElements=False).parse(html)


def _text(el):
  return "".join(el.itertext())


def _check_common(workdir, rep, md, html):
  doc = _parse(html)
  body = doc.find("body")
  first_p = body.find("p")
  paragraphs = [line for line in md.splitlines()
                if line and not line.startswith("#")]
  # The first paragraph, in both files, is the verdict on every baseline.
  assert paragraphs[0].startswith("**Verdict**")
  # Then what was trained, and whether the seeds are initializations too.
  assert paragraphs[1].startswith("Model: ")
  assert "; each seed its own initialization." in paragraphs[1]
  assert _text(first_p).startswith("Verdict")
  for b in MIXTURES[1:]:
    assert f"projected vs {b}: " in paragraphs[0]
    assert f"projected vs {b}: " in _text(first_p)
  # Every image the HTML shows and every figure the markdown names exists
  # next to them and is a PNG.
  srcs = [img.get("src") for img in doc.iter("img")]
  assert len(srcs) >= 8
  for src in srcs:
    path = workdir / "report" / src
    assert path.read_bytes()[:8] == PNG_MAGIC, src
  for fig in rep.figures.values():
    assert f"]({fig.file})" in md
    assert fig.file in srcs
  for key in ("final_curves", "per_domain", "weights", "trajectory",
              "tokens_loglog", "fits_absolute", "fits_0", "fits_1",
              "predicted_observed"):
    assert key in rep.figures, key
  # The curves' legend names every mixture by its config name.
  labels = rep.figures["final_curves"].labels
  assert set(MIXTURES) <= set(labels)
  assert "mixture" not in labels
  # Bars relative to uniform: every other mixture has its own.
  assert set(rep.figures["per_domain"].labels) == set(MIXTURES) - {"uniform"}
  # The limits come last; per-domain fit warnings live in the fit tables.
  headings = [h.text for h in body.iter("h2")]
  assert headings[0] == "Final runs at the target budget"
  assert headings[-1] == "Limits"
  limits = md.split("## Limits")[1]
  assert "domain '" not in limits
  for k in (0, 1):
    mix = _json(workdir / "ddo" / f"budget_{k}" / "mixture.json")
    for w in mix["warnings"]:
      if w.startswith("domain '"):
        d = w.split("'")[1]
        f = mix["fits"][d]
        row = next(line for line in md.splitlines() if line.startswith(
            f"| {d} | {f['a']:.4f} | {f['b']:.4f} | {f['c']:.4f} |"))
        assert row.rstrip(" |").split("|")[-1].strip() not in ("", "-")


def test_old_workdir_without_noise_seeds_or_estimates(study, tmp_path):
  workdir = _copy(study, tmp_path, "old")
  _strip_new_blocks(workdir)
  rep, md, html = _build(workdir)
  _check_common(workdir, rep, md, html)
  assert md.count("noise not measured (one seed)") == 2
  assert "Other estimators: not computed" in md
  # The verdict is computed from the final records: two paired seeds, so
  # every sentence is the seed verdict's own, with its 95% interval.
  want = verdict_lib.seed_verdict(_final_curves(workdir), "ppl_seq",
                                  "projected", list(MIXTURES[1:]))
  assert all(m["n"] == 2 for m in want["mixtures"].values())
  first = md.split("\n\n")[1]
  for sentence in want["sentences"]:
    assert sentence in first
  assert "95% CI" in first


def _add_new_blocks(workdir):
  """Noise per budget, the seeds block and every estimator's mixture, from
  the study's own files."""
  runs, mixtures = [], []
  for k in (0, 1):
    path = workdir / "ddo" / f"budget_{k}" / "mixture.json"
    mix = _json(path)
    runs.append(_json(workdir / "ddo" / f"budget_{k}" / "runs.json"))
    mix["noise"] = noise_lib.measure_noise(runs[-1])
    _write(path, mix)
    mixtures.append(mix)
  path = workdir / "final" / "comparison.json"
  comparison = _json(path)
  # 90%, not the report's 95%: the sentences must come from this block.
  comparison["seeds"] = verdict_lib.seed_verdict(
      _final_curves(workdir), "ppl_seq", "projected", list(MIXTURES[1:]),
      confidence=0.9)
  _write(path, comparison)
  # Every estimator but the joint fit (the slowest; the report treats every
  # name alike), as estimators.estimate_all writes them.
  inp = estimators.EstimatorInput(runs, mixtures, mixtures[0]["base_weights"])
  target = float(_config().project.target_tokens)
  est = {n: estimators.estimate(n, inp, target) for n in estimators.NAMES
         if n != "joint"}
  est["broken"] = {"estimator": "broken", "error": "ValueError: on purpose"}
  _write(workdir / "project" / "estimates.json", est)
  proj = _json(workdir / "project" / "mixture.json")
  proj["estimator"] = "paper"
  _write(workdir / "project" / "mixture.json", proj)
  return mixtures, comparison["seeds"], est


def test_new_workdir_with_noise_seeds_and_estimates(study, tmp_path):
  workdir = _copy(study, tmp_path, "new")
  _strip_new_blocks(workdir)
  mixtures, seeds, est = _add_new_blocks(workdir)
  rep, md, html = _build(workdir)
  _check_common(workdir, rep, md, html)
  first = md.split("\n\n")[1]
  for sentence in seeds["sentences"]:
    assert sentence in first
  assert "noise not measured" not in md
  for mix in mixtures:
    noise = mix["noise"]
    assert noise["num_seeds"] == 2
    for d, r in noise["domains"].items():
      assert (f"| {d} | {r['low_x']:.3g}x to {r['high_x']:.3g}x | "
              f"{r['effect']:.4f} | {r['specific_effect']:+.4f} |") in md
  # Every estimator side by side, the one used marked, the failure named.
  ok = [n for n, e in est.items() if "weights" in e]
  header = next(line for line in md.splitlines()
                if line.startswith("| domain | ") and ok[-1] in line)
  for name in ok:
    assert name in header
  assert "**paper** (used)" in header
  for d in DOMAINS:
    assert ("| " + " | ".join(
        [d] + [f"{est[n]['weights'][d]:.4f}" for n in ok]) + " |") in md
  assert "`broken` failed: ValueError: on purpose" in md
  assert "Estimator `paper`" in md


def test_check_files_names_missing_and_invalid_images(tmp_path):
  # What make report-check verifies without a browser.
  fig, _ = plt.subplots(figsize=(2, 1))
  fig.savefig(tmp_path / "ok.png")
  plt.close(fig)
  (tmp_path / "text.png").write_text("not a png")
  (tmp_path / "index.html").write_text(
      '<!DOCTYPE html><html><body><img src="ok.png" alt="a">'
      '<img src="gone.png" alt="b"><img src="text.png" alt="c">'
      '<img src="/abs.png" alt="d"></body></html>')
  srcs, problems = check.check_files(tmp_path)
  assert srcs == ["ok.png", "gone.png", "text.png", "/abs.png"]
  assert check.png_size(tmp_path / "ok.png") == (200, 100)
  assert [p.split(":")[0] for p in problems] == ["gone.png", "text.png",
                                                 "'/abs.png'"]


def test_free_text_renders_literally():
  note = "N_i(t) = N1*_i (N2*_i/N1*_i)^t for ddo_small <b> [x]"
  body = report.markdown_to_html(sections.plain(note), "t")
  p = _parse(body).find("body").find("p")
  assert _text(p) == note
  assert list(p) == []  # no <em>, <b> or link elements
