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
