#!/usr/bin/env python3
"""End-to-end test of the chart on a real Kubernetes (``make k8s-e2e``; scripts/k8s/e2e.sh
builds the images and brings the local cluster up first).

Against the cluster in KUBECONFIG, with the images described by ``$PRECIS_CACHE/images/*.json``
already on the node (the local cluster's load-images.sh; ``kind load`` elsewhere):

1. ``helm install`` the CPU profile (bundled Kafka, PostgreSQL and SMTP sink) into a fresh
   namespace; every pod Ready; ``helm test`` passes.
2. Through the gateway's Service: a realtime summary (200, p50 of sequential calls), and an async
   job with an email that ends ``succeeded`` with exactly one mail in the sink.
3. Pod faults: the worker pod deleted mid-job (the job still ends once, with one mail);
   ``kubectl rollout restart`` of gateway and realtime_svc under a light realtime load (c=2), then
   ``helm upgrade`` with a changed value under the same load: zero failed requests.
4. ``helm uninstall`` leaves only what docs/deploy.md says is kept (the Secret you created).
5. The GPU profile into a second namespace (``--no-hooks``: its hooks need the managed Kafka and
   database it names): the realtime Triton lands on the A100 node, the workers (Triton sidecar)
   on the T4 node, nothing Pending for want of a toleration or a label.

Writes ``bench/results/k8s-e2e.json``; exits non-zero when any check fails. Every request goes
only to Service and pod addresses of this cluster.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "deploy"), str(REPO / "scripts" / "images")]
from helm_args import helm_set_args  # noqa: E402
from k8s_smoke import SHORT_TEXT, deployment_ready, long_text  # noqa: E402

from common.paths import cache_dir  # noqa: E402

CHART = REPO / "deploy" / "helm" / "precis"
CACHE = cache_dir()
RELEASE = "precis"


def log(msg: str) -> None:
    print(f"[k8s-e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Failed(Exception):
    pass


# what the PNG shows: phase spans and the realtime load during the rollouts (monotonic seconds)
PLOT: dict = {"phases": []}


def enter(phase: str) -> str:
    now = time.monotonic()
    if PLOT["phases"]:
        PLOT["phases"][-1][2] = now
    PLOT["phases"].append([phase, now, None])
    return phase


def write_png(path: Path, res: dict) -> None:
    """Two panels: how long each phase took, and every realtime request during the rollouts
    (latency over time, failures in red, the restart and upgrade windows shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = [p for p in PLOT["phases"] if p[2] is not None]
    if not phases:
        return
    t0 = phases[0][1]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7.5), gridspec_kw={"height_ratios": [1, 1.2]})
    for i, (_name, a, b) in enumerate(phases):
        ax1.barh(i, b - a, left=a - t0, color="#4c72b0")
        ax1.text(b - t0 + 2, i, f"{b - a:.0f} s", va="center", fontsize=8)
    ax1.set_yticks(range(len(phases)), [p[0] for p in phases], fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("seconds since start")
    ax1.set_title(f"make k8s-e2e on {res.get('kubernetes_version', '?')}: {res.get('result')} in {res.get('e2e_s')} s")
    samples, windows = PLOT.get("load", ([], {}))
    if samples:
        s0 = min(x[0] - x[1] for x in samples)
        for (name, (a, b)), color in zip(windows.items(), ("#dd8452", "#55a868"), strict=False):
            ax2.axvspan(a - s0, b - s0, alpha=0.2, color=color, label=name)
        ok = [(x[0] - s0, x[1] * 1000) for x in samples if x[2]]
        bad = [(x[0] - s0, x[1] * 1000) for x in samples if not x[2]]
        if ok:
            ax2.plot(*zip(*ok, strict=True), "o", ms=3, color="#4c72b0", label=f"200 ({len(ok)})")
        if bad:
            ax2.plot(*zip(*bad, strict=True), "x", ms=5, color="#c44e52", label=f"failed ({len(bad)})")
        ax2.set_xlabel("seconds into the rollout phase")
        ax2.set_ylabel("realtime latency, ms (c=2)")
        ax2.set_title("realtime requests during rollout restart and helm upgrade")
        ax2.legend(fontsize=8, loc="upper left")
    fig.subplots_adjust(left=0.17, right=0.95, hspace=0.45)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failed(what)
    log(f"ok: {what}")


def run(
    *cmd: str, timeout: float = 900, check_rc: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
    if check_rc and proc.returncode != 0:
        raise Failed(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    return proc


class Cluster:
    def __init__(self, kubectl: str, helm: str) -> None:
        from kubernetes import client, config

        config.load_kube_config()
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.kubectl, self.helm = kubectl, helm
        self.version = client.VersionApi(self.api).get_code().git_version

    def k(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return run(self.kubectl, *args, **kw)

    def h(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return run(self.helm, *args, **kw)

    def fresh_namespace(self, ns: str) -> None:
        from kubernetes.client.rest import ApiException

        if self.h("status", RELEASE, "-n", ns, check_rc=False).returncode == 0:
            self.h("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "5m", check_rc=False)
        try:
            self.core.delete_namespace(ns)
            log(f"deleting leftover namespace {ns}")
        except ApiException as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                self.core.read_namespace(ns)
            except ApiException as exc:
                if exc.status == 404:
                    break
            time.sleep(2)
        self.core.create_namespace({"metadata": {"name": ns}})

    def service_url(self, ns: str, name: str, port: int) -> str:
        svc = self.core.read_namespaced_service(name, ns)
        return f"http://{svc.spec.cluster_ip}:{port}"

    def pods(self, ns: str, selector: str = ""):
        return self.core.list_namespaced_pod(ns, label_selector=selector).items


def pod_ready(p) -> bool:
    return p.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in p.status.conditions or []
    )


# ------------------------------------------------------------------------------------ HTTP
def http(
    method: str, url: str, key: str | None = None, body: dict | None = None, timeout: float = 120
) -> tuple[int, dict]:
    """One request on a new connection (urllib opens one per call): each goes through the
    Service's kube-proxy rules anew, as requests from many clients do."""
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else {}
    except ValueError:
        return status, {"raw": raw[:300].decode(errors="replace")}


def wait_http(url: str, seconds: float) -> None:
    """A Service's ClusterIP can refuse for a second or two after its pod turns Ready (until
    kube-proxy has synced its rules)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            status, _ = http("GET", url, timeout=5)
            if status < 500:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise Failed(f"{url} did not answer within {seconds:.0f} s")
        time.sleep(1)


class Load:
    """c=2 light realtime load: each worker sends sequential realtime summaries and counts
    every answer that is not 200 (and every transport error) as a failure."""

    def __init__(self, url: str, key: str, concurrency: int = 2) -> None:
        self.url, self.key = url, key
        self.ok = 0
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.samples: list[tuple[float, float, bool]] = []  # (monotonic end, seconds, ok)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(concurrency)]
        self._lock = threading.Lock()

    def _loop(self) -> None:
        body = {"text": SHORT_TEXT, "mode": "realtime", "max_summary_tokens": 16}
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                status, out = http("POST", f"{self.url}/v1/summaries", self.key, body, timeout=90)
                err = None if status == 200 and out.get("summary") else f"HTTP {status} {str(out)[:200]}"
            except OSError as exc:
                err = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self.samples.append((time.monotonic(), time.perf_counter() - t0, err is None))
                if err:
                    self.failures.append(f"{time.strftime('%H:%M:%S')} {err}")
                else:
                    self.ok += 1
                    self.latencies.append(time.perf_counter() - t0)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)


# ------------------------------------------------------------------------------------ phases
def image_sets(images_dir: Path) -> tuple[list[str], dict]:
    try:
        args, found = helm_set_args(images_dir)
    except FileNotFoundError as exc:
        raise Failed(str(exc)) from None
    return args, {n: {k: d.get(k) for k in ("ref", "size_bytes", "build_s", "cached")} for n, d in found.items()}


def create_secret(c: Cluster, ns: str, api_key: str, pg_password: str, db_host: str) -> None:
    data = {
        "api-keys": json.dumps({hashlib.sha256(api_key.encode()).hexdigest(): "e2e"}),
        "test-api-key": api_key,
        "database-url": f"postgresql+asyncpg://precis:{pg_password}@{db_host}:5432/precis",
        "postgres-password": pg_password,
        "webhook-secrets": json.dumps({"e2e": ["whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()]}),
        "internal-token-secret": secrets.token_urlsafe(32),
    }
    c.core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "precis-secrets"},
            "stringData": data,
        },
    )


def wait_rollouts(c: Cluster, ns: str) -> None:
    """Until every Deployment of the release has rolled out. helm's --wait counts a Deployment
    ready at its minimum availability, and the worker's is 0 (maxUnavailable 1: a GPU pool has no
    spare GPU for a surge pod), so helm returns while its pod still starts its batch Triton sidecar
    (at SCHED_IDLE on CPU) before the worker. Seen after an upgrade (session 8) and after an install
    (a fresh-clone CI run: 9/10 pods Ready when `helm install --wait` returned in 37.8 s)."""
    deployments = c.apps.list_namespaced_deployment(ns, label_selector=f"app.kubernetes.io/instance={RELEASE}")
    for d in deployments.items:
        c.k("-n", ns, "rollout", "status", f"deployment/{d.metadata.name}", "--timeout", "10m", timeout=700)


def install_cpu(c: Cluster, ns: str, image_args: list[str], res: dict) -> None:
    t0 = time.monotonic()
    c.h(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        ns,
        "-f",
        str(CHART / "values-cpu.yaml"),
        *image_args,
        "--wait",
        "--timeout",
        "20m",
        timeout=1500,
    )
    wait_rollouts(c, ns)
    res["install_to_ready_s"] = round(time.monotonic() - t0, 1)
    pods = [p for p in c.pods(ns, f"app.kubernetes.io/instance={RELEASE}") if p.status.phase != "Succeeded"]
    res["pods_total"] = len(pods)
    res["pods_ready"] = sum(pod_ready(p) for p in pods)
    log(
        f"installed in {res['install_to_ready_s']} s: {res['pods_ready']}/{res['pods_total']} pods Ready: "
        + ", ".join(sorted((p.metadata.labels or {}).get("app.kubernetes.io/component", "?") for p in pods))
    )
    check(res["pods_ready"] == res["pods_total"] > 0, "every pod of the release is Ready")


def mails_to(sink: str, address: str) -> int:
    status, mails = http("GET", f"{sink}/api/mails")
    if status != 200:
        raise Failed(f"smtp sink listing answered {status}")
    return sum(1 for m in mails if address in (m.get("to") or []))


def wait_job(gw: str, key: str, job: str, seconds: float, on_progress=None) -> tuple[str, dict]:
    deadline = time.monotonic() + seconds
    last = None
    while True:
        status, out = http("GET", f"{gw}/v1/summaries/{job}", key)
        if status != 200:
            raise Failed(f"GET job {job}: HTTP {status} {out}")
        state = (out.get("status"), json.dumps(out.get("progress")))
        if state != last:
            log(f"job {job[:8]}: {out.get('status')} {out.get('progress')}")
            last = state
            if on_progress:
                on_progress(out)
        if out.get("status") in ("succeeded", "failed", "cancelled"):
            return out["status"], out
        if time.monotonic() > deadline:
            raise Failed(f"job {job} not finished after {seconds:.0f} s (last {out.get('status')})")
        time.sleep(2)


def wait_mails(sink: str, address: str, want: int, seconds: float = 120) -> int:
    """Until `want` mails arrived (or the time is up), then 10 s more to catch a duplicate."""
    deadline = time.monotonic() + seconds
    n = mails_to(sink, address)
    while n < want and time.monotonic() < deadline:
        time.sleep(2)
        n = mails_to(sink, address)
    time.sleep(10)
    return mails_to(sink, address)


def submit_async(gw: str, key: str, text: str, email: str) -> str:
    status, out = http("POST", f"{gw}/v1/summaries", key, {"text": text, "mode": "async", "notify": {"email": email}})
    if status != 202:
        raise Failed(f"async submit: HTTP {status} {out}")
    return out["id"]


def worker_fault(c: Cluster, ns: str, gw: str, sink: str, key: str, res: dict) -> None:
    email = f"worker-fault-{secrets.token_hex(3)}@example.com"
    job = submit_async(gw, key, long_text(), email)
    deleted = {}

    def maybe_delete(out: dict) -> None:
        p = out.get("progress") or {}
        if (
            not deleted
            and out.get("status") == "running"
            and p.get("chunks_done", 0) >= 1
            and p.get("chunks_done", 0) < p.get("chunks_total", 0)
        ):
            pods = [
                x for x in c.pods(ns, "app.kubernetes.io/component=worker") if x.metadata.deletion_timestamp is None
            ]
            for x in pods:
                c.core.delete_namespaced_pod(x.metadata.name, ns)
                log(f"deleted worker pod {x.metadata.name} at {p}")
            deleted["at"] = p

    state, out = wait_job(gw, key, job, 1500, maybe_delete)
    res["worker_pod_deleted_job_status"] = state
    res["worker_pod_deleted_at_progress"] = deleted.get("at")
    res["mails_for_worker_fault_job"] = wait_mails(sink, email, 1)
    check(bool(deleted), "the worker pod was deleted while the job was running")
    check(state == "succeeded", f"the job ended succeeded after its worker pod was deleted (got {state})")
    check(res["mails_for_worker_fault_job"] == 1, f"exactly one mail for it (got {res['mails_for_worker_fault_job']})")


def rollouts_under_load(c: Cluster, ns: str, gw: str, key: str, res: dict) -> None:
    names = [f"{RELEASE}-gateway", f"{RELEASE}-realtime"]
    with Load(gw, key) as load:
        time.sleep(5)
        t0 = time.monotonic()
        c.k("-n", ns, "rollout", "restart", *[f"deployment/{n}" for n in names])
        windows = {}
        for n in names:
            c.k("-n", ns, "rollout", "status", f"deployment/{n}", "--timeout", "10m", timeout=700)
        res["rollout_restart_s"] = round(time.monotonic() - t0, 1)
        windows["rollout restart"] = (t0, time.monotonic())
        time.sleep(5)
        t1 = time.monotonic()
        c.h(
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            ns,
            "--reuse-values",
            "--set",
            "config.logLevel=DEBUG",
            "--wait",
            "--timeout",
            "15m",
            timeout=1000,
        )
        res["helm_upgrade_s"] = round(time.monotonic() - t1, 1)
        wait_rollouts(c, ns)
        res["helm_upgrade_rolled_out_s"] = round(time.monotonic() - t1, 1)
        windows["helm upgrade"] = (t1, time.monotonic())
        time.sleep(5)
    cm = c.core.read_namespaced_config_map(f"{RELEASE}-config", ns)
    for d in c.apps.list_namespaced_deployment(ns, label_selector=f"app.kubernetes.io/instance={RELEASE}").items:
        ok, line = deployment_ready(d)
        check(ok, f"rolled out after the upgrade: {line}")
    PLOT["load"] = (load.samples, windows)
    res["requests_during_rollouts"] = load.ok + len(load.failures)
    res["failed_requests_during_rollouts"] = len(load.failures)
    res["failed_request_samples"] = load.failures[:10]
    if load.latencies:
        res["realtime_p50_ms_during_rollouts"] = round(statistics.median(load.latencies) * 1000, 1)
    check(cm.data["PRECIS_LOG_LEVEL"] == "DEBUG", "helm upgrade changed the value")
    check(res["requests_during_rollouts"] >= 10, f"the load kept running ({res['requests_during_rollouts']} requests)")
    check(
        not load.failures,
        f"zero failed requests during rollouts ({len(load.failures)} of "
        f"{res['requests_during_rollouts']}: {load.failures[:3]})",
    )


def uninstall(c: Cluster, ns: str, res: dict) -> None:
    c.h("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "5m")
    deadline = time.monotonic() + 120
    while True:
        left = []
        kinds = ["all", "configmap", "secret", "serviceaccount", "networkpolicy", "pdb", "pvc", "job", "ingress"]
        out = c.k("-n", ns, "get", ",".join(kinds), "-o", "name").stdout.split()
        for name in out:
            # kept by design (docs/deploy.md): the Secret you created; created by Kubernetes itself
            if name in ("secret/precis-secrets", "configmap/kube-root-ca.crt", "serviceaccount/default"):
                continue
            left.append(name)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(3)
    res["uninstall_leftovers"] = left
    check(not left, f"helm uninstall leaves only the Secret you created ({left})")


def gpu_placement(c: Cluster, ns: str, image_args: list[str], res: dict) -> None:
    """The GPU profile scheduled by the real scheduler onto the KWOK A100/T4 nodes."""
    from kubernetes.client.rest import ApiException

    c.fresh_namespace(ns)
    # nothing behind these: they resolve nowhere (CoreDNS answers cluster.local only)
    create_secret(c, ns, secrets.token_hex(8), secrets.token_hex(8), "nowhere.invalid")
    pv = f"{ns}-models"
    try:
        c.core.delete_persistent_volume(pv)
    except ApiException:
        pass
    c.core.create_persistent_volume(
        {
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": "/nonexistent/precis-models"},
                "claimRef": {"namespace": ns, "name": "precis-models"},
            },
        }
    )
    c.core.create_namespaced_persistent_volume_claim(
        ns,
        {
            "metadata": {"name": "precis-models"},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "10Gi"}},
            },
        },
    )
    # The CPU services of this profile run on the one real node beside the CPU release: one
    # replica each and token requests, so the placement check never waits for CPU.
    small = []
    for svc in ("gateway", "realtime", "async", "notifier"):
        small += [
            "--set",
            f"{svc}.autoscaling.minReplicas=1,{svc}.resources.requests.cpu=10m,{svc}.resources.requests.memory=32Mi",
        ]
    crds = {"keda": "scaledobjects.keda.sh", "monitoring": "servicemonitors.monitoring.coreos.com"}
    have = {k: c.k("get", "crd", v, check_rc=False).returncode == 0 for k, v in crds.items()}
    toggles = []
    if not have["keda"]:
        toggles += ["--set", "worker.autoscaling.keda.enabled=false"]
    if not have["monitoring"]:
        toggles += ["--set", "metrics.serviceMonitor.enabled=false"]
    res["gpu_profile_crds"] = have
    c.h(
        "install",
        RELEASE,
        str(CHART),
        "-n",
        ns,
        "-f",
        str(CHART / "values-gpu.yaml"),
        *image_args,
        *small,
        *toggles,
        "--no-hooks",
        timeout=300,
    )
    from kubernetes import client

    hpas = client.AutoscalingV2Api(c.api)
    deadline = time.monotonic() + 240
    problems: list[str] = []
    while time.monotonic() < deadline:
        problems = []
        placed = {}
        # judge only once every autoscaler has brought its Deployment to its minimum (the HPA
        # raises the realtime Triton from 1 to 2 replicas some seconds after the install)
        for h in hpas.list_namespaced_horizontal_pod_autoscaler(ns).items:
            d = c.apps.read_namespaced_deployment(h.spec.scale_target_ref.name, ns)
            if (d.spec.replicas or 0) < h.spec.min_replicas:
                problems.append(
                    f"{d.metadata.name}: {d.spec.replicas} replicas, below its HPA minimum {h.spec.min_replicas}"
                )
        for p in c.pods(ns):
            comp = (p.metadata.labels or {}).get("app.kubernetes.io/component", "?")
            node = p.spec.node_name
            placed.setdefault(comp, set()).add(node)
            if p.status.phase == "Pending" and not node:
                msg = " ".join(
                    cond.message or "" for cond in p.status.conditions or [] if cond.reason == "Unschedulable"
                )
                problems.append(f"{p.metadata.name} Pending: {msg[:200] or 'not scheduled yet'}")
        if placed.get("triton") != {"gpu-a100-0"}:
            problems.append(f"realtime Triton on {sorted(map(str, placed.get('triton', [])))}, not gpu-a100-0")
        if placed.get("worker") != {"gpu-t4-0"}:
            problems.append(f"workers (Triton sidecar) on {sorted(map(str, placed.get('worker', [])))}, not gpu-t4-0")
        if not problems:
            break
        time.sleep(3)
    res["gpu_profile_placement"] = "ok" if not problems else "; ".join(problems)
    res["gpu_profile_nodes"] = {k: sorted(map(str, v)) for k, v in placed.items()}
    c.h("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "5m", check_rc=False)
    c.core.delete_namespace(ns)
    check(not problems, f"GPU profile placement: {res['gpu_profile_placement']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--namespace", default="precis-e2e")
    ap.add_argument("--images", type=Path, default=CACHE / "images")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "k8s-e2e.json")
    ap.add_argument("--kubectl", default=os.environ.get("KUBECTL", "kubectl"))
    ap.add_argument("--helm", default=os.environ.get("HELM", str(CACHE / "bin" / "helm")))
    ap.add_argument("--extra", type=Path, help="JSON file of figures measured before (images_build_s, cluster_up_s)")
    ap.add_argument("--skip-gpu", action="store_true")
    args = ap.parse_args(argv)

    res: dict = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.extra and args.extra.is_file():
        res.update(json.loads(args.extra.read_text()))
    t_all = time.monotonic()
    failed = None
    phase = enter("connect")
    try:
        c = Cluster(args.kubectl, args.helm)
        res["kubernetes_version"] = c.version
        res["nodes"] = sorted(n.metadata.name for n in c.core.list_node().items)
        log(f"cluster {c.version}, nodes {res['nodes']}")
        image_args, res["images"] = image_sets(args.images)
        ns = args.namespace
        phase = enter("install")
        c.fresh_namespace(ns)
        key, pg = secrets.token_urlsafe(24), secrets.token_hex(16)
        create_secret(c, ns, key, pg, f"{RELEASE}-postgres")
        install_cpu(c, ns, image_args, res)

        phase = enter("helm test")
        # no --logs: the chart deletes a test pod that succeeded (hook-succeeded), and helm then
        # fails to fetch its logs; a failed one is kept, so its logs are read below
        proc = c.h("test", RELEASE, "-n", ns, "--timeout", "5m", check_rc=False, timeout=400)
        res["helm_test"] = "passed" if proc.returncode == 0 else "failed"
        if proc.returncode:
            logs = c.k("-n", ns, "logs", f"{RELEASE}-test-summarize", check_rc=False).stdout[-800:]
            raise Failed(f"helm test failed: {proc.stderr[-400:]} {logs}")
        log("ok: helm test passes")

        gw = c.service_url(ns, f"{RELEASE}-gateway", 8080)
        sink = c.service_url(ns, f"{RELEASE}-smtp-sink", 8025)
        wait_http(f"{gw}/healthz", 60)
        wait_http(f"{sink}/healthz", 60)

        phase = enter("realtime")
        lat, statuses = [], []
        for _ in range(10):
            t0 = time.perf_counter()
            status, out = http("POST", f"{gw}/v1/summaries", key, {"text": SHORT_TEXT, "mode": "realtime"})
            lat.append(time.perf_counter() - t0)
            statuses.append(status)
        res["realtime_status"] = statuses[0]
        res["realtime_statuses"] = statuses
        res["realtime_p50_ms_in_cluster"] = round(statistics.median(lat) * 1000, 1)
        res["realtime_model"] = out.get("model")
        check(
            all(s == 200 for s in statuses),
            f"10 realtime summaries answer 200 (p50 {res['realtime_p50_ms_in_cluster']} ms)",
        )

        phase = enter("async")
        email = f"e2e-{secrets.token_hex(3)}@example.com"
        t0 = time.monotonic()
        job = submit_async(gw, key, " ".join([SHORT_TEXT] * 40), email)
        state, out = wait_job(gw, key, job, 900)
        res["async_job_s"] = round(time.monotonic() - t0, 1)
        res["async_job_status"] = state
        res["async_job_chunks"] = (out.get("progress") or {}).get("chunks_total")
        res["mails_for_job"] = wait_mails(sink, email, 1)
        check(
            state == "succeeded" and (out.get("summary") or "").strip(),
            f"the async job succeeded in {res['async_job_s']} s",
        )
        check(res["mails_for_job"] == 1, f"exactly one mail in the sink for it (got {res['mails_for_job']})")

        phase = enter("worker pod deleted")
        worker_fault(c, ns, gw, sink, key, res)

        phase = enter("rollouts")
        rollouts_under_load(c, ns, gw, key, res)

        phase = enter("uninstall")
        uninstall(c, ns, res)
        c.core.delete_namespace(ns)

        if not args.skip_gpu:
            phase = enter("gpu placement")
            gpu_placement(c, f"{ns}-gpu", image_args, res)
    except Failed as exc:
        failed = f"{phase}: {exc}"
    except Exception as exc:  # noqa: BLE001 - the JSON must say what broke, whatever it was
        failed = f"{phase}: {type(exc).__name__}: {str(exc)[:1500]}"
    res["e2e_s"] = round(time.monotonic() - t_all, 1)
    res["result"] = "passed" if failed is None else "failed"
    if failed:
        res["failure"] = failed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    log(f"wrote {args.out}")
    enter("end")
    try:
        write_png(args.out.with_suffix(".png"), res)
        log(f"wrote {args.out.with_suffix('.png')}")
    except Exception as exc:  # noqa: BLE001 - the figures are written already; the plot is extra
        log(f"no PNG: {type(exc).__name__}: {exc}")
    if failed:
        log(f"FAILED at {failed}")
        return 1
    log(f"PASSED in {res['e2e_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
