"""Logging (with secret redaction on every handler), and later metrics and tracing ids."""

from coretex.observability.logs import configure_logging, redact_logger_handlers

__all__ = ["configure_logging", "redact_logger_handlers"]
