"""Start-up settings (issue #14, items 6 and 9): no process runs without a named mode, and a
settings error names the setting and the reason, never a secret's value.

Each case starts the real entry point (``python -m <module>``) the way the Procfile, the images and
the chart do; every case fails at its settings, before anything listens or connects. Should a
process start after all (the old behaviour: PRECIS_ENV defaulted to local), its port is a private
free one and its dependencies point at 127.0.0.1:1, and the test fails on its timeout.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest
from pydantic import ValidationError

from devstack import PORTS, child_env
from devstack.env import ROOT

MODULES = ["gateway", "realtime_svc", "async_svc", "worker", "notifier", "common.migrate", "common.topics"]
MODES = ("local", "test", "production")
PG = "postgresql+asyncpg://precis:{pw}@db.example.internal:5432/precis"


def start(module: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess[str]:
    base = child_env(
        tmp_path,
        PRECIS_PORT=str(PORTS.one()),
        PRECIS_KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        PRECIS_TRITON_GRPC_URL="127.0.0.1:1",
        PRECIS_SMTP_HOST="127.0.0.1",
        PRECIS_SMTP_PORT="1",
    )
    base.pop("PRECIS_ENV")  # child_env names the mode; each case sets its own, or none
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=90,
    )


def assert_no_secret(out: str, secret: str) -> None:
    """Neither the value nor any part of its end (4 characters or more) nor its start appears."""
    assert secret[-4:] not in out, f"the end of the secret ({secret[-4:]!r}) is printed:\n{out}"
    assert secret[:8] not in out, f"the start of the secret is printed:\n{out}"


def token() -> str:
    # letters and digits only: a 4-character tail of 62 symbols does not turn up in English text by chance
    return "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789") for _ in range(24))


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_no_mode_refuses_to_start_and_says_what_to_set(module, value, tmp_path):
    env = {} if value is None else {"PRECIS_ENV": value}
    proc = start(module, env, tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "PRECIS_ENV is not set" in proc.stderr
    assert all(f"PRECIS_ENV={mode}" in proc.stderr for mode in MODES), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


# the notifier's per-tenant webhook secrets (JSON; the braces are str.format's escapes)
WH_SECRETS = '{{"acme": ["{secret}"]}}'

# (module, env with a bad setting next to the secrets, the setting the message must name)
# {secret} is the secret under test; the other secrets of the env are filled in too.
BAD = [
    # the secret itself is malformed
    ("notifier", {"PRECIS_WEBHOOK_SECRETS": WH_SECRETS}, "PRECIS_WEBHOOK_SECRETS['acme'][0] must look like"),
    ("gateway", {"PRECIS_API_KEYS": '{{"{secret}": '}, "PRECIS_API_KEYS is not valid JSON"),
    # another setting is bad: the error used to quote the whole env, secrets included
    (
        "notifier",
        {"PRECIS_WEBHOOK_SECRETS": WH_SECRETS, "PRECIS_DATABASE_URL": "sqlite:///x.db"},
        "PRECIS_DATABASE_URL",
    ),
    ("async_svc", {"PRECIS_DATABASE_URL": PG, "PRECIS_FAULT_INJECT": "crash_before_commit"}, "PRECIS_FAULT_INJECT"),
    ("worker", {"PRECIS_DATABASE_URL": PG, "PRECIS_MAX_ATTEMPTS": "0"}, "PRECIS_MAX_ATTEMPTS"),
    (
        "worker",
        {"PRECIS_DATABASE_URL": PG, "PRECIS_KAFKA_SASL_PASSWORD": "{secret}", "PRECIS_CHUNK_TOKENS": "x"},
        "PRECIS_CHUNK_TOKENS",
    ),
    ("notifier", {"PRECIS_SMTP_PASSWORD": "{secret}", "PRECIS_SMTP_PORT": "smtp"}, "PRECIS_SMTP_PORT"),
    ("gateway", {"PRECIS_DEV_API_KEY": "{secret}"}, "PRECIS_DEV_API_KEY is for local mode only"),
]


@pytest.mark.parametrize(("module", "env", "names"), BAD, ids=lambda v: v if isinstance(v, str) else None)
def test_a_settings_error_prints_no_secret(module, env, names, tmp_path):
    secret = token()
    filled = {k: v.format(secret=secret, pw=secret) for k, v in env.items()}
    # production, with every other secret well-formed (and the same value: none may show)
    filled = {
        "PRECIS_ENV": "production",
        "PRECIS_DATABASE_URL": PG.format(pw=secret),
        "PRECIS_API_KEYS": '{"' + "0" * 64 + '": "acme"}',
        **filled,
    }
    proc = start(module, filled, tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-2000:]
    assert names in out, out
    assert_no_secret(out, secret)
    assert "Traceback" not in out and "input_value" not in out, out


def test_validation_errors_carry_no_input():
    """In process too (a test or a tool that prints the exception): pydantic's text quotes no input."""
    from notifier.config import NotifierSettings

    secret = token()
    with pytest.raises(ValidationError) as info:
        NotifierSettings(
            env="production", database_url=PG.format(pw=secret), webhook_secrets=json.dumps({"acme": [secret]})
        )
    assert "PRECIS_WEBHOOK_SECRETS['acme'][0] must look like whsec_" in str(info.value)
    assert "input_value" not in str(info.value)
    assert_no_secret(str(info.value) + repr(info.value), secret)
