# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make run    virtual environment + pinned requirements, then batch on the embedded simulation
#   make test   the same set-up, then lint, format check and the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-floor lint lock venv clean demo dev-server

# requirements-dev.txt holds everything (runtime, simulation, tools, pip itself), each file
# with its hashes: pip installs those files or nothing.
$(STAMP): requirements.txt requirements-simulation.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

# Exit 3 means "done, some orders were rejected as invalid": the generated data has some.
run: $(STAMP)
	$(BIN)/python main.py batch --run --simulation || [ $$? -eq 3 ]

# The whole story on a local test server it starts and stops itself (QUICKSTART step 2).
demo: $(STAMP)
	$(BIN)/python demo.py --auto

# A local development server (teststand/devserver.py: nx-27017 with its faults fixed) on port 27017, in the foreground: to try
# the commands by hand (QUICKSTART step 3). Not for production data. Another port: make dev-server PORT=27018
# (a port in use: one line, exit 2). Its data, pid and log (nx.log) in DATA (.dev-server/).
# A one-member replica set (rs0: change streams, watch works); make dev-server STANDALONE=1: a
# standalone, which refuses change streams as MongoDB does (batch runs there, watch does not);
# beside a running one, another port and folder: make dev-server PORT=27018 STANDALONE=1 DATA=.dev-server-2
# PORT is set here, not with ?=: only the command line overrides it, not a PORT in the environment.
# Its change history: the last HISTORY changes (nx-27017 keeps 1,000 by default, which one
# simulate.py outruns; a real oplog keeps hours of writes).
PORT = 27017
STANDALONE =
HISTORY = 200000
DATA = .dev-server
# A failure is the server's one line (it makes DATA itself, and says in one line when it cannot),
# with no recipe echoed before it ("@"; it says what it serves). GNU make still ends a failed
# recipe with its own "make: *** [Makefile:NN: dev-server] Error 2": it prints that for every
# failed recipe but an ignored one under -s (job.c, child_error), and an ignored one makes make
# exit 0; the exit code is kept (2, make's for any failure).
dev-server: $(STAMP)
	@NX_RESUME_RETENTION_ROWS=$(HISTORY) $(BIN)/python -m teststand.devserver --data-dir $(DATA) -p $(PORT) --pid-file $(DATA)/nx.pid --log-file $(DATA)/nx.log $(if $(filter 1 yes true,$(STANDALONE)),--standalone)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@echo "Any in the product: $$(cat *.py $$(find order_archiver -name '*.py') | grep -ow Any | wc -l) (ceiling: tests/unit/test_layout.py ANY_CEILING)"

# The suite starts hundreds of Python processes (505 CLIs and 63 test servers in the end-to-end
# tests alone, four pytest workers twice): where PYTHONDONTWRITEBYTECODE is set (as on the
# machines CI runs on), each compiled the project from source, a third of the CPU the
# end-to-end tests' CLIs spent (py-spy, 2026-12-07), and pytest rewrote every test module's
# asserts again in each worker (collection 4.3 s of CPU a worker, 1.1 s with its cache). The
# test targets let Python keep its bytecode (__pycache__/, ignored by git); it checks each .pyc
# against its source, so an edited module is never run stale.
test test-floor test-fast: export PYTHONDONTWRITEBYTECODE :=

# Six workers for the whole suite (four for the 4.4 pass, mostly CPU), each with its own test
# server and databases: most end-to-end time is waiting (for a watcher, a lease, a server), so
# they overlap well even on 2 cores (the whole suite on this machine, 2026-12-06: 307 s with two
# workers, 232 s with three; 2026-12-07, 1,067 tests:
# 245 s with three, 207 s with four). --dist worksteal: an idle worker takes the others' queued
# tests, so a few long fault tests do not leave one worker alone at the end (318 s by default,
# 225 s so, with two). 2026-12-07, 1,678 tests on a quiet machine: 419 s with four, 387 s with six
# (the waits of the fault and liveness tests overlap more; the CPU was 1.5 of 2 cores with four).
# First the integration tests on test servers answering as MongoDB 4.4, the oldest supported
# (264 tests, about a minute; make test-floor adds the end-to-end tests), then the whole suite on the newest.
test: lint
	$(BIN)/python -m pytest -n 4 --dist worksteal -q --mongodb-version 4.4 tests/integration teststand/tests
	$(BIN)/python -m pytest -n 6 --dist worksteal

# The version floor: the integration and end-to-end tests again, every test server answering as
# MongoDB 4.4 and refusing what 4.4 does not know (teststand/mongodb_definitions.py). CI runs it too.
test-floor: lint
	$(BIN)/python -m pytest -n 4 --dist worksteal --mongodb-version 4.4 tests/integration tests/e2e teststand/tests

# The edit loop: lint, then the unit tests only (mongomock and the in-process CLI, well under a minute).
test-fast: lint
	$(BIN)/python -m pytest tests/unit -q

# Recompile the three hashed requirement files from their .in files (after a pin changes
# there): production (the image), simulation (make run), dev (make test), in that order.
LOCK := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock: $(STAMP)
	$(LOCK) -o requirements.txt requirements.in
	$(LOCK) -o requirements-simulation.txt requirements-simulation.in
	$(LOCK) -o requirements-dev.txt requirements-dev.in

clean:
	rm -rf $(VENV) logs .pytest_cache .ruff_cache samples.json .dev-server*
