"""``python -m common.migrate`` — bring the job store's schema to the newest Alembic revision."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from common.settings import CommonSettings


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


def main() -> int:
    settings = CommonSettings()
    upgrade(settings.database_url)
    print("database schema is at head", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
