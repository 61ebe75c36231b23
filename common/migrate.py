"""``python -m common.migrate`` — bring the job store's schema to the newest Alembic revision."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import InterfaceError, OperationalError
from tenacity import before_sleep_log, retry, retry_if_exception_type, stop_after_delay, wait_exponential

from common.settings import StoreSettings, load_settings

log = logging.getLogger("precis.migrate")
# How long `python -m common.migrate` waits for the database server to accept connections: in a
# fresh cluster the migrating pod can start before its PostgreSQL does.
WAIT_S = float(os.environ.get("PRECIS_MIGRATE_WAIT_S", "300"))


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")


@retry(
    # connection-level failures only (refused, DNS, server starting up); a failing migration is
    # raised at once
    retry=retry_if_exception_type((OSError, OperationalError, InterfaceError)),
    stop=stop_after_delay(WAIT_S),
    wait=wait_exponential(multiplier=0.5, max=5),
    before_sleep=before_sleep_log(log, logging.WARNING),
    reraise=True,
)
def upgrade_when_reachable(url: str) -> None:
    upgrade(url)


def main() -> int:
    logging.basicConfig(level=logging.INFO)
    settings = load_settings(StoreSettings)
    upgrade_when_reachable(settings.database_url)
    print("database schema is at head", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
