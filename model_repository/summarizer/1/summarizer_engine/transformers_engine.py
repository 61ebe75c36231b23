"""The ``transformers`` engine: PyTorch. A GGUF file is de-quantized to ``dtype`` (fp32 on CPU,
bf16/fp16 on GPU with SDPA); any Hugging Face causal-LM directory works. torch and transformers
are imported only when this engine is used (the CPU image has neither)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from .base import BaseEngine, Prepared, Result
from .config import ConfigError, EngineConfig
from .text import clean_summary


def resolve_device_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch.cuda.is_available() is False")
    if dtype == "auto":
        if device == "cpu":
            dtype = "float32"  # bf16 matmuls are slow on CPUs without AMX/avx512_bf16
        else:
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return device, dtype, getattr(torch, dtype)


class TransformersEngine(BaseEngine):
    name = "transformers"

    def __init__(self, config: EngineConfig, log: Callable[[str], None] | None = None):
        super().__init__(config, log)
        self.model = None
        self.tokenizer = None
        self.pad_id = 0

    # ---------------------------------------------------------------- load
    def load(self) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        cfg = self.config
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        transformers.utils.logging.disable_progress_bar()
        self.device, self.dtype, torch_dtype = resolve_device_dtype(cfg.device, cfg.dtype)

        path = cfg.model_path
        kwargs: dict[str, Any] = {}
        if os.path.isfile(path) and path.endswith(".gguf"):
            directory, kwargs["gguf_file"] = os.path.split(os.path.abspath(path))
        else:
            directory = path
        self.tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch_dtype, attn_implementation="sdpa", **kwargs
        )
        self.model.to(self.device).eval()
        if self.tokenizer.chat_template is None:
            raise ConfigError(f"{path}: the tokenizer has no chat template (an instruct model is required)")

        stop = set()
        for tok in (self.tokenizer.eos_token, "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
            if tok and tok in self.tokenizer.get_vocab():
                stop.add(self.tokenizer.convert_tokens_to_ids(tok))
        gen_eos = self.model.generation_config.eos_token_id
        if isinstance(gen_eos, int):
            stop.add(gen_eos)
        elif gen_eos:
            stop.update(gen_eos)
        self.stop_ids = sorted(stop)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]
        self.load_seconds = time.perf_counter() - t0
        self._log(
            f"summarizer model loaded in {self.load_seconds:.1f}s: path={path} engine={cfg.engine} "
            f"device={self.device} dtype={self.dtype} threads={torch.get_num_threads()} "
            f"attn={getattr(self.model.config, '_attn_implementation', '?')} "
            f"max_input_tokens={cfg.max_input_tokens} default_max_tokens={cfg.default_max_tokens} "
            f"max_new_tokens_cap={cfg.max_new_tokens_cap} sources={cfg.sources}"
        )

    # ---------------------------------------------------------------- requests
    def tokenize(self, text: str, special: bool) -> list[int]:
        # split_special_tokens=True: a marker such as <|im_start|> in the text is encoded as the
        # plain text it is (what llama.cpp's special=False and TokenCounter do)
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"])

    def render(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, items: Sequence[Prepared]) -> list[Result]:
        """One batched greedy generation. Left padding + attention mask; every row is
        generated up to its own budget (a per-row stopping criterion ends it there) and has
        its own repetition penalty that ignores padding, so one item's MAX_TOKENS or language
        never changes another item's output."""
        if not items:
            return []
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        n = len(items)
        width = max(len(it.prompt_ids) for it in items)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for row, it in enumerate(items):
            input_ids[row, width - len(it.prompt_ids) :] = torch.tensor(it.prompt_ids, dtype=torch.long)
            attention[row, width - len(it.prompt_ids) :] = 1
        budgets = torch.tensor([it.max_tokens for it in items], dtype=torch.long, device=self.device)
        penalties = torch.tensor([self.penalty_for(it.language) for it in items], device=self.device)
        pad_mask = (attention == 0).to(self.device)
        # index of each row's first real prompt token, used in place of padding positions
        first_real = torch.tensor([[width - len(it.prompt_ids)] for it in items], device=self.device)

        class _RowBudget(StoppingCriteria):
            def __call__(self, ids, scores, **kwargs):
                return (ids.shape[1] - width) >= budgets

        class _RowRepetitionPenalty(LogitsProcessor):
            """HF's RepetitionPenaltyLogitsProcessor with one penalty per row, padding excluded."""

            def __call__(self, ids, scores):
                ids = ids.clone()
                prompt = ids[:, :width]
                prompt[pad_mask] = torch.gather(prompt, 1, first_real).expand(-1, width)[pad_mask]
                picked = torch.gather(scores, 1, ids)
                p = penalties.to(scores.dtype)[:, None]
                picked = torch.where(picked < 0, picked * p, picked / p)
                return scores.scatter(1, ids, picked)

        processors = LogitsProcessorList()
        if any(self.penalty_for(it.language) != 1.0 for it in items):
            processors.append(_RowRepetitionPenalty())
        gen_kwargs: dict[str, Any] = dict(
            max_new_tokens=int(budgets.max()),
            do_sample=False,
            num_beams=1,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
            stopping_criteria=StoppingCriteriaList([_RowBudget()]),
            logits_processor=processors,
            # generation_config of GGUF/HF models may carry sampling defaults: neutralise them
            temperature=None,
            top_p=None,
            top_k=None,
        )
        if self.config.no_repeat_ngram_size:
            gen_kwargs["no_repeat_ngram_size"] = self.config.no_repeat_ngram_size

        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device), **gen_kwargs
            )
        out = out[:, width:].cpu().tolist()
        stop = set(self.stop_ids)
        results = []
        for row, it in enumerate(items):
            cut, hit_eos = [], False
            for tok in out[row][: it.max_tokens]:
                if tok in stop:
                    hit_eos = True
                    break
                cut.append(tok)
            truncated = not hit_eos and len(cut) >= it.max_tokens
            results.append(Result(clean_summary(self._decode(cut), truncated), it.input_tokens, len(cut)))
        return results

    def _decode(self, ids: list[int]) -> str:
        """Decode; a byte-level token budget can cut a multi-byte character in half: drop the
        incomplete tail (at most 3 tokens) instead of emitting U+FFFD."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        k = len(ids)
        while text.endswith("\ufffd") and k > 0 and len(ids) - k < 3:
            k -= 1
            text = self.tokenizer.decode(ids[:k], skip_special_tokens=True)
        return text.replace("\ufffd", "")
