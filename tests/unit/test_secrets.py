"""The secrets package (spec 9): references, detection, redaction, the log filter and resolvers.

Credential-looking literals are assembled from pieces so that secret scanners reading this file do
not mistake the fixtures for leaked credentials.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
import string
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import coretex.secrets as secrets
from coretex.errors import ConfigError, CoretexError
from coretex.secrets import (
    EntropyRule,
    EnvSecretResolver,
    RedactingFilter,
    RedactionConfig,
    RedactionConfigError,
    RedactionLevel,
    RedactionPattern,
    Redactor,
    RoutingSecretResolver,
    SecretAccessDeniedError,
    SecretBackendUnavailableError,
    SecretError,
    SecretFinding,
    SecretNotFoundError,
    SecretRef,
    SecretRefError,
    SecretResolver,
    SecretValue,
    allow_all,
    allow_matching,
    detect_secrets,
    find_secret_refs,
    install_log_redaction,
    mark_job,
    parse_level,
    parse_secret_ref,
    redact,
    redact_text,
    shannon_entropy,
)

ROOT = Path(__file__).resolve().parents[2]

GITHUB_TOKEN = "ghp_" + "x7Kq2Lm9" * 4 + "Zt4W"
GITHUB_PAT = "github_pat_" + "11ABCDEFG0" * 2 + "ab_" + "Qw3rTy7Ui9" * 5 + "Op3As6Df9"
AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_TEMP_KEY_ID = "ASIA" + "Y34FZKBOKMUTVV7A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
SLACK_TOKEN = "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
GOOGLE_KEY = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
STRIPE_KEY = "sk_" + "live_" + "4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_RESTRICTED = "rk_" + "live_" + "51H8xYzAbCdEfGhIjKlMnOp"
JWT = (
    "eyJ"
    + "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    + ".eyJ"
    + "zdWIiOiIxMjM0NTY3ODkwIn0"
    + "."
    + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
BEARER = "mF_9.B5f-4.1JqM" + "x9Zz0aQ"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n"
    "aFDrBz9vFqU4yPjpvRMpNOMNPR1VdzGvCkqTOfW2s4n1e6FhYtR3OPm8\n"
    "-----END RSA PRIVATE KEY-----"
)
PEM_LINES = [line for line in PEM.splitlines() if "-----" not in line]


def dump(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


# --------------------------------------------------------------------------------------------------
# references


@pytest.mark.parametrize(
    ("text", "backend", "path", "key"),
    [
        ("secret://vault/kv/prod/db#password", "vault", "kv/prod/db", "password"),
        ("secret://vault/app", "vault", "app", None),
        ("secret://k8s/payments/db-creds", "k8s", "payments/db-creds", None),
        ("secret://k8s/payments/db.creds#tls.key", "k8s", "payments/db.creds", "tls.key"),
        ("secret://env/GITHUB_TOKEN", "env", "GITHUB_TOKEN", None),
        ("secret://aws-sm/prod/api_key#v2", "aws-sm", "prod/api_key", "v2"),
    ],
)
def test_parse_good_refs(text: str, backend: str, path: str, key: str | None) -> None:
    ref = parse_secret_ref(text)
    assert (ref.backend, ref.path, ref.key) == (backend, path, key)
    assert ref.uri == text
    assert str(ref) == text
    assert parse_secret_ref(ref.uri) == ref


@pytest.mark.parametrize(
    "text",
    [
        "",
        "vault/kv/db",
        "https://vault/kv",
        "SECRET://env/TOKEN",
        "secret://",
        "secret://vault",
        "secret://vault/",
        "secret:///path",
        "secret://Vault/kv",
        "secret://-vault/kv",
        "secret://va_ult/kv",
        "secret://vault/kv//db",
        "secret://vault/kv/../db",
        "secret://vault/./db",
        "secret://vault/kv/db/",
        "secret://vault/kv db",
        "secret://vault/kv#",
        "secret://vault/kv#a b",
        "secret://vault/kv#a#b",
        "secret://env/1TOKEN",
        "secret://env/A/B",
        "secret://env/TOKEN#key",
        "secret://env/TO-KEN",
        "secret://k8s/payments",
        "secret://k8s/Payments/db",
        "secret://k8s/payments/db/extra",
        "secret://k8s/payments/-db",
        "secret://vault/" + "a" * 1100,
    ],
)
def test_parse_rejects_bad_refs(text: str) -> None:
    with pytest.raises(SecretRefError) as caught:
        parse_secret_ref(text)
    assert caught.value.code == "bad_secret_ref"


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(SecretRefError):
        parse_secret_ref(42)  # type: ignore[arg-type]


def test_parse_error_never_echoes_the_input() -> None:
    with pytest.raises(SecretRefError) as caught:
        parse_secret_ref(f"secret://vault/{GITHUB_TOKEN}#bad key")
    assert GITHUB_TOKEN not in str(caught.value)


def test_secret_ref_validates_on_construction() -> None:
    assert SecretRef("env", "HOME").uri == "secret://env/HOME"
    with pytest.raises(SecretRefError):
        SecretRef("env", "HOME", "key")
    with pytest.raises(SecretRefError):
        SecretRef("VAULT", "x")


def test_find_secret_refs_walks_keys_values_and_text() -> None:
    value = {
        "secret://vault/from/key#k": 1,
        "steps": [
            {"env": ["secret://env/TOKEN", ("nested", "see secret://k8s/ns/name#tls.crt.")]},
            "also secret://env/TOKEN again",
            "broken secret://Vault/x and secret://env/1BAD",
        ],
        "count": 3,
        "none": None,
    }
    refs = find_secret_refs(value)
    assert [ref.uri for ref in refs] == [
        "secret://vault/from/key#k",
        "secret://env/TOKEN",
        "secret://k8s/ns/name#tls.crt",
    ]


def test_find_secret_refs_in_plain_string_and_nothing() -> None:
    assert find_secret_refs("secret://env/A") == [SecretRef("env", "A")]
    assert find_secret_refs({"a": [1, 2.5, None, True]}) == []
    assert find_secret_refs(b"secret://env/A") == []


# --------------------------------------------------------------------------------------------------
# detection and job marking


def test_detect_secrets_reports_json_pointers() -> None:
    job_input = {
        "a/b": {"~c": "secret://env/X"},
        "list": ["plain", {"deep": ["x", f"token {GITHUB_TOKEN}"]}],
        "secret://vault/as/key#k": "value",
        "safe": "nothing here",
    }
    finding = detect_secrets(job_input, context={"db": {"password": "hunter22"}}, labels={"ref": "secret://env/Y"})
    assert finding.present
    assert finding.paths == (
        "/input/a~1b/~0c",
        "/input/list/1/deep/1",
        "/input/secret:~1~1vault~1as~1key#k",
        "/context/db/password",
        "/labels/ref",
    )
    assert [ref.uri for ref in finding.refs] == ["secret://env/X", "secret://vault/as/key#k", "secret://env/Y"]
    assert finding.kinds == ("credential_assignment", "github_token", "secret_ref")


def test_detect_secrets_top_level_string_and_clean_input() -> None:
    assert detect_secrets("use secret://env/A").paths == ("/input",)
    clean = detect_secrets({"query": "status of job 7", "max_tokens": 100}, context=None, labels={"team": "sre"})
    assert clean == SecretFinding(present=False)


def test_detect_secrets_counts_malformed_refs_as_present() -> None:
    finding = detect_secrets({"x": "secret://Vault/whatever"})
    assert finding.present
    assert finding.refs == ()
    assert finding.paths == ("/input/x",)


def test_mark_job_adds_tag_and_label_idempotently() -> None:
    finding = detect_secrets({"x": "secret://env/A"})
    tags, labels = mark_job(["write", "net", "write"], {"team": "sre"}, finding)
    assert tags == ("net", "secrets", "write")
    assert labels == {"secrets_present": "true", "team": "sre"}
    assert mark_job(tags, labels, finding) == (tags, labels)


def test_mark_job_without_secrets_keeps_what_the_client_said() -> None:
    tags, labels = mark_job(("b", "a", "a"), {"secrets_present": "true"}, SecretFinding(present=False))
    assert tags == ("a", "b")
    assert labels == {"secrets_present": "true"}
    assert mark_job((), {}, SecretFinding(present=False)) == ((), {})


def test_mark_job_overrides_a_false_claim() -> None:
    _, labels = mark_job((), {"secrets_present": "false"}, detect_secrets("secret://env/A"))
    assert labels["secrets_present"] == "true"


# --------------------------------------------------------------------------------------------------
# redaction: standard shapes


@pytest.mark.parametrize(
    ("text", "kind", "secret"),
    [
        (f"export GH={GITHUB_TOKEN}", "github_token", GITHUB_TOKEN),
        (f"pat {GITHUB_PAT} here", "github_token", GITHUB_PAT),
        (f"key id {AWS_KEY_ID}.", "aws_access_key_id", AWS_KEY_ID),
        (f"temporary {AWS_TEMP_KEY_ID}", "aws_access_key_id", AWS_TEMP_KEY_ID),
        (f"aws_secret_access_key={AWS_SECRET}", "aws_secret_access_key", AWS_SECRET),
        (f"AWS_SECRET_ACCESS_KEY = '{AWS_SECRET}'", "aws_secret_access_key", AWS_SECRET),
        (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', "aws_secret_access_key", AWS_SECRET),
        (f"slack {SLACK_TOKEN}", "slack_token", SLACK_TOKEN),
        (f"maps key={GOOGLE_KEY}&q=x", "google_api_key", GOOGLE_KEY),
        (f"stripe {STRIPE_KEY}", "stripe_key", STRIPE_KEY),
        (f"stripe {STRIPE_RESTRICTED}", "stripe_key", STRIPE_RESTRICTED),
        (f"Authorization: Bearer {BEARER}", "bearer_token", BEARER),
        ("Authorization: Basic dXNlcjpodW50ZXIy", "basic_auth", "dXNlcjpodW50ZXIy"),
        (f"token {JWT} expired", "jwt", JWT),
        ("password=hunter22 user=bob", "credential_assignment", "hunter22"),
        ("passwd: hunter22", "credential_assignment", "hunter22"),
        ("PWD = hunter22", "credential_assignment", "hunter22"),
        ("client_secret=s3cr3t-v4lue&grant=x", "credential_assignment", "s3cr3t-v4lue"),
        ("access_token: tok-123456", "credential_assignment", "tok-123456"),
        ("x-api-key: k3y-123456", "credential_assignment", "k3y-123456"),
        ('{"password": "correct horse battery", "user": "bob"}', "credential_assignment", "correct horse"),
        ("{'api_key': 'abc123def'}", "credential_assignment", "abc123def"),
        ('log: {\\"db_password\\": \\"pa ss\\"}', "credential_assignment", "pa ss"),
        ('password = "truncated value', "credential_assignment", "truncated value"),
        ("Server=db;Password=Pa55word;User Id=sa", "credential_assignment", "Pa55word"),
        ("see secret://vault/kv/db#password now", "secret_ref", "secret://vault/kv/db#password"),
        ("postgres://bob:Pa55word@db:5432/app", "url_password", "Pa55word"),
    ],
)
def test_standard_redacts_credential_shapes(text: str, kind: str, secret: str) -> None:
    redacted = redact(text, "standard")
    assert secret not in redacted
    assert f"[REDACTED:{kind}]" in redacted
    assert redact(text, "strict").count("[REDACTED:") >= 1


def test_redaction_keeps_the_readable_parts() -> None:
    assert redact("password=hunter22 user=bob") == "password=[REDACTED:credential_assignment] user=bob"
    assert redact(f"Authorization: Bearer {BEARER}") == "Authorization: Bearer [REDACTED:bearer_token]"
    assert redact('{"password": "x1", "n": 1}') == '{"password": "[REDACTED:credential_assignment]", "n": 1}'


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://bob:Pa55word@db:5432/app", "postgres://bob:[REDACTED:url_password]@db:5432/app"),
        ("redis://:s3cret@cache:6379/0", "redis://:[REDACTED:url_password]@cache:6379/0"),
        ("amqp://u:p@ss@broker/vhost", "amqp://u:[REDACTED:url_password]@broker/vhost"),
        (
            "https://x-access-token:tok123@github.com/o/r.git",
            "https://x-access-token:[REDACTED:url_password]@github.com/o/r.git",
        ),
    ],
)
def test_url_password_keeps_user_and_host(url: str, expected: str) -> None:
    assert redact(f"connect {url} now") == f"connect {expected} now"


@pytest.mark.parametrize(
    "text",
    [
        "https://example.com:8443/path?q=1",
        "max_tokens=100 token_type=bearer",
        "the password is wrong",
        "job 550e8400-e29b-41d4-a716-446655440000 done",
        "secrets_present=true",
        "sha256:" + "ab12" * 16,
    ],
)
def test_standard_leaves_ordinary_text_alone(text: str) -> None:
    assert redact(text) == text


def test_pem_block_is_removed_whole() -> None:
    text = f"key follows\n{PEM}\nand the log goes on"
    redacted = redact(text)
    assert redacted == "key follows\n[REDACTED:private_key]\nand the log goes on"
    for variant in ("PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY"):
        block = PEM.replace("RSA PRIVATE KEY", variant)
        assert redact(block) == "[REDACTED:private_key]"


def test_unterminated_pem_is_removed_to_the_end() -> None:
    truncated = "x " + PEM.split("-----END")[0]
    assert redact(truncated) == "x [REDACTED:private_key]"


def test_pem_inside_escaped_json_log_line() -> None:
    line = json.dumps({"msg": PEM})
    redacted = redact(line)
    assert all(body not in redacted for body in PEM_LINES)


def test_public_certificate_is_not_a_secret() -> None:
    cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    assert redact(cert) == cert


def test_jwt_variants() -> None:
    unsigned = JWT.rsplit(".", 1)[0] + "."
    assert redact(f"t={unsigned}") == "t=[REDACTED:jwt]"
    assert redact(f'"{JWT}"') == '"[REDACTED:jwt]"'


def test_extra_patterns_are_redacted_with_their_kind() -> None:
    redactor = Redactor(
        [
            RedactionPattern.compile("internal_token", r"itk_[a-z0-9]{12}"),
            RedactionPattern.compile("employee_pin", r"pin#(?P<secret>\d{4,})"),
        ]
    )
    text = "call with itk_0123456789ab and pin#98765"
    assert redactor.redact_text(text) == "call with [REDACTED:internal_token] and pin#[REDACTED:employee_pin]"
    assert redact(text) == text  # the default redactor does not know them
    assert "internal_token" in redactor.kinds
    config = RedactionConfig(
        level=RedactionLevel.STRICT, extra_patterns=(RedactionPattern.compile("x_tok", "xt-\\d+"),)
    )
    assert Redactor.from_config(config).redact_text("xt-42") == "[REDACTED:x_tok]"


@pytest.mark.parametrize(
    ("kind", "regex"),
    [("Bad Kind", "x"), ("ok", "("), ("ok", "a*"), ("jwt", "zzz"), ("", "x")],
)
def test_bad_extra_patterns_are_refused(kind: str, regex: str) -> None:
    with pytest.raises(RedactionConfigError) as caught:
        Redactor([RedactionPattern.compile(kind, regex)])
    assert isinstance(caught.value, ConfigError)
    assert caught.value.code == "bad_redaction_config"


def test_duplicate_extra_kinds_are_refused() -> None:
    pattern = RedactionPattern.compile("dup", "d+")
    with pytest.raises(RedactionConfigError):
        Redactor([pattern, pattern])


def test_levels_parse_and_refuse() -> None:
    assert parse_level("strict") is RedactionLevel.STRICT
    assert RedactionConfig(level="none").level is RedactionLevel.NONE  # type: ignore[arg-type]
    with pytest.raises(RedactionConfigError):
        parse_level("paranoid")
    with pytest.raises(RedactionConfigError):
        redact("x", "STANDARD")


# --------------------------------------------------------------------------------------------------
# redaction: structures, strict, none


def test_none_level_changes_nothing_but_copies() -> None:
    value = {"password": "hunter22", "list": [GITHUB_TOKEN, {"k": JWT}], "t": (AWS_KEY_ID,)}
    result = redact(value, "none")
    assert result == value
    assert result is not value and result["list"] is not value["list"]
    assert redact_text(PEM, RedactionLevel.NONE) == PEM


def test_nested_structures_are_redacted_without_mutation() -> None:
    value = {
        "config": {"db": {"password": "hunter22", "port": 5432, "pin": None}, "flags": [True, False]},
        "env": [f"GH={GITHUB_TOKEN}", ("tuple", AWS_KEY_ID)],
        GITHUB_TOKEN: "token as key",
        "max_tokens": 4000,
        "auth_token": 123456,
        "api_key": "",
        "secret": False,
    }
    before = copy.deepcopy(value)
    result = redact(value)
    assert value == before
    assert result == {
        "config": {
            "db": {"password": "[REDACTED:credential_assignment]", "port": 5432, "pin": None},
            "flags": [True, False],
        },
        "env": ["GH=[REDACTED:github_token]", ("tuple", "[REDACTED:aws_access_key_id]")],
        "[REDACTED:github_token]": "token as key",
        "max_tokens": 4000,
        "auth_token": "[REDACTED:credential_assignment]",
        "api_key": "",
        "secret": False,
    }


def test_standard_walks_containers_under_credential_keys() -> None:
    result = redact({"token": {"value": f"Bearer {BEARER}", "expires_in": 3600}})
    assert result == {"token": {"value": "Bearer [REDACTED:bearer_token]", "expires_in": 3600}}


def test_keys_that_redact_to_the_same_text_do_not_collide() -> None:
    result = redact({"secret://env/A": 1, "secret://env/B": 2, "[REDACTED:secret_ref]": 3})
    assert sorted(result.values()) == [1, 2, 3]
    assert list(result) == ["[REDACTED:secret_ref]", "#2 [REDACTED:secret_ref]", "#3 [REDACTED:secret_ref]"]
    assert redact(result) == result


def test_too_deep_values_are_replaced() -> None:
    deep: object = GITHUB_TOKEN
    for _ in range(100):
        deep = [deep]
    result = redact(deep)
    assert GITHUB_TOKEN not in dump(result)
    assert "[REDACTED:depth_limit]" in dump(result)
    assert redact(result) == result


def test_strict_redacts_values_of_sensitive_keys() -> None:
    value = {
        "author": "alice",
        "SessionId": "abc",
        "Cookie": "sid=1",
        "primary_key": 42,
        "credentials": {"user": "bob", "scopes": ["read"]},
        "auth_enabled": True,
        "session": None,
        "name": "bob",
        "nested": [{"x-auth": "v"}],
    }
    result = redact(value, "strict")
    assert result == {
        "author": "[REDACTED:sensitive_key]",
        "SessionId": "[REDACTED:sensitive_key]",
        "Cookie": "[REDACTED:sensitive_key]",
        "primary_key": "[REDACTED:sensitive_key]",
        "credentials": "[REDACTED:sensitive_key]",
        "auth_enabled": True,
        "session": None,
        "name": "bob",
        "nested": [{"x-auth": "[REDACTED:sensitive_key]"}],
    }
    assert redact(value, "standard") == value


def test_strict_redacts_high_entropy_tokens_only() -> None:
    random_b64 = "q8Zr3LmX0pT7vW2yB5nC9dF1gH4jK6sA"  # 32 distinct characters: 5 bits/char
    random_hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    english = "ThisIsAVeryLongIdentifierNameForTheConfigLoader1"
    text = f"blob {random_b64} digest {random_hex} name {english} id 550e8400-e29b-41d4-a716-446655440000"
    strict = redact(text, "strict")
    assert random_b64 not in strict and random_hex not in strict
    assert strict.count("[REDACTED:high_entropy]") == 2
    assert english in strict and "550e8400-e29b-41d4-a716-446655440000" in strict
    assert redact(text, "standard") == text


def test_entropy_rule_and_thresholds() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)
    rule = EntropyRule()
    assert rule.looks_random("q8Zr3LmX0pT7vW2yB5nC9dF1gH4jK6sA")
    assert not rule.looks_random("q8Zr3LmX0pT7vW2yB5nC9dF1gH4jK6s")  # 31 characters
    assert not rule.looks_random("a" * 40)
    assert not rule.looks_random("abcdefghijklmnopqrstuvwxyzabcdef")  # no digits, no upper case
    assert not rule.looks_random("AbstractSingletonProxyFactoryBean2Impl")  # 4.3 bits/char but one digit
    assert rule.looks_random("9f86d081884c7d659a2feaa0c55ad015")
    assert not rule.looks_random("12345678901234567890123456789012")  # hex alphabet, digits only
    assert EntropyRule(min_length=8, base64_threshold=2.0).looks_random("aB3dE5gH")
    lenient = Redactor(entropy=EntropyRule(min_length=8, base64_threshold=2.0))
    assert lenient.redact_text("id aB3dE5gH", "strict") == "id [REDACTED:high_entropy]"
    with pytest.raises(RedactionConfigError):
        EntropyRule(min_length=4)


def test_scan_reports_pointers_and_kinds() -> None:
    found = Redactor().scan({"a": [f"x {GITHUB_TOKEN}", {"password": "p"}]})
    assert found == [("/a/0", "github_token"), ("/a/1/password", "credential_assignment")]


CORPUS = [
    f"token={GITHUB_TOKEN} and Bearer {BEARER}",
    f"Authorization: Bearer {JWT}",
    f"https://u:{AWS_SECRET}@host/{AWS_KEY_ID}",
    f"{PEM}\npassword={SLACK_TOKEN}",
    "password=secret://env/A",
    '{"password": "[REDACTED:jwt]", "token": "[REDACTED:credential_assignment] tail"}',
    "secret: password: token: api_key=",
    f"x {GITHUB_TOKEN}{AWS_KEY_ID}{GOOGLE_KEY}",
    {"[REDACTED:secret_ref]": 1, "secret://env/A": {"cookie": [JWT, "q8Zr3LmX0pT7vW2yB5nC9dF1gH4jK6sA"]}},
]


@pytest.mark.parametrize("level", ["standard", "strict"])
@pytest.mark.parametrize("value", CORPUS)
def test_redaction_is_idempotent_on_tricky_inputs(value: object, level: str) -> None:
    once = redact(value, level)
    assert redact(once, level) == once


# --------------------------------------------------------------------------------------------------
# property tests: generated secrets never survive standard redaction

ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
SEPARATORS = [" ", "\n", "\t", '"', "'", "(", ")", "[", "]", "{", "}", "<", ">", ",", ";", "|"]


@dataclass(frozen=True)
class Planted:
    """Text holding one generated secret, and the bodies that must not survive redaction."""

    text: str
    bodies: tuple[str, ...]


def chars(alphabet: str, low: int, high: int | None = None) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=low, max_size=low if high is None else high)


def whole(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[Planted]:
    return strategy.map(lambda token: Planted(token, (token,)))


github_tokens = whole(
    st.one_of(
        st.tuples(st.sampled_from(["ghp_", "gho_", "ghs_", "ghu_"]), chars(ALNUM, 36)).map("".join),
        st.tuples(chars(ALNUM, 22), chars(ALNUM, 59)).map(lambda p: f"github_pat_{p[0]}_{p[1]}"),
    )
)
aws_key_ids = whole(st.tuples(st.sampled_from(["AKIA", "ASIA"]), chars(UPPER_ALNUM, 16)).map("".join))
slack_tokens = whole(
    st.tuples(
        st.sampled_from("abposr"), chars(string.digits, 10, 13), chars(string.digits, 10, 13), chars(ALNUM, 24)
    ).map(lambda p: f"xox{p[0]}-{p[1]}-{p[2]}-{p[3]}")
)
google_keys = whole(chars(B64URL, 35).map(lambda body: "AIza" + body))
stripe_keys = whole(st.tuples(st.sampled_from(["sk_live_", "rk_live_"]), chars(ALNUM, 24, 99)).map("".join))
jwts = whole(
    st.tuples(chars(B64URL, 10, 40), chars(B64URL, 10, 80), chars(B64URL, 20, 86)).map(
        lambda p: f"eyJ{p[0]}.eyJ{p[1]}.{p[2]}"
    )
)


@st.composite
def aws_secret_assignments(draw: st.DrawFn) -> Planted:
    key = draw(
        st.sampled_from(["aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "SecretAccessKey", "secret_access_key"])
    )
    value = draw(chars(B64, 40))
    form = draw(st.sampled_from(["{k}={v}", "{k} = {v}", "{k}: {v}", '"{k}": "{v}"', "{k}='{v}'"]))
    return Planted(form.format(k=key, v=value), (value,))


@st.composite
def bearer_headers(draw: st.DrawFn) -> Planted:
    prefix = draw(st.sampled_from(["Bearer ", "bearer ", "Authorization: Bearer ", "BEARER  "]))
    token = draw(chars(B64URL + "._~+/", 20, 64))
    return Planted(prefix + token + draw(st.sampled_from(["", "=", "=="])), (token,))


@st.composite
def credential_assignments(draw: st.DrawFn) -> Planted:
    key = draw(
        st.sampled_from(
            [
                "password",
                "passwd",
                "pwd",
                "secret",
                "token",
                "api_key",
                "apiKey",
                "client_secret",
                "DB_PASSWORD",
                "X-Api-Key",
                "access_token",
                "private_key",
                "passphrase",
            ]
        )
    )
    value = draw(chars(ALNUM + "!@#$%^*-_+=./~", 8, 32))
    form = draw(st.sampled_from(["{k}={v}", "{k}: {v}", "{k} = {v}", '"{k}": "{v}"', "'{k}': '{v}'", '{k}="{v}"']))
    return Planted(form.format(k=key, v=value), (value,))


@st.composite
def url_passwords(draw: st.DrawFn) -> Planted:
    scheme = draw(st.sampled_from(["https", "postgres", "redis", "amqp", "mongodb+srv"]))
    user = draw(chars(ALNUM + "._-", 0, 10))
    password = draw(chars(ALNUM + "._~!$*+=-", 8, 24))
    host = draw(st.sampled_from(["db.example.com", "10.0.0.7:5432", "cache"]))
    path = draw(st.sampled_from(["", "/", "/app?sslmode=require", "/0"]))
    return Planted(f"{scheme}://{user}:{password}@{host}{path}", (password,))


@st.composite
def pem_blocks(draw: st.DrawFn) -> Planted:
    label = draw(st.sampled_from(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"]))
    lines = draw(st.lists(chars(B64, 64), min_size=1, max_size=5)) + [draw(chars(B64, 16, 63))]
    body = "\n".join(lines)
    return Planted(f"-----BEGIN {label}-----\n{body}\n-----END {label}-----", tuple(lines))


@st.composite
def secret_refs(draw: st.DrawFn) -> Planted:
    backend = draw(st.sampled_from(["vault", "k8s", "env", "aws-sm"]))
    if backend == "env":
        path = draw(st.tuples(st.sampled_from(string.ascii_uppercase), chars(UPPER_ALNUM + "_", 2, 20)).map("".join))
        key = ""
    elif backend == "k8s":
        path = draw(chars(string.ascii_lowercase, 2, 12)) + "/" + draw(chars(string.ascii_lowercase, 2, 12))
        key = draw(st.sampled_from(["", "#tls.key", "#password"]))
    else:
        path = "/".join(
            draw(st.lists(chars(ALNUM + "_.-", 1, 12).filter(lambda s: s not in (".", "..")), min_size=1, max_size=4))
        )
        key = draw(st.sampled_from(["", "#key", "#password"]))
    uri = f"secret://{backend}/{path}{key}"
    parse_secret_ref(uri)  # the generator itself must produce valid references
    return Planted(uri, (uri,))


SHAPES: dict[str, st.SearchStrategy[Planted]] = {
    "github_token": github_tokens,
    "aws_access_key_id": aws_key_ids,
    "aws_secret_access_key": aws_secret_assignments(),
    "slack_token": slack_tokens,
    "google_api_key": google_keys,
    "stripe_key": stripe_keys,
    "bearer_token": bearer_headers(),
    "credential_assignment": credential_assignments(),
    "url_password": url_passwords(),
    "private_key": pem_blocks(),
    "jwt": jwts,
    "secret_ref": secret_refs(),
}

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
plain_keys = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=12)


@st.composite
def embedded(draw: st.DrawFn, shape: st.SearchStrategy[Planted]) -> tuple[object, tuple[str, ...]]:
    """The planted secret inside random text, then wrapped in random JSON-like containers."""
    planted = draw(shape)
    text = (
        draw(st.text(max_size=30))
        + draw(st.sampled_from(SEPARATORS))
        + planted.text
        + draw(st.sampled_from(SEPARATORS))
        + draw(st.text(max_size=30))
    )
    value: object = draw(st.sampled_from([text, planted.text]))
    for _ in range(draw(st.integers(0, 4))):
        how = draw(st.sampled_from(["list", "tuple", "dict_value", "dict_key"]))
        siblings = draw(st.lists(json_scalars, max_size=3))
        if how == "dict_key" and isinstance(value, str):
            value = {value: draw(json_scalars)}
        elif how in ("list", "tuple"):
            at = draw(st.integers(0, len(siblings)))
            items = [*siblings[:at], value, *siblings[at:]]
            value = items if how == "list" else tuple(items)
        else:
            value = {**{f"k{i}": s for i, s in enumerate(siblings)}, draw(plain_keys): value}
    return value, planted.bodies


PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.filter_too_much]
)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_property_generated_secrets_never_survive_standard(shape: str) -> None:
    @PROPERTY_SETTINGS
    @given(embedded(SHAPES[shape]))
    def check(case: tuple[object, tuple[str, ...]]) -> None:
        value, bodies = case
        original = dump(value)
        assume(all(original.count(body) == 1 for body in bodies))
        redacted = redact(value, "standard")
        out = dump(redacted)
        for body in bodies:
            assert body not in out
        assert "[REDACTED:" in out
        assert redact(redacted, "standard") == redacted
        assert detect_secrets(value).present

    check()


json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False) | st.one_of(*SHAPES.values()).map(lambda p: p.text),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            plain_keys | st.sampled_from(["password", "auth", "monkey", "token"]) | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@PROPERTY_SETTINGS
@given(json_values, st.sampled_from(["none", "standard", "strict"]))
def test_property_redaction_is_idempotent_and_pure(value: object, level: str) -> None:
    before = copy.deepcopy(value)
    once = redact(value, level)
    assert value == before
    assert redact(once, level) == once


@PROPERTY_SETTINGS
@given(st.text(max_size=200))
def test_property_arbitrary_text_is_idempotent(text: str) -> None:
    for level in ("standard", "strict"):
        once = redact_text(text, level)
        assert redact_text(once, level) == once


# --------------------------------------------------------------------------------------------------
# the log filter


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"coretex.test.secrets.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)
    handler.close()


def test_filter_redacts_message_with_args(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info("pushing with %s to %s", GITHUB_TOKEN, "origin")
    logger.warning("db url %s", "postgres://app:Pa55word@db/app")
    out = stream.getvalue()
    assert GITHUB_TOKEN not in out and "Pa55word" not in out
    assert "INFO pushing with [REDACTED:github_token] to origin" in out
    assert "postgres://app:[REDACTED:url_password]@db/app" in out


def test_filter_redacts_dict_args_by_key(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    password = "correct-horse-battery"
    logger.info("login %(user)s with %(password)s", {"user": "bob", "password": password})
    logger.info("pin %(api_key)d", {"api_key": 987654})
    out = stream.getvalue()
    assert password not in out and "987654" not in out
    assert "login bob with [REDACTED:credential_assignment]" in out


def test_filter_redacts_exception_traceback(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    token = GITHUB_TOKEN
    try:
        try:
            raise KeyError(f"no repo for {token}")
        except KeyError as inner:
            raise RuntimeError(f"push failed: Authorization: Bearer {token}") from inner
    except RuntimeError:
        logger.exception("git push")
    out = stream.getvalue()
    assert token not in out
    assert "Traceback" in out and "RuntimeError: push failed" in out and "KeyError" in out


def test_filter_redacts_stack_info_and_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s %(api_token)s %(note)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"coretex.test.secrets.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("call", extra={"api_token": "tok-998877", "note": f"jwt {JWT}"}, stack_info=True)
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "tok-998877" not in out and JWT not in out
    assert "call [REDACTED:credential_assignment] jwt [REDACTED:jwt]" in out
    assert "Stack (most recent call last)" in out


def test_filter_handles_non_string_messages_and_bad_format(logged: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = logged
    logger.info({"event": "connect", "password": "hunter22"})
    logger.info("broken %s %s", GITHUB_TOKEN)  # too few args for the format
    out = stream.getvalue()
    assert "hunter22" not in out and GITHUB_TOKEN not in out
    assert "[REDACTED:credential_assignment]" in out and "[REDACTED:github_token]" in out


def test_filter_is_idempotent_across_handlers() -> None:
    streams = [io.StringIO(), io.StringIO()]
    logger = logging.getLogger(f"coretex.test.secrets.{uuid.uuid4().hex}")
    logger.propagate = False
    handlers = [logging.StreamHandler(s) for s in streams]
    for handler in handlers:
        handler.addFilter(RedactingFilter())
        logger.addHandler(handler)
    try:
        logger.error("token=%s", GITHUB_TOKEN)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
    assert streams[0].getvalue() == streams[1].getvalue() == "token=[REDACTED:github_token]\n"


def test_filter_level_none_and_strict() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "author=%s", ("alice",), None)
    assert RedactingFilter("none").filter(record) and record.getMessage() == "author=alice"
    strict = logging.LogRecord("x", logging.INFO, __file__, 1, "%(author)s", ({"author": "alice"},), None)
    assert RedactingFilter("strict").filter(strict)
    assert strict.getMessage() == "[REDACTED:sensitive_key]" and strict.args is None


def test_logger_filters_miss_child_loggers_handler_filters_do_not() -> None:
    stream = io.StringIO()
    parent = logging.getLogger(f"coretex.test.secrets.{uuid.uuid4().hex}")
    parent.propagate = False
    handler = logging.StreamHandler(stream)
    parent.addHandler(handler)
    child = logging.getLogger(f"{parent.name}.child")
    on_logger = RedactingFilter()
    parent.addFilter(on_logger)
    try:
        child.warning("token=%s", GITHUB_TOKEN)
        assert GITHUB_TOKEN in stream.getvalue()  # why the filter must go on handlers
        installed = install_log_redaction(logger=parent)
        child.warning("token=%s", GITHUB_TOKEN)
        assert stream.getvalue().splitlines()[-1] == "token=[REDACTED:github_token]"
        assert installed in handler.filters
        install_log_redaction("strict", logger=parent)
        assert [type(f) for f in handler.filters] == [RedactingFilter]
        assert handler.filters[0].level is RedactionLevel.STRICT  # type: ignore[union-attr]
    finally:
        parent.removeFilter(on_logger)
        parent.removeHandler(handler)


def test_install_on_root_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    install_log_redaction()
    logger = logging.getLogger(f"coretex.test.secrets.{uuid.uuid4().hex}")
    logger.warning("key %s", AWS_KEY_ID)
    assert stream.getvalue() == "key [REDACTED:aws_access_key_id]\n"


def test_install_without_handlers_is_refused() -> None:
    lonely = logging.getLogger(f"coretex.test.secrets.{uuid.uuid4().hex}")
    with pytest.raises(RedactionConfigError):
        install_log_redaction(logger=lonely)


# --------------------------------------------------------------------------------------------------
# resolvers

ENV = {"GITHUB_TOKEN": GITHUB_TOKEN, "EMPTY": ""}


def test_env_resolver_returns_masked_value() -> None:
    resolver = EnvSecretResolver(ENV, allowed=allow_all)
    assert isinstance(resolver, SecretResolver)
    value = resolver.resolve(parse_secret_ref("secret://env/GITHUB_TOKEN"))
    assert value.reveal() == GITHUB_TOKEN
    assert value.ref == SecretRef("env", "GITHUB_TOKEN")
    for shown in (repr(value), str(value), f"{value}", f"{value:>80}", format(value, ""), repr([value])):
        assert GITHUB_TOKEN not in shown
    assert repr(value) == "SecretValue('secret://env/GITHUB_TOKEN', '***')"
    assert resolver.resolve(SecretRef("env", "EMPTY")).reveal() == ""


def test_secret_value_refuses_pickle_and_copy() -> None:
    value = SecretValue("s3cret")
    with pytest.raises(TypeError):
        pickle.dumps(value)
    with pytest.raises(TypeError):
        copy.deepcopy(value)
    assert repr(value) == "SecretValue('?', '***')"


def test_env_resolver_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"CORETEX_TEST_SECRET_{uuid.uuid4().hex[:8].upper()}"
    resolver = EnvSecretResolver(allowed=allow_all)
    ref = SecretRef("env", name)
    with pytest.raises(SecretNotFoundError):
        resolver.resolve(ref)
    monkeypatch.setenv(name, "from-env")
    assert resolver.resolve(ref).reveal() == "from-env"


def test_env_resolver_denies_when_not_allowed() -> None:
    ref = SecretRef("env", "GITHUB_TOKEN")
    with pytest.raises(SecretAccessDeniedError) as caught:
        EnvSecretResolver(ENV, allowed=lambda r: False).resolve(ref)
    assert caught.value.code == "secret_access_denied"
    assert GITHUB_TOKEN not in str(caught.value)
    with pytest.raises(SecretAccessDeniedError):
        EnvSecretResolver(ENV).resolve(ref)  # no predicate: fail closed


def test_env_resolver_denies_when_the_predicate_breaks() -> None:
    def broken(ref: SecretRef) -> bool:
        raise RuntimeError("policy store down")

    with pytest.raises(SecretAccessDeniedError) as caught:
        EnvSecretResolver(ENV, allowed=broken).resolve(SecretRef("env", "GITHUB_TOKEN"))
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_denial_comes_before_existence() -> None:
    with pytest.raises(SecretAccessDeniedError):
        EnvSecretResolver(ENV, allowed=lambda r: False).resolve(SecretRef("env", "MISSING"))
    with pytest.raises(SecretNotFoundError) as caught:
        EnvSecretResolver(ENV, allowed=allow_all).resolve(SecretRef("env", "MISSING"))
    assert caught.value.code == "secret_not_found"


def test_env_resolver_refuses_other_backends() -> None:
    with pytest.raises(SecretBackendUnavailableError) as caught:
        EnvSecretResolver(ENV, allowed=allow_all).resolve(parse_secret_ref("secret://vault/kv/db#password"))
    assert caught.value.code == "secret_backend_unavailable"


def test_allow_matching_predicate() -> None:
    allowed = allow_matching(["secret://env/GITHUB_*", "secret://vault/ci/*"])
    assert allowed(SecretRef("env", "GITHUB_TOKEN"))
    assert allowed(SecretRef("vault", "ci/deploy", "key"))
    assert not allowed(SecretRef("env", "AWS_SECRET"))
    resolver = EnvSecretResolver(ENV, allowed=allowed)
    assert resolver.resolve(SecretRef("env", "GITHUB_TOKEN")).reveal() == GITHUB_TOKEN
    with pytest.raises(SecretAccessDeniedError):
        resolver.resolve(SecretRef("env", "EMPTY"))


class StaticVault:
    def __init__(self) -> None:
        self.asked: list[SecretRef] = []

    def resolve(self, ref: SecretRef) -> SecretValue:
        self.asked.append(ref)
        return SecretValue("vault-value", ref)


def test_routing_resolver_dispatches_by_backend() -> None:
    vault = StaticVault()
    router = RoutingSecretResolver({"env": EnvSecretResolver(ENV, allowed=allow_all), "vault": vault})
    assert router.resolve(SecretRef("vault", "kv/db", "pw")).reveal() == "vault-value"
    assert router.resolve(SecretRef("env", "GITHUB_TOKEN")).reveal() == GITHUB_TOKEN
    with pytest.raises(SecretBackendUnavailableError):
        router.resolve(SecretRef("k8s", "ns/name"))
    guarded = RoutingSecretResolver({"vault": vault}, allowed=lambda r: r.key == "ok")
    with pytest.raises(SecretAccessDeniedError):
        guarded.resolve(SecretRef("vault", "kv/db", "pw"))
    assert vault.asked == [SecretRef("vault", "kv/db", "pw")]


# --------------------------------------------------------------------------------------------------
# package surface


def test_error_tree_and_codes() -> None:
    errors = [
        SecretRefError,
        RedactionConfigError,
        SecretBackendUnavailableError,
        SecretAccessDeniedError,
        SecretNotFoundError,
    ]
    for error in errors:
        assert issubclass(error, SecretError) and issubclass(error, CoretexError)
    assert issubclass(RedactionConfigError, ConfigError)
    codes = [SecretError.code, *(error.code for error in errors)]
    assert len(set(codes)) == len(codes)


def test_public_names_exist() -> None:
    for name in secrets.__all__:
        assert hasattr(secrets, name), name


def test_secrets_package_imports_no_io_library() -> None:
    probe = (
        "import json, sys; import coretex.secrets; "
        "print(json.dumps(sorted(m for m in sys.modules if m.partition('.')[0] in "
        "('redis', 'celery', 'kombu', 'flask', 'flask_smorest', 'grpc'))))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []
