"""A logging filter that redacts every record before a handler writes it.

Install it on *handlers*, not loggers: a filter attached to a logger only sees records logged on
that exact logger, never those propagated up from child loggers (``coretex.store.jobs`` ->
``coretex`` -> root), while a handler's filters see every record the handler emits.
``install_log_redaction()`` puts one on each handler of the root logger (or of the logger given);
a handler added afterwards needs ``handler.addFilter(...)`` of its own.

What a record looks like after the filter:

* ``msg`` is the fully formatted, redacted message and ``args`` is None. Args are redacted
  *before* formatting too, so ``log.info("%(user)s %(password)s", {...})`` loses the password
  by its key even though the formatted text no longer says "password". A bare positional secret
  (``log.info("pw %s", pw)``) is only caught when its shape is recognisable: log key=value.
* ``exc_text`` holds the redacted traceback and ``exc_info`` is None, so no formatter can render
  the raw exception (or reach frame locals) again; ``stack_info`` is redacted as well.
* Extra attributes (``extra={...}``) are redacted by their names and values.

The record object is shared by all handlers, so redacting it once protects every later handler,
and running the filter twice changes nothing.
"""

from __future__ import annotations

import logging

from coretex.secrets.redaction import DEFAULT_REDACTOR, RedactionLevel, Redactor, parse_level
from coretex.secrets.refs import RedactionConfigError

_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_TRACEBACK_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Redacts message, args, exception text, stack info and extras of each record; never drops one."""

    def __init__(self, level: str | RedactionLevel = RedactionLevel.STANDARD, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.level = parse_level(level)
        self.redactor = redactor or DEFAULT_REDACTOR

    def filter(self, record: logging.LogRecord) -> bool:
        if self.level is RedactionLevel.NONE:
            return True
        record.msg = self.redactor.redact_text(self._formatted_message(record), self.level)
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _TRACEBACK_FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redactor.redact_text(record.exc_text, self.level)
        if record.stack_info:
            record.stack_info = self.redactor.redact_text(record.stack_info, self.level)
        self._redact_extras(record)
        return True

    def _formatted_message(self, record: logging.LogRecord) -> str:
        msg = record.msg if isinstance(record.msg, str) else self.redactor.redact(record.msg, self.level)
        text = str(msg)
        if not record.args:
            return text
        args = self.redactor.redact(record.args, self.level)
        try:
            return text % args
        except (TypeError, ValueError, KeyError):
            # Redaction may have turned a %d argument into a marker string; keep everything readable.
            return f"{text} {args!r}"

    def _redact_extras(self, record: logging.LogRecord) -> None:
        for name in [n for n in record.__dict__ if n not in _STANDARD_ATTRIBUTES]:
            redacted = self.redactor.redact({name: record.__dict__[name]}, self.level)
            record.__dict__[name] = next(iter(redacted.values()))


def install_log_redaction(
    level: str | RedactionLevel = RedactionLevel.STANDARD,
    *,
    redactor: Redactor | None = None,
    logger: logging.Logger | None = None,
) -> RedactingFilter:
    """Put one RedactingFilter on every handler of ``logger`` (default: root), replacing earlier ones.

    Call it after the handlers are configured; RedactionConfigError if there are none yet, because a
    filter with nowhere to sit would silently protect nothing.
    """
    target = logger or logging.getLogger()
    if not target.handlers:
        name = target.name or "root"
        raise RedactionConfigError(f"logger {name!r} has no handlers yet: configure logging before redaction")
    redacting = RedactingFilter(level, redactor)
    for handler in target.handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redacting)
    return redacting
