"""Manual check without Triton: ``python -m summarizer_engine "Some paragraph ..."`` summarizes
each argument with the engine the environment configures (see config.py)."""

from __future__ import annotations

import logging
import sys
import time

from . import EngineConfig, create_engine

if __name__ == "__main__":  # pragma: no cover - manual check
    logging.basicConfig(level=logging.INFO)
    eng = create_engine(EngineConfig.from_sources())
    eng.load()
    texts = sys.argv[1:] or ["The quick brown fox jumps over the lazy dog."]
    t = time.perf_counter()
    for r in eng.generate([eng.prepare(x) for x in texts]):
        print(repr(r))
    print(f"{time.perf_counter() - t:.2f}s")
