# The two commands a fresh machine needs (see README.md):
#   make run    install the server and run it on the embedded SQLite default,
#               with the web client on http://127.0.0.1:8080/
#   make test   install everything (Debian packages too, when root) and run every test
# Then, in other terminals:
#   make client               the interactive client, to the server of make run
#   make cluster              two chat servers on MySQL and Redis, nginx on port 8000
#   make client PORT=8000     a client of the cluster, through nginx
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?= -t 4 --ws-port 8080
HOST ?= 127.0.0.1
PORT ?= 6000
CLUSTER_ARGS ?= --servers 2
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: run test client cluster lint typecheck install install-dev services bench-smoke clean

run: install
	$(BIN)/python -m chat.server $(ARGS)

test: install-dev services lint typecheck
	$(BIN)/python -m pytest

# The client needs only the server's install; it is not redone at every start.
client: $(BIN)/chat-client
	$(BIN)/python -m client $(HOST) $(PORT)

# The cluster needs MySQL, Redis and nginx (what make test installs and starts).
cluster: $(DEV_STAMP) services
	$(BIN)/python -m chat.cluster $(CLUSTER_ARGS)

$(BIN)/chat-client:
	scripts/bootstrap.sh run

$(DEV_STAMP): pyproject.toml scripts/bootstrap.sh
	scripts/bootstrap.sh test
	touch $@

install:
	scripts/bootstrap.sh run

install-dev:
	scripts/bootstrap.sh test
	touch $(DEV_STAMP)

services:
	scripts/services.sh

lint:
	$(BIN)/ruff check .

typecheck:
	$(BIN)/mypy --strict reactor chat/protocol.py
	$(BIN)/mypy chat client

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
