# The README's two commands. Each does its own set-up (venv, pinned torch, apt packages for Xvfb);
# re-running is fast because scripts/setup_env.sh keeps a stamp of what it installed.
.PHONY: demo test setup lint bench clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	@.venv/bin/virtualstain demo --out demo_output

test: setup
	@bash scripts/run_tests.sh

lint: setup
	@.venv/bin/ruff check src tests benchmarks && .venv/bin/ruff format --check src tests benchmarks

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done

clean:
	rm -rf .venv demo_output .pytest_cache
