"""Secrets (spec 9): ``secret://`` references, detection for the dispatch pipeline, redaction, resolvers.

Secrets never travel as plaintext: jobs carry ``secret://backend/path#key`` references, a worker
resolves them only when its job's policy allows it, and everything written to logs, audit,
artifacts or an LLM goes through redaction first.

    refs.py        SecretRef, parse_secret_ref, find_secret_refs; the error tree of this package
    redaction.py   Redactor, redact(), levels none/standard/strict; detect_secrets and mark_job
    logging.py     RedactingFilter and install_log_redaction for handlers
    resolver.py    SecretResolver protocol, SecretValue, EnvSecretResolver, RoutingSecretResolver

Pure: imports no redis, celery, kombu, flask or grpc; the env resolver reads ``os.environ``.

Configuration to wire (the lead builds a ``RedactionConfig`` from these):

    CORETEX_REDACTION_LEVEL           none | standard | strict (default standard): log filter and evidence
    config ``secrets.redaction.extra_patterns``   list of {kind, regex} -> RedactionPattern.compile(kind, regex)
"""

from __future__ import annotations

from coretex.secrets.logging import RedactingFilter, install_log_redaction
from coretex.secrets.redaction import (
    BUILTIN_PATTERNS,
    PRESENT_LABEL,
    RISK_TAG,
    EntropyRule,
    RedactionConfig,
    RedactionLevel,
    RedactionPattern,
    Redactor,
    SecretFinding,
    detect_secrets,
    mark_job,
    parse_level,
    redact,
    redact_text,
    shannon_entropy,
)
from coretex.secrets.refs import (
    RedactionConfigError,
    SecretAccessDeniedError,
    SecretBackendUnavailableError,
    SecretError,
    SecretNotFoundError,
    SecretRef,
    SecretRefError,
    find_secret_refs,
    parse_secret_ref,
)
from coretex.secrets.resolver import (
    AccessPredicate,
    EnvSecretResolver,
    RoutingSecretResolver,
    SecretResolver,
    SecretValue,
    allow_all,
    allow_matching,
)

__all__ = [
    "BUILTIN_PATTERNS",
    "PRESENT_LABEL",
    "RISK_TAG",
    "AccessPredicate",
    "EntropyRule",
    "EnvSecretResolver",
    "RedactingFilter",
    "RedactionConfig",
    "RedactionConfigError",
    "RedactionLevel",
    "RedactionPattern",
    "Redactor",
    "RoutingSecretResolver",
    "SecretAccessDeniedError",
    "SecretBackendUnavailableError",
    "SecretError",
    "SecretFinding",
    "SecretNotFoundError",
    "SecretRef",
    "SecretRefError",
    "SecretResolver",
    "SecretValue",
    "allow_all",
    "allow_matching",
    "detect_secrets",
    "find_secret_refs",
    "install_log_redaction",
    "mark_job",
    "parse_level",
    "parse_secret_ref",
    "redact",
    "redact_text",
    "shannon_entropy",
]
