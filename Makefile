# Two commands on a fresh machine:  make demo   |   make test
PY := .venv/bin/python

.PHONY: setup demo test test-fast bench clean nano

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py

# The full suite (CI runs exactly this). pytest's exit code 5 ("no tests collected") is not a failure here.
test: setup
	$(PY) scripts/run_tests.py tests --durations=40

# Fast local iteration: skips tests marked slow.
test-fast: setup
	$(PY) scripts/run_tests.py tests -m "not slow"

bench: setup
	$(PY) bench/attention.py && $(PY) bench/projection.py && $(PY) bench/raster.py

clean:
	rm -rf .venv .cache output tests/artifacts

# The embedded nano Full-4D (models/nano/README.md): render the data and train every stage, resumable
# (about 4.5 hours on 2 CPU cores); writes the fp16 files to models/nano/.
nano: setup
	OMP_NUM_THREADS=2 $(PY) -m comfyui_full4d.training.nano all
