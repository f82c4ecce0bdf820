# The two commands of the README, and a quick test loop.
.PHONY: setup export lint test test-fast test-py312 zoo zoo-test op-policy

setup:
	bash scripts/setup.sh

# A real export of a real model: trains the digits sample model once, then exports it.
export: setup
	.venv/bin/exporter sample-model sample-model --if-missing
	.venv/bin/exporter export --model sample-model --format tflite --output exports

# Lint, format, the layer contract and the docs site first: each fails the run on a violation
# (mkdocs --strict: a broken link or anchor, or a page missing from the nav).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir .cache/site

# Three workers (pytest-xdist) on two cores: the suite is mostly one busy core at a time (a
# conversion, a browser) or none (a worker fleet waiting on a lease, a server starting), so a third
# worker fills the waits (742 tests in 22 min 59 s with three and the test models trained; 715 in
# 29 min with two from an empty model cache).
TEST_WORKERS ?= 3

test: lint
	.venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The package on Python 3.12 (CI runs it after make test; scripts/test_py312.sh says what it covers).
test-py312:
	bash scripts/test_py312.sh

# Leaves out the end-to-end runs through subprocesses (marked slow).
test-fast: setup
	.venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

# The whole zoo matrix (every zoo model to every format this machine builds; long): rewrites
# benchmarks/zoo_matrix.json and the table in docs/zoo.md. CI runs a subset (tests/test_zoo_matrix.py).
zoo: setup
	.venv/bin/python benchmarks/zoo_matrix.py

# The tests on every zoo model and on the 32x32 variants of the slow families (the suite trains only
# the quick ones, tests/conftest.py QUICK_ZOO_MODELS): over an hour on two cores.
zoo-test: setup
	.venv/bin/python -m pytest --zoo tests/test_zoo_matrix.py tests/test_zoo_families.py tests/test_edgetpu.py tests/test_normalization.py tests/test_quantization_budget.py tests/test_quantization_seeds.py

# The op policy table, decided from the installed TensorFlow's op registry (after an upgrade).
op-policy: setup
	.venv/bin/python -m exporter.core.op_policy_build
