"""Quality of the summarizer per engine/precision on the eval set (ROUGE-1/2/L F1, x100).

    python -m bench.eval [--engines llamacpp,transformers-fp32] [--max-tokens 64] [--out bench/results/eval.json]
    python -m bench.eval --rescore bench/results/eval.json --out /tmp/rescored.json   # no model

Data: tests/data/eval/eval_en.jsonl (22 English: XSum + CNN/DailyMail) and eval_zh.jsonl (5 Chinese:
CSL), human references, sources in tests/data/eval/SOURCES.md. Each engine runs in this process
through ``summarizer_engine`` (the code Triton runs), same prompts, greedy, ``--max-tokens`` each.

Scoring: Google's ``rouge-score``. English: its default tokenizer (lower-case, alphanumeric
words) with the Porter stemmer. Chinese: the default tokenizer drops every non-Latin character,
so zh is scored per character: each CJK character is one token, Latin/digit runs are one token,
punctuation and spaces are dropped (no stemming). ``all`` is the mean over the 27 items.
Lead-3 (the document's first three sentences) is the extractive baseline.

Degeneracy (bench/degeneracy.py), beside ROUGE, per variant and group: copy ratio (longest run
shared with the source ÷ summary length), novel n-gram share (3 words / 4 CJK characters not
in the source), prompt echo (the summary repeats half or more of an instruction the prompt
gave), length ratio (words ÷ target words; a CJK character is 1/1.5 word; the target is
``--max-tokens`` × 0.75 unless an item has ``target_words``), and the share of items flagged
degenerate (echo, or a copy, or length outside [0.3, 3]). Lead-3 is a copy by construction:
it is flagged on every item, which is the point of the measure. The human references go through
the same checks (``degeneracy_reference``) as a calibration row. ``--rescore`` recomputes ROUGE
and these figures on the summaries stored in an earlier eval.json, without running a model.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from tqdm import tqdm

from bench import degeneracy as dg

ROOT = Path(__file__).resolve().parent.parent
EVAL_DIR = ROOT / "tests" / "data" / "eval"

# name -> (engine, dtype, llama.cpp weights)
VARIANTS = {
    "llamacpp-q4_1": ("llamacpp", "auto", "as-is"),
    "llamacpp-q8_0": ("llamacpp", "auto", "q8_0"),
    "llamacpp-f16": ("llamacpp", "auto", "f16"),
    "transformers-fp32": ("transformers", "float32", "as-is"),
    "transformers-bf16": ("transformers", "bfloat16", "as-is"),
}
DEFAULT_VARIANTS = "transformers-fp32,llamacpp-q4_1,llamacpp-f16,llamacpp-q8_0"


def load_items() -> list[dict]:
    items = []
    for name in ("eval_en.jsonl", "eval_zh.jsonl"):
        with open(EVAL_DIR / name, encoding="utf-8") as fh:
            items.extend(json.loads(line) for line in fh if line.strip())
    return items


_CJK_OR_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[A-Za-z0-9]+")


class CharTokenizer:
    """rouge-score tokenizer for Chinese: one token per CJK character, one per Latin/digit run."""

    def tokenize(self, text: str) -> list[str]:
        return [t.lower() for t in _CJK_OR_WORD.findall(text)]


_SENT = re.compile(r"(?<=[.!?。！？])[\"'”’）)]?\s+|(?<=[。！？])|\n+")


def lead3(doc: str) -> str:
    sents = [s.strip() for s in _SENT.split(doc) if s and s.strip()]
    return " ".join(sents[:3])


class Scorer:
    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        keys = ["rouge1", "rouge2", "rougeL"]
        self.en = rouge_scorer.RougeScorer(keys, use_stemmer=True)
        self.zh = rouge_scorer.RougeScorer(keys, tokenizer=CharTokenizer())

    def score(self, items: list[dict], preds: list[str]) -> dict:
        per = {"en": [], "zh": []}
        for it, pred in zip(items, preds, strict=True):
            sc = (self.zh if it["language"] == "zh" else self.en).score(it["reference"], pred)
            per["zh" if it["language"] == "zh" else "en"].append({k: v.fmeasure * 100 for k, v in sc.items()})
        out = {}
        for group, rows in (("en", per["en"]), ("zh", per["zh"]), ("all", per["en"] + per["zh"])):
            out[group] = {
                k: round(sum(r[k] for r in rows) / max(1, len(rows)), 2) for k in ("rouge1", "rouge2", "rougeL")
            }
            out[group]["n"] = len(rows)
        return out


def degeneracy(items: list[dict], preds: list[str], max_tokens: int) -> tuple[dict, dict]:
    """Per group (en, zh, all) aggregates of bench.degeneracy, and the per-item measures."""
    rows: dict[str, list[dg.Assessment]] = {"en": [], "zh": []}
    per_item = {}
    for it, pred in zip(items, preds, strict=True):
        target = float(it.get("target_words") or dg.target_words(max_tokens))
        a = dg.assess(pred, it["document"], it["language"], target)
        rows["zh" if it["language"] == "zh" else "en"].append(a)
        per_item[it["id"]] = a.as_dict()
    groups = {g: dg.aggregate(r) for g, r in (("en", rows["en"]), ("zh", rows["zh"]), ("all", rows["en"] + rows["zh"]))}
    return groups, per_item


def run_engine(variant: str, items: list[dict], max_tokens: int, batch: int) -> tuple[list[str], dict]:
    import summarizer_engine as se  # the Triton model's engine (editable install, pyproject.toml)

    engine_name, dtype, weights = VARIANTS[variant]
    cfg = se.EngineConfig.from_sources(
        {
            "engine": engine_name,
            "dtype": dtype,
            "device": "cpu",
            "max_batch": str(batch),
            "warmup": "false",
            "llamacpp_weights": weights,
        },
        {},
    )
    eng = se.create_engine(cfg, log=lambda m: None)
    t0 = time.perf_counter()
    eng.load()
    load_s = time.perf_counter() - t0
    prepared = [eng.prepare(it["document"], max_tokens, it["language"]) for it in items]
    preds: list[str] = []
    out_tokens = 0
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(prepared), batch), desc=f"eval {variant}", unit="batch"):
        for r in eng.generate(prepared[start : start + batch]):
            preds.append(r.summary)
            out_tokens += r.output_tokens
    gen_s = time.perf_counter() - t0
    close = getattr(eng, "close", None)
    if close:
        close()
    return preds, {
        "load_s": round(load_s, 1),
        "generate_s": round(gen_s, 1),
        "output_tokens": out_tokens,
        "engine": engine_name,
        "dtype": eng.dtype,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default=DEFAULT_VARIANTS, help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval.json"))
    ap.add_argument(
        "--rescore",
        metavar="EVAL_JSON",
        help="score the summaries stored in this earlier eval.json (its variants and max_tokens) instead of "
        "running engines; --engines is ignored",
    )
    args = ap.parse_args(argv)

    items = load_items()
    scorer = Scorer()
    previous: dict | None = None
    if args.rescore:
        previous = json.loads(Path(args.rescore).read_text(encoding="utf-8"))
        args.max_tokens = previous["max_tokens"]
    results: dict = {
        "max_tokens": args.max_tokens,
        "items": len(items),
        "zh_scoring": "per character (CJK char = token, Latin/digit run = token)",
        "variants": {},
    }
    results["degeneracy_method"] = {
        "target_words": dg.target_words(args.max_tokens),
        "words_per_token": dg.WORDS_PER_TOKEN,
        "cjk_chars_per_word": dg.CJK_CHARS_PER_WORD,
        "ngram": {"en_words": dg.NGRAM_WORDS, "cjk_chars": dg.NGRAM_CJK_CHARS},
        "flag_echo": f"echo_ratio >= {dg.ECHO_MIN_FRACTION}",
        "flag_copy": f"copy_ratio >= {dg.COPY_RATIO_MAX} and novel_share < {dg.NOVEL_SHARE_MIN}",
        "flag_length": f"length_ratio outside {list(dg.LENGTH_RATIO_RANGE)}",
    }
    if previous is not None:
        results["rescored_from"] = str(args.rescore)
    per_item: dict[str, dict] = {}
    # The human references through the same checks: what a good summary scores, and how often
    # the flags fire on one (the length bound is against the budget, which references need not fill).
    results["degeneracy_reference"], per_item["reference"] = degeneracy(
        items, [it["reference"] for it in items], args.max_tokens
    )
    lead = [lead3(it["document"]) for it in items]
    results["variants"]["lead-3"] = {"rouge": scorer.score(items, lead)}
    results["variants"]["lead-3"]["degeneracy"], per_item["lead-3"] = degeneracy(items, lead, args.max_tokens)
    samples = {}
    if previous is not None:
        runs: list[tuple[str, dict | None]] = list(previous.get("summaries", {}).items())
    else:
        runs = [(v.strip(), None) for v in args.engines.split(",") if v.strip()]
    for variant, stored in runs:
        if previous is not None and stored is not None:
            preds = [stored[it["id"]] for it in items]
            info = {k: v for k, v in previous["variants"].get(variant, {}).items() if k not in ("rouge", "degeneracy")}
        else:
            if variant not in VARIANTS:
                ap.error(f"unknown engine variant {variant!r}")
            preds, info = run_engine(variant, items, args.max_tokens, args.batch)
        results["variants"][variant] = {"rouge": scorer.score(items, preds), **info}
        results["variants"][variant]["degeneracy"], per_item[variant] = degeneracy(items, preds, args.max_tokens)
        samples[variant] = {it["id"]: p for it, p in zip(items, preds, strict=True)}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results["summaries"] = samples
    results["degeneracy_items"] = per_item
    out.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    print(f"\nROUGE F1 x100 on {len(items)} items (max {args.max_tokens} new tokens; zh scored per character)")
    print(
        f"{'variant':<20} {'en R1':>6} {'en R2':>6} {'en RL':>6} | {'zh R1':>6} {'zh R2':>6} {'zh RL':>6} | "
        f"{'all RL':>6} | {'gen s':>6}"
    )
    for name, v in results["variants"].items():
        r = v["rouge"]
        print(
            f"{name:<20} {r['en']['rouge1']:6.2f} {r['en']['rouge2']:6.2f} {r['en']['rougeL']:6.2f} | "
            f"{r['zh']['rouge1']:6.2f} {r['zh']['rouge2']:6.2f} {r['zh']['rougeL']:6.2f} | "
            f"{r['all']['rougeL']:6.2f} | {v.get('generate_s', 0):6.1f}"
        )

    print(
        f"\nDegeneracy (means per item; shares of items flagged; target {dg.target_words(args.max_tokens):g} words, "
        f"a CJK character = 1/{dg.CJK_CHARS_PER_WORD:g} word)\n"
        f"copy = longest run shared with the source / summary; novel = share of {dg.NGRAM_WORDS}-word / "
        f"{dg.NGRAM_CJK_CHARS}-char n-grams not in the source; echo = share repeating >= "
        f"{dg.ECHO_MIN_FRACTION:g} of a prompt instruction; len = words / target; degen = share flagged "
        f"(echo, or copy >= {dg.COPY_RATIO_MAX:g} with novel < {dg.NOVEL_SHARE_MIN:g}, or len outside "
        f"[{dg.LENGTH_RATIO_RANGE[0]:g}, {dg.LENGTH_RATIO_RANGE[1]:g}])"
    )
    cols = ("copy", "novel", "echo", "len", "degen")
    print(f"{'variant':<20} " + " | ".join(" ".join(f"{g + ' ' + c:>9}" for c in cols) for g in ("en", "zh", "all")))

    def fmt(x: float | None) -> str:
        return f"{'-' if x is None else f'{x:.2f}':>9}"

    rows = [(name, v["degeneracy"]) for name, v in results["variants"].items()]
    for name, d in [("(human reference)", results["degeneracy_reference"]), *rows]:
        print(
            f"{name:<20} "
            + " | ".join(
                " ".join(
                    fmt(d[g][k])
                    for k in ("copy_ratio", "novel_share", "echo_share", "length_ratio", "degenerate_share")
                )
                for g in ("en", "zh", "all")
            )
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
