"""Process logging: one format for every Coretex process, and secrets redacted before any handler
writes a record. Filters sit on handlers (a filter on a logger misses its children's records)."""

from __future__ import annotations

import logging
import os

from coretex.secrets import install_log_redaction

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def configure_logging(level: str = "info") -> None:
    """Log to stderr at ``level`` with redaction at ``CORETEX_REDACTION_LEVEL`` (default standard)."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    install_log_redaction(os.environ.get("CORETEX_REDACTION_LEVEL") or "standard")


def redact_logger_handlers(*names: str) -> None:
    """Redact on the handlers of loggers that do not propagate to root (gunicorn's, for example)."""
    level = os.environ.get("CORETEX_REDACTION_LEVEL") or "standard"
    for name in names:
        logger = logging.getLogger(name)
        if logger.handlers:
            install_log_redaction(level, logger=logger)
