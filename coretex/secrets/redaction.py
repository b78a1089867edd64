"""Redaction and detection of secret material in text and JSON-like values (spec 9).

Redaction runs before anything leaves a process for a place where it is kept or read: logs, audit,
artifacts, evidence for an LLM. Every removal leaves ``[REDACTED:<kind>]`` so a reader sees what
was taken out without seeing the value. Levels:

    none      nothing changes (containers are still copied)
    standard  secret:// references and recognisable credential shapes (see ``BUILTIN_PATTERNS``),
              configured extra patterns, and scalar values of dict keys that name a credential
              (``password``, ``db_password``, ``api_key``, ``access_token``, ... : the structured
              twin of the ``"password": "..."`` text rule)
    strict    standard, plus every value whose dict key merely contains one of ``STRICT_KEY_WORDS``
              (``key`` also hits ``monkey``: strict trades false positives for safety) and long
              high-entropy tokens (``EntropyRule``)

Guarantees:

* Never mutates its input; containers (dict, list, tuple) are rebuilt; other objects pass through.
* Idempotent: ``redact(redact(x)) == redact(x)``. Markers are opaque (rules only see the text
  between markers), every replacement turns at least one unmarked character into a marker, and
  each string is rewritten until a full pass of the rules changes nothing, so the result is a
  fixpoint and the loop always ends.
* Values nested deeper than ``MAX_DEPTH`` become ``[REDACTED:depth_limit]`` (fails closed).
* Only ``str`` is scanned as text; bytes are redacted only when a sensitive dict key holds them.

Detection (``detect_secrets`` / ``mark_job``) is redaction's dry run, used by the dispatch
pipeline's secret-detection stage to tag a job so policy can block it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import TypeVar, cast

from coretex.secrets.refs import (
    SECRET_REF_CANDIDATE,
    RedactionConfigError,
    SecretRef,
    escape_pointer_token,
    find_secret_refs,
)

T = TypeVar("T")
Sink = Callable[[str, str], None]
"""Receives ``(json_pointer, kind)`` for every removal."""

MAX_DEPTH = 64
RISK_TAG = "secrets"
PRESENT_LABEL = "secrets_present"
STRICT_KEY_WORDS = ("password", "passwd", "pwd", "secret", "token", "key", "credential", "auth", "cookie", "session")

_KIND = re.compile(r"[a-z][a-z0-9_]{0,62}")
_CREDENTIAL_WORD = (
    r"(?:pass(?:word|wd|phrase)|pwd|secret(?:[_-]?key)?|token"
    r"|api[_-]?key|access[_-]?key|private[_-]?key)"
)
# A key *ending* in a credential word: catches db_password and x-api-key, spares max_tokens and token_type.
_CREDENTIAL_KEY_NAME = re.compile(rf"(?i:{_CREDENTIAL_WORD})$")
_KEY_QUOTE = r"\\?[\"']?"


class RedactionLevel(StrEnum):
    NONE = "none"
    STANDARD = "standard"
    STRICT = "strict"


def parse_level(level: str | RedactionLevel) -> RedactionLevel:
    """The level named by ``level``; RedactionConfigError for anything else."""
    try:
        return RedactionLevel(level)
    except ValueError:
        raise RedactionConfigError(f"unknown redaction level {level!r}: use none, standard or strict") from None


def marker(kind: str) -> str:
    return f"[REDACTED:{kind}]"


@dataclass(frozen=True)
class RedactionPattern:
    """One credential shape. Build extra ones with ``RedactionPattern.compile(kind, regex)``."""

    kind: str
    """Marker kind, ``[a-z][a-z0-9_]*``: a match becomes ``[REDACTED:<kind>]``."""
    regex: re.Pattern[str]
    """What to remove. With groups named ``secret``, ``secret2``, ... only the first group that took
    part in the match is replaced (the rest of the match, e.g. ``password=``, stays readable)."""

    def __post_init__(self) -> None:
        if not _KIND.fullmatch(self.kind):
            raise RedactionConfigError(f"redaction kind {self.kind!r} must match [a-z][a-z0-9_]{{0,62}}")
        if self.regex.fullmatch("") is not None:
            raise RedactionConfigError(f"redaction pattern {self.kind!r} matches the empty string")

    @classmethod
    def compile(cls, kind: str, pattern: str, flags: int = 0) -> RedactionPattern:
        try:
            return cls(kind, re.compile(pattern, flags))
        except re.error as exc:
            raise RedactionConfigError(f"redaction pattern {kind!r} does not compile: {exc}") from exc

    @property
    def secret_groups(self) -> tuple[str, ...]:
        names = sorted(self.regex.groupindex.items(), key=lambda item: item[1])
        return tuple(name for name, _ in names if name.startswith("secret"))


def _pattern(kind: str, pattern: str, flags: int = 0) -> RedactionPattern:
    return RedactionPattern.compile(kind, pattern, flags)


_SPECIFIC_PATTERNS = (
    # Whole block; an unterminated block (a truncated log line) is removed to the end of the text.
    _pattern(
        "private_key",
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|.*)",
        re.DOTALL,
    ),
    RedactionPattern("secret_ref", SECRET_REF_CANDIDATE),
    # scheme://user:PASS@host -> only PASS; the last '@' ends the password, as browsers parse it.
    _pattern("url_password", r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s/?#@:\"'<>]*:(?P<secret>[^\s/?#\"'<>]+)@"),
    _pattern(
        "jwt", r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{7,}={0,2}\.[A-Za-z0-9_-]{2,}={0,2}(?:\.[A-Za-z0-9_-]*={0,2}){1,3}"
    ),
    _pattern("github_token", r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}"),
    _pattern("slack_token", r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    _pattern("google_api_key", r"AIza[A-Za-z0-9_-]{35}"),
    _pattern("stripe_key", r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    _pattern("aws_access_key_id", r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"),
)

_GENERIC_PATTERNS = (
    _pattern(
        "aws_secret_access_key",
        rf"(?i:(?<![A-Za-z0-9])(?:aws_?)?secret_?access_?key){_KEY_QUOTE}\s*[:=]\s*{_KEY_QUOTE}"
        r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
    ),
    _pattern("bearer_token", r"(?<![A-Za-z0-9_-])(?i:bearer)\s+(?P<secret>[A-Za-z0-9_.~+/-]{8,}=*)"),
    _pattern(
        "basic_auth", rf"(?i:authorization){_KEY_QUOTE}\s*[:=]\s*{_KEY_QUOTE}(?i:basic)\s+(?P<secret>[A-Za-z0-9+/]+=*)"
    ),
    # key=value, key: value, "key": "value", 'key': 'value', and \"key\": \"value\" inside an escaped JSON string.
    _pattern(
        "credential_assignment",
        rf"(?<![A-Za-z0-9_.-])[A-Za-z0-9_.-]*(?i:{_CREDENTIAL_WORD}){_KEY_QUOTE}\s*[:=]\s*"
        r"(?:\"(?P<secret>(?:[^\"\\\n]|\\.)+)"
        r"|\\\"(?P<secret2>(?:(?!\\\")[^\n])+)"
        r"|'(?P<secret3>[^'\n]+)"
        r"|(?P<secret4>[^\s\"'\\,;&<>]+))",
    ),
)

BUILTIN_PATTERNS: tuple[RedactionPattern, ...] = _SPECIFIC_PATTERNS + _GENERIC_PATTERNS
"""Standard-level shapes in the order they are tried (the first to match names the marker)."""

_HEX = re.compile(r"[0-9a-fA-F]+")


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``'s own character distribution (0 for the empty string)."""
    if not text:
        return 0.0
    total = len(text)
    return -sum(count / total * math.log2(count / total) for count in Counter(text).values())


@dataclass(frozen=True)
class EntropyRule:
    """When a token of the base64/hex alphabet counts as random (strict level only).

    Entropy alone does not separate them: random base64 of 32 characters scores 4.2..4.8 bits/char
    (1st..99th percentile), but a long CamelCase identifier can reach 4.3. So the base64 branch
    also wants upper case, lower case and at least ``min_digits`` digits, which identifiers rarely
    have and random tokens almost always do (a random 32-character token has fewer than two digits
    about 3% of the time; at 40 characters 1%). Random hex scores about 3.6 at 32 characters.
    UUIDs (hex with dashes, ~3.4 bits/char) survive; hex digests (sha256, commit ids) do not.
    """

    min_length: int = 32
    """Shortest token considered (trailing '=' padding not counted)."""
    base64_threshold: float = 4.0
    """Minimum Shannon entropy, bits per character, for tokens of [A-Za-z0-9+/_-] with upper, lower and digits."""
    hex_threshold: float = 3.0
    """Minimum Shannon entropy, bits per character, for all-hex tokens with letters and digits."""
    min_digits: int = 2
    """Digits a non-hex token needs (besides upper and lower case) to count as random."""

    def __post_init__(self) -> None:
        if self.min_length < 8 or self.min_digits < 0 or self.base64_threshold <= 0 or self.hex_threshold <= 0:
            raise RedactionConfigError("entropy rule needs min_length >= 8, min_digits >= 0 and positive thresholds")

    @property
    def candidates(self) -> re.Pattern[str]:
        return re.compile(rf"[A-Za-z0-9+/_-]{{{self.min_length},}}={{0,2}}")

    def looks_random(self, token: str) -> bool:
        body = token.rstrip("=")
        if len(body) < self.min_length:
            return False
        digits = sum(c.isdigit() for c in body)
        if _HEX.fullmatch(body):
            return digits > 0 and digits < len(body) and shannon_entropy(body) >= self.hex_threshold
        mixed = digits >= self.min_digits and any(c.isupper() for c in body) and any(c.islower() for c in body)
        return mixed and shannon_entropy(body) >= self.base64_threshold


@dataclass(frozen=True)
class RedactionConfig:
    """Deployment settings for redaction (see the package docstring for the env vars to wire)."""

    level: RedactionLevel = RedactionLevel.STANDARD
    """Level used for logs and evidence."""
    extra_patterns: tuple[RedactionPattern, ...] = ()
    """Deployment-specific credential shapes, tried after the built-in token shapes."""
    entropy: EntropyRule = field(default_factory=EntropyRule)
    """Strict-level high-entropy detection."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", parse_level(self.level))
        object.__setattr__(self, "extra_patterns", tuple(self.extra_patterns))


@dataclass(frozen=True)
class _Rule:
    pattern: RedactionPattern
    accept: Callable[[str], bool] | None = None


class Redactor:
    """Built-in patterns plus ``extra_patterns``; one instance is safe to share between threads."""

    def __init__(self, extra_patterns: Iterable[RedactionPattern] = (), *, entropy: EntropyRule | None = None) -> None:
        extras = tuple(extra_patterns)
        builtin_kinds = {p.kind for p in BUILTIN_PATTERNS} | {"high_entropy", "sensitive_key", "depth_limit"}
        seen: set[str] = set()
        for extra in extras:
            if extra.kind in builtin_kinds or extra.kind in seen:
                raise RedactionConfigError(f"redaction kind {extra.kind!r} is already taken")
            seen.add(extra.kind)
        entropy_rule = entropy or EntropyRule()
        self._standard = tuple(_Rule(p) for p in (*_SPECIFIC_PATTERNS, *extras, *_GENERIC_PATTERNS))
        high_entropy = RedactionPattern("high_entropy", entropy_rule.candidates)
        self._strict = (*self._standard, _Rule(high_entropy, entropy_rule.looks_random))
        self.kinds: frozenset[str] = frozenset(builtin_kinds | seen)
        alternatives = "|".join(sorted(self.kinds))
        self._marker = re.compile(rf"\[REDACTED:(?:{alternatives})\]")

    @classmethod
    def from_config(cls, config: RedactionConfig) -> Redactor:
        return cls(config.extra_patterns, entropy=config.entropy)

    def redact(self, value: T, level: str | RedactionLevel = RedactionLevel.STANDARD) -> T:
        """A redacted copy of ``value``. In strict mode a container's leaves may become marker strings."""
        return cast(T, self._value(value, parse_level(level), "", _ignore, 0))

    def redact_text(self, text: str, level: str | RedactionLevel = RedactionLevel.STANDARD) -> str:
        return self._text(text, parse_level(level), lambda kind: None)

    def scan(self, value: object, level: str | RedactionLevel = RedactionLevel.STANDARD) -> list[tuple[str, str]]:
        """``(json_pointer, kind)`` for everything redaction would remove from ``value``."""
        found: list[tuple[str, str]] = []
        self._value(value, parse_level(level), "", lambda pointer, kind: found.append((pointer, kind)), 0)
        return found

    def _value(self, value: object, level: RedactionLevel, pointer: str, sink: Sink, depth: int) -> object:
        if depth > MAX_DEPTH:
            sink(pointer, "depth_limit")
            return marker("depth_limit")
        if isinstance(value, str):
            return self._text(value, level, lambda kind: sink(pointer, kind))
        if isinstance(value, Mapping):
            return self._mapping(value, level, pointer, sink, depth)
        if isinstance(value, list | tuple):
            items = [self._value(item, level, f"{pointer}/{i}", sink, depth + 1) for i, item in enumerate(value)]
            return items if isinstance(value, list) else tuple(items)
        return value

    def _mapping(
        self, value: Mapping[object, object], level: RedactionLevel, pointer: str, sink: Sink, depth: int
    ) -> dict[object, object]:
        out: dict[object, object] = {}
        for key, item in value.items():
            child = f"{pointer}/{escape_pointer_token(str(key))}"
            new_key = self._text(key, level, partial(sink, child)) if isinstance(key, str) else key
            kind = self._key_kind(new_key, item, level)
            if kind is not None:
                sink(child, kind)
                new_item: object = marker(kind)
            else:
                new_item = self._value(item, level, child, sink, depth + 1)
            out[_unique_key(new_key, out)] = new_item
        return out

    def _key_kind(self, key: object, item: object, level: RedactionLevel) -> str | None:
        """The marker kind when ``key`` makes ``item`` sensitive by name alone, else None."""
        if level is RedactionLevel.NONE or not isinstance(key, str) or not self._hides_something(item, level):
            return None
        name = self._marker.sub("", key).strip()
        if _CREDENTIAL_KEY_NAME.search(name):
            return "credential_assignment"
        if level is RedactionLevel.STRICT and any(word in name.lower() for word in STRICT_KEY_WORDS):
            return "sensitive_key"
        return None

    def _hides_something(self, item: object, level: RedactionLevel) -> bool:
        if item is None or isinstance(item, bool):
            return False  # carries no secret material
        if isinstance(item, str):
            return item != "" and self._marker.fullmatch(item) is None
        if isinstance(item, int | float | bytes | bytearray):
            return True
        return level is RedactionLevel.STRICT  # standard walks containers; strict hides them whole

    def _text(self, text: str, level: RedactionLevel, on_kind: Callable[[str], None]) -> str:
        if level is RedactionLevel.NONE:
            return text
        rules = self._strict if level is RedactionLevel.STRICT else self._standard
        while True:
            current = text
            for rule in rules:
                current = self._apply(rule, current, on_kind)
            if current == text:
                return current
            text = current

    def _apply(self, rule: _Rule, text: str, on_kind: Callable[[str], None]) -> str:
        """Run one rule over the unmarked stretches of ``text``; markers are never looked into."""
        pieces: list[str] = []
        position = 0
        for existing in self._marker.finditer(text):
            pieces.append(_substitute(rule, text[position : existing.start()], on_kind))
            pieces.append(existing.group())
            position = existing.end()
        pieces.append(_substitute(rule, text[position:], on_kind))
        return "".join(pieces)


def _substitute(rule: _Rule, segment: str, on_kind: Callable[[str], None]) -> str:
    if not segment:
        return segment
    pattern = rule.pattern
    groups = pattern.secret_groups

    def replace(match: re.Match[str]) -> str:
        start, end = next((match.span(g) for g in groups if match.start(g) != -1), match.span())
        if start == end or (rule.accept is not None and not rule.accept(match.string[start:end])):
            return match.group()
        on_kind(pattern.kind)
        return match.string[match.start() : start] + marker(pattern.kind) + match.string[end : match.end()]

    return pattern.regex.sub(replace, segment)


def _unique_key(key: object, taken: Mapping[object, object]) -> object:
    """Two keys can redact to the same text; number the later ones (a prefix never starts a new match)."""
    if key not in taken:
        return key
    n = 2
    while f"#{n} {key}" in taken:
        n += 1
    return f"#{n} {key}"


def _ignore(pointer: str, kind: str) -> None:
    return None


DEFAULT_REDACTOR = Redactor()


def redact(value: T, level: str | RedactionLevel = RedactionLevel.STANDARD) -> T:
    """Redact ``value`` with the built-in patterns (use a ``Redactor`` for extra patterns)."""
    return DEFAULT_REDACTOR.redact(value, level)


def redact_text(text: str, level: str | RedactionLevel = RedactionLevel.STANDARD) -> str:
    return DEFAULT_REDACTOR.redact_text(text, level)


@dataclass(frozen=True)
class SecretFinding:
    """What ``detect_secrets`` saw; never holds a secret value, only references, pointers and kinds."""

    present: bool
    refs: tuple[SecretRef, ...] = ()
    """Well-formed references, deduplicated, in order of appearance."""
    paths: tuple[str, ...] = ()
    """JSON pointers rooted at ``/input``, ``/context`` or ``/labels``; a dict key's hit points at its member."""
    kinds: tuple[str, ...] = ()
    """Sorted marker kinds found (``secret_ref``, ``github_token``, ...)."""


def detect_secrets(
    input: object,
    context: object = None,
    labels: Mapping[str, str] | None = None,
    *,
    redactor: Redactor | None = None,
    level: str | RedactionLevel = RedactionLevel.STANDARD,
) -> SecretFinding:
    """Look for secret references and plaintext credentials in a job's input, context and labels.

    A malformed ``secret://`` mention counts as present (fails closed) but is not in ``refs``.
    """
    active = redactor or DEFAULT_REDACTOR
    paths: dict[str, None] = {}
    kinds: set[str] = set()
    refs: dict[SecretRef, None] = {}
    for root, value in (("input", input), ("context", context), ("labels", labels)):
        if value is None:
            continue
        for pointer, kind in active.scan(value, level):
            paths.setdefault(f"/{root}{pointer}")
            kinds.add(kind)
        for ref in find_secret_refs(value):
            refs.setdefault(ref)
    return SecretFinding(present=bool(paths), refs=tuple(refs), paths=tuple(paths), kinds=tuple(sorted(kinds)))


def mark_job(
    risk_tags: Iterable[str], labels: Mapping[str, str], finding: SecretFinding
) -> tuple[tuple[str, ...], dict[str, str]]:
    """Risk tags (sorted, deduplicated) and labels with ``secrets`` / ``secrets_present=true`` added when present.

    Never removes anything: a job a client already tagged stays tagged. Idempotent.
    """
    tags = set(risk_tags)
    marked = dict(labels)
    if finding.present:
        tags.add(RISK_TAG)
        marked[PRESENT_LABEL] = "true"
    return tuple(sorted(tags)), dict(sorted(marked.items()))
