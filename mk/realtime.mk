# Realtime path: model quality and the realtime benchmark (included by the top-level Makefile).
#   make eval            ROUGE-1/2/L per engine/precision + Lead-3 on tests/data/eval -> bench/results/eval.json
#   make bench-realtime  gateway/Triton vs llama-server and llama-cpp-python's server -> bench/results/realtime.{json,png}
#   make bench-http-client  httpx vs aiohttp cost of one internal hop -> bench/results/http_client.{json,png}
# Both take the machine-wide CPU lock (flock $(PRECIS_CPU_LOCK)) so parallel heavy runs do not
# pollute the numbers. EVAL_ENGINES picks the variants (bench/eval.py --help).
PRECIS_CPU_LOCK ?= /tmp/precis-cpu.lock
EVAL_ENGINES ?= transformers-fp32,llamacpp-q4_1,llamacpp-f16,llamacpp-q8_0
EVAL_ARGS ?=
BENCH_REALTIME_ARGS ?=
EVAL_JSON := bench/results/eval.json

.PHONY: eval bench-realtime bench-http-client

eval: install
	flock $(PRECIS_CPU_LOCK) $(PY) -m bench.eval --engines $(EVAL_ENGINES) --out $(EVAL_JSON) $(EVAL_ARGS)

# The benchmark reads ROUGE-L from the eval results; they are (re)computed when missing or
# older than the engine or the eval data.
$(EVAL_JSON): bench/eval.py $(wildcard model_repository/summarizer/1/summarizer_engine/*.py) tests/data/eval/eval_en.jsonl tests/data/eval/eval_zh.jsonl
	flock $(PRECIS_CPU_LOCK) $(PY) -m bench.eval --engines $(EVAL_ENGINES) --out $(EVAL_JSON) $(EVAL_ARGS)

# llama.cpp's own llama-server, the benchmark's throughput peer: built once into the cache
# (~6 min on 2 idle cores) from the llama.cpp the pinned llama-cpp-python sdist vendors.
.PHONY: llama-server
llama-server:
	bash scripts/build_llama_server.sh

bench-realtime: install $(EVAL_JSON) llama-server
	flock $(PRECIS_CPU_LOCK) $(PY) -m bench.realtime_bench $(BENCH_REALTIME_ARGS)

bench-http-client: install
	flock $(PRECIS_CPU_LOCK) $(PY) -m bench.http_client_bench $(BENCH_HTTP_CLIENT_ARGS)

# Two Tritons on shared cores (docs/architecture.md "Local topology"): realtime latency idle and
# while a long async job runs, and the job's chunk pace, for one shared server vs the batch server
# at nice 0 / nice 19 / SCHED_IDLE, interleaved on one stack -> bench/results/local_split.{json,png}
BENCH_LOCAL_SPLIT_ARGS ?=
.PHONY: bench-local-split
bench-local-split: install
	flock $(PRECIS_CPU_LOCK) $(PY) -m bench.local_split_bench $(BENCH_LOCAL_SPLIT_ARGS)
