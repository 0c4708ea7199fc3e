# Two commands on a fresh machine:  make demo   |   make test
PY := .venv/bin/python

.PHONY: setup demo test test-fast bench clean

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py

# The full suite (CI runs exactly this). pytest's exit code 5 ("no tests collected") is not a failure here.
test: setup
	$(PY) scripts/run_tests.py tests

# Fast local iteration: skips tests marked slow.
test-fast: setup
	$(PY) scripts/run_tests.py tests -m "not slow"

bench: setup
	$(PY) bench/attention.py && $(PY) bench/projection.py && $(PY) bench/raster.py

clean:
	rm -rf .venv .cache output tests/artifacts
