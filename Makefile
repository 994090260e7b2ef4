# One place for the project's commands; CI (.ci/run) calls the same targets.
PY ?= .venv/bin/python

.PHONY: install test test-fast lint typecheck check bench-smoke bench serve demo

install:            ## virtualenv with the service and its test tools
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,embedded]"

# Integration tests start real servers and browsers on a 2-core box; a test that fails is run again
# (up to twice) so a scheduling hiccup does not fail the build. Reruns are listed in the summary.
test:               ## the whole suite: unit, integration (real redis-server, SQLite, PostgreSQL if reachable), browser
	$(PY) -m pytest -q -rR --reruns 2 --reruns-delay 1

test-fast:          ## everything except browser tests
	$(PY) -m pytest -q -rR --reruns 2 --reruns-delay 1 -m "not browser"

lint:
	$(PY) -m ruff check token_service kiosk_ui printer
	$(PY) -m ruff format --check token_service kiosk_ui printer

typecheck:
	$(PY) -m mypy token_service kiosk_ui printer

check: lint typecheck

bench-smoke:        ## every benchmark scenario at tiny sizes (~40 s); CI runs it via tests/integration/test_bench_smoke.py
	$(PY) -m bench --smoke

bench:              ## full benchmark (~20 min: 2 workers, PostgreSQL if reachable, 10-min soak) -> bench/RESULTS.md
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) -m bench --workers 2 --soak-minutes 10

serve:
	.venv/bin/opd-token serve

demo:
	.venv/bin/opd-token demo
