# `make demo` and `make test` work on a fresh machine: each creates .venv if missing,
# installs the project into it, then runs. Nothing else is needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export MPLBACKEND := Agg

.PHONY: test test-fast demo lint venv clean system-deps

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check mame_eval tests benchmarks

# The reader-study browser tests drive Debian's chromium (Playwright cannot download one) and
# the PostgreSQL tests start a throw-away server from Debian's postgresql package (initdb +
# postgres as an unprivileged user); CI runs as root on a fresh machine and installs both here.
system-deps:
	@missing=""; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      $$missing) >/dev/null \
	      || echo "warning: could not install$$missing; their tests fail under CI=1"; \
	  else echo "note: run 'apt-get install -y$$missing' as root for the browser and PostgreSQL tests"; fi; \
	fi

test: lint system-deps
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/mame-eval demo --out runs/demo
	$(VENV)/bin/mame-eval report reports/demo.toml --set root=runs/demo --out runs/demo/report

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
