"""Where Précis keeps files outside the services' settings: the one definition of each default.

Standard library only, so scripts, benchmarks and tests can import it without the services'
dependencies. Shell has its own single fallback (scripts/cache.sh) and make its own
(``PRECIS_CACHE ?=`` in the Makefile, exported to mk/*.mk and every script it runs).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Big downloads (venv, wheels, tokenizer, Kafka, helm, images, the local cluster) live here,
# outside the clone, so every clone and CI run reuses them. Override with PRECIS_CACHE.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "precis"


def cache_dir() -> Path:
    """``$PRECIS_CACHE``, else :data:`DEFAULT_CACHE_DIR` (an empty value counts as unset)."""
    return Path(os.environ.get("PRECIS_CACHE") or DEFAULT_CACHE_DIR)


def var_dir() -> Path:
    """Local state (SQLite file, Kafka data, mail sink) lives under ``var/`` unless overridden."""
    return Path(os.environ.get("PRECIS_VAR_DIR", REPO_ROOT / "var"))
