"""The console formatters: whole-study progress/ETA and one line per run."""

import io

from autoscale_jax import tfenv
from autoscale_jax.study import console
from autoscale_jax.study import progress
from autoscale_jax.train import runlog


def test_fmt_duration():
  assert progress.fmt_duration(0) == "0s"
  assert progress.fmt_duration(44.6) == "45s"
  assert progress.fmt_duration(250) == "4m10s"
  assert progress.fmt_duration(3600 + 2 * 60 + 5) == "1h02m"
  assert progress.fmt_duration(-3) == "0s"


def test_study_line():
  assert progress.study_line(12, 45, 250) == (
      "[study] 12/45 runs done, 33 to go, ETA 4m10s")
  assert progress.study_line(0, 3, None) == (
      "[study] 0/3 runs done, 3 to go, ETA unknown")
  assert progress.study_line(45, 45, None) == "[study] 45/45 runs done"


def test_eta_from_measured_speed_times_tokens_left():
  p = progress.StudyProgress({"a": 100.0, "b": 200.0, "c": 300.0, "d": 50.0})
  assert p.eta_s() is None
  p.reused("d", 50.0)  # reused runs count as done, but not for the speed
  assert p.line() == "[study] 1/4 runs done, 3 to go, ETA unknown"
  p.trained("a", 100.0, 10.0)  # 10 tokens/s; 500 tokens left
  assert p.eta_s() == 50.0
  assert p.line() == "[study] 2/4 runs done, 2 to go, ETA 50s"
  p.trained_together({"b": 200.0, "c": 300.0}, 40.0)  # 600 tok / 50 s
  assert p.line() == "[study] 4/4 runs done"
  assert p.pop_together("b") and not p.pop_together("b")
  assert p.pop_reused() == 1 and p.pop_reused() == 0


def test_unplanned_runs_join_the_total_and_count_once():
  p = progress.StudyProgress()
  p.finished_earlier("x", 10.0)
  p.reused("x", 10.0)
  assert (len(p.done), len(p.planned), p.pop_reused()) == (1, 1, 0)
  assert p.eta_s() is None


def test_run_line():
  agg = {"loss": 5.63412, "ppl_seq": 289.714, "bpb": 4.2}
  assert progress.run_line("[ddo b1 2/30]", "b0_code_x0.2_s0",
                           tokens=88573, steps=44, seconds=12.34,
                           aggregate=agg) == (
      "[ddo b1 2/30]: b0_code_x0.2_s0 done in 12.3s: 88,573 tokens, "
      "44 steps, loss=5.6341 ppl_seq=289.71")
  assert "done in the swarm: " in progress.run_line(
      "[x]", "n", tokens=1, steps=1, seconds=None, aggregate=agg)


class _Tty(io.StringIO):

  def isatty(self):
    return True


def test_step_line_not_a_terminal_prints_nothing():
  out = io.StringIO()
  line = runlog.StepLine(out, verbose=False)
  line.show("step 1/2")
  line.clear()
  assert out.getvalue() == ""


def test_step_line_redraws_on_a_terminal_and_clears():
  out = _Tty()
  line = runlog.StepLine(out, verbose=False)
  line.show("step 1/2")
  line.show("step 2/2")
  line.clear()
  text = out.getvalue()
  assert "\n" not in text
  assert text.count("\r") == 3 and text.endswith("\r\x1b[K")


def test_step_line_verbose_prints_lines():
  out = io.StringIO()
  line = runlog.StepLine(out, verbose=True)
  line.show("step 1/2")
  line.show("step 2/2")
  line.clear()
  assert out.getvalue() == "step 1/2\nstep 2/2\n"


def test_filter_startup_log():
  text = (
      "WARNING: All log messages before absl::InitializeLog() is called are "
      "written to STDERR\n"
      "I0000 00:00:1796142926.862411   12888 port.cc:153] oneDNN custom "
      "operations are on.\n"
      "W0000 00:00:1796142926.863477   12888 cudart_stub.cc:31] warned\n"
      "E0000 00:00:1796142926.863477   12888 x.cc:1] broken\n"
      "a Python warning\n")
  assert tfenv.filter_startup_log(text, 0) == text
  assert tfenv.filter_startup_log(text, 1).splitlines() == [
      "W0000 00:00:1796142926.863477   12888 cudart_stub.cc:31] warned",
      "E0000 00:00:1796142926.863477   12888 x.cc:1] broken",
      "a Python warning"]
  assert tfenv.filter_startup_log(text, 3) == "a Python warning\n"


def test_noise_line_is_one_line_with_each_domains_signal():
  noise = {"num_seeds": 2, "metric": "ppl_seq", "seed_noise": 0.01234,
           "signal_to_noise": 2.5,
           "domains": {"alpha": {"snr": 3.1, "signal": True},
                       "beta": {"snr": 0.4, "signal": False}},
           "notes": ["a note"]}
  line = console.noise_line(noise, "DDO budget 1 noise at 4096 tokens")
  assert "\n" not in line
  assert line == ("DDO budget 1 noise at 4096 tokens, ppl_seq (2 seeds): seed "
                  "noise 0.0123, domain signal 2.50x its noise; SNR alpha "
                  "3.10 yes, beta 0.40 no; note: a note")
  # One seed: no SNR to show, the note says why.
  noise.update(num_seeds=1, seed_noise=None, signal_to_noise=None,
               notes=["one seed"],
               domains={d: {"snr": None, "signal": None}
                        for d in ("alpha", "beta")})
  assert console.noise_line(noise, "t") == (
      "t, ppl_seq (1 seed): seed noise n/a, domain signal of unknown noise; "
      "note: one seed")


def test_per_domain_warnings_of_one_kind_are_one_line():
  warnings = ["domain 'a': no curve fits the 3 points; rms 0.0383",
              "no noise estimate (one seed)",
              "domain 'b': no curve fits the 3 points; rms 0.04",
              "domain 'c': at the upper bound 3x",
              "domain 'd': no curve fits the 3 points; rms 1e-05"]
  assert console.grouped_warnings(warnings) == [
      "domains a, b, d: no curve fits the 3 points; rms 0.0383 (numbers of "
      "a; each domain's in the mixture file)",
      "no noise estimate (one seed)",
      "domain 'c': at the upper bound 3x"]


def test_names_line_shows_the_first_few():
  assert console.names_line(["a", "b"]) == "a, b"
  assert console.names_line(list("abcdef")) == "a, b, c and 3 more"
