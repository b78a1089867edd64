"""Pack workers used by the integration tests (run with `coretex worker --app tests.workers.<mod>:worker`)."""
