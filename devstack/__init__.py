"""Précis dev stack: the real components (Kafka, Triton, PostgreSQL, Redis, the SMTP sink, the Python
services, the whole `make run` stack) as local processes on private ports, for the tests and the
benchmarks alike.

    env        ROOT, child_env()              the environment of every child process
    ports      PORTS, free_port(), port_open()  port allocation (no hand-picked offsets)
    procs      Proc, wait_until(), http_ok(), cpu_seconds()
    triton     TritonPorts, launch_triton(), wait_triton(), start_triton()
    kafka      KafkaPorts, launch_kafka(), start_kafka()
    smtp       launch_smtp_sink(), start_smtp_sink()
    postgres   pg_bin(), postgres_cluster()
    redis      redis_bin(), launch_redis(), start_redis()   the gateway's rate-limit store
    services   launch_service(), start_service()      python -m gateway|realtime_svc|...
    stack      StackPorts, launch_stack(), wait_stack()  scripts/run.sh (`make run`)
    tcp_proxy  TcpProxy                                a forwarder that records connections

Not under tests/: benchmarks import it too, and nothing here knows about pytest.
"""

from __future__ import annotations

from devstack.env import INTERNAL_TOKEN_SECRET, ROOT, child_env
from devstack.kafka import KafkaPorts, launch_kafka, start_kafka
from devstack.ports import PORTS, PortAllocator, bindable, free_port, port_open
from devstack.postgres import pg_bin, postgres_cluster
from devstack.procs import Proc, cpu_seconds, http_ok, wait_until
from devstack.redis import launch_redis, redis_bin, start_redis
from devstack.services import launch_service, start_service
from devstack.smtp import launch_smtp_sink, start_smtp_sink
from devstack.stack import StackPorts, launch_stack, wait_stack
from devstack.tcp_proxy import TcpProxy
from devstack.triton import TritonPorts, launch_triton, start_triton, wait_triton

__all__ = [
    "INTERNAL_TOKEN_SECRET",
    "PORTS",
    "ROOT",
    "KafkaPorts",
    "PortAllocator",
    "Proc",
    "StackPorts",
    "TcpProxy",
    "TritonPorts",
    "bindable",
    "child_env",
    "cpu_seconds",
    "free_port",
    "http_ok",
    "launch_kafka",
    "launch_redis",
    "launch_service",
    "launch_smtp_sink",
    "launch_stack",
    "launch_triton",
    "pg_bin",
    "port_open",
    "postgres_cluster",
    "redis_bin",
    "start_kafka",
    "start_redis",
    "start_service",
    "start_smtp_sink",
    "start_triton",
    "wait_stack",
    "wait_triton",
    "wait_until",
]
