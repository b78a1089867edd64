"""The workflow engine as a pure state machine: ``decide(run, event) -> (run', commands)``.

Pure core: nothing in this package may import Redis, Celery, kombu, Flask or gRPC, nor any
Coretex adapter (the import-linter contracts in pyproject.toml and tests/unit/test_purity.py
enforce it). Time, randomness and ids come from the events the engine is handed.
"""
