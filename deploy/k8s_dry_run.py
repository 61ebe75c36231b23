#!/usr/bin/env python3
"""Server-side dry run of every object the chart renders, custom resources included
(``make k8s-dry-run``).

1. installs the upstream CRDs that ``scripts/k8s/crds.sh`` cached (Strimzi, KEDA, Prometheus
   Operator; index ``$PRECIS_CACHE/k8s/crds/index.json``) with server-side apply and waits until
   each is Established. The CRDs stay installed afterwards (cluster-scoped, shared, idempotent);
2. per profile of ``tests/chart/conftest.py`` PROFILES, creates namespace ``precis-dryrun-<profile>``,
   renders the chart with ``helm template --namespace`` and the profile's extra arguments, and
   sends each rendered object on its own through
   ``kubectl apply --server-side --dry-run=server --validate=strict``: the real API server runs
   defaulting, schema (OpenAPI / CRD structural schema) validation, strict field validation and
   admission, and persists nothing;
3. negative controls: broken copies of rendered custom resources (a KafkaTopic with
   ``partitions: "many"``, a ScaledObject with an unknown spec field, ...) must be refused, or the
   run fails (proof that the check can fail);
4. prints a summary table, writes JSON (``--out``), deletes the namespaces it created.

Exit status: 0 when every rendered object is accepted and every negative control is refused;
1 otherwise; 2 when the cluster or a tool is missing.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import copy
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script (make k8s-dry-run): common/ from this clone
from common.paths import cache_dir  # noqa: E402

CHART = REPO / "deploy" / "helm" / "precis"
CACHE = cache_dir()
RELEASE = "rel"
FIELD_MANAGER = "precis-dryrun"
NS_PREFIX = "precis-dryrun-"


class _Loader(yaml.SafeLoader):
    """SafeLoader without PyYAML's YAML-1.1 '=' (tag:yaml.org,2002:value) resolver: the
    Prometheus Operator CRDs have enum items `- =`, which plain safe_load cannot construct."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:value"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=_Loader) if d]


def log(msg: str) -> None:
    print(f"[k8s-dry-run] {msg}", flush=True)


def load_profiles() -> dict[str, list[str]]:
    """PROFILES of tests/chart/conftest.py (one source of truth for the four profiles)."""
    spec = importlib.util.spec_from_file_location("_chart_conftest", REPO / "tests" / "chart" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return dict(mod.PROFILES)


class Kube:
    def __init__(self, kubectl: str, kubeconfig: str) -> None:
        self.kubectl = kubectl
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def run(self, *args: str, stdin: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.kubectl, *args], input=stdin, capture_output=True, text=True, env=self.env, timeout=timeout
        )

    def ok(self, *args: str, stdin: str | None = None, timeout: int = 120) -> str:
        p = self.run(*args, stdin=stdin, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: rc={p.returncode}\n{p.stderr.strip()}")
        return p.stdout

    def dry_run(self, doc: dict, namespace: str | None) -> tuple[bool, str]:
        """Server-side apply, dry run, strict field validation. (accepted, message)."""
        args = [
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            "--dry-run=server",
            "--validate=strict",
            "-o",
            "name",
            "-f",
            "-",
        ]
        if namespace:
            args[0:0] = ["-n", namespace]
        p = self.run(*args, stdin=yaml.safe_dump(doc, sort_keys=False))
        if p.returncode == 0:
            return True, p.stdout.strip()
        return False, " ".join((p.stderr or p.stdout).split())


# --- CRDs ------------------------------------------------------------------------------------


def install_crds(kube: Kube, index_path: Path) -> tuple[dict, dict]:
    """Server-side apply every cached CRD, wait Established.
    Returns ({crd name: {project, version, group, kind, served}}, index)."""
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} missing: run scripts/k8s/crds.sh first")
    index = json.loads(index_path.read_text())
    crds: dict[str, dict] = {}
    for project, entry in index.items():
        d = Path(entry["dir"])
        for f in entry["files"]:
            for doc in load_all((d / f).read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    crds[doc["metadata"]["name"]] = {
                        "project": project,
                        "version": entry["version"],
                        "group": doc["spec"]["group"],
                        "kind": doc["spec"]["names"]["kind"],
                        "served": [v["name"] for v in doc["spec"]["versions"] if v.get("served")],
                        "file": str(d / f),
                    }
        t0 = time.monotonic()
        # Server-side apply: no last-applied annotation (the Prometheus CRDs exceed its 256 KiB).
        kube.ok(
            "apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", "-f", str(d), timeout=300
        )
        log(f"CRDs {project} {entry['version']}: {len(entry['files'])} applied ({time.monotonic() - t0:.1f} s)")
    names = [f"crd/{n}" for n in crds]
    t0 = time.monotonic()
    kube.ok("wait", "--for=condition=Established", "--timeout=120s", *names, timeout=180)
    log(f"all {len(crds)} CRDs Established ({time.monotonic() - t0:.1f} s); they stay installed")
    return crds, index


# --- rendering --------------------------------------------------------------------------------


def render(helm: str, profile_args: list[str], namespace: str, kube_version: str) -> list[dict]:
    p = subprocess.run(
        [
            helm,
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            kube_version,
            *profile_args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if p.returncode != 0:
        raise RuntimeError(f"helm template failed ({p.returncode}):\n{p.stderr}")
    return load_all(p.stdout)


def obj_id(doc: dict) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def namespaced_kinds(kube: Kube) -> dict[tuple[str, str], bool]:
    """(apiVersion group, kind) -> namespaced, from the server's discovery."""
    out: dict[tuple[str, str], bool] = {}
    for ns_flag, val in (("--namespaced=true", True), ("--namespaced=false", False)):
        for line in kube.ok("api-resources", ns_flag, "--no-headers", "-o", "wide").splitlines():
            parts = line.split()
            # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND VERBS...
            idx = parts.index(str(val).lower()) if str(val).lower() in parts else None
            if idx is None or idx < 2:
                continue
            out[(parts[idx - 1], parts[idx + 1])] = val
    return out


def ensure_namespace(kube: Kube, ns: str) -> bool:
    """Create the namespace (True) or reuse one left from an interrupted run (False)."""
    assert ns.startswith(NS_PREFIX), ns
    for _ in range(120):  # one still Terminating (a previous run's cleanup): wait until it is gone
        phase = kube.run("get", "namespace", ns, "-o", "jsonpath={.status.phase}").stdout.strip()
        if phase != "Terminating":
            break
        time.sleep(1)
    created = kube.run("create", "namespace", ns)
    if created.returncode != 0 and "AlreadyExists" not in created.stderr:
        raise RuntimeError(created.stderr.strip())
    if created.returncode != 0:
        log(f"namespace {ns} already exists: reused, and left in place at the end")
    kube.run("label", "namespace", ns, "precis.io/dry-run=true", "--overwrite")
    # The chart's test Pod uses the default ServiceAccount; the ServiceAccount admission plugin
    # refuses a Pod whose SA does not exist yet, so wait for the controller to create it.
    for _ in range(60):
        if kube.run("-n", ns, "get", "serviceaccount", "default").returncode == 0:
            break
        time.sleep(0.5)
    return created.returncode == 0


def delete_namespaces(kube: Kube, namespaces: list[str]) -> str:
    assert all(ns.startswith(NS_PREFIX) for ns in namespaces), namespaces
    if not namespaces:
        return "none to delete"
    t0 = time.monotonic()
    p = kube.run("delete", "namespace", *namespaces, "--wait=true", "--timeout=120s", timeout=150)
    took = time.monotonic() - t0
    return f"deleted ({took:.1f} s)" if p.returncode == 0 else f"delete failed: {p.stderr.strip()}"


# --- negative controls ------------------------------------------------------------------------

UNKNOWN_FIELD = ("field not declared in schema", "unknown field")  # SSA / strict wording
WRONG_TYPE = ("expected", "must be of type", "invalid type")


def negative_controls(docs_by_profile: dict[str, list[dict]]) -> list[tuple[str, tuple[str, ...], dict]]:
    """(label, accepted refusal reasons, broken object), built from rendered objects where
    possible (so they carry the chart's real labels and specs), else from a minimal object."""

    def first(kind: str, api_prefix: str) -> dict | None:
        for docs in docs_by_profile.values():
            for d in docs:
                if d.get("kind") == kind and str(d.get("apiVersion", "")).startswith(api_prefix):
                    return copy.deepcopy(d)
        return None

    out = []
    topic = first("KafkaTopic", "kafka.strimzi.io/") or {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaTopic",
        "metadata": {"name": "x", "labels": {"strimzi.io/cluster": "x"}},
        "spec": {"partitions": 1, "replicas": 1},
    }
    topic["metadata"]["name"] = "broken-topic-partitions"
    topic["spec"]["partitions"] = "many"
    out.append(('KafkaTopic spec.partitions: "many"', WRONG_TYPE, topic))

    so = first("ScaledObject", "keda.sh/") or {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "cpu", "metadata": {"value": "50"}}]},
    }
    so["metadata"]["name"] = "broken-scaledobject-unknown-field"
    so["spec"]["maxReplicaCountt"] = 10
    out.append(("ScaledObject unknown field spec.maxReplicaCountt (strict)", UNKNOWN_FIELD, so))

    sm = first("ServiceMonitor", "monitoring.coreos.com/") or {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "endpoints": [{"port": "http"}]},
    }
    sm["metadata"]["name"] = "broken-servicemonitor-endpoints"
    sm["spec"]["endpoints"] = "http"
    out.append(("ServiceMonitor spec.endpoints: string, not a list", WRONG_TYPE, sm))

    kafka = first("Kafka", "kafka.strimzi.io/")
    if kafka is not None:
        kafka["metadata"]["name"] = "broken-kafka-v1beta2-field"
        kafka["spec"].setdefault("kafka", {})["replicas"] = 3  # v1beta2-only (ZooKeeper era) field
        out.append(("Kafka spec.kafka.replicas (removed in kafka.strimzi.io/v1, strict)", UNKNOWN_FIELD, kafka))

    dep = first("Deployment", "apps/") or {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
        },
    }
    dep["metadata"]["name"] = "broken-deployment-unknown-field"
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Never"
    out.append(("Deployment unknown container field imagePullPolicyy (strict)", UNKNOWN_FIELD, dep))
    for _, _, doc in out:
        doc["metadata"].pop("namespace", None)  # sent into the negative controls' namespace
    return out


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", default="", help="comma-separated subset of PROFILES (default: all)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "k8s-dry-run.json"))
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or str(CACHE / "k8s" / "kubeconfig"))
    ap.add_argument("--kubectl", default=os.environ.get("PRECIS_KUBECTL") or str(CACHE / "k8s" / "bin" / "kubectl"))
    ap.add_argument("--helm", default=os.environ.get("PRECIS_HELM") or str(CACHE / "bin" / "helm"))
    ap.add_argument("--crds-index", default=str(CACHE / "k8s" / "crds" / "index.json"))
    ap.add_argument("--kube-version", default="", help="for helm template (default: the server's)")
    ap.add_argument("--jobs", type=int, default=8, help="objects dry-run in parallel")
    ap.add_argument("--keep-namespaces", action="store_true")
    args = ap.parse_args()
    t_start = time.monotonic()

    for tool, path in (("kubectl", args.kubectl), ("helm", args.helm)):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            log(f"{tool} not found at {path}")
            return 2
    if not Path(args.kubeconfig).is_file():
        log(f"no kubeconfig at {args.kubeconfig}: start the cluster with `make k8s-up`")
        return 2
    kube = Kube(args.kubectl, args.kubeconfig)
    try:
        ver = json.loads(kube.ok("version", "-o", "json", timeout=20))["serverVersion"]["gitVersion"]
    except Exception as e:  # noqa: BLE001
        log(f"API server does not answer ({e}); start the cluster with `make k8s-up`")
        return 2
    kube_version = args.kube_version or ver.lstrip("v").split("+")[0]
    log(f"API server {ver}; helm template --kube-version {kube_version}")

    profiles = load_profiles()
    wanted = [p for p in args.profiles.split(",") if p] or list(profiles)
    unknown = [p for p in wanted if p not in profiles]
    if unknown:
        log(f"unknown profile(s) {unknown}; have {list(profiles)}")
        return 2

    crds, index = install_crds(kube, Path(args.crds_index))
    crd_by_gk = {(c["group"], c["kind"]): (name, c) for name, c in crds.items()}
    scope = namespaced_kinds(kube)

    results: dict = {
        "server_version": ver,
        "kube_version_rendered": kube_version,
        "crd_sources": {p: {"version": e["version"], "source": e["source"]} for p, e in index.items()},
        "crds_installed": {n: f"{c['project']}-{c['version']}" for n, c in sorted(crds.items())},
        "crds_kept_installed": True,
        "profiles": {},
        "negative_controls": [],
    }
    created_ns: list[str] = []
    docs_by_profile: dict[str, list[dict]] = {}
    failed = False
    try:
        for profile in wanted:
            ns = f"{NS_PREFIX}{profile}"
            if ensure_namespace(kube, ns):
                created_ns.append(ns)
            docs = render(args.helm, profiles[profile], ns, kube_version)
            docs_by_profile[profile] = docs
            t0 = time.monotonic()

            def one(doc: dict, ns: str = ns) -> dict:
                api = str(doc.get("apiVersion", ""))
                group = api.split("/")[0] if "/" in api else ""
                namespaced = scope.get((api, doc.get("kind")), True)
                ok, msg = kube.dry_run(doc, ns if namespaced else None)
                return {
                    "kind": doc.get("kind"),
                    "apiVersion": api,
                    "name": doc["metadata"]["name"],
                    "ok": ok,
                    "message": msg,
                    "crd": (crd_by_gk.get((group, doc.get("kind"))) or (None,))[0],
                }

            with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
                objs = list(pool.map(one, docs))
            refused = [o for o in objs if not o["ok"]]
            used_crds = {o["crd"]: f"{crds[o['crd']]['project']}-{crds[o['crd']]['version']}" for o in objs if o["crd"]}
            non_crd_cr = sorted(
                {
                    f"{o['apiVersion']} {o['kind']}"
                    for o in objs
                    if not o["crd"]
                    and "." in o["apiVersion"].split("/")[0]
                    and not o["apiVersion"].split("/")[0].endswith("k8s.io")
                }
            )
            results["profiles"][profile] = {
                "namespace": ns,
                "objects": len(objs),
                "ok": len(objs) - len(refused),
                "refused": len(refused),
                "crds": dict(sorted(used_crds.items())),
                "seconds": round(time.monotonic() - t0, 1),
                "results": objs,
            }
            if non_crd_cr:
                results["profiles"][profile]["custom_kinds_without_crd"] = non_crd_cr
            log(
                f"profile {profile}: {len(objs)} objects, {len(objs) - len(refused)} ok, "
                f"{len(refused)} refused ({time.monotonic() - t0:.1f} s)"
            )
            for o in objs:
                mark = "ok     " if o["ok"] else "REFUSED"
                line = f"  {mark} {o['apiVersion']:32} {o['kind']}/{o['name']}"
                print(line if o["ok"] else f"{line}\n          {o['message']}")
            failed |= bool(refused)

        # Negative controls, in the first profile's namespace.
        ns = f"{NS_PREFIX}{wanted[0]}"
        log("negative controls (each must be REFUSED)")
        for label, reasons, doc in negative_controls(docs_by_profile):
            ok, msg = kube.dry_run(doc, ns)
            # Refused, and for the reason the broken field gives (not e.g. a namespace mismatch).
            passed = (not ok) and any(r.lower() in msg.lower() for r in reasons)
            results["negative_controls"].append(
                {"case": label, "object": obj_id(doc), "refused": not ok, "passed": passed, "message": msg}
            )
            verdict = "refused (good)" if passed else ("REFUSED, other reason" if not ok else "ACCEPTED (bad)")
            print(f"  {verdict:21} {label}\n          {msg}")
            failed |= not passed
    finally:
        if not args.keep_namespaces:
            log(f"namespaces {', '.join(created_ns) or '-'}: {delete_namespaces(kube, created_ns)}")
        results["namespaces_created"] = created_ns
        results["namespaces_deleted"] = not args.keep_namespaces

    # Summary.
    print()
    print(f"{'profile':10} {'objects':>7} {'ok':>4} {'refused':>7}  CRD-backed objects' CRDs")
    for profile, r in results["profiles"].items():
        crd_list = ", ".join(f"{n.split('.')[0]}({v})" for n, v in r["crds"].items()) or "-"
        print(f"{profile:10} {r['objects']:>7} {r['ok']:>4} {r['refused']:>7}  {crd_list}")
    neg = results["negative_controls"]
    print(f"negative controls: {sum(n['passed'] for n in neg)}/{len(neg)} refused as required")
    results["seconds"] = round(time.monotonic() - t_start, 1)
    results["passed"] = not failed
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"{'PASS' if not failed else 'FAIL'} in {results['seconds']} s; JSON {out}; CRDs left installed ({len(crds)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
