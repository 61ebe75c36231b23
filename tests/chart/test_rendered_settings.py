"""Every value the chart renders is one the services accept at start-up.

For each profile, every container that runs a Python service (`python -m <module>`) gets the env
the chart renders for it (its env list: ConfigMap keys through configMapKeyRef, secretKeyRefs
filled with well-formed stand-ins, `$(VAR)` references expanded as the kubelet does), and that
module's settings class is built from exactly that env; and it gets nothing its settings do not
read (no database URL for the gateway or realtime_svc, say). The Triton containers'
PRECIS_MODEL_* env goes through the engine's EngineConfig the same way. A rendered value a service refuses (the 10 MiB
maxDocumentBytes the chart once shipped, say) fails here instead of crash-looping a release.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from .conftest import PROFILES, Rendered

pytestmark = pytest.mark.chart

# module run by the container -> its settings class
SETTINGS = {
    "gateway": "gateway.config:GatewaySettings",
    "realtime_svc": "realtime_svc.config:RealtimeSettings",
    "async_svc": "async_svc.config:AsyncSettings",
    "worker": "worker.config:WorkerSettings",
    "notifier": "notifier.config:NotifierSettings",
    "common.migrate": "common.settings:StoreSettings",
    "common.topics": "common.settings:KafkaSettings",
}

# Well-formed stand-ins for the keys of the existing Secret (the chart only references them).
SECRETS = {
    "api-keys": json.dumps({hashlib.sha256(b"k8s-test-key").hexdigest(): "tenant-a"}),
    "database-url": "postgresql+asyncpg://precis:s3cret@db.example.internal:5432/precis",
    "smtp-username": "mailer",
    "smtp-password": "mail-pass",
    "webhook-secrets": json.dumps({"tenant-a": ["whsec_" + "c2VjcmV0LXNpZ25pbmcta2V5LWZvci10ZXN0cw=="]}),
    "internal-token-secret": "stand-in-internal-token-secret-of-40-chars",
    "kafka-sasl-password": "sasl-pass",
    "test-api-key": "k8s-test-key",
    "postgres-password": "s3cret",
    "rate-limit-storage-uri": "rediss://:s3cret@redis.example.internal:6380/0",
}


def _containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def rendered_env(r: Rendered, container: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        cm = r.get("ConfigMap", src["configMapRef"]["name"])
        env.update({k: str(v) for k, v in cm["data"].items()})
    for e in container.get("env", []):
        if "configMapKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["configMapKeyRef"]
            data = r.get("ConfigMap", ref["name"])["data"]
            assert ref["key"] in data or ref.get("optional"), (
                f"{e['name']}: ConfigMap {ref['name']} has no {ref['key']}"
            )
            if ref["key"] in data:
                env[e["name"]] = str(data[ref["key"]])
        elif "value" in e:
            # the kubelet expands $(NAME) from variables defined earlier in the list
            env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), str(e["value"]))
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            if ref["key"] in SECRETS:
                env[e["name"]] = SECRETS[ref["key"]]
            else:
                assert ref.get("optional"), f"{e['name']}: secret key {ref['key']!r} is not a documented key"
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = "pod-0"
    return env


def service_containers(r: Rendered):
    for owner, spec in r.pod_specs():
        for c in _containers(spec):
            if c.get("command") == ["python", "-m"]:
                yield owner, c, c["args"][0]


def build(module: str, env: dict[str, str], monkeypatch):
    mod_name, cls_name = SETTINGS[module].split(":")
    cls = getattr(importlib.import_module(mod_name), cls_name)
    for k in [k for k in list(__import__("os").environ) if k.startswith("PRECIS_")]:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return cls()


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_service_accepts_its_rendered_env(render, profile, monkeypatch):
    r = render(profile)
    seen = set()
    for owner, c, module in service_containers(r):
        assert module in SETTINGS, f"{owner['metadata']['name']}: unknown module {module}"
        env = rendered_env(r, c)
        try:
            build(module, env, monkeypatch)
        except ValidationError as exc:
            pytest.fail(
                f"{profile}: {owner['kind']}/{owner['metadata']['name']} ({module}) refuses its rendered env:\n{exc}"
            )
        seen.add(module)
    assert {"gateway", "realtime_svc", "async_svc", "worker", "notifier"} <= seen


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_service_gets_only_what_its_settings_read(render, profile):
    r = render(profile)
    for owner, c, module in service_containers(r):
        mod_name, cls_name = SETTINGS[module].split(":")
        fields = getattr(importlib.import_module(mod_name), cls_name).model_fields
        names = {e["name"] for e in c.get("env", [])} | {
            k for src in c.get("envFrom", []) for k in r.get("ConfigMap", src["configMapRef"]["name"])["data"]
        }
        unread = {n for n in names if n.removeprefix("PRECIS_").lower() not in fields}
        assert not unread, (
            f"{profile}: {owner['metadata']['name']}/{c['name']} ({module}) gets env it never reads: {unread}"
        )
    for comp in ("gateway", "realtime"):
        spec = r.get("Deployment", f"rel-precis-{comp}")["spec"]["template"]["spec"]
        names = {e["name"] for c in _containers(spec) for e in c.get("env", [])}
        assert "PRECIS_DATABASE_URL" not in names and not any(n.startswith("PRECIS_KAFKA_") for n in names), comp


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_triton_accepts_its_rendered_model_env(render, profile, monkeypatch):
    import summarizer_engine as engine  # the Triton model's engine (repo-root symlink: pyproject.toml)

    r = render(profile)
    checked = 0
    for _owner, spec in r.pod_specs():
        for c in _containers(spec):
            if not any(a.startswith("--model-repository") for a in c.get("args", [])):
                continue
            env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
            # the weights live on the cluster's volume, not here: check every other setting
            if "PRECIS_MODEL_PATH" in env:
                assert env["PRECIS_MODEL_PATH"].startswith("/")
                env.pop("PRECIS_MODEL_PATH")
            cfg = engine.EngineConfig.from_sources({}, env)
            assert cfg.max_input_tokens == int(env["PRECIS_MODEL_MAX_INPUT_TOKENS"])
            checked += 1
    assert checked


def test_the_old_document_limit_is_refused(helm):
    """The guard above is real: the 10 MiB default the chart once shipped is refused (by the
    schema now, and by async_svc at start-up had it got through)."""
    from .conftest import CHART, run_helm

    proc = run_helm(helm, "template", "rel", str(CHART), "--set", "config.maxDocumentBytes=10485760", check=False)
    assert proc.returncode != 0 and "maxDocumentBytes" in proc.stderr


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--set", "config.realtimeMaxInputTokens=4096"], "exceeds triton.realtime.model.maxInputTokens (2048)"),
        (
            ["--set", "config.routingThresholdTokens=3000,config.realtimeMaxInputTokens=2048"],
            "routingThresholdTokens (3000)",
        ),
        (["--set", "config.chunkTokens=4000"], "chunkTokens (4000)"),
    ],
)
def test_contradictory_token_limits_are_refused(helm, bad, message):
    from .conftest import CHART, run_helm

    proc = run_helm(helm, "template", "rel", str(CHART), *bad, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_gpu_profile_serves_a_multilingual_model_within_its_context(render):
    r = render("gpu")
    cm = r.get("ConfigMap", "rel-precis-config")["data"]
    for _owner, spec in r.pod_specs():
        for c in _containers(spec):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if "PRECIS_MODEL_PATH" in env:
                assert Path(env["PRECIS_MODEL_PATH"]).name == "Qwen2.5-1.5B-Instruct"
                assert int(cm["PRECIS_REALTIME_MAX_INPUT_TOKENS"]) <= int(env["PRECIS_MODEL_MAX_INPUT_TOKENS"])
