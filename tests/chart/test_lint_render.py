"""`helm lint` and `helm template` for every profile and every supported Kubernetes version."""

from __future__ import annotations

import pytest

from .conftest import CHART, KUBE_VERSIONS, NAMESPACE, PROFILES, RELEASE, run_helm

pytestmark = pytest.mark.chart


@pytest.mark.parametrize("profile", list(PROFILES))
def test_helm_lint_strict(helm, profile):
    for kv in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]):
        proc = run_helm(
            helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, "--kube-version", kv, *PROFILES[profile]
        )
        assert "0 chart(s) failed" in proc.stdout, proc.stdout
        assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("profile", list(PROFILES))
def test_helm_template_renders(render, profile, kube_version):
    r = render(profile, kube_version=kube_version)
    kinds = {d["kind"] for d in r.docs}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget"} <= kinds
    for d in r.docs:
        assert d.get("apiVersion") and d.get("kind") and d["metadata"].get("name"), d


def test_kube_version_floor_enforced(helm):
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--kube-version", "1.28.0", check=False)
    assert proc.returncode != 0
    assert "kubeVersion" in proc.stderr


@pytest.mark.parametrize(
    "bad_set, message",
    [
        (["--set", "image.service.tag=latest"], "/image/service/tag"),
        (["--set", "secrets.existingSecret="], "/secrets/existingSecret"),
        (["--set-string", "secrets.databaseUrl=postgresql://u:p@db/precis"], "databaseUrl"),
        (["--set-string", "config.extra.PRECIS_SMTP_PASSWORD=hunter2"], "PRECIS_SMTP_PASSWORD"),
        (
            ["--set-string", "gateway.extraEnv[0].name=PRECIS_API_KEYS,gateway.extraEnv[0].value={}"],
            "/gateway/extraEnv/0",
        ),
        (["--set", "kafka.mode=zookeeper"], "/kafka/mode"),
        (["--set", "kafka.topics.jobs.partitions=3"], "/kafka/topics/jobs"),
        (["--set", "triton.realtime.model.dtype=int4"], "/triton/realtime/model/dtype"),
        (["--set", "containerSecurityContext.readOnlyRootFilesystem=false"], "readOnlyRootFilesystem"),
    ],
)
def test_schema_rejects(helm, bad_set, message):
    proc = run_helm(helm, "template", RELEASE, str(CHART), *bad_set, check=False)
    assert proc.returncode != 0, f"{bad_set} rendered but should have been rejected"
    assert message in proc.stderr, proc.stderr


def test_sidecar_off_needs_realtime_triton(helm):
    proc = run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "triton.batch.sidecar=false,triton.realtime.enabled=false",
        check=False,
    )
    assert proc.returncode != 0 and "triton.batch.sidecar=false" in proc.stderr
