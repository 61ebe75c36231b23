"""The whole platform as `make run` starts it (scripts/run.sh under honcho, two Tritons: realtime
and batch) on private ports.

scripts/common.sh computes every port as its default shifted by ``PRECIS_PORT_OFFSET`` (preset
per-port variables are overwritten there), so a stack's ports are allocated as one offset
(``PORTS.offset``: every one of them free and never handed out before). The explicit per-port
variables are passed as well, with the same values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devstack.ports import PORTS
from devstack.procs import Proc, http_ok, wait_until

# scripts/common.sh: variable -> default port
DEFAULTS = {
    "PRECIS_GATEWAY_PORT": 8080,
    "PRECIS_REALTIME_PORT": 8081,
    "PRECIS_ASYNC_PORT": 8082,
    "PRECIS_WORKER_PORT": 8083,
    "PRECIS_NOTIFIER_PORT": 8084,
    "PRECIS_TRITON_HTTP_PORT": 8000,
    "PRECIS_TRITON_GRPC_PORT": 8001,
    "PRECIS_TRITON_METRICS_PORT": 8002,
    "PRECIS_BATCH_TRITON_HTTP_PORT": 8010,  # the batch Triton (the worker's)
    "PRECIS_BATCH_TRITON_GRPC_PORT": 8011,
    "PRECIS_BATCH_TRITON_METRICS_PORT": 8012,
    "PRECIS_KAFKA_PORT": 9092,
    "PRECIS_KAFKA_CONTROLLER_PORT": 9093,
    "PRECIS_SMTP_PORT": 1025,
    "PRECIS_REDIS_PORT": 6379,  # used when the stack's gateway is given the local Redis
}


@dataclass(frozen=True)
class StackPorts:
    offset: int

    @classmethod
    def allocate(cls) -> StackPorts:
        return cls(PORTS.offset(list(DEFAULTS.values())))

    def of(self, var: str) -> int:
        return DEFAULTS[var] + self.offset

    @property
    def gateway(self) -> int:
        return self.of("PRECIS_GATEWAY_PORT")

    @property
    def services(self) -> list[int]:
        """gateway, realtime_svc, async_svc, worker, notifier."""
        return [self.of(v) for v in list(DEFAULTS)[:5]]

    @property
    def triton_http(self) -> int:
        return self.of("PRECIS_TRITON_HTTP_PORT")

    @property
    def triton_grpc(self) -> int:
        return self.of("PRECIS_TRITON_GRPC_PORT")

    @property
    def triton_metrics(self) -> int:
        return self.of("PRECIS_TRITON_METRICS_PORT")

    @property
    def batch_triton_http(self) -> int:
        return self.of("PRECIS_BATCH_TRITON_HTTP_PORT")

    @property
    def batch_triton_grpc(self) -> int:
        return self.of("PRECIS_BATCH_TRITON_GRPC_PORT")

    @property
    def batch_triton_metrics(self) -> int:
        return self.of("PRECIS_BATCH_TRITON_METRICS_PORT")

    @property
    def triton(self) -> list[int]:
        """Every port of both Tritons: realtime HTTP, gRPC, metrics, then batch HTTP, gRPC, metrics."""
        names = ("HTTP", "GRPC", "METRICS")
        return [self.of(f"PRECIS_TRITON_{n}_PORT") for n in names] + [
            self.of(f"PRECIS_BATCH_TRITON_{n}_PORT") for n in names
        ]

    @property
    def kafka(self) -> int:
        return self.of("PRECIS_KAFKA_PORT")

    @property
    def smtp(self) -> int:
        return self.of("PRECIS_SMTP_PORT")

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.gateway}"

    def env(self) -> dict[str, str]:
        return {"PRECIS_PORT_OFFSET": str(self.offset), **{v: str(self.of(v)) for v in DEFAULTS}}


def launch_stack(ports: StackPorts, env: dict[str, str], log: Path) -> Proc:
    """scripts/run.sh with ``env`` (``child_env(var_dir, ...)``) on ``ports``; returns at once.
    SIGTERM to the script alone (``proc.p.send_signal``) is `make run`'s Ctrl-C."""
    proc = Proc("stack", ["bash", "scripts/run.sh"], {**env, **ports.env()}, log)
    proc.port = ports.gateway
    return proc


def wait_stack(proc: Proc, ports: StackPorts, timeout: float = 600) -> None:
    """Until the gateway's and the worker's /readyz answer 200 (every component is up: the
    gateway's covers realtime_svc, async_svc and the realtime Triton, the worker's the batch
    Triton), as scripts/run.sh waits before it prints "ready"."""
    worker = f"http://127.0.0.1:{ports.of('PRECIS_WORKER_PORT')}/readyz"
    wait_until(
        lambda: http_ok(f"{ports.url}/readyz") and http_ok(worker),
        timeout,
        "gateway and worker /readyz",
        proc,
        interval=1.0,
    )
