# Async pipeline benchmark (bench/async_bench.py): the book end to end + 1,000 short jobs at once.
# Heavy: it holds /tmp/precis-cpu.lock so it never overlaps another benchmark on a shared machine.
BENCH_ASYNC_ARGS ?=

bench-async:
	flock /tmp/precis-cpu.lock $(PY) bench/async_bench.py $(BENCH_ASYNC_ARGS)
