"""A stand-in for the validator's SignedClient that talks to in-process trusted apps (no HTTP), for tests."""

from __future__ import annotations

import contextlib
import json


class InProcessClient:
    """The validator's SignedClient minus HTTP: JSON both ways, straight into trusted apps by URL.

    ``corrupt_attest(json)`` and ``corrupt_infer(bytes)`` let a test play a miner that alters its answers."""

    def __init__(self, apps=None, *, corrupt_attest=None, corrupt_infer=None) -> None:
        self.apps = dict(apps or {})
        self.corrupt_attest = corrupt_attest
        self.corrupt_infer = corrupt_infer

    async def post(self, base_url, path, payload, *, receiver=None, timeout=None, max_bytes=None, max_items=None):
        from omron_tee.protocol import AttestRequest

        out = json.loads(json.dumps(self.apps[base_url].attest(AttestRequest.from_json(json.loads(json.dumps(payload)))).to_json()))
        return self.corrupt_attest(out) if self.corrupt_attest else out

    @contextlib.asynccontextmanager
    async def stream(self, base_url, path, payload, *, receiver=None, timeout=None, max_bytes=None, body=None, content_type=None):
        from omron_tee.errors import MinerError
        from omron_tee.protocol import InferBatch, InferRequest

        app = self.apps[base_url]
        try:
            if path == "/infer/batch":
                data = await app.answer_batch(InferBatch.from_bytes(body))
            else:
                request = InferRequest.from_bytes(body) if body is not None else InferRequest.from_json(json.loads(json.dumps(payload)))
                data = await app.answer_whole(app.open(request))
        except Exception as e:  # what the HTTP layer would turn into a refusal
            raise MinerError(str(e), reason=getattr(e, "reason", "error")) from None
        data = self.corrupt_infer(data) if self.corrupt_infer else data

        class Body:
            headers: dict = {}

            async def __aiter__(self):
                yield data

            async def read(self):
                return data

        yield Body()
