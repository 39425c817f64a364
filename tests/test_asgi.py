"""The miner's bare-ASGI layer (``wire.asgi``) against hostile and vanishing clients, driven through the
ASGI interface itself: bounded bodies, named refusals for unknown routes, errors that never leak,
and a streamed answer whose producer stops when its client goes away."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from omron_tee.errors import ProtocolError
from omron_tee.wire.asgi import HttpRequest, Responder, Router
from omron_tee.wire.server import MAX_BODY

log = logging.getLogger("test.asgi")


def _scope(method: str = "POST", path: str = "/x", headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b"") -> dict:
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": headers or []}


async def _call(app, scope: dict, messages: list[dict]) -> list[dict]:
    """What ``app`` sends for a request whose body arrives as ``messages`` (then the client waits forever)."""
    queue: asyncio.Queue = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)
    sent: list[dict] = []

    async def send(m: dict) -> None:
        sent.append(m)

    await asyncio.wait_for(app(scope, queue.get, send), timeout=5)
    return sent


def _status_and_json(sent: list[dict]) -> tuple[int, dict]:
    assert sent[0]["type"] == "http.response.start"
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


async def _echo(request: HttpRequest, out: Responder) -> None:
    body = await request.body()
    await out.bytes(json.dumps({"n": len(body), "target": request.target, "sig": request.headers.get("x-sig")}).encode())


def test_unknown_paths_and_methods_are_named_refusals() -> None:
    app = Router({("POST", "/x"): _echo}, log)
    status, body = _status_and_json(asyncio.run(_call(app, _scope(path="/nowhere"), [])))
    assert (status, body["error"]["reason"]) == (404, "no-route")
    status, body = _status_and_json(asyncio.run(_call(app, _scope(method="PUT"), [])))
    assert (status, body["error"]["reason"]) == (405, "no-route")


def test_body_arriving_in_pieces_headers_and_target() -> None:
    app = Router({("POST", "/x"): _echo}, log)
    headers = [(b"x-sig", b"first"), (b"x-sig", b"second")]  # a repeated header: the first counts, always
    sent = asyncio.run(_call(app, _scope(headers=headers, query=b"a=1"),
                             [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"c"}]))
    assert _status_and_json(sent) == (200, {"n": 3, "target": "/x?a=1", "sig": "first"})


def test_oversized_bodies_are_refused_by_declaration_and_as_they_arrive() -> None:
    app = Router({("POST", "/x"): _echo}, log)
    declared = _scope(headers=[(b"content-length", str(MAX_BODY + 1).encode())])
    status, body = _status_and_json(asyncio.run(_call(app, declared, [])))  # refused before a byte is read
    assert (status, body["error"]["reason"]) == (413, "too-large")
    status, body = _status_and_json(asyncio.run(_call(app, _scope(headers=[(b"content-length", b"-1")]), [])))
    assert status == 413
    piece = b"\0" * (1024 * 1024)
    flood = [{"type": "http.request", "body": piece, "more_body": True}] * 9  # undeclared, 9 MiB: cut off at the limit
    status, body = _status_and_json(asyncio.run(_call(app, _scope(), flood)))
    assert (status, body["error"]["reason"]) == (413, "too-large")


def test_a_client_gone_before_its_body_arrives_is_not_answered() -> None:
    app = Router({("POST", "/x"): _echo}, log)
    assert asyncio.run(_call(app, _scope(), [{"type": "http.request", "body": b"a", "more_body": True}, {"type": "http.disconnect"}])) == []


def test_errors_are_named_and_a_bug_says_nothing_of_what_it_held() -> None:
    async def refuses(request: HttpRequest, out: Responder) -> None:
        raise ProtocolError("not this")

    async def crashes(request: HttpRequest, out: Responder) -> None:
        raise KeyError("secret-input-bytes")

    app = Router({("POST", "/refuse"): refuses, ("POST", "/crash"): crashes}, log)
    status, body = _status_and_json(asyncio.run(_call(app, _scope(path="/refuse"), [])))
    assert (status, body["error"]["reason"]) == (400, "malformed-message")
    status, body = _status_and_json(asyncio.run(_call(app, _scope(path="/crash"), [])))
    assert (status, body["error"]["reason"]) == (500, "internal-error")
    assert "secret" not in json.dumps(body)


def test_a_streamed_answer_stops_producing_when_its_client_goes() -> None:
    produced, closed = [], asyncio.Event()

    async def chunks():
        try:
            for i in range(1000):
                produced.append(i)
                yield b"chunk"
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    async def stream(request: HttpRequest, out: Responder) -> None:
        await out.stream(chunks(), request.receive, media_type="application/octet-stream")

    async def run() -> list[dict]:
        queue: asyncio.Queue = asyncio.Queue()
        sent: list[dict] = []

        async def send(m: dict) -> None:
            sent.append(m)
            if len(sent) == 4:  # the head and three chunks, then the client hangs up
                queue.put_nowait({"type": "http.disconnect"})

        await asyncio.wait_for(Router({("GET", "/s"): stream}, log)(_scope("GET", "/s"), queue.get, send), timeout=5)
        assert closed.is_set()
        return sent

    sent = asyncio.run(run())
    assert len(produced) < 10  # not a thousand chunks for nobody
    assert all(m.get("more_body") for m in sent[1:])  # and no pretence of a complete answer


def test_a_producer_failing_mid_stream_ends_the_response_without_a_second_head() -> None:
    async def chunks():
        yield b"one"
        raise RuntimeError("boom")

    async def stream(request: HttpRequest, out: Responder) -> None:
        await out.stream(chunks(), request.receive, media_type="application/octet-stream")

    sent = asyncio.run(_call(Router({("GET", "/s"): stream}, log), _scope("GET", "/s"), []))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[1]["more_body"]  # the stream is left incomplete: the reader sees it truncated, never "done"


def test_a_whole_stream_ends_with_a_final_empty_body() -> None:
    async def chunks():
        yield b"a"
        yield b"b"

    async def stream(request: HttpRequest, out: Responder) -> None:
        await out.stream(chunks(), request.receive, media_type="application/octet-stream", headers={"Cache-Control": "no-store"})

    sent = asyncio.run(_call(Router({("GET", "/s"): stream}, log), _scope("HEAD", "/s"), []))  # HEAD is served as GET
    assert (b"cache-control", b"no-store") in sent[0]["headers"]
    assert [m.get("body") for m in sent[1:]] == [b"a", b"b", b""] and not sent[-1].get("more_body")


def test_lifespan_is_answered() -> None:
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = asyncio.run(_call(Router({}, log), {"type": "lifespan"}, messages))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


@pytest.mark.parametrize("kind", ["websocket"])
def test_other_protocols_are_not_served(kind: str) -> None:
    assert asyncio.run(_call(Router({}, log), {"type": kind}, [])) == []
