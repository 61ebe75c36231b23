#!/usr/bin/env python3
"""Print the `helm --set` arguments that point the chart at the images of `make images`
(their refs from $PRECIS_CACHE/images/<name>.json), one per line-safe token:

    helm install precis deploy/helm/precis -f deploy/helm/precis/values-cpu.yaml $(python3 scripts/images/helm_args.py)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# chart value -> image name of `make images`
IMAGE_VALUES = {
    "image.service": "service",
    "image.triton": "triton-cpu",
    "image.kafka": "kafka",
    "image.postgres": "postgres",
    "image.smtpSink": "smtp-sink",
    "image.redis": "redis",
}


def helm_set_args(images_dir: Path) -> tuple[list[str], dict[str, dict]]:
    """(["--set", "image.service.repository=...,image.service.tag=...", ...], {name: descriptor})"""
    args: list[str] = []
    found: dict[str, dict] = {}
    for value, name in IMAGE_VALUES.items():
        f = images_dir / f"{name}.json"
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: run `make images` first")
        d = json.loads(f.read_text())
        repo, tag = d["ref"].rsplit(":", 1)
        args += ["--set", f"{value}.repository={repo},{value}.tag={tag},{value}.pullPolicy=IfNotPresent"]
        found[name] = d
    return args, found


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repo root
    from common.paths import cache_dir

    cache = cache_dir()
    try:
        print(" ".join(helm_set_args(cache / "images")[0]))
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
