# make lint: ruff (lint + format check) on every Python file, mypy on common/ and the services.
# CI runs it (.ci/run). `make format` applies ruff's fixes and formatting.
.PHONY: lint format
lint: install
	$(PRECIS_VENV)/bin/ruff check .
	$(PRECIS_VENV)/bin/ruff format --check .
	$(PY) -m mypy

format: install
	$(PRECIS_VENV)/bin/ruff check --fix .
	$(PRECIS_VENV)/bin/ruff format .
