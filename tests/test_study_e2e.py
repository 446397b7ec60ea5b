"""The whole study through the CLI on the micro config (fixture corpus).

`--stage=all` runs DDO at two budgets, projection, final training and the
report; a second invocation reuses every finished run and gives the same
numbers; a changed config makes the old records stale, never reused.
"""

import json
import os
import re
import subprocess
import sys

import pytest

import micro_study
import run_events

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOMAINS = ("alpha", "beta", "gamma")


# One line per finished run: "[LABEL]: NAME done in ...".
TRAINED = re.compile(r"\]: (\S+) done in ")
REUSED = re.compile(r"\]: (\d+) of \d+ runs reused from the store")


def _run(*args, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user would run it
  r = subprocess.run(
      [sys.executable, "-m", "autoscale_jax.main", *args], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=timeout)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  return r


def _cli(*args, timeout=600):
  return _run(*args, timeout=timeout).stdout


def _reused(out):
  """How many runs the folded "N of M runs reused" lines count."""
  return sum(int(n) for n in REUSED.findall(out))


@pytest.fixture
def study(micro_base):
  """The shared micro study (tests/micro_study.py: `--stage=all` one run at a
  time, the reference the swarm test compares against): workdir, stdout and
  stderr. Read only: a test that runs a stage in it takes `copy`."""
  return micro_base.workdir, micro_base.out, micro_base.err


@pytest.fixture
def copy(micro_base, tmp_path):
  """A private copy of the shared study's workdir, as `study` gives it."""
  workdir = micro_study.copy_workdir(micro_base.workdir, tmp_path / "micro")
  return workdir, micro_base.out, micro_base.err


def _json(path):
  with open(path) as f:
    return json.load(f)


def test_all_stages_ran(study):
  workdir, out, _ = study
  for k, stage in enumerate(("ddo", "project", "final", "report"), 1):
    assert f"=== stage {k}/4: {stage} ===" in out
  # 2 budgets x (2m + 1) DDO runs + 2 final runs, one record each.
  records = sorted(os.listdir(workdir / "store"))
  assert len(records) == 2 * (2 * len(DOMAINS) + 1) + 2
  assert len(TRAINED.findall(out)) == len(records)
  for k in (0, 1):
    assert (workdir / "ddo" / f"budget_{k}" / "mixture.json").exists()
  assert (workdir / "project" / "mixture.json").exists()
  assert (workdir / "final" / "comparison.json").exists()


# stdout lines of a micro --stage=all besides the one line per finished run
# (measured, 3 domains, 2 budgets: stage headers, data and store, each
# budget's header, optimum, grouped fit warnings and noise line, projection
# and estimators, verdict, summary); none of them grows with the runs.
FIXED_LINES = 54


def test_output_is_short_and_ends_with_the_summary(study):
  workdir, out, err = study
  lines = out.splitlines()
  print(f"micro --stage=all: {len(lines)} stdout lines")  # for the record
  # Not a terminal: no per-step progress (bar, eval or swarm step lines).
  assert not re.search(r"\] step \d+/\d+|eval step \d+|\r", out)
  assert "is partial" not in out  # absl INFO, hidden by default
  # One line per finished run, each with the whole-study progress.
  runs = 2 * (2 * len(DOMAINS) + 1) + 2
  run_lines = [l for l in lines if TRAINED.search(l)]
  assert len(run_lines) == runs
  assert len(lines) <= runs + FIXED_LINES, "\n".join(lines)
  assert not err.strip(), err  # nothing on stderr
  assert run_lines[-1].endswith(f"[study] {runs}/{runs} runs done")
  assert f"[study] 1/{runs} runs done, {runs - 1} to go, ETA " in out
  # TensorFlow's C++ start-up lines are filtered out of both streams.
  for text in (out, err):
    assert "cudart_stub" not in text and "oneDNN" not in text
  # The summary block is last: verdict sentences, then the paths.
  summary = lines[lines.index("=== summary ==="):]
  sentences = _json(workdir / "final" / "comparison.json")["seeds"]["sentences"]
  assert summary[1:1 + len(sentences)] == [f"verdict: {s}" for s in sentences]
  assert summary[-6].endswith(str(workdir / "report" / "index.html"))
  assert summary[-5].endswith(str(workdir / "report" / "README.md"))
  assert summary[-4].endswith(str(workdir / "project" / "mixture.json"))
  assert summary[-3].endswith(str(workdir / "project" / "export") + "/")
  assert summary[-2].endswith(str(workdir / "project" / "export" / "README.md"))
  assert summary[-1].endswith(str(workdir / "final" / "comparison.md"))
  assert len(summary) == 1 + len(sentences) + 6


def test_every_run_logs_per_domain_evals_and_its_mixture(study):
  """TensorBoard of every DDO and final run: eval/<domain>/<metric> at each
  evaluation (the record's curve) and the run's tokens as hparams."""
  workdir, *_ = study
  store = workdir / "store"
  for path in sorted(store.iterdir()):
    record = _json(path)
    scalars, hparams = run_events.tensorboard(record["run_dir"])
    for point in record["curve"]:
      for d in DOMAINS:
        for m, v in point["domains"][d].items():
          assert scalars[f"eval/{d}/{m}"][point["step"]] == pytest.approx(
              v, rel=1e-6), (path.name, d, m)
    total = sum(record["tokens"].values())
    assert hparams["budget_tokens"] == pytest.approx(total)
    for d, t in record["tokens"].items():
      assert hparams[f"weight/{d}"] == pytest.approx(t / total)
      assert hparams[f"tokens/{d}"] == pytest.approx(t)


def test_report_names_domains_and_matches_json(study):
  workdir, *_ = study
  md = (workdir / "report" / "README.md").read_text()
  html = (workdir / "report" / "index.html").read_text()
  for d in DOMAINS:
    assert d in md and d in html
  for k in (0, 1):
    mix = _json(workdir / "ddo" / f"budget_{k}" / "mixture.json")
    for d in DOMAINS:
      assert f"{mix['weights'][d]:.4f}" in md
      fit = mix["fits"][d]
      assert f"| {d} | {fit['a']:.4f} | {fit['b']:.4f} | {fit['c']:.4f} |" in md
  proj = _json(workdir / "project" / "mixture.json")
  for d in DOMAINS:
    assert f"| {d} | {proj['weights'][d]:.4f} | {proj['tokens'][d]:.4g} |" in md
  comparison = _json(workdir / "final" / "comparison.json")
  for name, final in comparison["final_eval"].items():
    assert name in md
  for png in ("weights.png", "trajectory.png", "final_curves.png",
              "fits_budget_0.png"):
    assert (workdir / "report" / png).stat().st_size > 1000
    assert png in html


def test_second_run_reuses_everything(copy):
  workdir, *_ = copy
  before = {k: (workdir / "ddo" / f"budget_{k}" / "mixture.json").read_bytes()
            for k in (0, 1)}
  comparison = _json(workdir / "final" / "comparison.json")
  out = _cli("--stage=all", "--config=configs/micro.py", f"--workdir={workdir}")
  assert not TRAINED.findall(out)
  assert _reused(out) == 2 * (2 * len(DOMAINS) + 1) + 2
  for k in (0, 1):
    after = (workdir / "ddo" / f"budget_{k}" / "mixture.json").read_bytes()
    assert after == before[k]
  assert _json(workdir / "final" / "comparison.json") == comparison


def test_swarm_ddo_gives_the_same_mixture(study, tmp_path):
  workdir, *_ = study
  out = _cli("--stage=ddo", "--config=configs/micro.py", f"--workdir={tmp_path}",
             "--config.run.swarm=vmap")
  assert out.count("training 7 runs as one program (vmap)") == 2
  for k in (0, 1):
    # Every run's per-domain metric matches the one-by-one study to float
    # tolerance; the fitted weights then agree closely (the 3-point fit
    # amplifies float-level differences, hence the looser bound).
    micro_study.assert_same_ddo_runs(tmp_path, workdir, DOMAINS, k)
    ours = _json(tmp_path / "ddo" / f"budget_{k}" / "mixture.json")
    ref = _json(workdir / "ddo" / f"budget_{k}" / "mixture.json")
    for d in DOMAINS:
      assert ours["weights"][d] == pytest.approx(ref["weights"][d], abs=5e-3)


def test_execution_only_settings_keep_runs(copy):
  # Logging, checkpointing, eval batching, remat, steps per call and the
  # swarm switch (config.run) do not change a run's result, so they do not
  # change its identity.
  workdir, *_ = copy
  out = _cli("--stage=ddo", "--config=configs/micro.py", f"--workdir={workdir}",
             "--config.run.log_every_steps=3",
             "--config.run.checkpoint_every_steps=7",
             "--config.run.eval_batch_size=4", "--config.run.remat=True",
             "--config.run.swarm=scan", "--config.run.steps_per_call=3",
             "--config.run.keep_checkpoints=1")
  assert not TRAINED.findall(out) and "stale" not in out
  assert _reused(out) == 2 * (2 * len(DOMAINS) + 1)


def test_changed_config_reports_stale_and_retrains(copy):
  # On a copy: it rewrites the study's DDO outputs.
  workdir, *_ = copy
  # The retraining as one program per budget, without run.swarm=auto's
  # timing of every way (an execution setting: same records, less time).
  out = _cli("--stage=ddo", "--config=configs/micro.py", f"--workdir={workdir}",
             "--config.train.learning_rate=0.001", "--config.run.swarm=vmap")
  # One line for every stale record of both budgets, the first named.
  stale = 2 * (2 * len(DOMAINS) + 1)
  [line] = [l for l in out.splitlines() if "stale record" in l]
  assert line.startswith(f"store: {stale} stale records (b0_base_s0, "), line
  assert len([n for n in TRAINED.findall(out) if re.match(r"b\d_", n)]) == \
      2 * (2 * len(DOMAINS) + 1)


def test_bert_ddo_through_the_cli(tmp_path):
  out = _cli("--stage=ddo", "--config=configs/micro.py", f"--workdir={tmp_path}",
             "--config.model.kind=bert", "--config.ddo.budgets=(4096.,)",
             "--config.project.target_tokens=16384.")
  assert len([n for n in TRAINED.findall(out) if re.match(r"b\d_", n)]) == \
      2 * len(DOMAINS) + 1
  # run.swarm="auto" (the default) measured both ways and said which won.
  assert re.search(r"one step of 7 runs: 7 x [\d.,]+ ms one by one, [\d.,]+ "
                   r"ms as one vmap program, [\d.,]+ ms as one scan program "
                   r"\([\d.]+x\): (swarm \((vmap|scan)\)|one by one)",
                   out), out[-2000:]
  mixture = _json(tmp_path / "ddo" / "budget_0" / "mixture.json")
  assert set(mixture["weights"]) == set(DOMAINS)
  assert abs(sum(mixture["weights"].values()) - 1) < 1e-9
