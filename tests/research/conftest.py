"""Loopback stand-ins for YouTube and the LLM.

``FileServer`` is a real HTTP server on 127.0.0.1 serving caption files (and anything else a test
puts in it), recording every path requested: yt-dlp fetches the captions an info JSON points at
from it, exactly as it would fetch them from YouTube. ``info_json`` writes such an info JSON (the
file ``yt-dlp --write-info-json --skip-download`` would write) for ``--info-json``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.llm_server import ChatServer

API_KEY = "sk-research-SECRET-0123456789"


@dataclass
class FileServer:
    """Serves ``files[path] = body``; every request's path lands in ``hits``."""

    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)

    def start(self) -> FileServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                owner.hits.append(self.path)
                body = owner.files.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                data = body if body is not None else b"not found"
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _serve
            do_POST = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def files() -> Iterator[FileServer]:
    server = FileServer().start()
    yield server
    server.stop()


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer().start()
    yield server
    server.stop()


InfoJson = Callable[..., Path]


@pytest.fixture
def info_json(files: FileServer, tmp_path: Path) -> InfoJson:
    """``info_json(manual={"en": {"vtt": text}}, automatic={...}, **meta) -> Path``."""

    def make(manual: dict[str, dict[str, str]] | None = None,
             automatic: dict[str, dict[str, str]] | None = None, **meta: Any) -> Path:
        video_id = meta.get("id", "vid00000001")

        def tracks(kind: str, langs: dict[str, dict[str, str]] | None) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for lang, formats in (langs or {}).items():
                out[lang] = []
                for ext, body in formats.items():
                    path = f"/{kind}/{video_id}/{lang}.{ext}"
                    files.files[path] = body.encode()
                    out[lang].append({"ext": ext, "url": files.base + path, "name": lang})
            return out

        info = {
            "id": video_id, "title": "RSI swing trading", "channel": "Trader Joe",
            "upload_date": "20240315", "duration": 754, "extractor": "youtube",
            "extractor_key": "Youtube", "webpage_url": f"https://www.youtube.com/watch?v={video_id}",
            "subtitles": tracks("manual", manual), "automatic_captions": tracks("auto", automatic),
            **meta,
        }
        path = tmp_path / f"{video_id}.info.json"
        path.write_text(json.dumps(info))
        return path

    return make


def llm_env(chat: ChatServer, **extra: str) -> dict[str, str]:
    """Environment that points Falcon's LLM client at the loopback chat server."""
    return {
        "FALCON_LLM__BASE_URL": chat.base_url,
        "FALCON_LLM__MODEL": "test-model",
        "FALCON_LLM__USD_PER_1K_INPUT_TOKENS": "0.01",
        "FALCON_LLM__USD_PER_1K_OUTPUT_TOKENS": "0.03",
        "FALCON_LLM_API_KEY": API_KEY,
        **extra,
    }


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, db_url: str, chat: ChatServer) -> dict[str, str]:
    """The ``falcon`` command's environment: the test database and the loopback LLM."""
    monkeypatch.setenv("FALCON_DATABASE_URL", db_url)
    env = llm_env(chat)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


VTT = """WEBVTT

00:00:05.000 --> 00:00:09.000
Buy when the 14 day RSI closes below 30.

00:00:12.000 --> 00:00:16.000
Sell when RSI goes back above 70.

00:00:20.000 --> 00:00:24.000
Always use a five percent stop loss.
"""


# --- the strategy spec --------------------------------------------------------------------------


@dataclass
class SpecKit:
    """Specs for tests: one the validator accepts, and hostile variants it must refuse."""

    valid: dict[str, Any]
    unknown_key: dict[str, Any]
    unknown_function: dict[str, Any]


@pytest.fixture
def spec_kit() -> SpecKit:
    """Specs in falcon.strategy's real schema, validated by its real ``load_spec``."""
    valid = {"name": "rsi swing", "description": "RSI(14) mean reversion from a video",
             "entry": "rsi(close, 14) < 30", "exit": "rsi(close, 14) > 70",
             "stop_loss": {"percent": 5}}
    return SpecKit(
        valid=valid,
        unknown_key={**valid, "python": "__import__('os').system('id')"},
        unknown_function={**valid, "entry": "system(close, 1) > 0 and rsi(close, 14) < 30"},
    )


def envelope(spec: dict[str, Any], **extra: Any) -> str:
    """An extraction answer as the LLM would give it."""
    return json.dumps({
        "summary": "Buy oversold RSI, sell overbought.", "spec": spec,
        "rules": [{"rule": "enter on RSI(14) < 30", "quote": "Buy when the 14 day RSI closes "
                   "below 30", "timestamp": "00:05"},
                  {"rule": "stop", "quote": "a ten percent stop", "timestamp": "00:20"}],
        "ambiguities": ["position size is not stated"], "confidence": 0.8, **extra,
    })
