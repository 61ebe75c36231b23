"""The llama.cpp engine in process (no Triton): batched rows are independent of each other."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

TEXTS = [
    "The meeting was moved to Friday because the chief executive was ill and could not travel.",
    "Heavy rain flooded several streets in the old town overnight, and two schools stayed closed.",
    "长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长两万多公里。",
]


@pytest.fixture(scope="module", params=["f16", "as-is", "q8_0"])
def engine(engine_module, request):
    """The default weights (the GGUF's Q4_1 values stored as f16), the GGUF as shipped (Q4_1) and
    q8_0: every kernel family (f16 GEMM, ggml's quantized dot products) must be batch-invariant
    on whatever CPU the wheel was built for (AVX2, AVX-512, AMX)."""
    pytest.importorskip("llama_cpp")
    cfg = engine_module.EngineConfig.from_sources(
        {"engine": "llamacpp", "max_batch": "4", "warmup": "false", "llamacpp_weights": request.param}, {}
    )
    eng = engine_module.create_engine(cfg)
    eng.load()
    yield eng
    eng.close()


def test_auto_picks_llamacpp_for_the_gguf_on_cpu(engine_module):
    pytest.importorskip("llama_cpp")
    cfg = engine_module.EngineConfig.from_sources({"device": "cpu"}, {})
    assert cfg.engine == "llamacpp" and cfg.sources["engine"].endswith("(auto)")
    assert type(engine_module.create_engine(cfg)).__name__ == "LlamaCppEngine"


def test_llamacpp_rejects_a_directory(engine_module, tmp_path):
    with pytest.raises(engine_module.ConfigError):
        engine_module.EngineConfig.from_sources({"engine": "llamacpp", "model_path": str(tmp_path)}, {})


def test_rows_are_independent_of_batch_and_budgets(engine):
    alone = [engine.generate([engine.prepare(t, 12)])[0] for t in TEXTS]
    mixed = engine.generate(
        [engine.prepare(TEXTS[0], 3), *(engine.prepare(t, 12) for t in TEXTS), engine.prepare(TEXTS[1], 30)]
    )
    assert mixed[1:4] == alone
    assert 0 < mixed[0].output_tokens <= 3 and mixed[4].output_tokens <= 30
    # more rows than max_batch (4) are generated in several rounds, same answers
    again = engine.generate([engine.prepare(t, 12) for t in TEXTS * 2])
    assert again == alone * 2


def test_long_budgets_in_shuffled_batches_match_alone(engine):
    """Rows of different lengths finish at different steps, so the decode batch shrinks from 4
    to 1 rows along the way; a row's 40 greedy tokens must not depend on when the others stop."""
    texts = TEXTS + [TEXTS[0] + " " + TEXTS[1]]
    alone = [engine.generate([engine.prepare(t, 40)])[0] for t in texts]
    for order in ([3, 1, 0, 2], [2, 0, 3, 1]):
        budgets = {3: 40, 1: 40, 0: 7, 2: 40} if order[0] == 3 else {2: 40, 0: 40, 3: 2, 1: 25}
        out = engine.generate([engine.prepare(texts[i], budgets[i]) for i in order])
        for i, r in zip(order, out, strict=True):
            if budgets[i] == 40:
                assert r == alone[i], (i, budgets)
            else:
                assert r.output_tokens <= budgets[i]


def test_counts_and_languages(engine):
    zh = engine.prepare(TEXTS[2], 16)
    assert zh.language == "zh" and zh.input_tokens > 5
    out = engine.generate([zh])[0]
    assert out.summary and "\ufffd" not in out.summary


def test_summaries_stay_on_the_source(engine):
    """Every weight format summarizes the text it was given: a guard against kernels that are
    fast and deterministic but wrong (the AMX buffer's Q4_1 kernels made Chinese ROUGE 0 and
    English nonsense on an AMX-capable Xeon; make eval)."""
    en_source = TEXTS[1]
    en = engine.generate([engine.prepare(en_source, 40)])[0].summary.lower()
    words = {w.strip(".,").lower() for w in en_source.split() if len(w.strip(".,")) >= 5}
    assert any(w in en for w in words), en
    zh_source = TEXTS[2]
    zh = engine.generate([engine.prepare(zh_source, 40)])[0].summary
    shared = {ch for ch in zh if "\u4e00" <= ch <= "\u9fff" and ch in zh_source}
    assert len(shared) >= 4, zh


def _run_schedule(engine, schedule):
    """Drive the step API: ``schedule`` maps a step number to the (text, budget) rows started
    just before that step, or as soon after as a row is free (rows join a batch that is already
    decoding). Returns each row's result in schedule order, and the largest number of rows that
    ran together."""
    rows, step, widest = [], 0, 0
    queue = [(at, row) for at in sorted(schedule) for row in schedule[at]]
    while queue or engine.active_rows():
        while queue and queue[0][0] <= step and engine.free_rows():
            text, budget = queue.pop(0)[1]
            rows.append(engine.start(engine.prepare(text, budget)))
        widest = max(widest, engine.active_rows())
        if engine.active_rows():
            engine.step()
        step += 1
    assert engine.active_rows() == 0 and engine.free_rows() == engine.config.max_batch
    return [r.result for r in rows], widest


def test_rows_joining_mid_flight_match_alone(engine):
    """In-flight batching: rows start while others are decoding (each one's prefill between two
    decode steps), short rows leave early and their slots are taken by later rows; every row's
    greedy output must be the one it has alone (the static batch's guarantee, now with joins)."""
    texts = TEXTS + [TEXTS[0] + " " + TEXTS[1]]
    alone = {(t, b): engine.generate([engine.prepare(t, b)])[0] for t, b in ((t, 40) for t in texts)}
    alone[(TEXTS[1], 5)] = engine.generate([engine.prepare(TEXTS[1], 5)])[0]
    schedule = {
        0: [(texts[3], 40)],
        3: [(TEXTS[1], 5), (texts[0], 40)],  # joins a running row; the 5-token row leaves at once
        9: [(texts[2], 40)],  # takes the slot the short row freed
        10: [(texts[1], 40)],  # fills the fourth slot (max_batch 4)
        30: [(TEXTS[1], 5)],  # reuses a slot again, late (when one is free)
    }
    results, widest = _run_schedule(engine, schedule)
    expected = [alone[row] for step in sorted(schedule) for row in schedule[step]]
    assert widest == engine.config.max_batch
    for i, (got, want) in enumerate(zip(results, expected, strict=True)):
        assert got == want, (i, got, want)


def test_step_api_generate_and_release(engine):
    """A released (cancelled) row frees its slot at once, and the row that takes the slot is
    generated as if alone; generate() refuses to run while step-API rows are running."""
    alone = engine.generate([engine.prepare(TEXTS[0], 20)])[0]
    keep = engine.start(engine.prepare(TEXTS[2], 20))
    dropped = engine.start(engine.prepare(TEXTS[1], 40))
    for _ in range(4):
        engine.step()
    with pytest.raises(RuntimeError):
        engine.generate([engine.prepare(TEXTS[0], 2)])
    engine.release(dropped)
    assert engine.active_rows() == 1 and engine.free_rows() == engine.config.max_batch - 1
    joined = engine.start(engine.prepare(TEXTS[0], 20))
    assert joined.slot == dropped.slot  # the freed stream is reused
    while engine.active_rows():
        engine.step()
    assert joined.result == alone and keep.result is not None and dropped.result is None


def test_scheduler_answers_each_job_once_in_flight(engine_module, engine):
    """The in-flight scheduler (model.py's engine loop) in process on the real engine: jobs
    submitted while others run are answered with their alone results, a short job submitted
    after a long one is answered first, a cancelled job is answered once as cancelled and frees
    its rows, a job whose row cannot start fails alone."""
    if engine.config.llamacpp_weights != "f16":
        pytest.skip("scheduler logic: one weight format is enough")
    import threading

    from summarizer_engine.scheduler import InflightScheduler, Job

    alone_long = engine.generate([engine.prepare(TEXTS[0], 48)])[0]
    alone_short = engine.generate([engine.prepare(TEXTS[1], 4)])[0]
    answers: list[tuple[str, object]] = []
    lock = threading.Lock()
    done = {name: threading.Event() for name in ("long", "short", "cancel", "bad", "pair")}
    cancel_flag = threading.Event()

    def job(name, items, is_cancelled=None, on_token=None):
        def on_done(results):
            with lock:
                answers.append((name, results))
            done[name].set()

        def on_error(kind, message):
            with lock:
                answers.append((name, (kind, message)))
            done[name].set()

        return Job(items, on_done, on_error, is_cancelled or (lambda: False), on_token)

    sched = InflightScheduler(engine, cancel_poll_s=0.0)
    first_token = threading.Event()
    sched.start()
    try:
        sched.submit(job("long", [engine.prepare(TEXTS[0], 48)], on_token=lambda i, t: first_token.set()))
        assert first_token.wait(120)  # the long job is decoding
        sched.submit(job("cancel", [engine.prepare(TEXTS[2], 200)], is_cancelled=cancel_flag.is_set))
        sched.submit(job("short", [engine.prepare(TEXTS[1], 4)]))
        assert done["short"].wait(120)
        assert not done["long"].is_set()  # joined the running batch and left before it
        cancel_flag.set()
        assert done["cancel"].wait(120)
        bad = engine.prepare(TEXTS[0], 4)
        bad.prompt_ids = bad.prompt_ids * 2000  # over the KV budget: engine.start raises
        sched.submit(job("bad", [bad]))
        sched.submit(job("pair", [engine.prepare(TEXTS[1], 4), engine.prepare(TEXTS[0], 48)]))
        for name in ("long", "bad", "pair"):
            assert done[name].wait(300), name
    finally:
        sched.stop()
    got = dict(answers)
    assert len(answers) == len(got) == 5  # each job answered exactly once
    assert answers[0][0] == "short"
    assert got["short"] == [alone_short] and got["long"] == [alone_long]
    assert got["pair"] == [alone_short, alone_long]
    assert got["cancel"][0] == "cancelled"
    assert got["bad"][0] == "internal" and "KV budget" in got["bad"][1]
    assert engine.active_rows() == 0
