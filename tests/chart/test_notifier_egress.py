"""The notifier's egress NetworkPolicy (issue #14, SSRF): DNS, SMTP, Kafka, the database, and
webhooks to public addresses only; bundled dependencies by pod selector; values-configurable."""

from __future__ import annotations

import pytest

from .conftest import PROFILES, name

pytestmark = pytest.mark.chart

PRIVATE = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10"}


def _ports(rule: dict) -> set[tuple[object, str]]:
    return {(p["port"], p["protocol"]) for p in rule.get("ports", [])}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_notifier_egress_is_restricted(render, profile):
    np = render(profile).get("NetworkPolicy", name("notifier-egress"))
    assert np["spec"]["policyTypes"] == ["Egress"]
    assert np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "notifier"
    rules = np["spec"]["egress"]
    assert any(_ports(r) == {(53, "UDP"), (53, "TCP")} for r in rules)
    [hooks] = [r for r in rules if _ports(r) == {(443, "TCP"), (80, "TCP")}]
    v4 = [p["ipBlock"] for p in hooks["to"] if p["ipBlock"]["cidr"] == "0.0.0.0/0"]
    assert v4 and PRIVATE <= set(v4[0]["except"])
    v6 = [p["ipBlock"] for p in hooks["to"] if p["ipBlock"]["cidr"] == "::/0"]
    assert v6 and {"fc00::/7", "fe80::/10", "::1/128"} <= set(v6[0]["except"])
    # no rule opens every port to every destination
    assert all(r.get("ports") for r in rules)


def test_bundled_dependencies_are_reached_by_pod_selector(render):
    r = render("default", "--set", "kafka.mode=bundled,database.mode=bundled,smtpSink.enabled=true")
    rules = r.get("NetworkPolicy", name("notifier-egress"))["spec"]["egress"]
    selected = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: _ports(rule)
        for rule in rules
        for peer in rule.get("to", [])
        if "podSelector" in peer
    }
    assert selected == {"kafka": {("kafka", "TCP")}, "postgres": {("postgres", "TCP")}, "smtp-sink": {("smtp", "TCP")}}


def test_notifier_egress_can_be_switched_off_and_extended(render):
    off = render("default", "--set", "networkPolicy.notifierEgress.enabled=false")
    assert not off.has("NetworkPolicy", name("notifier-egress"))
    on = render(
        "default",
        "--set-json",
        'networkPolicy.notifierEgress.extraTo=[{"to":[{"ipBlock":{"cidr":"10.1.2.3/32"}}],"ports":[{"port":8443}]}]',
    )
    rules = on.get("NetworkPolicy", name("notifier-egress"))["spec"]["egress"]
    assert rules[-1] == {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}], "ports": [{"port": 8443}]}


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_except_is_a_strict_subset_of_its_cidr_as_the_api_server_reads_it(render, profile):
    """The API server parses CIDRs with Go's net package, which reads an IPv4-mapped IPv6 block
    (::ffff:0:0/96) as IPv4: as an except of ::/0 it was refused (found by make k8s-dry-run)."""
    import ipaddress

    def go_family(cidr: str) -> int:
        net = ipaddress.ip_network(cidr, strict=False)
        mapped = net.version == 6 and net.network_address.ipv4_mapped is not None
        return 4 if mapped else net.version

    for np in render(profile).kind("NetworkPolicy"):
        for rule in np["spec"].get("egress", []) + np["spec"].get("ingress", []):
            for peer in rule.get("to", []) + rule.get("from", []):
                block = peer.get("ipBlock")
                if not block:
                    continue
                outer = ipaddress.ip_network(block["cidr"])
                for ex in block.get("except", []):
                    assert go_family(ex) == outer.version, (np["metadata"]["name"], ex)
                    inner = ipaddress.ip_network(ex)
                    assert inner.subnet_of(outer) and inner != outer, (np["metadata"]["name"], ex)
