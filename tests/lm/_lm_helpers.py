"""Helpers of the LM layer's tests."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from promptopt.lm import LMRequest


def chat(text: str, *, system: str | None = None, **params: Any) -> LMRequest:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return LMRequest.chat(messages, **params)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeOpenAIServer:
    """A real HTTP server speaking the OpenAI chat-completions wire format, on 127.0.0.1.

    ``replies`` is a queue of (status, headers, body) to send, one per request; when it is empty
    the server answers 200 with ``default_text``. Every request body is kept in ``bodies``.
    """

    def __init__(self, default_text: str = "ok") -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.replies: list[tuple[int, dict[str, str], dict[str, Any]]] = []
        self.default_text = default_text
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                owner.bodies.append(body)
                owner.headers.append(dict(self.headers))
                if owner.replies:
                    status, headers, payload = owner.replies.pop(0)
                else:
                    status, headers, payload = 200, {}, owner.completion(owner.default_text, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.api_base = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    @staticmethod
    def completion(text: str, body: dict[str, Any]) -> dict[str, Any]:
        n = int(body.get("n", 1))
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1,
            "model": body.get("model", "test"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} for i in range(n)],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2 * n, "total_tokens": 7 + 2 * n},
        }

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.replies.append((status, headers or {}, {"error": {"message": message, "type": "test_error"}}))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
