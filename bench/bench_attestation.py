"""Verifications per second with cached collateral: omron-tee's verifiers beside the libraries.

    .venv/bin/python bench/bench_attestation.py [--rounds 15] [--seconds-per-batch 0.1]

For SGX and TDX, each round times a batch of ``dcap_qvl.verify`` on the real
published quote with its collateral (parsed once, as a cache holds it), then
a batch of ``SgxVerifier``/``TdxVerifier.verify`` (parse, PCK identity,
collateral lookup in the store, dcap-qvl, claims) on the same quote at the
same time; rounds alternate so that both see the same machine state. It
prints the median rate of each and the ratio (target: ours >= 90 % of the
library's). For SEV-SNP it prints the rate of ``SnpVerifier.verify`` on the
real report (chain, VCEK binding, ECDSA P-384) beside the report signature
check alone with ``cryptography``, and for NVIDIA the rate of
``NvidiaVerifier.verify``. The vectors are in ../shared/testvectors.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dcap_qvl  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature  # noqa: E402

from omron_tee.attestation.abi import snp as snp_abi  # noqa: E402
from omron_tee.attestation.collateral.store import CollateralStore  # noqa: E402
from omron_tee.attestation.testing import vectors  # noqa: E402
from omron_tee.attestation.verify.certs import load_certificates  # noqa: E402
from omron_tee.attestation.verify.dcap import SgxVerifier, TdxVerifier  # noqa: E402
from omron_tee.attestation.verify.nvidia import NvidiaVerifier  # noqa: E402
from omron_tee.attestation.verify.snp import SnpVerifier  # noqa: E402


def batch_rate(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def calibrate(fn: Callable[[], object], seconds: float) -> int:
    for _ in range(20):
        fn()
    t = time.perf_counter()
    for _ in range(50):
        fn()
    per = (time.perf_counter() - t) / 50
    return max(10, int(seconds / per))


def interleaved(a: Callable[[], object], b: Callable[[], object], rounds: int, seconds: float) -> tuple[float, float, float]:
    """Median rates of ``a`` and ``b``, and the median of the per-round ratios b/a (robust to drift)."""
    n = calibrate(a, seconds)
    ra, rb = [], []
    for i in range(rounds):
        if i % 2:  # alternate the order, too
            rb.append(batch_rate(b, n))
            ra.append(batch_rate(a, n))
        else:
            ra.append(batch_rate(a, n))
            rb.append(batch_rate(b, n))
    return statistics.median(ra), statistics.median(rb), statistics.median(y / x for x, y in zip(ra, rb))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seconds-per-batch", type=float, default=0.1)
    args = ap.parse_args(argv)
    if not vectors.available():
        print(f"test vectors not found at {vectors.TESTVECTORS}", file=sys.stderr)
        return 2

    store = CollateralStore()
    store.load_path(vectors.SGX_COLLATERAL)
    store.load_path(vectors.TDX_COLLATERAL)
    print(f"omron-tee attestation bench: Python {platform.python_version()}, dcap-qvl {dcap_qvl.__version__}, {platform.machine()}")
    print(f"{args.rounds} interleaved rounds of ~{args.seconds_per_batch:.2f}s batches; medians\n")
    print(f"{'evidence':<10} {'library verify/s':>17} {'omron-tee verify/s':>19} {'ratio':>7}  (median of per-round ratios)")
    ok = True
    for name, evidence, now, verifier, coll_path in (
        ("SGX", vectors.sgx_evidence(), vectors.SGX_NOW, SgxVerifier(store), vectors.SGX_COLLATERAL),
        ("TDX", vectors.tdx_evidence(), vectors.TDX_NOW, TdxVerifier(store), vectors.TDX_COLLATERAL),
    ):
        quote = evidence.quote
        coll = dcap_qvl.QuoteCollateralV3.from_json(coll_path.read_text())
        lib = lambda q=quote, c=coll, t=now: dcap_qvl.verify(q, c, t)  # noqa: E731
        ours = lambda v=verifier, e=evidence, t=now: v.verify(e, now=t)  # noqa: E731
        assert ours().tcb_status == lib().status  # same verdict before timing
        r_lib, r_ours, ratio = interleaved(lib, ours, args.rounds, args.seconds_per_batch)
        ok &= ratio >= 0.90
        print(f"{name:<10} {r_lib:>17.0f} {r_ours:>19.0f} {ratio:>6.1%}")

    report = vectors.SNP_REPORT.read_bytes()
    snp_ev = vectors.snp_evidence()
    vcek_key = load_certificates(vectors.SNP_VCEK.read_bytes(), "vcek")[0].public_key()
    parsed = snp_abi.parse(report)
    sig = encode_dss_signature(parsed.signature_r, parsed.signature_s)

    def raw_sig() -> None:
        vcek_key.verify(sig, report[: snp_abi.SIGNED_LEN], ec.ECDSA(hashes.SHA384()))  # type: ignore[union-attr]

    snp = SnpVerifier()
    snp_now = time.time()
    r_sig, r_snp, snp_ratio = interleaved(raw_sig, lambda: snp.verify(snp_ev, now=snp_now), args.rounds, args.seconds_per_batch)
    print(f"{'SEV-SNP':<10} {r_sig:>17.0f} {r_snp:>19.0f} {snp_ratio:>6.1%}   (library column: the report's ECDSA P-384 check alone)")
    nv = NvidiaVerifier()
    nv_ev = vectors.nvidia_evidence()
    n = calibrate(lambda: nv.verify(nv_ev, now=snp_now), args.seconds_per_batch)
    r_nv = statistics.median(batch_rate(lambda: nv.verify(nv_ev, now=snp_now), n) for _ in range(max(3, args.rounds // 3)))
    print(f"{'NVIDIA':<10} {'':>17} {r_nv:>19.0f}")
    print(f"\nSGX/TDX target (>= 90 % of dcap-qvl's own rate): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
