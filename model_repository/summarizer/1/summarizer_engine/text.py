"""Text in and out: language detection, the prompts, and the cleaning of generated text."""

from __future__ import annotations

import re

from .config import InvalidInput

_LANG_RE = re.compile(r"^[a-z]{2,3}([-_][a-z0-9]{2,8})*$")

LANGUAGE_NAMES = {
    "en": "English",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
    "nl": "Dutch",
    "ar": "Arabic",
    "hi": "Hindi",
    "tr": "Turkish",
    "pl": "Polish",
    "vi": "Vietnamese",
    "id": "Indonesian",
    "sv": "Swedish",
    "uk": "Ukrainian",
}


def detect_language(text: str) -> str:
    """Cheap script-based detection: ``zh`` when CJK ideographs make up a large share of the
    letters, ``ja``/``ko`` for kana/hangul, else ``en`` (the prompt language, not a full
    language-ID: other Latin-script languages get the English prompt)."""
    han = kana = hangul = other = 0
    for ch in text:
        o = ord(ch)
        if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FFFF:
            han += 1
        elif 0x3040 <= o <= 0x30FF:
            kana += 1
        elif 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF:
            hangul += 1
        elif ch.isalpha():
            other += 1
    # One CJK character carries roughly a word; weight Latin letters down accordingly.
    total = han + kana + hangul + other / 4.0
    if total == 0:
        return "en"
    if kana / total >= 0.1:
        return "ja"
    if hangul / total >= 0.3:
        return "ko"
    if (han + kana) / total >= 0.3:
        return "zh"
    return "en"


def normalize_language(language: str | None, text: str) -> str:
    lang = (language or "").strip().lower().replace("_", "-")
    if lang in ("", "auto"):
        return detect_language(text)
    if not _LANG_RE.match(lang):
        raise InvalidInput(f"LANGUAGE must be 'auto' or a language code like 'en' or 'zh', got {language!r}")
    return lang.split("-")[0]


# The prompt's fixed text, as constants so that checks on the output (bench/degeneracy.py: does a
# summary echo the instruction?) use the very strings the model saw.
ZH_SYSTEM_PROMPT = "你是一个专业的中文摘要助手。"
ZH_INSTRUCTION = "请用中文简要概括下面这段文字的要点，只输出摘要："
EN_INSTRUCTION = "Summarize the text above in one or two sentences."
# Appended to EN_INSTRUCTION for languages other than en and zh; {language} is a LANGUAGE_NAMES value.
OTHER_LANGUAGE_SUFFIX = " Write the summary in {language}."


def build_messages(text: str, lang: str) -> list[dict[str, str]]:
    if lang == "zh":
        return [
            {"role": "system", "content": ZH_SYSTEM_PROMPT},
            {"role": "user", "content": f"{ZH_INSTRUCTION}\n\n{text}"},
        ]
    # Text first, instruction last: with SmolLM2-135M this stayed closest to the source
    # (fewer invented facts) among the variants tried; no system message, so the model's own
    # chat template supplies its default one.
    instruction = EN_INSTRUCTION
    if lang != "en":
        instruction += OTHER_LANGUAGE_SUFFIX.format(language=LANGUAGE_NAMES.get(lang, lang))
    return [{"role": "user", "content": f"{text}\n\n{instruction}"}]


_PREFIX_RE = re.compile(
    r"^\s*(?:\*\*)?(?:summary|in summary|here is (?:a|the) (?:brief |short |concise )?summary[^:\n]*|"
    r"摘要|总结|概括)(?:\*\*)?\s*[:：]\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_SENT_END = re.compile(r"[。！？]|[.!?](?=[\"'”’）)]?\s|[\"'”’）)]?$)")
CJK_LANGS = ("zh", "ja", "ko")


def clean_summary(raw: str, truncated: bool) -> str:
    """Strip template residue and label prefixes; when the token budget cut the text mid
    sentence, drop the unfinished tail if at least half of the text remains."""
    text = raw.replace("<|im_end|>", "").replace("<|im_start|>", "").replace("<|endoftext|>", "")
    text = text.strip()
    for _ in range(2):
        text = _PREFIX_RE.sub("", text, count=1).strip()
    if truncated and text and not re.search(r"[.!?。！？][\"'”’）)]?$", text):
        ends = [m.end() for m in _SENT_END.finditer(text)]
        if ends and ends[-1] >= len(text) * 0.5:
            text = text[: ends[-1]].strip()
        else:
            text = text.rstrip(",，、;；:：-–— ")
    return text
