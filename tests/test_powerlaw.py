"""Power-law fitter: exact interpolation, least squares, recovery, warnings."""

import numpy as np
import pytest
from scipy.optimize import curve_fit

from autoscale_jax.mixing import powerlaw

XS3 = np.array([0.2, 1.0, 3.0])
XS6 = np.array([0.2, 0.5, 1.0, 1.5, 2.0, 3.0])


def _truths(n, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.uniform(-0.15, 2.0, n), rng.uniform(0.1, 2.0, n),
          rng.uniform(0.5, 1.0, n))


def test_exact_interpolation_with_three_points():
  a, b, c = _truths(7)
  pts = {f"d{i}": (XS3, powerlaw.powerlaw(XS3, a[i], b[i], c[i]))
         for i in range(7)}
  rep = powerlaw.fit_powerlaws(pts)
  for d, f in rep.fits.items():
    assert f.rms < 1e-10, (d, f)
    np.testing.assert_allclose(f(XS3), pts[d][1], atol=1e-10)
    assert f.a > -0.2 and f.b > 0


def test_recovers_parameters_noise_free():
  a, b, c = _truths(7, seed=1)
  pts = {f"d{i}": (XS6, powerlaw.powerlaw(XS6, a[i], b[i], c[i]))
         for i in range(7)}
  rep = powerlaw.fit_powerlaws(pts)
  for i, (d, f) in enumerate(rep.fits.items()):
    np.testing.assert_allclose([f.a, f.b, f.c], [a[i], b[i], c[i]],
                               rtol=1e-7, atol=1e-8, err_msg=d)
    assert f.converged
  assert rep.warnings == []


def test_noisy_fit_close_to_truth_and_least_squares():
  a, b, c = _truths(6, seed=2)
  rng = np.random.default_rng(3)
  xs = np.repeat(XS6, 3)  # three seeds per factor
  pts = {f"d{i}": (xs, powerlaw.powerlaw(xs, a[i], b[i], c[i]) +
                   1e-3 * rng.standard_normal(len(xs))) for i in range(6)}
  rep = powerlaw.fit_powerlaws(pts)
  grid = np.linspace(0.2, 3.0, 30)
  for i, (d, f) in enumerate(rep.fits.items()):
    truth = powerlaw.powerlaw(grid, a[i], b[i], c[i])
    assert np.max(np.abs(f(grid) - truth)) < 3e-3, d
    # Least squares: no worse than scipy's curve_fit started at the truth.
    model = lambda x, aa, bb, cc: np.power(np.maximum(x + aa, 1e-12), -bb) + cc
    p, _ = curve_fit(model, *pts[d], p0=[a[i], b[i], c[i]], maxfev=20000)
    ours = np.sum((f(pts[d][0]) - pts[d][1]) ** 2)
    ref = np.sum((model(pts[d][0], *p) - pts[d][1]) ** 2)
    assert ours <= ref * (1 + 1e-6) + 1e-15, (d, ours, ref)
    assert 1e-4 < f.rms < 3e-3


def test_padded_layout_mixes_point_counts():
  a, b, c = _truths(3, seed=4)
  pts = {"three": (XS3, powerlaw.powerlaw(XS3, a[0], b[0], c[0])),
         "six": (XS6, powerlaw.powerlaw(XS6, a[1], b[1], c[1]))}
  together = powerlaw.fit_powerlaws(pts).fits
  alone = powerlaw.fit_powerlaws({"six": pts["six"]}).fits
  np.testing.assert_allclose(together["six"].b, alone["six"].b, rtol=1e-9)
  assert together["three"].rms < 1e-10


def test_warnings_name_the_domain():
  pts = {
      "flat": (XS3, np.array([1.0, 1.0, 1.0])),
      "worse": (XS3, np.array([1.0, 1.0, 1.02])),
      "concave": (XS3, np.array([1.01, 1.0, 0.97])),
      "good": (XS6, powerlaw.powerlaw(XS6, 0.5, 1.0, 0.3)),
  }
  rep = powerlaw.fit_powerlaws(pts)
  text = "\n".join(rep.warnings)
  assert "'flat': flat response" in text
  assert "'worse': non-monotone" in text
  assert "'concave': no curve" in text  # decreasing but not convex
  assert "'good'" not in text
  # The concave domain still gets its best least-squares fit.
  assert np.isfinite(rep.fits["concave"].rms) and rep.fits["concave"].rms < 0.01


def test_needs_three_distinct_x():
  with pytest.raises(ValueError, match="'d': need >= 3 distinct x"):
    powerlaw.fit_powerlaws({"d": ([1.0, 1.0, 3.0], [1.0, 1.0, 0.9])})
