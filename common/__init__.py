"""Shared library for every Précis service: settings, schemas, store, Kafka, tokenization.

Dependency rule: `common` imports no service package.
"""
