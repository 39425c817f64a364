"""``omron-tee release publish|list``: the subnet owner's published builds, on chain.

    omron-tee release publish --label v1.4.0 [build flags as for `enclave measure`] --wallet.name owner
    omron-tee release withdraw --measurement HEX --wallet.name owner
    omron-tee release list [--min-age-blocks 100]

``publish`` computes the build's measurement exactly as ``omron-tee enclave measure``
does with the same flags (so anyone can reproduce it from the tagged checkout) and
commits, from the publisher's hotkey, the builds published now with this one added
(``--replace``: this one alone); a commitment lists at most three. ``withdraw``
commits them without one. ``--dry-run`` prints the commitment instead. ``list`` shows
the builds published now, each with the block it has been published since, and
whether it has passed a timelock of ``--min-age-blocks``. A validator whose policy has
``[releases]`` accepts only builds listed here and old enough.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from omron_tee.cli.chain_flags import open_chain
from omron_tee.errors import OmronTeeError

# Which reference value of each TEE is the release's measurement (what the evidence's claims carry).
PRIMARY = {"simulated": "measurement", "sgx": "mrenclave", "tdx": "mrtd", "sev-snp": "measurement"}


def register(subparsers: Any) -> None:
    from omron_tee.cli.chain_flags import add_chain_flags, add_wallet_flags
    from omron_tee.cli.enclave import add_build_flags

    p = subparsers.add_parser("release", help="the subnet owner's published builds (on chain)",
                              description="Publish the measurements of a release on chain, and list what was published.")
    rs = p.add_subparsers(dest="release_cmd", required=True, metavar="SUBCOMMAND")
    pub = rs.add_parser("publish", help="commit one build's measurement on chain (the subnet owner)",
                        description="Compute the measurement of one build (flags as for `omron-tee enclave measure`) and commit "
                        "it on chain from the wallet's hotkey, which the validators' policy names as publisher (default: the subnet's owner).")
    pub.add_argument("--label", required=True, help="the release's name, e.g. v1.4.0 (1-40 characters of A-Z a-z 0-9 . _ : + @ -)")
    add_build_flags(pub)
    add_chain_flags(pub)
    add_wallet_flags(pub, name="owner", whose="the publisher's")
    pub.add_argument("--replace", action="store_true", help="publish this build alone, withdrawing the others")
    pub.add_argument("--dry-run", action="store_true", help="print the commitment; publish nothing")
    pub.add_argument("--json", action="store_true", help="print one JSON object")
    pub.set_defaults(handler=publish_cmd)
    wd = rs.add_parser("withdraw", help="stop publishing one build (validators with [releases] refuse it from then on)")
    wd.add_argument("--measurement", required=True, help="the build's measurement (hex), as `release list` shows it")
    add_chain_flags(wd)
    add_wallet_flags(wd, name="owner", whose="the publisher's")
    wd.set_defaults(handler=withdraw_cmd)
    ls = rs.add_parser("list", help="the builds published on chain now, with the block each has been published since")
    add_chain_flags(ls)
    ls.add_argument("--publisher", default="owner", help='whose releases: "owner" (default: the subnet owner) or an ss58 hotkey')
    ls.add_argument("--min-age-blocks", type=int, default=0, help="say which builds have passed this timelock (the policy's releases.min_age_blocks)")
    ls.add_argument("--history", action="store_true", help="also every release commitment the chain keeps, oldest first "
                    "(the embedded chain keeps them all; subtensor only the latest)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=list_cmd)


def _fail(e: OmronTeeError | str) -> int:
    print(f"omron-tee release: error: {e}", file=sys.stderr)
    return 2


def build_release(args: argparse.Namespace):
    """The ``Release`` the build flags name (its measurement as ``enclave measure`` computes it)."""
    from omron_tee.attestation.evidence import TeeType
    from omron_tee.attestation.validate.releases import Release
    from omron_tee.cli.enclave import reference_values

    values = reference_values(args)
    if values.debug:
        raise OmronTeeError("this build is a debug enclave: production policies refuse it, so it is not published")
    return Release(TeeType(values.tee_type.value), bytes.fromhex(values.values[PRIMARY[values.tee_type.value]]), args.label)


def _published_now(chain: Any, hotkey: str) -> list[Any]:
    """The builds ``hotkey``'s latest release commitment lists."""
    from omron_tee.attestation.validate.releases import ReleaseLog

    log = ReleaseLog.from_commitments(((c.hotkey, c.block, c.data) for c in chain.commitments()), publisher=hotkey, block=0)
    return [p.release for p in sorted(log.releases, key=lambda p: p.block)]


def publish_cmd(args: argparse.Namespace) -> int:
    from omron_tee.attestation.validate.releases import release_set_text
    from omron_tee.chain.base import MAX_COMMITMENT_FIELDS
    from omron_tee.config import load_wallet

    try:
        release = build_release(args)
        if args.dry_run:
            text = release.to_commitment()
            print(json.dumps({"release": _release_json(release), "commitment": text}, indent=2) if args.json else text)
            return 0
        wallet = load_wallet(args)
        with open_chain(args) as chain:
            now = [] if args.replace else _published_now(chain, wallet.hotkey.ss58_address)
            builds = [r for r in now if (r.tee, r.measurement) != (release.tee, release.measurement)] + [release]
            if len(builds) > MAX_COMMITMENT_FIELDS:
                raise OmronTeeError(f"{len(now)} builds are published already and a commitment lists at most {MAX_COMMITMENT_FIELDS}: "
                                    "withdraw one (`omron-tee release withdraw`) or publish with --replace")
            text = release_set_text(builds)
            chain.commit(wallet, text)
            block = chain.block()
    except OmronTeeError as e:
        return _fail(e)
    if args.json:
        print(json.dumps({"release": _release_json(release), "commitment": text, "block": block}, indent=2))
    else:
        print(f"published {release.tee.value} build {release.measurement.hex()} as {release.label} at block {block}")
    return 0


def withdraw_cmd(args: argparse.Namespace) -> int:
    from omron_tee.attestation.validate.releases import release_set_text
    from omron_tee.config import load_wallet

    try:
        measurement = bytes.fromhex(args.measurement.removeprefix("0x"))
    except ValueError:
        return _fail(f"--measurement {args.measurement!r} is not hex")
    try:
        wallet = load_wallet(args)
        with open_chain(args) as chain:
            now = _published_now(chain, wallet.hotkey.ss58_address)
            kept = [r for r in now if r.measurement != measurement]
            if len(kept) == len(now):
                raise OmronTeeError(f"build {measurement.hex()[:16]}… is not published by {wallet.hotkey.ss58_address} now")
            chain.commit(wallet, release_set_text(kept))
            block = chain.block()
    except OmronTeeError as e:
        return _fail(e)
    print(f"withdrew build {measurement.hex()} at block {block}; {len(kept)} build(s) stay published")
    return 0


def _release_json(release: Any) -> dict[str, Any]:
    return {"tee": release.tee.value, "measurement": release.measurement.hex(), "label": release.label}


def list_cmd(args: argparse.Namespace) -> int:
    from omron_tee.attestation.validate.releases import ReleasePolicy, releases_in
    from omron_tee.validator.releases import read_releases

    try:
        with open_chain(args) as chain:
            log = read_releases(chain, ReleasePolicy(True, args.publisher, args.min_age_blocks))
            commits = chain.commitments() if args.history else ()
    except OmronTeeError as e:
        return _fail(e)
    rows = [{**_release_json(p.release), "block": p.block, "age_blocks": log.block - p.block,
             "earning": log.block - p.block >= args.min_age_blocks} for p in log.releases]
    history = []
    for c in commits:
        listed = releases_in(c.data) if c.hotkey == log.publisher else None
        if listed is not None:
            history.append({"block": c.block, "builds": [_release_json(r) for r in listed.values()]})
    if args.json:
        print(json.dumps({"publisher": log.publisher, "block": log.block, "releases": rows,
                          **({"history": history} if args.history else {})}, indent=2))
        return 0
    if args.history:
        print(f"release commitments by {log.publisher}, oldest first:")
        for h in history:
            builds = ", ".join(f"{b['label']} ({b['tee']} {b['measurement'][:12]}…)" for b in h["builds"]) or "none (everything withdrawn)"
            print(f"  block {h['block']:>7}  {builds}")
    print(f"builds published by {log.publisher} now, as of block {log.block}:" if rows else f"no build published by {log.publisher} (block {log.block})")
    for r in rows:
        state = "may earn" if r["earning"] else f"timelocked ({args.min_age_blocks - r['age_blocks']} blocks to go)"
        print(f"  block {r['block']:>7}  {r['tee']:<9} {r['label']:<16} {r['measurement'][:32]}…  {state}")
    return 0
