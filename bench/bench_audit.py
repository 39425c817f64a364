"""What the audit log costs a validator, and what its proofs and chain writes weigh.

    .venv/bin/python bench/bench_audit.py [--outcomes 20000] [--entries 1000000]

Side by side in one run, CPU time from the process's own counter (``time.process_time``):
- scoring ``--outcomes`` benchmark outcomes over 16 miners with the score book as the
  validator runs it (audit log on, flushed every 200 outcomes as the validator flushes about
  once a second) and with the log off; per outcome and their ratio;
- the RFC 9162 log at ``--entries`` entries: appending, the first root (every subtree
  hashed once), a later root (cached), an inclusion proof; its size;
- the auditor replaying the logged outcomes (entries per second);
- the sizes of entries, of the on-chain commitments, and of a proof at 10^3..10^9 entries.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omron_tee.attestation.evidence import TeeType  # noqa: E402
from omron_tee.attestation.validate.releases import Release  # noqa: E402
from omron_tee.transparency import records  # noqa: E402
from omron_tee.transparency.merkle import MerkleLog  # noqa: E402
from omron_tee.validator.audit import replay  # noqa: E402
from omron_tee.validator.scoring import Outcome, ScoreBook  # noqa: E402

MINERS = [(f"5{'ABCDEFGHJKLMNPQRSTUVWXYZ'[i]}{'x' * 46}", i + 1) for i in range(16)]


def outcomes(n: int, seed: int = 0) -> list[Outcome]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        hk, uid = MINERS[i % len(MINERS)]
        if rng.random() < 0.05:
            out.append(Outcome(hk, uid, False, "timeout", None, None, None))
        else:
            out.append(Outcome(hk, uid, True, "ok", 0.004 + rng.random() * 0.004, True, True))
    return out


def score(book: ScoreBook, outs: list[Outcome], t0: float) -> float:
    start = time.process_time()
    for i, o in enumerate(outs):
        book.update(o, now=t0 + i * 0.01)
        if i % 200 == 199:
            book.flush()
    book.flush()
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outcomes", type=int, default=20000)
    ap.add_argument("--entries", type=int, default=1_000_000)
    args = ap.parse_args()
    outs = outcomes(args.outcomes)
    with tempfile.TemporaryDirectory() as d:
        on_t, off_t = [], []
        for rep in range(3):  # interleaved, so drift in the machine's speed hits both
            off = ScoreBook(Path(d) / f"off{rep}.sqlite", audit=False)
            off_t.append(score(off, outs, 1.8e9))
            off.close()
            on = ScoreBook(Path(d) / f"on{rep}.sqlite")
            on_t.append(score(on, outs, 1.8e9))
            entries = on.store.audit_entries()
            on.close()
        on_us, off_us = min(on_t) / len(outs) * 1e6, min(off_t) / len(outs) * 1e6
        t = time.process_time()
        r = replay(entries, validator_hotkey="v")
        replay_s = time.process_time() - t
        assert not r.problems
    sizes = {k: len(records.encode(e)) for k, e in {
        "outcome": records.OutcomeEntry(1.8e9 + 0.123456, MINERS[0][0], 1, True, "ok", 0.0051234567, True, True, "benchmark", "tee"),
        "weights (16 miners)": records.WeightsEntry(123456, 2, 16, {h: u for h, u in MINERS}, {str(u): 1 / 16 for _, u in MINERS}),
        "receipt": records.ReceiptEntry(1.8e9, "ab" * 32, MINERS[0][0], "cd" * 32),
    }.items()}
    commit_audit = len(records.AuditCommitment("0123456789abcdef", 10**9, bytes(32)).to_commitment().encode())
    commit_release = len(Release(TeeType.TDX, bytes(48), "v1.4.0").to_commitment().encode())

    log = MerkleLog()
    t = time.process_time()
    for i in range(args.entries):
        log.append_hash(i.to_bytes(32, "big"))
    append_us = (time.process_time() - t) / args.entries * 1e6
    t = time.process_time()
    root = log.root()
    first_root_s = time.process_time() - t
    log.append_hash(bytes(32))
    t = time.process_time()
    log.root()
    later_root_ms = (time.process_time() - t) * 1000
    t = time.process_time()
    for i in range(100):
        path = log.inclusion_proof(i * (args.entries // 100))
    proof_ms = (time.process_time() - t) * 10
    assert len(root) == 32
    proof_json = len(json.dumps(records.InclusionProof("v" * 48, 1, args.entries, bytes(32), tuple(path), b"x" * sizes["receipt"]).to_json()))

    print(f"score book, {len(outs)} outcomes over 16 miners (best of 3, CPU):")
    print(f"  audit log off {off_us:7.1f} µs per outcome")
    print(f"  audit log on  {on_us:7.1f} µs per outcome   ratio {on_us / off_us:.2f}x  (+{on_us - off_us:.1f} µs)")
    print(f"auditor replay: {len(entries)} entries in {replay_s:.2f} s CPU = {len(entries) / replay_s:,.0f} entries/s")
    print(f"RFC 9162 log at {args.entries:,} entries: append {append_us:.2f} µs, first root {first_root_s:.2f} s, "
          f"later root {later_root_ms:.2f} ms, proof {proof_ms:.2f} ms; memory 32 B/entry ({args.entries * 32 / 2**20:.0f} MiB)")
    print(f"proof: {len(path)} hashes = {len(path) * 32} B, as JSON {proof_json} B; at 10^3 / 10^6 / 10^9 entries: "
          + " / ".join(f"{math.ceil(math.log2(n))} hashes" for n in (10**3, 10**6, 10**9)))
    print("entry sizes: " + ", ".join(f"{k} {v} B" for k, v in sizes.items()))
    print(f"chain writes: one audit commitment per weight set ({commit_audit} B), one per published build ({commit_release} B)")


if __name__ == "__main__":
    main()
