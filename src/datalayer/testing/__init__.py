"""Helpers for testing datalayer and stores written for it; never imported by the library.

- ``datalayer.testing.contracts``: the contract suite of each category, as classes a store
  package subclasses to prove its store type keeps the contract (needs pytest);
- ``datalayer.testing.registry``: write a registry file from plain dicts;
- ``datalayer.testing.feast_repo``: scaffold a Feast repo (definitions and feature_store.yaml).
"""
