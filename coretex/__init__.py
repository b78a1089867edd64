"""Coretex: a governance-first job and workflow orchestration core speaking CAP v2."""

__version__ = "0.1.0"
