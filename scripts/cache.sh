# shellcheck shell=bash
# The one shell fallback for PRECIS_CACHE (sourced, not run): `make` sets and exports it
# (Makefile: PRECIS_CACHE ?= ...); a script run by hand falls back to the same default here.
# Python: common/paths.py (DEFAULT_CACHE_DIR, cache_dir()).
export PRECIS_CACHE="${PRECIS_CACHE:-$HOME/.cache/precis}"
