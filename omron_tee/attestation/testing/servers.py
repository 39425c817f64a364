"""Local HTTP servers on 127.0.0.1 that answer like Intel PCS, AMD KDS or an OCSP responder, for tests.

Tests never reach the network: fetchers are pointed at these servers, which
serve collateral made by the test PKIs and log every request, so that tests
can count fetches.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from omron_tee.attestation.collateral.intel import IntelCollateral

Route = Callable[[str, dict, bytes], tuple[int, dict, bytes]]


@contextmanager
def fake_server(route: Route) -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server on 127.0.0.1 answering with ``route(path, query, body)``; yields (url, request log)."""
    log: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bytes) -> None:
            u = urllib.parse.urlsplit(self.path)
            log.append(u.path)
            status, headers, payload = route(u.path, dict(urllib.parse.parse_qsl(u.query)), body)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(b"")

        def do_POST(self) -> None:  # noqa: N802
            self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()


def pcs_route(coll: IntelCollateral) -> Route:
    q = coll.qvl

    def route(path: str, query: dict, body: bytes):
        if path.endswith("/certification/v4/tcb"):
            assert query["fmspc"] == coll.fmspc
            doc = '{"tcbInfo":' + q.tcb_info + ',"signature":"' + q.tcb_info_signature.hex() + '"}'
            return 200, {"TCB-Info-Issuer-Chain": urllib.parse.quote(q.tcb_info_issuer_chain)}, doc.encode()
        if path.endswith("/certification/v4/qe/identity"):
            doc = '{"enclaveIdentity":' + q.qe_identity + ',"signature":"' + q.qe_identity_signature.hex() + '"}'
            return 200, {"SGX-Enclave-Identity-Issuer-Chain": urllib.parse.quote(q.qe_identity_issuer_chain)}, doc.encode()
        if path.endswith("/pckcrl"):
            assert query["ca"] == coll.ca
            return 200, {"SGX-PCK-CRL-Issuer-Chain": urllib.parse.quote(q.pck_crl_issuer_chain)}, q.pck_crl
        if path.endswith("/rootcacrl"):
            return 200, {}, q.root_ca_crl.hex().encode()  # a PCCS answers in hex
        return 404, {}, b""

    return route
