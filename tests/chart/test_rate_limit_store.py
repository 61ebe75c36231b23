"""The gateway's rate-limit store in the chart (rateLimits.store): a bundled Redis only the
gateway reaches, an external one whose URI comes from the Secret, or per-replica memory; and the
gateway accepts the settings each mode renders."""

from __future__ import annotations

import subprocess

import pytest

from .conftest import CHART, RELEASE, name
from .test_rendered_settings import build, rendered_env

pytestmark = pytest.mark.chart


def gateway_container(r) -> dict:
    spec = r.get("Deployment", name("gateway"))["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "gateway")


def env_entry(c: dict, var: str) -> dict | None:
    return next((e for e in c.get("env", []) if e["name"] == var), None)


def test_bundled_redis_is_reached_by_the_gateway_only_and_persists_nothing(render, monkeypatch):
    r = render("default")  # rateLimits.store defaults to bundled
    dep = r.get("Deployment", name("redis"))
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert r.get("Service", name("redis"))["spec"]["ports"] == [
        {"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}
    ]
    np = r.get("NetworkPolicy", name("redis"))["spec"]
    assert np["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    [rule] = np["ingress"]
    assert [p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in rule["from"]] == ["gateway"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    cm = r.get("ConfigMap", name("config"))["data"]
    assert cm["PRECIS_RATE_LIMIT_STORAGE_URI"] == f"redis://{name('redis')}:6379/0"
    gw = gateway_container(r)
    assert env_entry(gw, "PRECIS_RATE_LIMIT_STORAGE_URI")["valueFrom"]["configMapKeyRef"]["key"] == (
        "PRECIS_RATE_LIMIT_STORAGE_URI"
    )
    s = build("gateway", rendered_env(r, gw), monkeypatch)
    assert s.rate_limit_storage_uri.get_secret_value() == f"redis://{name('redis')}:6379/0"
    assert (s.rate_limit_per_minute, s.rate_limit_failed_auth_per_minute, s.rate_limit_store_failure) == (
        600,
        20,
        "open",
    )


def test_external_redis_uri_comes_from_the_secret(render, monkeypatch):
    r = render("default", "--set", "rateLimits.store=external,rateLimits.storeFailure=closed")
    assert not r.has("Deployment", name("redis")) and not r.has("NetworkPolicy", name("redis"))
    assert "PRECIS_RATE_LIMIT_STORAGE_URI" not in r.get("ConfigMap", name("config"))["data"]
    gw = gateway_container(r)
    ref = env_entry(gw, "PRECIS_RATE_LIMIT_STORAGE_URI")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "precis-secrets", "key": "rate-limit-storage-uri"}
    s = build("gateway", rendered_env(r, gw), monkeypatch)
    assert s.rate_limit_storage_uri.get_secret_value().startswith("rediss://")
    assert s.rate_limit_store_failure == "closed"


def test_memory_store_renders_no_redis_and_no_uri(render, monkeypatch):
    r = render("default", "--set", "rateLimits.store=memory,rateLimits.trustedClientIpHeader=X-Forwarded-For")
    assert not r.has("Deployment", name("redis"))
    gw = gateway_container(r)
    assert env_entry(gw, "PRECIS_RATE_LIMIT_STORAGE_URI") is None
    s = build("gateway", rendered_env(r, gw), monkeypatch)
    assert s.rate_limit_storage_uri.get_secret_value() == "memory://"
    assert s.trusted_client_ip_header == "X-Forwarded-For"


@pytest.mark.parametrize(
    "bad_set, message",
    [
        (["--set-string", "rateLimits.storageUri=redis://:hunter2@redis:6379"], "storageUri"),
        (["--set", "rateLimits.store=postgres"], "/rateLimits/store"),
        (["--set", "rateLimits.storeFailure=maybe"], "/rateLimits/storeFailure"),
    ],
)
def test_schema_refuses_a_plaintext_uri_and_unknown_modes(helm, bad_set, message):
    proc = subprocess.run(
        [helm, "template", RELEASE, str(CHART), *bad_set], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0, f"{bad_set} rendered but should have been refused"
    assert message in proc.stderr, proc.stderr
