"""Fixtures for the Helm chart tests: the real `helm` CLI (built from the Go module proxy into
the cache by scripts/install_helm.sh) renders every profile once per session."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from common.paths import cache_dir

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "precis"
CACHE = cache_dir()
KUBE_VERSIONS = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"]
RELEASE = "rel"
NAMESPACE = "precis"

# Profile name -> extra `helm` arguments. "default" is values.yaml alone; "gpu-alt" flips the
# toggles the GPU profile leaves on (Strimzi instead of external Kafka, no KEDA, no queue-time
# HPA, no SASL) so both branches of every toggle render and validate.
PROFILES: dict[str, list[str]] = {
    "default": [],
    "cpu": ["-f", str(CHART / "values-cpu.yaml")],
    "gpu": ["-f", str(CHART / "values-gpu.yaml")],
    "gpu-alt": [
        "-f",
        str(CHART / "values-gpu.yaml"),
        "--set",
        "kafka.mode=strimzi,kafka.securityProtocol=PLAINTEXT,kafka.saslMechanism=",
        "--set",
        "worker.autoscaling.keda.enabled=false,triton.realtime.autoscaling.enabled=false",
        "--set",
        "metrics.serviceMonitor.enabled=false,triton.modelStorage.existingClaim=",
    ],
}


def _helm_path() -> Path | None:
    explicit = os.environ.get("PRECIS_HELM")
    if explicit:
        return Path(explicit)
    cached = CACHE / "bin" / "helm"
    return cached


@functools.lru_cache(maxsize=1)
def _ensure_helm() -> tuple[str | None, str]:
    """Return (path, reason). Builds helm once (minutes) when it is not cached yet."""
    helm = _helm_path()
    if helm is not None and helm.is_file() and os.access(helm, os.X_OK):
        stamp = helm.parent / "helm.buildinfo"
        if os.environ.get("PRECIS_HELM") or stamp.is_file():
            return str(helm), ""
    if shutil.which("go") is None:
        return None, "helm is not built and Go is not installed (needed by scripts/install_helm.sh)"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_helm.sh")],
        env={**os.environ, "PRECIS_CACHE": str(CACHE)},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if proc.returncode != 0 or not (CACHE / "bin" / "helm").is_file():
        return None, f"could not build helm (scripts/install_helm.sh rc={proc.returncode}): {proc.stderr[-800:]}"
    return str(CACHE / "bin" / "helm"), ""


@pytest.fixture(scope="session")
def helm() -> str:
    path, reason = _ensure_helm()
    if path is None:
        pytest.skip(reason)
    return path


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


class Rendered:
    """The documents of one `helm template` run, with lookups."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.docs: list[dict] = [d for d in yaml.safe_load_all(text) if d]

    def kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        for d in self.docs:
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
        raise KeyError(f"{kind}/{name} not rendered; have {[(d['kind'], d['metadata']['name']) for d in self.docs]}")

    def has(self, kind: str, name: str) -> bool:
        return any(d["kind"] == kind and d["metadata"]["name"] == name for d in self.docs)

    def pod_specs(self) -> list[tuple[dict, dict]]:
        """(owner document, pod spec) for every workload, hooks and test pods included."""
        out = []
        for d in self.docs:
            if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                out.append((d, d["spec"]["template"]["spec"]))
            elif d["kind"] == "Pod":
                out.append((d, d["spec"]))
        return out


def template(helm: str, *args: str, kube_version: str = "1.33.0") -> Rendered:
    proc = run_helm(
        helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version, *args
    )
    return Rendered(proc.stdout)


@pytest.fixture(scope="session")
def render(helm):
    cache: dict[tuple, Rendered] = {}

    def _render(profile: str, *extra: str, kube_version: str = "1.33.0") -> Rendered:
        key = (profile, extra, kube_version)
        if key not in cache:
            cache[key] = template(helm, *PROFILES[profile], *extra, kube_version=kube_version)
        return cache[key]

    return _render


def name(component: str) -> str:
    return f"{RELEASE}-precis-{component}"
