# The two commands a fresh machine needs (see README.md):
#   make run    install the server and run it on the embedded SQLite default,
#               with the web client on http://127.0.0.1:8080/
#   make test   install everything (Debian packages too, when root) and run every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?= -t 4 --ws-port 8080

.PHONY: run test lint typecheck install install-dev services bench-smoke clean

run: install
	$(BIN)/python -m chat.server $(ARGS)

test: install-dev services lint typecheck
	$(BIN)/python -m pytest

install:
	scripts/bootstrap.sh run

install-dev:
	scripts/bootstrap.sh test

services:
	scripts/services.sh

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy --strict reactor chat/protocol.py
	$(BIN)/mypy chat client

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
