"""`make k8s-smoke` without a cluster says so and exits 0; with --require-cluster it fails."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = pytest.mark.chart

SCRIPT = REPO / "deploy" / "k8s_smoke.py"


def run(*args, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, "HOME": "/nonexistent-home", **env},
    )


def test_no_cluster_skips_honestly():
    proc = run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no cluster" in proc.stdout and "SKIPPED: nothing was tested" in proc.stdout


def test_require_cluster_fails_without_one():
    proc = run("--require-cluster")
    assert proc.returncode == 1 and "FAILED" in proc.stdout


def test_rollout_readiness_logic():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import k8s_smoke
    finally:
        sys.path.pop(0)
    from types import SimpleNamespace as NS

    def dep(gen, observed, want, updated, ready, available, total=None):
        return NS(
            metadata=NS(name="d", generation=gen),
            spec=NS(replicas=want),
            status=NS(
                observed_generation=observed,
                updated_replicas=updated,
                ready_replicas=ready,
                available_replicas=available,
                replicas=total if total is not None else updated,
            ),
        )

    assert k8s_smoke.deployment_ready(dep(2, 2, 2, 2, 2, 2))[0]
    assert not k8s_smoke.deployment_ready(dep(3, 2, 2, 2, 2, 2))[0]  # new spec not observed yet
    assert not k8s_smoke.deployment_ready(dep(2, 2, 2, 1, 2, 2, 3))[0]  # old pods still around
    assert not k8s_smoke.deployment_ready(dep(2, 2, 2, 2, 1, 1))[0]  # not ready
