"""Rendered manifests validate (strict: unknown fields rejected) against the Kubernetes 1.29 to
1.33 OpenAPI schemas shipped offline inside the kubernetes-validate package."""

from __future__ import annotations

import copy
import functools

import pytest

from .conftest import KUBE_VERSIONS, PROFILES

pytestmark = pytest.mark.chart

kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed in the venv")
from kubernetes_validate import utils as kvu  # noqa: E402

# Custom resources have no schema in kubernetes-validate; these are the only ones allowed.
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("kafka.strimzi.io/v1", "Kafka"),
    ("kafka.strimzi.io/v1", "KafkaNodePool"),
    ("kafka.strimzi.io/v1", "KafkaTopic"),
}

# The schema files are 1 MB of JSON: read each once per session, not once per document.
if not hasattr(kvu.schema_contents, "cache_info"):
    kvu.schema_contents = functools.lru_cache(maxsize=None)(kvu.schema_contents)


def test_schemas_ship_offline():
    have = set(kvu.all_versions())
    for v in KUBE_VERSIONS:
        assert v in have, f"kubernetes-validate {kv.__version__} has no schemas for {v}: {sorted(have)}"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("profile", list(PROFILES))
def test_manifests_validate(render, profile, kube_version):
    r = render(profile, kube_version=kube_version)
    errors, validated = [], 0
    for d in r.docs:
        ident = f"{d['kind']}/{d['metadata']['name']}"
        if (d["apiVersion"], d["kind"]) in CRDS:
            assert isinstance(d.get("spec"), dict), f"{ident}: custom resource without spec"
            continue
        try:
            got = kvu.validate(d, kube_version, strict=True)
        except kvu.ValidationError as e:
            errors.append(f"{ident}: {'.'.join(map(str, e.path))}: {e.message}")
            continue
        except kvu.SchemaNotFoundError as e:
            errors.append(f"{ident}: {e.message} (not a known custom resource either)")
            continue
        assert got == kube_version.rsplit(".", 1)[0]
        validated += 1
    assert not errors, "\n".join(errors)
    assert validated >= 20


def test_validator_catches_mistakes(render):
    """Guard against a validator that silently accepts everything."""
    dep = copy.deepcopy(render("gpu").kind("Deployment")[0])
    dep["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}  # typo: strict rejects
    with pytest.raises(kvu.ValidationError):
        kvu.validate(dep, "1.29.0", strict=True)
    dep = copy.deepcopy(render("gpu").kind("Deployment")[0])
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kvu.ValidationError):
        kvu.validate(dep, "1.33.0", strict=True)
