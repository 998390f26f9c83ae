"""Throughput of promptopt's embedded LM stack against raw llama-cpp-python.

200 short chat requests (2 sentiment instructions x 100 reviews from the instruction-induction
``sentiment`` task), greedy, max_tokens=8, measured as:

(a) raw: ``llama_cpp.Llama.create_chat_completion`` in a loop (candidate-grouped order, the
    best case for llama.cpp's prefix reuse);
(b) the stack ``make_lm("embedded")`` = CachedLM(LedgeredLM(LimitedLM(LlamaCppLM))) with an
    empty cache (a fresh temp file), max_concurrency 1 and 2, the whole list as one batch;
(c) the same batch again on a warm cache (every request a hit).

Plus the same comparison on requests submitted interleaved (review-major, as a naive evaluator
racing two candidates would send them): raw pays for it, the stack reorders by prefix.

    python benchmarks/lm_throughput.py            # writes benchmarks/results/lm_throughput.json
    python benchmarks/lm_throughput.py --n 40 --interleaved-n 8 --no-write   # quick look

Raw and stack runs alternate on blocks of 10 requests (rotating who goes first), each with its
own model and KV cache: on a shared machine the load of other processes dominates the noise,
and alternation gives every side the same load (the load average is recorded too).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from promptopt.lm import CachedLM, Ledger, LedgeredLM, LimitedLM, LMRequest, LMResponse, ScriptedLM, Usage, default_model_path, make_lm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PROMPTOPT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "instruction_induction" / "execute" / "sentiment.json"
RESULTS = ROOT / "benchmarks" / "results" / "lm_throughput.json"
INSTRUCTIONS = (
    "Classify the sentiment of the movie review as positive or negative. Answer with one word.",
    "Is this review positive or negative? Reply with the single word positive or negative.",
)
MAX_TOKENS = 8
# Warm-up chats, unrelated to the workload: the first calls of a fresh context are slow (buffers
# are allocated and first touched) and must not count against either side.
WARMUP = [[{"role": "system", "content": "You are terse."}, {"role": "user", "content": f"Say the number {i}."}] for i in range(5)]


def load_requests(n: int) -> tuple[list[LMRequest], list[LMRequest]]:
    """(grouped by instruction, interleaved) lists of the same n requests."""
    examples = json.loads(DATA.read_text())["examples"]
    reviews = [ex["input"] for _, ex in sorted(examples.items(), key=lambda kv: int(kv[0]))][: max(n // len(INSTRUCTIONS), 1)]

    def req(instruction: str, review: str) -> LMRequest:
        return LMRequest.chat([{"role": "system", "content": instruction}, {"role": "user", "content": review}], temperature=0.0, max_tokens=MAX_TOKENS)

    grouped = [req(i, r) for i in INSTRUCTIONS for r in reviews]
    interleaved = [req(i, r) for r in reviews for i in INSTRUCTIONS]
    return grouped, interleaved


def measure(run: Callable[[list[LMRequest]], list[LMResponse]], requests: list[LMRequest]) -> dict[str, Any]:
    started = time.perf_counter()
    responses = run(requests)
    seconds = time.perf_counter() - started
    assert all(r.ok for r in responses), [r.error for r in responses if not r.ok][:3]
    return {
        "calls": len(requests),
        "seconds": seconds,
        "completion_tokens": sum(r.usage.completion_tokens for r in responses),
        "prompt_tokens": sum(r.usage.prompt_tokens for r in responses),
        "texts": [r.text for r in responses],
    }


def summarise(parts: list[dict[str, Any]]) -> dict[str, Any]:
    calls = sum(p["calls"] for p in parts)
    seconds = sum(p["seconds"] for p in parts)
    completion = sum(p["completion_tokens"] for p in parts)
    prompt = sum(p["prompt_tokens"] for p in parts)
    return {
        "calls": calls,
        "seconds": round(seconds, 3),
        "calls_per_s": round(calls / seconds, 2),
        "tokens_per_s": round(completion / seconds, 1),
        "total_tokens_per_s": round((prompt + completion) / seconds, 1),
        "texts": [t for p in parts for t in p["texts"]],
    }


def alternate(sides: dict[str, Callable[[list[LMRequest]], list[LMResponse]]], requests: list[LMRequest], block: int) -> dict[str, dict[str, Any]]:
    """Run every side on the same blocks of requests, rotating who goes first, so that all sides
    see the same (time-varying) machine load; each side has its own model and KV cache."""
    parts: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    names = list(sides)
    for k in range(0, len(requests), block):
        chunk = requests[k : k + block]
        shift = (k // block) % len(names)
        for name in names[shift:] + names[:shift]:
            parts[name].append(measure(sides[name], chunk))
    return {name: summarise(p) for name, p in parts.items()}


class Raw:
    """llama-cpp-python used directly. ``threads`` None: the library's defaults (generation on half
    the cores, prompt evaluation on all of them); otherwise the thread counts LlamaCppLM uses, so
    that (a) vs (b) measures promptopt's overhead and nothing else."""

    def __init__(self, threads: int | None) -> None:
        import llama_cpp

        kwargs = {} if threads is None else {"n_threads": threads, "n_threads_batch": threads}
        self.llm = llama_cpp.Llama(model_path=default_model_path(), n_ctx=2048, seed=0, verbose=False, **kwargs)
        for messages in WARMUP:
            self.llm.create_chat_completion(messages, temperature=0.0, max_tokens=MAX_TOKENS)

    def __call__(self, requests: list[LMRequest]) -> list[LMResponse]:
        out = []
        for req in requests:
            result = self.llm.create_chat_completion(req.message_dicts, temperature=0.0, max_tokens=req.max_tokens)
            usage = result["usage"]
            out.append(LMResponse(texts=[result["choices"][0]["message"]["content"]], usage=Usage(usage["prompt_tokens"], usage["completion_tokens"])))
        return out


def stack(max_concurrency: int, cache_dir: str, tag: str) -> Any:
    lm = make_lm("embedded", cache=os.path.join(cache_dir, f"{tag}.sqlite"), max_concurrency=max_concurrency)
    lm.inner.inner.inner.load()
    lm.complete([LMRequest.chat(messages, max_tokens=MAX_TOKENS) for messages in WARMUP])
    return lm


def stack_overhead(requests: list[LMRequest], cache_dir: str) -> float:
    """Microseconds the stack adds per request, on an instant backend (load-independent view of
    the same overhead the ratio measures): cache lookup and write, ledger, limiter."""
    backend = ScriptedLM(lambda r: "positive")
    lm = CachedLM(LedgeredLM(LimitedLM(backend), Ledger()), os.path.join(cache_dir, "overhead.sqlite"))
    started = time.perf_counter()
    lm.complete(requests)
    with_stack = time.perf_counter() - started
    started = time.perf_counter()
    backend.complete(requests)
    bare = time.perf_counter() - started
    return (with_stack - bare) / len(requests) * 1e6


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import llama_cpp

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_cpp.__version__,
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="requests per run (default 200)")
    parser.add_argument("--interleaved-n", type=int, default=40, help="requests of the interleaved comparison (default 40: raw is slow there)")
    parser.add_argument("--block", type=int, default=10, help="requests per alternation block (default 10)")
    parser.add_argument("--raw-defaults-n", type=int, default=10, help="requests for raw llama-cpp-python with its default threads (0: skip)")
    parser.add_argument("--no-write", action="store_true", help="print only, do not write the results file")
    args = parser.parse_args(argv)
    console = Console()
    grouped, _ = load_requests(args.n)
    _, interleaved_small = load_requests(args.interleaved_n)
    load_before = os.getloadavg()
    cache_dir = tempfile.mkdtemp(prefix="promptopt-bench-")
    lm1, lm2 = stack(1, cache_dir, "c1"), stack(2, cache_dir, "c2")
    threads = lm1.inner.inner.inner.n_threads
    raw = Raw(threads)
    console.log(f"{len(grouped)} requests in blocks of {args.block}: raw / stack c=1 / stack c=2 (empty caches), alternating")
    main_runs = alternate({"raw": raw, "stack_c1": lm1.complete, "stack_c2": lm2.complete}, grouped, args.block)
    raw_all, c1, c2 = main_runs["raw"], main_runs["stack_c1"], main_runs["stack_c2"]

    console.log("warm cache")
    ledger = lm1.ledger
    hits_before, calls_before = ledger.snapshot()["cache_hits"], ledger.snapshot()["calls"]
    rounds = 10
    started = time.perf_counter()
    for _ in range(rounds):
        warm_out = lm1.complete(grouped)
    warm_seconds = time.perf_counter() - started
    assert all(r.cached for r in warm_out) and ledger.snapshot()["calls"] == calls_before
    hits = ledger.snapshot()["cache_hits"] - hits_before
    warm = {"calls": hits, "seconds": round(warm_seconds, 4), "calls_per_s": round(hits / warm_seconds, 1), "tokens_per_s": None}

    console.log(f"interleaved submission, {len(interleaved_small)} requests: raw / stack c=1, alternating")
    inter_runs = alternate({"raw": raw, "stack_c1": stack(1, cache_dir, "inter").complete}, interleaved_small, args.block)
    raw_inter, stack_inter = inter_runs["raw"], inter_runs["stack_c1"]
    raw_defaults = None
    if args.raw_defaults_n:
        console.log(f"raw llama-cpp-python with its default threads, {args.raw_defaults_n} requests, alternating with the stack")
        pair = alternate({"raw_defaults": Raw(None), "stack_c1": stack(1, cache_dir, "defaults").complete}, grouped[: args.raw_defaults_n], args.block)
        raw_defaults = {name: _public(row) for name, row in pair.items()}
    load_after = os.getloadavg()
    overhead_us = stack_overhead(grouped, cache_dir)

    stack_best = max((c1, c2), key=lambda r: r["calls_per_s"])
    same_texts = sum(a == b for a, b in zip(raw_all["texts"], c1["texts"])) / len(grouped)
    results = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {**machine(), "loadavg_1m_before": round(load_before[0], 2), "loadavg_1m_after": round(load_after[0], 2)},
        "workload": {
            "requests": len(grouped),
            "source": "instruction_induction/execute/sentiment.json",
            "instructions": len(INSTRUCTIONS),
            "max_tokens": MAX_TOKENS,
            "temperature": 0.0,
            "model": Path(default_model_path()).name,
            "block": args.block,
        },
        "raw": _public(raw_all),
        "stack_c1": _public(c1),
        "stack_c2": _public(c2),
        "warm_cache": warm,
        "interleaved": {"requests": len(interleaved_small), "raw": _public(raw_inter), "stack_c1": _public(stack_inter), "speedup": round(stack_inter["calls_per_s"] / raw_inter["calls_per_s"], 2)},
        "raw_library_default_threads": raw_defaults,
        "threads": threads,
        "best_concurrency": 1 if stack_best is c1 else 2,
        "ratio_vs_raw": round(stack_best["calls_per_s"] / raw_all["calls_per_s"], 3),
        "ratio_vs_raw_c1": round(c1["calls_per_s"] / raw_all["calls_per_s"], 3),
        "cache_hits_per_s": warm["calls_per_s"],
        "stack_overhead_us_per_request": round(overhead_us, 1),
        "raw_ms_per_request": round(1000 / raw_all["calls_per_s"], 1),
        "stack_matches_raw_outputs": round(same_texts, 3),
    }

    table = Table(title=f"Embedded LM throughput ({len(grouped)} requests, max_tokens={MAX_TOKENS}, greedy)")
    for col in ("setting", "calls/s", "tokens/s", "seconds"):
        table.add_column(col, justify="right" if col != "setting" else "left")
    for name, row in (("(a) raw llama-cpp-python", raw_all), ("(b) stack, concurrency 1", c1), ("(b) stack, concurrency 2", c2), ("(c) warm cache", warm)):
        table.add_row(name, f"{row['calls_per_s']:,}", "-" if row["tokens_per_s"] is None else f"{row['tokens_per_s']:,}", f"{row['seconds']}")
    if raw_defaults:
        row = raw_defaults["raw_defaults"]
        table.add_row(f"raw, library default threads ({row['calls']})", f"{row['calls_per_s']}", f"{row['tokens_per_s']}", f"{row['seconds']}")
    table.add_row(f"interleaved {len(interleaved_small)}: raw", f"{raw_inter['calls_per_s']}", f"{raw_inter['tokens_per_s']}", f"{raw_inter['seconds']}")
    table.add_row(f"interleaved {len(interleaved_small)}: stack c=1", f"{stack_inter['calls_per_s']}", f"{stack_inter['tokens_per_s']}", f"{stack_inter['seconds']}")
    console.print(table)
    console.print(
        f"ratio_vs_raw = {results['ratio_vs_raw']} (target >= 0.95), cache_hits_per_s = {results['cache_hits_per_s']:,} (target >= 5000), "
        f"stack overhead {overhead_us:.0f} us/request (raw call {1000 / raw_all['calls_per_s']:.0f} ms), "
        f"outputs identical to raw: {same_texts:.0%}, load average {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores"
    )
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "texts"}


if __name__ == "__main__":
    sys.exit(main())
