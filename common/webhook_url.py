"""SSRF guard for customer webhook URLs (issue #14 item 1): one owner, used at submit time
(``common.schemas.Notify``: static checks only, no DNS in the request path) and at send time
(``notifier.channels.send_webhook``: the static checks again, then DNS, every resolved address
checked, and the connection pinned to a checked address).

Address classes come from the stdlib ``ipaddress`` (``is_global`` is IANA's special-purpose
registry). The legacy IPv4 spellings (``2130706433``, ``0x7f000001``, ``127.1``, ``0177.0.0.1``)
have no maintained parser besides libc's ``inet_aton``, which is what resolvers themselves use, so
that is what ``_legacy_ipv4`` calls (after a strict character check: glibc accepts trailing junk
after a space).

Operator allowlist (off by default): ``PRECIS_WEBHOOK_ALLOW_HOSTS`` (exact names, or ``*.suffix``)
and ``PRECIS_WEBHOOK_ALLOW_CIDRS`` (networks whose addresses are accepted although private, for
in-cluster receivers); ``PRECIS_WEBHOOK_ALLOWED_PORTS`` (default 443, 80)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import httpx
from pydantic import Field

from common.settings import PrecisSettings

MAX_WEBHOOK_URL_LENGTH = 2048
DEFAULT_WEBHOOK_PORTS = (443, 80)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses it resolves to (tests inject a fake; the default is getaddrinfo)
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Names that are never a customer's public receiver. localhost/*.localhost: RFC 6761 loopback;
# .internal: reserved by ICANN for private use (GCP's metadata.google.internal, EC2's
# *.ec2.internal); .local: mDNS and Kubernetes' cluster.local; .localdomain, .home.arpa, .lan,
# .intranet, .corp: private conventions. Single-label names ("redis", "kafka") are refused too:
# inside a cluster the search path turns them into in-cluster services, and a public receiver
# always has a dot.
_FORBIDDEN_NAMES = frozenset({"localhost", "localhost.localdomain", "metadata", "metadata.google.internal"})
_FORBIDDEN_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa", ".lan", ".intranet", ".corp")
# Cloud metadata endpoints, named in the refusal (they are link-local/ULA and refused anyway).
_METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LEGACY_IPV4 = re.compile(r"^[0-9a-fA-FxX.]+$")


class WebhookUrlError(ValueError):
    """A refused webhook URL; the message names what was wrong (and the limit, where one applies)."""


class WebhookGuardSettings(PrecisSettings):
    """The operator's webhook egress policy (gateway/async_svc at submit, the notifier at send)."""

    webhook_allow_hosts: list[str] = Field(default_factory=list)
    webhook_allow_cidrs: list[str] = Field(default_factory=list)
    webhook_allowed_ports: list[int] = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_PORTS))


@dataclass(frozen=True)
class WebhookPolicy:
    allow_hosts: tuple[str, ...] = ()
    allow_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allowed_ports: tuple[int, ...] = DEFAULT_WEBHOOK_PORTS
    max_length: int = MAX_WEBHOOK_URL_LENGTH

    @classmethod
    def from_settings(cls, s: WebhookGuardSettings) -> WebhookPolicy:
        return cls(
            allow_hosts=tuple(h.strip().lower().rstrip(".") for h in s.webhook_allow_hosts if h.strip()),
            allow_networks=tuple(ipaddress.ip_network(c.strip(), strict=False) for c in s.webhook_allow_cidrs if c),
            allowed_ports=tuple(s.webhook_allowed_ports),
        )

    def host_allowed(self, host: str) -> bool:
        for entry in self.allow_hosts:
            if entry.startswith("*.") and host.endswith(entry[1:]):
                return True
            if host == entry:
                return True
        return False

    def address_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allow_networks)


@lru_cache
def submit_policy() -> WebhookPolicy:
    """The policy read from ``PRECIS_WEBHOOK_*`` once per process (the schema validator's)."""
    # PRECIS_ENV and the PRECIS_WEBHOOK_* fields come from the environment
    return WebhookPolicy.from_settings(WebhookGuardSettings())  # type: ignore[call-arg]


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is no webhook destination, or None for a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and (why := forbidden_reason(embedded)):
            return f"embeds {embedded}, which {why}"
    if ip in _METADATA:
        return "is a cloud metadata endpoint"
    if ip.is_unspecified:
        return "is the unspecified address"
    if ip.is_loopback:
        return "is a loopback address"
    if ip.is_link_local:
        return "is a link-local address"
    if ip.is_multicast:
        return "is a multicast address"
    if ip.version == 4 and ip in _CGNAT:
        return "is in the shared (CGNAT) range 100.64.0.0/10"
    if ip.is_reserved:
        return "is a reserved address"
    if ip.is_private:
        return "is a private address"
    if not ip.is_global:
        return "is a reserved (non-global) address"
    return None


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    if not _LEGACY_IPV4.match(host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def ip_literal(host: str) -> IPAddress | None:
    """``host`` as an address when it is one in any spelling resolvers accept, else None."""
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h.split("%", 1)[0])
    except ValueError:
        return _legacy_ipv4(host.rstrip("."))


@dataclass(frozen=True)
class CheckedUrl:
    url: httpx.URL
    host: str  # lower case, no trailing dot, IDNA (ASCII)
    port: int
    ip: IPAddress | None  # set when the URL's host is an address literal


def check_url(url: str, policy: WebhookPolicy | None = None) -> CheckedUrl:
    """The static checks (no DNS): length, scheme, no credentials, port, host. Raises
    WebhookUrlError naming what is wrong."""
    p = policy or WebhookPolicy()
    if len(url) > p.max_length:
        raise WebhookUrlError(f"webhook URL is {len(url)} characters; the limit is {p.max_length}")
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise WebhookUrlError(f"webhook URL is not a valid URL: {exc}") from None
    if u.scheme not in ("http", "https"):
        raise WebhookUrlError(f"webhook URL scheme must be http or https, not {u.scheme or 'none'!r}")
    if u.userinfo:
        raise WebhookUrlError("webhook URL must not contain credentials (user:password@)")
    port = u.port or (443 if u.scheme == "https" else 80)
    if port not in p.allowed_ports:
        allowed = ", ".join(str(x) for x in p.allowed_ports)
        raise WebhookUrlError(f"webhook URL port {port} is not allowed; allowed ports: {allowed}")
    host = u.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise WebhookUrlError("webhook URL has no host")
    ip = ip_literal(host)
    if ip is not None:
        if not p.address_allowed(ip) and not p.host_allowed(host) and (why := forbidden_reason(ip)):
            raise WebhookUrlError(f"webhook URL host {ip} {why}")
        return CheckedUrl(u, host, port, ip)
    if p.host_allowed(host):
        return CheckedUrl(u, host, port, None)
    last = host.rsplit(".", 1)[-1]
    if last.isdigit() or last.startswith("0x"):
        # WHATWG and libc read a numeric last label as IPv4; one they cannot read is no public name
        raise WebhookUrlError(f"webhook URL host {host!r} is not a valid address")
    if host in _FORBIDDEN_NAMES or host.endswith(_FORBIDDEN_SUFFIXES):
        raise WebhookUrlError(f"webhook URL host {host!r} is a local or internal name")
    if "." not in host:
        raise WebhookUrlError(f"webhook URL host {host!r} is a single-label (internal) name")
    return CheckedUrl(u, host, port, None)


def validate_submitted(url: str) -> str:
    """Submit-time check (the schema validator): static only, with the operator's allowlist."""
    check_url(url, submit_policy())
    return url


async def system_resolver(host: str, port: int) -> Sequence[str]:
    # The trailing dot makes the name absolute: a cluster's DNS search path (ndots:5) cannot turn
    # "example.com" into "example.com.<ns>.svc.cluster.local".
    infos = await asyncio.get_running_loop().getaddrinfo(host + ".", port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_checked(
    url: str, policy: WebhookPolicy | None = None, resolver: Resolver | None = None
) -> tuple[CheckedUrl, IPAddress]:
    """Send-time check: the static checks, then DNS; refused if ANY resolved address is forbidden
    (and not allowlisted). Returns the address to connect to."""
    p = policy or WebhookPolicy()
    c = check_url(url, p)
    if c.ip is not None:
        return c, c.ip
    addrs = await (resolver or system_resolver)(c.host, c.port)
    if not addrs:
        raise WebhookUrlError(f"webhook URL host {c.host!r} resolves to no address")
    ips: list[IPAddress] = []
    trusted_name = p.host_allowed(c.host)
    for a in addrs:
        ip = ipaddress.ip_address(a.split("%", 1)[0])
        if not trusted_name and not p.address_allowed(ip) and (why := forbidden_reason(ip)):
            raise WebhookUrlError(f"webhook URL host {c.host!r} resolves to {ip}, which {why}")
        ips.append(ip)
    return c, ips[0]


def pinned_request_args(c: CheckedUrl, ip: IPAddress) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """URL, extra headers and request extensions that connect to the checked ``ip`` (no second
    DNS lookup, so no rebinding window) while the Host header, TLS SNI and the certificate check
    stay on the original name: httpcore's ``sni_hostname`` request extension is used as
    ``server_hostname`` for the TLS handshake, and the default SSL context verifies against it.
    ``Connection: close``: a pooled connection (keyed by scheme, IP and port) is never reused for
    another name on the same address."""
    headers = {"host": c.url.netloc.decode("ascii").rsplit("@", 1)[-1], "connection": "close"}
    extensions: dict[str, str] = {}
    if c.ip is not None:
        return c.url, headers, extensions
    if c.url.scheme == "https":
        extensions["sni_hostname"] = c.host
    return c.url.copy_with(host=str(ip)), headers, extensions
