"""realtime_svc: one short text → Triton (gRPC aio) → summary, with deadlines and load shedding."""
