"""The real Triton server (scripts/triton.sh: the tritonserver binary of the nvidia-pytriton wheel)
on private ports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devstack.ports import PORTS
from devstack.procs import Proc, http_ok, wait_until


@dataclass(frozen=True)
class TritonPorts:
    """HTTP, gRPC and metrics ports of one Triton server."""

    http: int
    grpc: int
    metrics: int

    @classmethod
    def allocate(cls) -> TritonPorts:
        return cls(*PORTS.take(3))

    def env(self) -> dict[str, str]:
        """The variables scripts/triton.sh reads its ports from."""
        return {
            "PRECIS_TRITON_HTTP_PORT": str(self.http),
            "PRECIS_TRITON_GRPC_PORT": str(self.grpc),
            "PRECIS_TRITON_METRICS_PORT": str(self.metrics),
        }

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    @property
    def grpc_url(self) -> str:
        """tritonclient form (no scheme), as PRECIS_TRITON_GRPC_URL takes it."""
        return f"127.0.0.1:{self.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics}/metrics"

    @property
    def ready_url(self) -> str:
        return f"{self.http_url}/v2/health/ready"


def launch_triton(ports: TritonPorts, env: dict[str, str], log: Path, name: str = "triton") -> Proc:
    """scripts/triton.sh on ``ports`` with ``env`` (``child_env(...)`` plus model settings, e.g.
    PRECIS_TRITON_MODEL_REPOSITORY); returns at once. SIGTERM (``stop``) is a clean stop."""
    proc = Proc(name, ["bash", "scripts/triton.sh"], {**env, **ports.env()}, log, stop_timeout=40)
    proc.port = ports.http
    return proc


def wait_triton(proc: Proc, ports: TritonPorts, timeout: float) -> None:
    """Until /v2/health/ready answers 200 (TimeoutError, or RuntimeError once ``proc`` exits)."""
    wait_until(lambda: http_ok(ports.ready_url), timeout, "Triton /v2/health/ready", proc, interval=1.0)


def start_triton(ports: TritonPorts, env: dict[str, str], log: Path, timeout: float, name: str = "triton") -> Proc:
    """``launch_triton`` + ``wait_triton``. If it does not become ready, the server is stopped and
    RuntimeError carries its log tail."""
    proc = launch_triton(ports, env, log, name)
    try:
        wait_triton(proc, ports, timeout)
    except (TimeoutError, RuntimeError) as exc:
        tail = proc.tail(80)
        proc.stop(timeout=40)
        raise RuntimeError(f"Triton did not become ready: {exc}\n--- log tail ---\n{tail}") from None
    return proc
