"""LiteLLM against llama-cpp-python's real OpenAI-compatible server (marked server)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest

from promptopt.lm import Ledger, LiteLLM, default_model_path, make_lm

from _lm_helpers import chat, free_port

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    port = free_port()
    # One thread for prompt and generation: the server's default (all cores for the prompt) spins
    # and crawls on a busy machine. Logs go to a file, not a pipe: the server writes ~200 kB at
    # start-up and would block on a full pipe.
    log = (tmp_path_factory.mktemp("llama_server") / "server.log").open("w+")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", default_model_path(), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--n_threads", "1", "--n_threads_batch", "1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {log.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 120 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_max_tokens_is_honoured_by_the_server(llama_server):
    lm = LiteLLM("openai/smollm2", api_base=llama_server, api_key="sk-test-local-server")
    out = lm.complete([chat("Write a long story about a dragon.", max_tokens=5)])[0]
    assert out.ok and out.text
    assert 0 < out.usage.completion_tokens <= 5
    assert out.finish_reasons == ["length"]


def test_full_stack_over_the_server(llama_server, tmp_path):
    ledger = Ledger()
    lm = make_lm("openai/smollm2", api_base=llama_server, api_key="sk-test-local-server", cache=str(tmp_path / "c.sqlite"), ledger=ledger, max_concurrency=2)
    batch = [chat(f"Reply with the number {i}.", max_tokens=4) for i in range(3)]
    first = lm.complete(batch)
    assert all(r.ok and r.usage.completion_tokens <= 4 for r in first)
    second = lm.complete(batch)
    assert all(r.cached for r in second) and [r.text for r in second] == [r.text for r in first]
    assert ledger.snapshot()["calls"] == 3 and ledger.snapshot()["cache_hits"] == 3
