"""Helm chart tests (make chart-test)."""
