# The two commands of the README, and a quick test loop.
.PHONY: setup export test test-fast

setup:
	bash scripts/setup.sh

# A real export of a real model: trains the digits sample model once, then exports it.
export: setup
	.venv/bin/exporter sample-model sample-model --if-missing
	.venv/bin/exporter export --model sample-model --format tflite --output exports

test: setup
	.venv/bin/python -m pytest

# Leaves out the end-to-end runs through subprocesses (marked slow).
test-fast: setup
	.venv/bin/python -m pytest -m "not slow"
