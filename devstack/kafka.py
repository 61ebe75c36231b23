"""A real single-node KRaft broker (scripts/kafka.sh) on private ports.

scripts/kafka.sh takes its ports from scripts/common.sh, which computes every local port as a
default shifted by ``PRECIS_PORT_OFFSET`` (preset per-port variables are overwritten there), so the
broker's two ports are allocated as one offset (``PORTS.offset``: both free, neither handed out
before). The explicit per-port variables are passed as well, with the same values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devstack.ports import PORTS, port_open
from devstack.procs import Proc, wait_until

BROKER_BASE, CONTROLLER_BASE = 9092, 9093  # scripts/common.sh's defaults


@dataclass(frozen=True)
class KafkaPorts:
    broker: int
    controller: int

    @classmethod
    def allocate(cls) -> KafkaPorts:
        off = PORTS.offset((BROKER_BASE, CONTROLLER_BASE))
        return cls(BROKER_BASE + off, CONTROLLER_BASE + off)

    @property
    def offset(self) -> int:
        return self.broker - BROKER_BASE

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker}"

    def env(self) -> dict[str, str]:
        return {
            "PRECIS_PORT_OFFSET": str(self.offset),
            "PRECIS_KAFKA_PORT": str(self.broker),
            "PRECIS_KAFKA_CONTROLLER_PORT": str(self.controller),
        }


def launch_kafka(ports: KafkaPorts, env: dict[str, str], log: Path, name: str = "kafka") -> Proc:
    """scripts/kafka.sh (data under env's PRECIS_VAR_DIR) on ``ports``; returns at once."""
    proc = Proc(name, ["bash", "scripts/kafka.sh"], {**env, **ports.env()}, log)
    proc.port = ports.broker
    return proc


def start_kafka(ports: KafkaPorts, env: dict[str, str], log: Path, timeout: float = 120, name: str = "kafka") -> Proc:
    """``launch_kafka``, then until the broker port accepts connections."""
    proc = launch_kafka(ports, env, log, name)
    try:
        wait_until(lambda: port_open(ports.broker), timeout, "kafka broker port", proc)
    except (TimeoutError, RuntimeError):
        proc.stop()
        raise
    return proc
