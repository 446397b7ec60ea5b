"""The CLI fault battery: every bad input is one `error:` line and exit 2.

Table-driven: each :class:`Case` is an argv (with ``{study}``, ``{tmp}`` and
``{repo}`` filled in) and an optional setup that corrupts, edits or removes
files first. Every case must

* exit with status 2,
* print exactly one line on stderr, starting with ``error:``, with no
  traceback and no Python repr escapes,
* name the bad input in that line (``names``), and
* lose nothing finished: the store's records, the finished runs' results and
  the stage outputs of the finished micro study it ran against hold the same
  bytes afterwards (a case that corrupts one of them is compared on the
  others).

The micro study is built once per session (a copy of the session's shared
one, tests/micro_study.py) and shared; a case that mutates it
runs on a copy (``copy=True``). Cases run ``autoscale_jax.main`` in-process
(flags reset between calls); :func:`test_through_a_real_process` runs a few
through ``python -m autoscale_jax.main`` from another directory to prove the
wiring. Add a case here for every new input the command line accepts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Callable

from absl import flags
import pytest

from autoscale_jax import main as main_lib
import micro_study

REPO = pathlib.Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def invoke(argv: list[str]) -> tuple[int, str, str]:
  """Runs the CLI in-process as `autoscale-jax ARGV`: (exit code, out, err).

  Parses the flags as ``app.run`` would (``main._parse_flags``) after
  resetting them (config override flags are defined per parse, so they are
  deleted first), then calls ``main.main``.
  """
  for name in list(flags.FLAGS):
    if name.startswith("config."):
      delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
  full = ["autoscale-jax", *argv]
  out, err = io.StringIO(), io.StringIO()
  saved_argv, sys.argv = sys.argv, full  # the config flag reads sys.argv
  code = 0
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        main_lib.main(main_lib._parse_flags(full))  # pylint: disable=protected-access
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
  finally:
    sys.argv = saved_argv
    flags.FLAGS.unparse_flags()
  return code, out.getvalue(), err.getvalue()


# Files of a finished study that no failing command may change.
_FINISHED_GLOBS = ("store/*.json", "runs/*/result.json", "ddo/*/mixture.json",
                   "ddo/*/runs.json", "project/mixture.json",
                   "final/comparison.json")


def finished_files(study: pathlib.Path) -> dict[str, str]:
  """{relative path: sha256} of the study's finished results."""
  return {str(p.relative_to(study)): hashlib.sha256(p.read_bytes()).hexdigest()
          for pattern in _FINISHED_GLOBS for p in sorted(study.glob(pattern))}


@pytest.fixture(scope="session")
def finished_study(micro_base, tmp_path_factory) -> pathlib.Path:
  """One finished micro study (all stages): the battery's own copy of the
  session's shared one (tests/micro_study.py), made once per session."""
  study = micro_study.copy_workdir(
      micro_base.workdir, tmp_path_factory.mktemp("battery") / "micro")
  # project/mixture.json names its inputs by absolute path: project again so
  # the copy's names its own (every run and optimum is reused as it is).
  code, out, err = invoke(["--stage=project", "--config=micro",
                           f"--workdir={study}"])
  assert code == 0, out[-2000:] + err[-2000:]
  assert (study / "final" / "comparison.json").exists()
  return study


# --- setups: (study dir, scratch dir) -> None --------------------------------


def _write(rel: str, content: str | bytes) -> Callable:
  def setup(study: pathlib.Path, tmp: pathlib.Path) -> None:
    path = (tmp if rel.startswith("{tmp}/") else study) / rel.split("}/")[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
      path.write_bytes(content)
    else:
      path.write_text(content)
  return setup


def _in_store(name: str, edit: Callable[[bytes], bytes]) -> Callable:
  """Rewrites the store record of run ``name`` with ``edit(bytes)``."""
  def setup(study: pathlib.Path, tmp: pathlib.Path) -> None:
    del tmp
    (path,) = study.glob(f"store/{name}__*.json")
    path.write_bytes(edit(path.read_bytes()))
  return setup


def _edit_value(raw: bytes) -> bytes:
  record = json.loads(raw)
  record["final_eval"]["aggregate"]["ppl_seq"] *= 0.7  # still valid JSON
  return json.dumps(record).encode()


def _truncated_result(study: pathlib.Path, tmp: pathlib.Path) -> None:
  del tmp
  (record,) = study.glob("store/b0_base_s0__*.json")
  record.unlink()  # the run is then read back from its result.json
  (run_dir,) = study.glob("runs/b0_base_s0-*")
  (run_dir / "result.json").write_text('{"steps": 3')


def _two_optima(budgets=(1000.0, 2000.0), edit=None) -> Callable:
  def setup(study: pathlib.Path, tmp: pathlib.Path) -> None:
    del study
    for k, budget in enumerate(budgets):
      obj = {"budget_tokens": budget, "weights": {"a": 0.25, "b": 0.75},
             "tokens": {"a": budget / 4, "b": 3 * budget / 4}}
      if edit and k == 1:
        edit(obj)
      (tmp / f"m{k}.json").write_text(json.dumps(obj))
  return setup


def _runs_json(study: pathlib.Path, tmp: pathlib.Path) -> None:
  """A valid RUNS.json (the micro study's first budget) at {tmp}/runs.json."""
  shutil.copy(study / "ddo" / "budget_0" / "runs.json", tmp / "runs.json")


def _chmod(rel: str, mode: int) -> Callable:
  def setup(study: pathlib.Path, tmp: pathlib.Path) -> None:
    path = tmp / rel
    if not path.exists():
      path.mkdir() if rel.endswith("/") else path.write_text("{}")
    path.chmod(mode)
  return setup


def _config(text: str) -> Callable:
  return _write("{tmp}/study_config.py", text)


# --- the table ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
  """One bad input: the argv, what the error line names, how to set it up."""
  id: str
  argv: tuple[str, ...]
  names: tuple[str, ...]  # substrings the error line must hold
  setup: Callable | None = None
  copy: bool = False  # mutates the study: run on a copy
  marks: tuple = ()


_MICRO = ("--config=micro", "--workdir={study}")
_CFG = "--config={tmp}/study_config.py"

CASES = [
    # Config loading.
    Case("config_missing_file", ("--stage=ddo", "--config=/nonexistent/s.py",
                                 "--workdir={tmp}/w"),
         ("/nonexistent/s.py", "not found", "micro")),
    Case("config_unknown_name", ("--stage=ddo", "--config=nosuchstudy",
                                 "--workdir={tmp}/w"),
         ("nosuchstudy", "built-in name", "demo")),
    Case("config_is_a_directory", ("--stage=ddo", "--config={tmp}",
                                   "--workdir={tmp}/w"),
         ("is a directory",)),
    Case("config_empty", ("--stage=ddo", "--config=", "--workdir={tmp}/w"),
         ("--config is empty",)),
    Case("config_syntax_error", ("--stage=ddo", _CFG, "--workdir={tmp}/w"),
         ("study_config.py", "syntax error at line 2"),
         setup=_config("def get_config():\n  return (\n")),
    Case("config_get_config_raises", ("--stage=ddo", _CFG, "--workdir={tmp}/w"),
         ("study_config.py", "get_config()", "(line 3)", "KeyError", "boom"),
         setup=_config("def get_config():\n  c = {}\n  return c['boom']\n")),
    Case("config_returns_dict", ("--stage=ddo", _CFG, "--workdir={tmp}/w"),
         ("study_config.py", "returned dict", "base_config()"),
         setup=_config("def get_config():\n  return {'train': {}}\n")),
    Case("config_returns_none", ("--stage=ddo", _CFG, "--workdir={tmp}/w"),
         ("study_config.py", "returned NoneType"),
         setup=_config("def get_config():\n  pass\n")),
    Case("config_without_get_config",
         ("--stage=ddo", _CFG, "--config.train.learning_rate=0.1",
          "--workdir={tmp}/w"),
         ("study_config.py", "defines no get_config()"),
         setup=_config("CONFIG = 1\n")),
    Case("config_import_fails", ("--stage=ddo", _CFG, "--workdir={tmp}/w"),
         ("study_config.py", "no_such_module_xyz", "import failed"),
         setup=_config("import no_such_module_xyz\n")),
    Case("config_without_study_keys", ("--stage=ddo", _CFG,
                                       "--workdir={tmp}/w"),
         ("study_config.py", "without the study keys", "train"),
         setup=_config("import ml_collections\n\ndef get_config():\n"
                       "  return ml_collections.ConfigDict({'a': 1})\n")),
    Case("config_not_python", ("--stage=ddo", _CFG, "--workdir={tmp}/w"),
         ("study_config.py",),
         setup=_write("{tmp}/study_config.py", b"\x00\xff\xfe\x80 garbage")),
    # --config.* overrides.
    Case("override_typo_did_you_mean",
         ("--stage=ddo", *_MICRO, "--config.train.lerning_rate=0.1"),
         ("--config.train.lerning_rate", "did you mean "
          "--config.train.learning_rate?")),
    Case("override_unknown_section",
         ("--stage=ddo", *_MICRO, "--config.trian.learning_rate=0.1"),
         ("--config.trian.learning_rate", "--config.train.learning_rate")),
    Case("override_unknown_key", ("--stage=ddo", *_MICRO, "--config.zzz=1"),
         ("--config.zzz", "no such config key")),
    Case("override_bad_type",
         ("--stage=ddo", *_MICRO, "--config.train.learning_rate=abc"),
         ("config.train.learning_rate", "abc")),
    Case("override_bad_value",
         ("--stage=ddo", *_MICRO, "--config.train.learning_rate=-1"),
         ("config.train.learning_rate=-1.0", "> 0")),
    Case("override_moved_key", ("--stage=ddo", *_MICRO,
                                "--config.train.swarm=off"),
         ("config.train.swarm", "--config.run.swarm")),
    Case("override_bad_tuple", ("--stage=ddo", *_MICRO,
                                "--config.ddo.budgets=(abc"),
         ("config.ddo.budgets",)),
    Case("override_bad_choice", ("--stage=ddo", *_MICRO,
                                 "--config.model.kind=rnn"),
         ("config.model.kind", "rnn")),
    Case("override_bad_bool", ("--stage=ddo", *_MICRO,
                               "--config.run.remat=maybe"),
         ("config.run.remat", "maybe")),
    Case("override_before_config", ("--stage=ddo", "--config.train.seq_len=8",
                                    "--config=micro", "--workdir={study}"),
         ("--config.train.seq_len",)),
    # Flags.
    Case("no_stage", ("--config=micro", "--workdir={study}"),
         ("--stage is required",)),
    Case("unknown_stage", ("--stage=everything", *_MICRO),
         ("everything",)),
    Case("unknown_flag", ("--stagee=ddo", *_MICRO), ("stagee",)),
    Case("positional_argument", ("--stage=ddo", *_MICRO, "extra"),
         ("extra",)),
    Case("no_workdir", ("--stage=ddo", "--config=micro"),
         ("--workdir is required",)),
    Case("stage_needs_config", ("--stage=ddo", "--workdir={study}"),
         ("--config",)),
    Case("worker_index_out_of_range", ("--stage=ddo", *_MICRO,
                                       "--worker_index=3", "--num_workers=2"),
         ("--worker_index",)),
    Case("num_workers_zero", ("--stage=ddo", *_MICRO, "--num_workers=0",
                              "--worker_index=0"),
         ("--num_workers",)),
    Case("target_tokens_not_a_number", ("--stage=project", *_MICRO,
                                        "--target_tokens=lots"),
         ("target_tokens", "lots")),
    Case("bool_flag_with_value", ("--stage=ddo", *_MICRO,
                                  "--allow_repeat=maybe"),
         ("allow_repeat",)),
    # The workdir.
    Case("workdir_is_a_file", ("--stage=fit", "--results={tmp}/runs.json",
                               "--workdir={tmp}/runs.json"),
         ("--workdir={tmp}/runs.json", "is a file"), setup=_runs_json),
    Case("workdir_under_a_file", ("--stage=report", "--config=micro",
                                  "--workdir={tmp}/runs.json/study"),
         ("{tmp}/runs.json/study", "cannot be created", "is a file"), setup=_runs_json),
    Case("workdir_cannot_be_created", ("--stage=ddo", "--config=micro",
                                       "--workdir=/sys/autoscale_battery"),
         ("/sys/autoscale_battery", "cannot be created"),
         marks=(pytest.mark.skipif(not os.path.isdir("/sys/kernel"),
                                   reason="needs Linux sysfs"),)),
    Case("workdir_read_only", ("--stage=fit", "--results={study}/ddo/"
                               "budget_0/runs.json", "--workdir={tmp}/ro"),
         ("{tmp}/ro", "not writable"), setup=_chmod("ro/", 0o555),
         marks=(pytest.mark.skipif(IS_ROOT, reason="root writes anywhere"),)),
    # File-only fit (--results).
    Case("results_missing", ("--stage=fit", "--results={tmp}/nope.json",
                             "--workdir={tmp}/out"),
         ("{tmp}/nope.json",)),
    Case("results_is_a_directory", ("--stage=fit", "--results={tmp}",
                                    "--workdir={tmp}/out"),
         ("{tmp}",)),
    Case("results_csv_missing_columns", ("--stage=fit",
                                         "--results={tmp}/runs.csv",
                                         "--workdir={tmp}/out"),
         ("{tmp}/runs.csv", "missing column", "budget", "seed"),
         setup=_write("{tmp}/runs.csv", "name,tokens,eval\nbase,1,2\n")),
    Case("results_binary", ("--stage=fit", "--results={tmp}/runs.json",
                            "--workdir={tmp}/out"),
         ("{tmp}/runs.json",),
         setup=_write("{tmp}/runs.json", b"\x00\xff\xfe\x80")),
    Case("results_empty", ("--stage=fit", "--results={tmp}/runs.json",
                           "--workdir={tmp}/out"),
         ("{tmp}/runs.json",), setup=_write("{tmp}/runs.json", "")),
    Case("results_a_list", ("--stage=fit", "--results={tmp}/runs.json",
                            "--workdir={tmp}/out"),
         ("{tmp}/runs.json",), setup=_write("{tmp}/runs.json", "[1, 2]")),
    Case("results_no_runs", ("--stage=fit", "--results={tmp}/runs.json",
                             "--workdir={tmp}/out"),
         ("runs",),
         setup=_write("{tmp}/runs.json", '{"metric": "ppl", "runs": []}')),
    Case("results_unreadable", ("--stage=fit", "--results={tmp}/locked.json",
                                "--workdir={tmp}/out"),
         ("{tmp}/locked.json",), setup=_chmod("locked.json", 0),
         marks=(pytest.mark.skipif(IS_ROOT, reason="root reads anything"),)),
    Case("results_run_off_in_two_domains",
         ("--stage=fit", "--results={tmp}/runs.json", "--workdir={tmp}/out"),
         ("'off3'", "'r0'", "3 domains"),
         setup=_write("{tmp}/runs.json", json.dumps({"metric": "ppl", "runs": [
             {"name": n, "tokens": dict(zip("abc", t)),
              "eval": {"a": 9.0, "b": 9.0, "c": 9.0}}
             for n, t in [("r0", (100, 100, 100)), ("r1", (20, 100, 100)),
                          ("r2", (300, 100, 100)), ("r3", (100, 20, 100)),
                          ("off3", (20, 20, 20))]]}))),
    Case("results_with_bad_override",
         ("--stage=fit", "--results={tmp}/runs.json", "--config=micro",
          "--config.ddo.metric=bogus", "--workdir={tmp}/out"),
         ("config.ddo.metric", "bogus"), setup=_runs_json),
    # File-only projection (--optima).
    Case("optima_one_file", ("--stage=project", "--optima={tmp}/m0.json",
                             "--target_tokens=1e5", "--workdir={tmp}/out"),
         ("--optima",), setup=_two_optima()),
    Case("optima_missing_file", ("--stage=project",
                                 "--optima={tmp}/m0.json,{tmp}/gone.json",
                                 "--target_tokens=1e5", "--workdir={tmp}/out"),
         ("{tmp}/gone.json",), setup=_two_optima()),
    Case("optima_garbage", ("--stage=project",
                            "--optima={tmp}/m0.json,{tmp}/bad.json",
                            "--target_tokens=1e5", "--workdir={tmp}/out"),
         ("{tmp}/bad.json",),
         setup=lambda s, t: (_two_optima()(s, t),
                             (t / "bad.json").write_text("{weights"))),
    Case("optima_target_below_inputs", ("--stage=project",
                                        "--optima={tmp}/m0.json,{tmp}/m1.json",
                                        "--target_tokens=500",
                                        "--workdir={tmp}/out"),
         ("500",), setup=_two_optima()),
    Case("optima_target_overflows", ("--stage=project",
                                     "--optima={tmp}/m0.json,{tmp}/m1.json",
                                     "--target_tokens=1e300",
                                     "--workdir={tmp}/out"),
         ("1e+300",), setup=_two_optima()),
    Case("optima_target_negative", ("--stage=project",
                                    "--optima={tmp}/m0.json,{tmp}/m1.json",
                                    "--target_tokens=-5", "--workdir={tmp}/out"),
         ("-5",), setup=_two_optima()),
    Case("optima_tokens_contradict_weights",
         ("--stage=project", "--optima={tmp}/m0.json,{tmp}/m1.json",
          "--target_tokens=1e5", "--workdir={tmp}/out"),
         ("{tmp}/m1.json",),
         setup=_two_optima(edit=lambda o: o.update(weights={"a": 0.9,
                                                            "b": 0.1}))),
    # A finished study: final mixtures.
    Case("mixture_unknown_name", ("--stage=final", *_MICRO,
                                  "--mixture=nosuchmix"),
         ("nosuchmix",)),
    Case("mixture_missing_file", ("--stage=final", *_MICRO,
                                  "--mixture={tmp}/mix.json"),
         ("{tmp}/mix.json",)),
    Case("mixture_garbage_file", ("--stage=final", *_MICRO,
                                  "--mixture={tmp}/mix.json"),
         ("{tmp}/mix.json",), setup=_write("{tmp}/mix.json", "weights: a")),
    Case("mixture_wrong_domains", ("--stage=final", *_MICRO,
                                   "--mixture={tmp}/mix.json"),
         ("{tmp}/mix.json",),
         setup=_write("{tmp}/mix.json", '{"weights": {"x": 0.5, "y": 0.5}}')),
    # A finished study: stale results.
    Case("stale_ddo_optima_projected", ("--stage=project", *_MICRO,
                                        "--config.ddo.budgets=(4096.0, "
                                        "16384.0)"),
         ("ddo/budget_1/mixture.json", "--stage=ddo")),
    Case("stale_projection_trained", ("--stage=final", *_MICRO,
                                      "--config.project.target_tokens=65536"),
         ("project/mixture.json", "--stage=project")),
    # A finished study: corrupt files.
    Case("store_record_truncated", ("--stage=report", *_MICRO),
         ("store/b0_base_s0__",), copy=True,
         setup=_in_store("b0_base_s0", lambda raw: raw[:40])),
    Case("store_record_garbage", ("--stage=ddo", *_MICRO),
         ("store/b1_base_s0__",), copy=True,
         setup=_in_store("b1_base_s0", lambda raw: b"\x00\xff garbage \x80")),
    Case("store_record_edited", ("--stage=fit", *_MICRO),
         ("store/b0_alpha_x3_s0__",), copy=True,
         setup=_in_store("b0_alpha_x3_s0", _edit_value)),
    Case("result_json_truncated", ("--stage=ddo", *_MICRO),
         ("result.json", "b0_base_s0"), copy=True, setup=_truncated_result),
    Case("ddo_mixture_corrupt_at_report", ("--stage=report", *_MICRO),
         ("ddo/budget_0/mixture.json", "--stage=ddo"), copy=True,
         setup=_write("ddo/budget_0/mixture.json", '{"budget')),
    Case("ddo_mixture_corrupt_at_project", ("--stage=project", *_MICRO),
         ("ddo/budget_1/mixture.json",), copy=True,
         setup=_write("ddo/budget_1/mixture.json", "")),
    Case("ddo_mixture_a_list_at_report", ("--stage=report", *_MICRO),
         ("ddo/budget_1/mixture.json",), copy=True,
         setup=_write("ddo/budget_1/mixture.json", "[1, 2]")),
    Case("projected_mixture_corrupt_at_final", ("--stage=final", *_MICRO),
         ("project/mixture.json", "--stage=project"), copy=True,
         setup=_write("project/mixture.json", '{"weights": {"al')),
    Case("projected_mixture_corrupt_at_report", ("--stage=report", *_MICRO),
         ("project/mixture.json",), copy=True,
         setup=_write("project/mixture.json", "\x00")),
    Case("comparison_corrupt_at_report", ("--stage=report", *_MICRO),
         ("final/comparison.json", "--stage=final"), copy=True,
         setup=_write("final/comparison.json", "garbage")),
    Case("comparison_a_list_at_report", ("--stage=report", *_MICRO),
         ("final/comparison.json",), copy=True,
         setup=_write("final/comparison.json", "[1, 2]")),
    # A truncated or corrupt token cache is rebuilt from the raw data, or
    # named in one line when the raw data is gone: tests/test_token_cache.py.
]


def _fill(text: str, study: pathlib.Path, tmp: pathlib.Path) -> str:
  return (text.replace("{study}", str(study)).replace("{tmp}", str(tmp))
          .replace("{repo}", str(REPO)))


def check_one_error_line(code: int, err: str, names: list[str]) -> str:
  """Asserts exit 2 and a single plain `error:` line naming ``names``."""
  assert code == 2, f"exit {code}, stderr:\n{err[-3000:]}"
  assert "Traceback" not in err, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  line = lines[0]
  for escape in ("\\n", "\\'", '\\"', "\\x"):
    assert escape not in line, f"repr escape {escape!r} in: {line}"
  for name in names:
    assert name in line, f"{name!r} not named in: {line}"
  return line


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_fault(case: Case, finished_study: pathlib.Path,
               tmp_path: pathlib.Path) -> None:
  study = finished_study
  if case.copy:
    study = tmp_path / "study"
    shutil.copytree(finished_study, study)
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  if case.setup:
    case.setup(study, scratch)
  before = finished_files(study)
  code, _, err = invoke([_fill(a, study, scratch) for a in case.argv])
  check_one_error_line(code, err, [_fill(n, study, scratch)
                                   for n in case.names])
  assert finished_files(study) == before, "a failing command changed results"


def test_battery_size():
  assert len(CASES) >= 40


def test_battery_leaves_the_shared_study_finished(finished_study):
  """The shared study still reuses every run (nothing lost or made stale)."""
  before = finished_files(finished_study)
  code, out, err = invoke(["--stage=report", "--config=micro",
                           f"--workdir={finished_study}"])
  assert code == 0, err
  assert finished_files(finished_study) == before


def test_finished_runs_keep_params_only_and_are_reused(finished_study):
  """run.keep_after_finish="params" (the default): no run keeps checkpoints
  (optimizer state), each run trained alone keeps its final params, and the
  study is reused from the store: no run retrained, final and report work."""
  run_dirs = [d for d in (finished_study / "runs").iterdir() if d.is_dir()]
  assert run_dirs and not [d for d in run_dirs
                           if (d / "checkpoints").exists()]
  final_dirs = [d for d in run_dirs if d.name.startswith("final_")]
  assert final_dirs and all((d / "params.npz").exists() for d in final_dirs)
  before = finished_files(finished_study)
  code, out, err = invoke(["--stage=all", "--config=micro",
                           f"--workdir={finished_study}"])
  assert code == 0, err[-3000:]
  assert "14 of 14 DDO runs done, 0 to train" in out, out
  assert not re.search(r"done in \d", out), out  # no run trained again
  # A retrained run would rewrite its record (its wall time differs).
  assert finished_files(finished_study) == before
  assert (finished_study / "report" / "index.html").exists()


def _cli(args: list[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=os.pathsep.join(
                 [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")]
                                if p]))
  return subprocess.run([sys.executable, "-m", "autoscale_jax.main", *args],
                        cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=300)


@pytest.mark.parametrize("case_id", [
    "config_syntax_error", "override_typo_did_you_mean", "workdir_is_a_file",
    "store_record_edited"])
def test_through_a_real_process(case_id, finished_study, tmp_path):
  """The same cases through `python -m autoscale_jax.main`, from another
  directory (the config by name and by absolute path both resolve)."""
  case = next(c for c in CASES if c.id == case_id)
  study = finished_study
  if case.copy:
    study = tmp_path / "study"
    shutil.copytree(finished_study, study)
  scratch = tmp_path / "scratch"
  scratch.mkdir()
  if case.setup:
    case.setup(study, scratch)
  before = finished_files(study)
  r = _cli([_fill(a, study, scratch) for a in case.argv], cwd=scratch)
  check_one_error_line(r.returncode, r.stderr,
                       [_fill(n, study, scratch) for n in case.names])
  assert finished_files(study) == before
