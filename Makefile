# `make run` starts the whole stack locally; `make test` runs every check. Both set up what they
# need on first use: the app virtualenv (.venv) and AWS SAM CLI in its own one (.venv-sam),
# because aws-sam-cli pins versions of boto3 and pydantic that the app does not use. `make test`
# also installs Chromium with apt-get when it is missing, for the browser tests.

PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin
# apt-get needs root: use sudo unless make already runs as root.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
export SAM_CLI_TELEMETRY := 0
export AWS_EC2_METADATA_DISABLED := true

.PHONY: run test setup lint typecheck template-lint pytest chromium bench clean

run: $(VENV)/.installed
	$(BIN)/python -m local.run

test: lint typecheck template-lint pytest

setup: $(VENV)/.installed $(SAM_VENV)/.installed

$(VENV)/.installed: pyproject.toml layers/mfa_core/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli
	touch $@

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

template-lint: $(VENV)/.installed $(SAM_VENV)/.installed
	$(BIN)/cfn-lint template.yaml
	$(SAM_VENV)/bin/sam validate --lint --region us-east-1 --template-file template.yaml

pytest: $(VENV)/.installed chromium
	$(BIN)/pytest

# The browser tests drive Debian's chromium package through Playwright, and fail without it.
chromium:
	command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
