"""What the chart promises: GPU placement, probes, hardened pods, consistent selectors, secrets
only by reference, the toggles (Kafka, KEDA, Triton autoscaling, monitoring) and the hooks."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import PROFILES, REPO, name

pytestmark = pytest.mark.chart

PY_SERVICES = {
    "gateway": ("gateway", 8080),
    "realtime": ("realtime_svc", 8081),
    "async": ("async_svc", 8082),
    "worker": ("worker", 8083),
    "notifier": ("notifier", 8084),
}
SECRET_ENV = {
    "PRECIS_API_KEYS",
    "PRECIS_DATABASE_URL",
    "PRECIS_SMTP_USERNAME",
    "PRECIS_SMTP_PASSWORD",
    "PRECIS_WEBHOOK_SECRETS",
    "PRECIS_KAFKA_SASL_PASSWORD",
    "PRECIS_TEST_API_KEY",
}
A100 = re.compile(r"A100")
GPU = "nvidia.com/gpu"


def containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def gpu_terms(spec: dict) -> list[dict]:
    na = spec.get("affinity", {}).get("nodeAffinity", {})
    req = na.get("requiredDuringSchedulingIgnoredDuringExecution", {})
    return [
        e
        for t in req.get("nodeSelectorTerms", [])
        for e in t.get("matchExpressions", [])
        if e["key"] == "nvidia.com/gpu.product"
    ]


def requests_gpu(c: dict) -> bool:
    res = c.get("resources", {})
    return GPU in res.get("limits", {}) or GPU in res.get("requests", {})


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------- GPU placement


def test_gpu_profile_realtime_triton_on_a100(render):
    r = render("gpu")
    dep = r.get("Deployment", name("triton"))
    spec = dep["spec"]["template"]["spec"]
    (triton,) = spec["containers"]
    assert triton["resources"]["limits"][GPU] == "1" and triton["resources"]["requests"][GPU] == "1"
    (term,) = gpu_terms(spec)
    assert term["operator"] == "In" and term["values"] and all(A100.search(v) for v in term["values"])
    assert any(t.get("key") == GPU and t.get("effect") == "NoSchedule" for t in spec["tolerations"])
    env = env_of(triton)
    assert env["PRECIS_MODEL_DEVICE"]["value"] == "cuda"
    assert env["PRECIS_MODEL_DTYPE"]["value"] == "bfloat16"
    assert env["PRECIS_MODEL_PATH"]["value"].startswith("/models/")


def test_gpu_profile_workers_on_t4_with_triton_sidecar(render):
    r = render("gpu")
    spec = r.get("Deployment", name("worker"))["spec"]["template"]["spec"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "triton" and sidecar["restartPolicy"] == "Always"  # native sidecar
    assert sidecar["resources"]["limits"][GPU] == "1"
    assert env_of(sidecar)["PRECIS_MODEL_DTYPE"]["value"] == "float16"  # T4: no bfloat16
    (term,) = gpu_terms(spec)
    assert term["values"] == ["Tesla-T4"]
    assert any(t.get("key") == GPU for t in spec["tolerations"])
    (worker,) = spec["containers"]
    assert not requests_gpu(worker)
    assert env_of(worker)["PRECIS_TRITON_GRPC_URL"]["value"] == "127.0.0.1:8001"
    assert env_of(worker)["PRECIS_GROUP_ID"]["value"] == "precis-worker"


@pytest.mark.parametrize("profile", list(PROFILES))
def test_only_triton_containers_request_gpus(render, profile):
    for owner, spec in render(profile).pod_specs():
        for c in containers(spec):
            if c["name"] != "triton":
                assert not requests_gpu(c), f"{owner['metadata']['name']}/{c['name']} requests a GPU"
            if requests_gpu(c):
                assert gpu_terms(spec), f"{owner['metadata']['name']} requests a GPU without GPU affinity"


def test_cpu_profile_has_no_gpu_anything(render):
    r = render("cpu")
    for owner, spec in r.pod_specs():
        assert not gpu_terms(spec), owner["metadata"]["name"]
        assert not any(t.get("key") == GPU for t in spec.get("tolerations", []))
        for c in containers(spec):
            assert not requests_gpu(c)
    triton = r.get("Deployment", name("triton"))["spec"]["template"]["spec"]["containers"][0]
    assert env_of(triton)["PRECIS_MODEL_DEVICE"]["value"] == "cpu"
    assert "PRECIS_MODEL_PATH" not in env_of(triton)  # the GGUF baked into the image
    worker = r.get("Deployment", name("worker"))["spec"]["template"]["spec"]
    # its own batch Triton (sidecar), after the init container that migrates the bundled PostgreSQL
    assert [c["name"] for c in worker.get("initContainers", [])] == ["migrate", "triton"]
    cm = r.get("ConfigMap", name("config"))["data"]
    assert cm["PRECIS_TRITON_GRPC_URL"] == f"{name('triton')}:8001"  # realtime_svc's
    for pool in ("realtime", "batch"):
        assert "kind: KIND_CPU" in r.get("ConfigMap", name(f"triton-{pool}-model"))["data"]["config.pbtxt"]


def _pbtxt_batching(text: str) -> dict[str, object]:
    """The batching/queue settings of a config.pbtxt, rendered or in model_repository/."""
    nums = ("max_batch_size", "max_queue_delay_microseconds", "max_queue_size", "default_timeout_microseconds")
    out: dict[str, object] = {k: int(re.search(rf"^\s*{k}: (\d+)", text, re.M).group(1)) for k in nums}
    pref = re.search(r"preferred_batch_size: \[([^\]]*)\]", text).group(1)
    out["preferred_batch_size"] = [int(x) for x in pref.split(",")]
    out["kind"] = re.search(r"kind: (KIND_\w+)", text).group(1)
    # the in-flight scheduler and the decoupled policy it needs (model_repository/summarizer/config.pbtxt)
    sched = re.search(r'key: "scheduler" value: \{ string_value: "(\w+)" \}', text)
    out["scheduler"] = sched.group(1) if sched else None
    out["decoupled"] = bool(re.search(r"model_transaction_policy\s*\{\s*decoupled: true\s*\}", text))
    return out


def _tensors(text: str) -> dict[str, list[tuple[str, str]]]:
    """The input and output tensors of a config.pbtxt: (name, data_type), in order."""
    out = {}
    for section in ("input", "output"):
        block = re.search(rf"^{section} \[(.*?)^\]", text, re.M | re.S).group(1)
        out[section] = re.findall(r'name: "(\w+)"[,\s]*data_type: (TYPE_\w+)', block)
    return out


def test_every_model_config_has_the_contract_tensors(render):
    """model_repository's three configs and the chart's render declare the same tensors (a tensor
    missing from one of them fails that deployment's requests, e.g. TOKEN_TEXT for streaming)."""
    base = REPO / "model_repository/summarizer"
    want = _tensors((base / "config.pbtxt").read_text())
    assert [n for n, _ in want["output"]] == ["SUMMARY", "INPUT_TOKENS", "OUTPUT_TOKENS", "MODEL", "TOKEN_TEXT"]
    for pool in ("realtime", "batch"):
        assert _tensors((base / f"configs/{pool}.pbtxt").read_text()) == want, pool
        for profile in ("cpu", "gpu"):
            rendered = render(profile).get("ConfigMap", name(f"triton-{pool}-model"))["data"]["config.pbtxt"]
            assert _tensors(rendered) == want, (profile, pool)


def test_a_static_scheduler_renders_no_decoupled_policy(render):
    r = render("cpu", "--set", "triton.realtime.modelConfig.scheduler=static")
    got = _pbtxt_batching(r.get("ConfigMap", name("triton-realtime-model"))["data"]["config.pbtxt"])
    assert (got["scheduler"], got["decoupled"]) == ("static", False)


def test_cpu_profile_splits_realtime_and_batch_tritons_like_make_run(render):
    """The CPU profile runs the two Tritons `make run` runs: the realtime Deployment with
    configs/realtime.pbtxt's batching, a batch sidecar in the worker pod with configs/batch.pbtxt's,
    at SCHED_IDLE and with a CPU request a tenth of the realtime pod's (its cgroup weight)."""
    r = render("cpu")
    repo = REPO / "model_repository/summarizer/configs"
    for pool in ("realtime", "batch"):
        rendered = r.get("ConfigMap", name(f"triton-{pool}-model"))["data"]["config.pbtxt"]
        assert _pbtxt_batching(rendered) == _pbtxt_batching((repo / f"{pool}.pbtxt").read_text()), pool
        assert _pbtxt_batching(rendered)["scheduler"] == "inflight" and _pbtxt_batching(rendered)["decoupled"], pool

    rt = r.get("Deployment", name("triton"))["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in rt  # normal priority: the image's entrypoint
    worker = r.get("Deployment", name("worker"))["spec"]["template"]["spec"]
    sidecar = next(c for c in worker["initContainers"] if c["name"] == "triton")
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["chrt", "--idle", "0", "tritonserver"]
    assert env_of(sidecar)["PRECIS_MODEL_THREADS"]["value"] == "2"
    assert env_of(rt)["PRECIS_MODEL_THREADS"]["value"] == "2"
    (w,) = worker["containers"]
    assert env_of(w)["PRECIS_TRITON_GRPC_URL"]["value"] == "127.0.0.1:8001"

    def millicores(q: str) -> float:
        return float(q[:-1]) if q.endswith("m") else float(q) * 1000

    assert millicores(rt["resources"]["requests"]["cpu"]) >= 10 * millicores(sidecar["resources"]["requests"]["cpu"])
    # the realtime Triton takes inference calls from realtime_svc only (workers have their own)
    np_rules = r.get("NetworkPolicy", name("triton"))["spec"]["ingress"]
    comps = {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in np_rules
        for p in rule["from"]
        if "podSelector" in p
    }
    assert comps == {"realtime"}


@pytest.mark.parametrize("priority, command", [("nice", ["nice", "-n", "19", "tritonserver"]), ("normal", None)])
def test_triton_cpu_priority_values(render, priority, command):
    r = render("cpu", "--set", f"triton.batch.cpuPriority={priority}")
    worker = r.get("Deployment", name("worker"))["spec"]["template"]["spec"]
    sidecar = next(c for c in worker["initContainers"] if c["name"] == "triton")
    assert sidecar.get("command") == command


@pytest.mark.parametrize(
    "profile, pool, kind",
    [("gpu", "realtime", "KIND_GPU"), ("gpu", "batch", "KIND_GPU"), ("default", "realtime", "KIND_GPU")],
)
def test_model_config_rendered_from_values(render, profile, pool, kind):
    pbtxt = render(profile).get("ConfigMap", name(f"triton-{pool}-model"))["data"]["config.pbtxt"]
    assert 'name: "summarizer"' in pbtxt and 'backend: "python"' in pbtxt
    assert f"kind: {kind}" in pbtxt and "max_batch_size: 16" in pbtxt and "dynamic_batching" in pbtxt
    for tensor in ("TEXT", "MAX_TOKENS", "LANGUAGE", "SUMMARY", "INPUT_TOKENS", "OUTPUT_TOKENS", "MODEL", "TOKEN_TEXT"):
        assert f'name: "{tensor}"' in pbtxt
    assert "e+" not in pbtxt  # big microsecond values stay integers
    assert "max_queue_size:" in pbtxt and "timeout_action: REJECT" in pbtxt


# --------------------------------------------------------------------------- probes


@pytest.mark.parametrize("profile", list(PROFILES))
def test_probes_on_real_endpoints(render, profile):
    r = render(profile)
    for comp, (module, port) in PY_SERVICES.items():
        spec = r.get("Deployment", name(comp))["spec"]["template"]["spec"]
        (c,) = [c for c in spec["containers"] if c["name"] == comp]
        assert c["command"] == ["python", "-m"] and c["args"] == [module]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path, (comp, probe)
            assert ports[get["port"]] == port, (comp, probe)
        assert env_of(c)["PRECIS_PORT"]["value"] == str(port)
    tritons = [c for _, spec in r.pod_specs() for c in containers(spec) if c["name"] == "triton"]
    assert tritons
    for c in tritons:
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert sorted(ports.values()) == [8000, 8001, 8002]
        for probe, path in (
            ("startupProbe", "/v2/health/ready"),
            ("livenessProbe", "/v2/health/live"),
            ("readinessProbe", "/v2/health/ready"),
        ):
            assert c[probe]["httpGet"]["path"] == path
            assert ports[c[probe]["httpGet"]["port"]] == 8000
        # model loading is slow: the startup probe allows several minutes
        sp = c["startupProbe"]
        assert sp["failureThreshold"] * sp["periodSeconds"] >= 300


# --------------------------------------------------------------------------- hardening


@pytest.mark.parametrize("profile", list(PROFILES))
def test_pods_are_hardened(render, profile):
    r = render(profile)
    for sa in r.kind("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    specs = r.pod_specs()
    assert len(specs) >= 6
    for owner, spec in specs:
        who = f"{owner['kind']}/{owner['metadata']['name']}"
        assert spec["automountServiceAccountToken"] is False, who
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"]["type"] == "RuntimeDefault", who
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (who, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (who, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (who, c["name"])
            assert "add" not in sc["capabilities"]
            assert sc.get("privileged", False) is False
            assert sc.get("runAsUser", psc.get("runAsUser")) not in (None, 0), (who, c["name"])
            # a read-only root needs a writable /tmp
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])) or owner["kind"] == "Pod"
            assert "resources" in c and c["resources"].get("limits", {}).get("memory"), (who, c["name"])
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")


@pytest.mark.parametrize("profile", list(PROFILES))
def test_images_pinned_to_app_version(render, profile, helm):
    r = render(profile)
    for _, spec in r.pod_specs():
        for c in containers(spec):
            assert not c["image"].endswith(":latest") and ":" in c["image"], c["image"]
            assert c["image"].endswith(":0.1.0"), c["image"]


def test_image_digest_wins(render):
    digest = "sha256:" + "ab" * 32
    # rateLimits.store=external: no bundled Redis, so every pod left runs the service image
    r = render("default", "--set", f"image.service.digest={digest}", "--set", "rateLimits.store=external")
    imgs = {c["image"] for _, s in r.pod_specs() for c in containers(s) if c["name"] != "triton"}
    assert imgs == {f"ghcr.io/example/precis-service@{digest}"}


# --------------------------------------------------------------------------- selectors


@pytest.mark.parametrize("profile", list(PROFILES))
def test_selector_labels_consistent(render, profile):
    r = render(profile)
    deps = {d["metadata"]["name"]: d for d in r.kind("Deployment") + r.kind("StatefulSet")}
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deps.items()}
    for n, d in deps.items():
        sel = d["spec"]["selector"]["matchLabels"]
        assert set(sel) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
        assert matches(sel, pods[n]), n
        assert d["metadata"]["labels"]["app.kubernetes.io/component"] == sel["app.kubernetes.io/component"]
        # no two Deployments share a selector
        assert [m for m, p in pods.items() if matches(sel, p)] == [n]
    for svc in r.kind("Service"):
        hits = [n for n, p in pods.items() if matches(svc["spec"]["selector"], p)]
        # a StatefulSet's headless Service carries the StatefulSet's name + "-headless"
        assert hits == [svc["metadata"]["name"].removesuffix("-headless")], (svc["metadata"]["name"], hits)
        cports = {p["name"] for c in containers(deps[hits[0]]["spec"]["template"]["spec"]) for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in cports
    for pdb in r.kind("PodDisruptionBudget"):
        hits = [n for n, p in pods.items() if matches(pdb["spec"]["selector"]["matchLabels"], p)]
        assert len(hits) == 1, pdb["metadata"]["name"]
    for np in r.kind("NetworkPolicy"):
        hits = [n for n, p in pods.items() if matches(np["spec"]["podSelector"]["matchLabels"], p)]
        assert hits, np["metadata"]["name"]
    targets = [h["spec"]["scaleTargetRef"]["name"] for h in r.kind("HorizontalPodAutoscaler")]
    targets += [s["spec"]["scaleTargetRef"]["name"] for s in r.kind("ScaledObject")]
    assert len(targets) == len(set(targets)), f"two autoscalers on one Deployment: {targets}"
    for t in targets:
        assert t in deps
        assert "replicas" not in deps[t]["spec"], f"{t} is autoscaled but pins replicas"
    for sm in r.kind("ServiceMonitor"):
        svcs = [s for s in r.kind("Service") if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert len(svcs) == 1 and sm["spec"]["endpoints"][0]["port"] in {p["name"] for p in svcs[0]["spec"]["ports"]}
    for pm in r.kind("PodMonitor"):
        hits = [n for n, p in pods.items() if matches(pm["spec"]["selector"]["matchLabels"], p)]
        assert len(hits) == 1
        cports = {p["name"] for c in containers(deps[hits[0]]["spec"]["template"]["spec"]) for p in c.get("ports", [])}
        assert {e["port"] for e in pm["spec"]["podMetricsEndpoints"]} <= cports


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("profile", list(PROFILES))
def test_secrets_only_by_reference(render, profile):
    r = render(profile)
    assert not r.kind("Secret"), "the chart must never render a Secret"
    secret = "precis-secrets"
    seen = set()
    for owner, spec in r.pod_specs():
        for c in containers(spec):
            assert "envFrom" not in c or all("secretRef" not in e for e in c["envFrom"])
            for e in c.get("env", []):
                if e["name"] in SECRET_ENV or re.search(r"PASSWORD|SECRET|API_KEY", e["name"]):
                    assert "value" not in e, f"{owner['metadata']['name']}/{c['name']}: {e['name']} has a literal value"
                    ref = e["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == secret
                    seen.add(e["name"])
    assert {
        "PRECIS_API_KEYS",
        "PRECIS_DATABASE_URL",
        "PRECIS_SMTP_PASSWORD",
        "PRECIS_WEBHOOK_SECRETS",
        "PRECIS_TEST_API_KEY",
    } <= seen
    for cm in r.kind("ConfigMap"):
        for key in cm.get("data", {}):
            assert not re.search(r"PASSWORD|SECRET|API_KEYS|DATABASE_URL", key), (cm["metadata"]["name"], key)
    for pat in (r"postgres(ql)?(\+asyncpg)?://", r"BEGIN [A-Z ]*PRIVATE KEY", r"\bpassword:\s*\S"):
        assert not re.search(pat, r.text, re.I), pat


def test_secret_names_follow_existing_secret(render):
    r = render("gpu", "--set", "secrets.existingSecret=vault-synced-precis")
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for _, s in r.pod_specs()
        for c in containers(s)
        for e in c.get("env", [])
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs == {"vault-synced-precis"}
    (ta,) = r.kind("TriggerAuthentication")
    assert {s["name"] for s in ta["spec"]["secretTargetRef"]} == {"vault-synced-precis"}


def test_secret_key_wiring_per_service(render):
    r = render("gpu")

    def keys(comp):
        spec = r.get("Deployment", name(comp))["spec"]["template"]["spec"]
        c = [c for c in spec["containers"] if c["name"] == comp][0]
        return {
            e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
            for e in c["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }

    assert keys("gateway")["PRECIS_API_KEYS"] == "api-keys"
    assert keys("async")["PRECIS_DATABASE_URL"] == "database-url"
    n = keys("notifier")
    assert n["PRECIS_SMTP_USERNAME"] == "smtp-username" and n["PRECIS_SMTP_PASSWORD"] == "smtp-password"
    assert n["PRECIS_WEBHOOK_SECRETS"] == "webhook-secrets"
    assert keys("worker")["PRECIS_KAFKA_SASL_PASSWORD"] == "kafka-sasl-password"
    # the gateway signs its internal calls with the key realtime_svc and async_svc verify
    for comp in ("gateway", "realtime", "async"):
        assert keys(comp)["PRECIS_INTERNAL_TOKEN_SECRET"] == "internal-token-secret", comp
    for comp in ("worker", "notifier"):
        assert "PRECIS_INTERNAL_TOKEN_SECRET" not in keys(comp), comp


# --------------------------------------------------------------------------- exposure


@pytest.mark.parametrize("profile", list(PROFILES))
def test_only_gateway_is_exposed(render, profile):
    r = render(profile)
    for svc in r.kind("Service"):
        if svc["metadata"]["name"] != name("gateway"):
            assert svc["spec"]["type"] == "ClusterIP"
    for ing in r.kind("Ingress"):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                assert p["backend"]["service"]["name"] == name("gateway")
                assert p["path"].startswith("/v1")
    nps = {n["metadata"]["name"]: n for n in r.kind("NetworkPolicy")}
    deny = nps[name("default-deny")]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny["spec"]
    metrics_from = {
        json.dumps(f, sort_keys=True)
        for f in [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    }
    for n, np in nps.items():
        if n in (name("default-deny"), name("gateway")):
            continue
        for rule in np["spec"].get("ingress") or []:
            assert rule.get("from"), f"{n} allows ingress from anywhere"
            for peer in rule["from"]:
                if "podSelector" in peer:
                    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "rel"
                else:
                    assert json.dumps(peer, sort_keys=True) in metrics_from, (n, peer)


def test_triton_reachable_only_from_its_clients(render):
    np = render("gpu").get("NetworkPolicy", name("triton"))
    comps = {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in np["spec"]["ingress"]
        for p in rule["from"]
        if "podSelector" in p
    }
    assert comps == {"realtime"}
    # workers share the realtime Triton only when they have no batch sidecar (no profile does now)
    np = render("cpu", "--set", "triton.batch.sidecar=false").get("NetworkPolicy", name("triton"))
    comps = {
        p["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        for rule in np["spec"]["ingress"]
        for p in rule["from"]
        if "podSelector" in p
    }
    assert comps == {"realtime", "worker"}


def test_ingress_tls_and_public_url(render):
    r = render("gpu")
    ing = r.get("Ingress", name("gateway"))
    assert ing["spec"]["tls"][0]["secretName"] == "precis-tls"
    assert r.get("ConfigMap", name("config"))["data"]["PRECIS_PUBLIC_BASE_URL"] == "https://precis.example.com"


# --------------------------------------------------------------------------- autoscaling


def test_cpu_services_have_hpa(render):
    r = render("gpu")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in r.kind("HorizontalPodAutoscaler")}
    for comp in ("gateway", "realtime", "async", "notifier"):
        m = hpas[name(comp)]["spec"]["metrics"][0]
        assert m["resource"]["name"] == "cpu"


def test_keda_on_lag_with_hpa_fallback(render):
    r = render("gpu")
    (so,) = r.kind("ScaledObject")
    assert so["spec"]["scaleTargetRef"]["name"] == name("worker")
    topics = {t["metadata"]["topic"] for t in so["spec"]["triggers"]}
    assert topics == {"precis.jobs", "precis.jobs.retry"}
    for t in so["spec"]["triggers"]:
        assert t["type"] == "kafka" and t["metadata"]["consumerGroup"] == "precis-worker"
        assert t["metadata"]["sasl"] == "scram_sha512" and t["metadata"]["tls"] == "enable"
    assert so["spec"]["fallback"]["replicas"] >= 1
    assert name("worker") not in {h["spec"]["scaleTargetRef"]["name"] for h in r.kind("HorizontalPodAutoscaler")}
    alt = render("gpu-alt")
    assert not alt.kind("ScaledObject")
    hpa = [h for h in alt.kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name("worker")]
    assert len(hpa) == 1


def test_triton_queue_time_autoscaling_toggle(render):
    hpa = render("gpu").get("HorizontalPodAutoscaler", name("triton"))
    m = hpa["spec"]["metrics"][0]
    assert m["type"] == "Pods" and m["pods"]["metric"]["name"] == "triton_queue_time_per_request_us"
    assert "replicas" not in render("gpu").get("Deployment", name("triton"))["spec"]
    assert not render("gpu-alt").has("HorizontalPodAutoscaler", name("triton"))
    assert render("gpu-alt").get("Deployment", name("triton"))["spec"]["replicas"] == 2


# --------------------------------------------------------------------------- kafka, hooks, tests


def test_external_kafka_topics_job(render):
    r = render("gpu")
    job = r.get("Job", name("topics"))
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["common.topics"]
    assert env_of(c)["PRECIS_KAFKA_BOOTSTRAP_SERVERS"]["value"].startswith("b-1.kafka")
    assert not r.kind("KafkaTopic") and not r.kind("Kafka")


def test_strimzi_kafka_and_topics(render):
    r = render("gpu-alt")
    assert not r.has("Job", name("topics"))
    (kafka,) = r.kind("Kafka")
    (pool,) = r.kind("KafkaNodePool")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    topics = {t["spec"]["topicName"]: t for t in r.kind("KafkaTopic")}
    assert set(topics) == {"precis.jobs", "precis.jobs.retry", "precis.jobs.dlq", "precis.events"}
    assert topics["precis.jobs"]["spec"]["partitions"] >= 6
    for t in topics.values():
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    bootstrap = r.get("ConfigMap", name("config"))["data"]["PRECIS_KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap == f"{kafka['metadata']['name']}-kafka-bootstrap.precis.svc:9092"


def test_migrations_hook(render):
    job = render("default").get("Job", name("migrate"))
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(ann["helm.sh/hook-weight"]) < int(
        render("default").get("Job", name("topics"))["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    spec = job["spec"]["template"]["spec"]
    assert spec["containers"][0]["args"] == ["common.migrate"]
    # a pre-install hook runs before the chart's ServiceAccount and ConfigMap exist
    assert "serviceAccountName" not in spec and "envFrom" not in spec["containers"][0]


def test_helm_test_hook_summarizes_through_gateway(render):
    (pod,) = render("default").kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    assert "/v1/summaries" in c["args"][0] and '"mode": "realtime"' in c["args"][0]
    assert env_of(c)["GATEWAY_URL"]["value"] == f"http://{name('gateway')}:8080"


def test_monitoring_and_dashboard(render):
    r = render("gpu")
    sms = {s["metadata"]["name"] for s in r.kind("ServiceMonitor")}
    assert sms == {name(c) for c in ("gateway", "realtime", "async", "triton")}
    pms = {p["metadata"]["name"]: p for p in r.kind("PodMonitor")}
    assert set(pms) == {name("worker"), name("notifier")}
    assert {e["port"] for e in pms[name("worker")]["spec"]["podMetricsEndpoints"]} == {"http", "triton-metrics"}
    for m in list(r.kind("ServiceMonitor")) + list(r.kind("PodMonitor")):
        assert m["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    cm = r.get("ConfigMap", name("dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["precis.json"])
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for needle in (
        "histogram_quantile(0.99",
        "precis_http_request_duration_seconds_bucket",
        "nv_inference_exec_count",
        "nv_inference_queue_duration_us",
        "kafka_consumergroup_lag",
        "precis_worker_job_duration_seconds_bucket",
        "precis_worker_jobs_total",
    ):
        assert needle in exprs, needle
    assert not render("cpu").kind("ServiceMonitor") and not render("default").kind("PodMonitor")


@pytest.mark.parametrize("profile", list(PROFILES))
def test_recreate_strategies_carry_no_rolling_update(render, profile):
    """The API server refuses `rollingUpdate` beside `type: Recreate` (found by make k8s-dry-run:
    the CPU profile's Recreate merged over the default's rollingUpdate)."""
    for d in render(profile).kind("Deployment"):
        strategy = d["spec"].get("strategy", {})
        if strategy.get("type") == "Recreate":
            assert "rollingUpdate" not in strategy, d["metadata"]["name"]


def test_service_env_is_unique_and_extra_env_overrides_the_config(render):
    """Pods take ConfigMap keys one by one (configMapKeyRef); a key the pod sets itself (extraEnv,
    PRECIS_PORT, the worker's sidecar Triton URL) is left out, so no env name appears twice."""
    r = render(
        "gpu",
        "--set",
        "gateway.extraEnv[0].name=PRECIS_LOG_LEVEL,gateway.extraEnv[0].value=DEBUG",
        "--set",
        "config.extra.PRECIS_RATE_LIMIT_BURST=50",
    )
    for owner, spec in r.pod_specs():
        for c in containers(spec):
            names = [e["name"] for e in c.get("env", [])]
            assert len(names) == len(set(names)), f"{owner['metadata']['name']}/{c['name']}: {names}"
    spec = r.get("Deployment", name("gateway"))["spec"]["template"]["spec"]
    gw = env_of(next(c for c in spec["containers"] if c["name"] == "gateway"))
    assert gw["PRECIS_LOG_LEVEL"]["value"] == "DEBUG"
    assert gw["PRECIS_RATE_LIMIT_BURST"]["valueFrom"]["configMapKeyRef"] == {
        "name": name("config"),
        "key": "PRECIS_RATE_LIMIT_BURST",
    }
    assert r.get("ConfigMap", name("config"))["data"]["PRECIS_RATE_LIMIT_BURST"] == "50"
