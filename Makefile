# One entry point for people and CI alike; the scripts hold the logic.
.PHONY: setup test lint format demo bench bench-smoke exe mutate

setup:
	bash scripts/setup.sh

test:
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check mk8s tests bench scripts
	.venv/bin/ruff format --check mk8s tests bench
	.venv/bin/mypy

format:
	.venv/bin/ruff format mk8s tests bench
	.venv/bin/ruff check --fix mk8s tests bench

demo:
	bash scripts/demo.sh

bench: setup
	.venv/bin/python -m bench

bench-smoke: setup
	.venv/bin/python -m pytest tests/bench/test_smoke.py tests/bench/test_delta_smoke.py tests/bench/test_scale_smoke.py

exe: setup
	bash scripts/build-exe.sh

# Mutation testing of the verification core (slow, ~14 min on 2 cores; not part of CI).
# Scores per module and surviving mutants; mutation/equivalent.txt lists the equivalent.
mutate: setup
	.venv/bin/pip install -q -e '.[mutate]'
	.venv/bin/python scripts/mutate.py $(MUTATE_ARGS)
