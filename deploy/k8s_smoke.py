#!/usr/bin/env python3
"""Smoke-test a Précis release on a real cluster (``make k8s-smoke``).

1. waits until every Deployment of the release has rolled out (all replicas updated and available);
2. sends one realtime summary through the gateway (200 + summary);
3. sends one async summary through the gateway (202 + id), polls it to ``succeeded``.

The gateway is reached through ``--gateway-url`` (e.g. the ingress URL) or, by default, through a
port-forward to a gateway pod opened by the ``kubernetes`` client itself (no kubectl needed).
The API key comes from ``--api-key`` / ``PRECIS_SMOKE_API_KEY`` or, failing that, from the
``test-api-key`` entry of the release's existing Secret (the one the gateway reads).

Without a cluster (no KUBECONFIG, no ~/.kube/config, not in a pod, or the API server does not
answer) it says so and exits 0 without pretending to have tested anything; pass
``--require-cluster`` (or PRECIS_K8S_REQUIRE=1) to make that an error instead.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import sys
import time
from pathlib import Path

SHORT_TEXT = (
    "The city council met on Tuesday to discuss the new public library. After a long debate, the "
    "members voted to fund the project, which will open next spring with a larger children's section."
)


def log(msg: str) -> None:
    print(f"[k8s-smoke] {msg}", flush=True)


def long_text() -> str:
    book = Path(__file__).resolve().parents[1] / "tests" / "data" / "book" / "pride_and_prejudice.txt"
    if book.is_file():
        return book.read_text(encoding="utf-8", errors="replace")[:60_000]
    return " ".join([SHORT_TEXT] * 300)


def load_cluster(require: bool):
    """Return (ApiClient) or None when there is no reachable cluster."""
    try:
        from kubernetes import client, config
    except ImportError:
        log("the `kubernetes` Python package is not installed in this interpreter")
        return None
    kubeconfig = os.environ.get("KUBECONFIG")
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    default_cfg = Path.home() / ".kube" / "config"
    if not kubeconfig and not in_cluster and not default_cfg.is_file():
        log("no cluster: KUBECONFIG is not set, ~/.kube/config does not exist and this is not a pod.")
        return None
    try:
        if kubeconfig or default_cfg.is_file():
            config.load_kube_config(config_file=kubeconfig or None)
        else:
            config.load_incluster_config()
        api = client.ApiClient()
        version = client.VersionApi(api).get_code(_request_timeout=10)
        log(f"cluster reachable: Kubernetes {version.git_version}")
        return api
    except Exception as exc:  # noqa: BLE001 - any failure here means "no usable cluster"
        log(f"no reachable cluster ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
        return None


def deployment_ready(d) -> tuple[bool, str]:
    want = d.spec.replicas if d.spec.replicas is not None else 1
    st = d.status
    observed = (st.observed_generation or 0) >= (d.metadata.generation or 0)
    updated, available, ready = st.updated_replicas or 0, st.available_replicas or 0, st.ready_replicas or 0
    ok = observed and updated >= want and available >= want and ready >= want and (st.replicas or 0) == updated
    return ok, f"{d.metadata.name}: {ready}/{want} ready, {updated} updated, {available} available"


def wait_rollouts(api, ns: str, release: str, deadline: float) -> None:
    from kubernetes import client

    apps = client.AppsV1Api(api)
    selector = f"app.kubernetes.io/instance={release}"
    deps = apps.list_namespaced_deployment(ns, label_selector=selector).items
    if not deps:
        raise SystemExit(f"no Deployments with {selector} in namespace {ns}: is the release installed?")
    log(f"waiting for {len(deps)} rollouts: {', '.join(sorted(d.metadata.name for d in deps))}")
    pending = {d.metadata.name for d in deps}
    last = ""
    while pending:
        lines = []
        for name in sorted(pending):
            ok, line = deployment_ready(apps.read_namespaced_deployment(name, ns))
            lines.append(line)
            if ok:
                log(f"rolled out: {line}")
                pending.discard(name)
        status = "; ".join(lines)
        if pending and status != last:
            log(f"pending: {status}")
            last = status
        if pending and time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for rollouts: {', '.join(sorted(pending))}")
        if pending:
            time.sleep(5)


def find_api_key(api, ns: str, release: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    from kubernetes import client

    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    gw = apps.list_namespaced_deployment(
        ns, label_selector=f"app.kubernetes.io/instance={release},app.kubernetes.io/component=gateway"
    ).items
    secret_name = None
    for c in gw[0].spec.template.spec.containers if gw else []:
        for e in c.env or []:
            if e.name == "PRECIS_API_KEYS" and e.value_from and e.value_from.secret_key_ref:
                secret_name = e.value_from.secret_key_ref.name
    if not secret_name:
        raise SystemExit("cannot find the gateway's Secret; pass --api-key or set PRECIS_SMOKE_API_KEY")
    data = core.read_namespaced_secret(secret_name, ns).data or {}
    if "test-api-key" not in data:
        raise SystemExit(f"Secret {secret_name} has no 'test-api-key'; pass --api-key or set PRECIS_SMOKE_API_KEY")
    return base64.b64decode(data["test-api-key"]).decode().strip()


class Gateway:
    """HTTP to the gateway: a URL, or a port-forward opened per request through the API server."""

    def __init__(self, api, ns: str, release: str, url: str | None, api_key: str) -> None:
        self.api, self.ns, self.release, self.url, self.key = api, ns, release, url, api_key
        self.pod = None if url else self._gateway_pod()

    def _gateway_pod(self) -> str:
        from kubernetes import client

        pods = client.CoreV1Api(self.api).list_namespaced_pod(
            self.ns, label_selector=f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component=gateway"
        )
        for p in pods.items:
            if p.status.phase == "Running" and all(cs.ready for cs in p.status.container_statuses or []):
                log(f"port-forwarding to pod {p.metadata.name}:8080")
                return p.metadata.name
        raise SystemExit("no ready gateway pod")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.url:
            from urllib.parse import urlsplit

            u = urlsplit(self.url)
            cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
            return cls(u.hostname, u.port, timeout=timeout)
        from kubernetes import client
        from kubernetes.stream import portforward

        pf = portforward(
            client.CoreV1Api(self.api).connect_get_namespaced_pod_portforward, self.pod, self.ns, ports="8080"
        )
        sock = pf.socket(8080)
        sock.settimeout(timeout)
        conn = http.client.HTTPConnection("localhost", 8080, timeout=timeout)
        conn.sock = sock  # already connected through the API server
        return conn

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 120) -> tuple[int, dict]:
        prefix = ""
        if self.url:
            from urllib.parse import urlsplit

            prefix = urlsplit(self.url).path.rstrip("/")
        conn = self._connection(timeout)
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, prefix + path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"raw": raw[:500].decode(errors="replace")}
        return resp.status, data


def smoke_realtime(gw: Gateway) -> None:
    status, out = gw.request("POST", "/v1/summaries", {"text": SHORT_TEXT, "mode": "realtime"})
    if status != 200 or not (out.get("summary") or "").strip():
        raise SystemExit(f"realtime summary failed: HTTP {status} {out}")
    log(f"realtime OK: {out.get('usage')} summary={out['summary'][:160]!r}")


def smoke_async(gw: Gateway, deadline: float) -> None:
    status, out = gw.request("POST", "/v1/summaries", {"text": long_text(), "mode": "async"})
    if status != 202 or not out.get("id"):
        raise SystemExit(f"async submit failed: HTTP {status} {out}")
    job = out["id"]
    log(f"async accepted: id={job} status_url={out.get('status_url')}")
    last = None
    while True:
        status, out = gw.request("GET", f"/v1/summaries/{job}")
        if status != 200:
            raise SystemExit(f"async poll failed: HTTP {status} {out}")
        state = (out.get("status"), json.dumps(out.get("progress")))
        if state != last:
            log(f"async {job}: {out.get('status')} progress={out.get('progress')}")
            last = state
        if out.get("status") in ("succeeded", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"async job {job} did not finish in time (last status {out.get('status')})")
        time.sleep(5)
    if out["status"] != "succeeded" or not (out.get("summary") or "").strip():
        raise SystemExit(f"async job {job} ended {out['status']}: {out.get('error')}")
    log(f"async OK: summary={out['summary'][:160]!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--namespace", default=os.environ.get("K8S_NAMESPACE", "precis"))
    ap.add_argument("--release", default=os.environ.get("K8S_RELEASE", "precis"))
    ap.add_argument("--timeout", type=float, default=900, help="seconds for rollouts + both summaries")
    ap.add_argument(
        "--gateway-url",
        default=os.environ.get("PRECIS_GATEWAY_URL"),
        help="e.g. https://precis.example.com (default: port-forward to a gateway pod)",
    )
    ap.add_argument("--api-key", default=os.environ.get("PRECIS_SMOKE_API_KEY"))
    ap.add_argument("--require-cluster", action="store_true", default=os.environ.get("PRECIS_K8S_REQUIRE") == "1")
    args = ap.parse_args(argv)

    api = load_cluster(args.require_cluster)
    if api is None:
        if args.require_cluster:
            log("FAILED: a cluster is required (--require-cluster)")
            return 1
        log("SKIPPED: nothing was tested. Point KUBECONFIG at a cluster with the chart installed to run it.")
        return 0

    deadline = time.monotonic() + args.timeout
    wait_rollouts(api, args.namespace, args.release, deadline)
    key = find_api_key(api, args.namespace, args.release, args.api_key)
    gw = Gateway(api, args.namespace, args.release, args.gateway_url, key)
    smoke_realtime(gw)
    smoke_async(gw, deadline)
    log("PASSED: rollouts complete, realtime and async summaries through the gateway")
    return 0


if __name__ == "__main__":
    sys.exit(main())
