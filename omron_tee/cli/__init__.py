"""The ``omron-tee`` command line.

    omron-tee localnet            a whole subnet on this machine (the main job)
    omron-tee wallet create       password-less local keys
    omron-tee receipt verify      check a saved receipt offline (every workload's, the OpenAI path's included)
    omron-tee evidence verify     judge attestation evidence against a policy
    omron-tee collateral ...      export / import attestation collateral
    omron-tee enclave detect|measure
    omron-tee policy init         write a working, commented attestation policy
    omron-tee status              a running network as a table (metagraph; a validator's scores and weights)
    omron-tee miner ... / validator ...   the neurons (same flags as neurons/*.py)

A mistake of the user's is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from omron_tee.errors import OmronTeeError
from omron_tee.reasons import Reason

# Subcommand groups, one module each; each has register(subparsers).
_PLUGINS = ["omron_tee.cli.attestation", "omron_tee.cli.enclave", "omron_tee.cli.zk", "omron_tee.cli.llm", "omron_tee.cli.policy", "omron_tee.cli.status",
            "omron_tee.cli.release", "omron_tee.cli.audit", "omron_tee.cli.conformance"]


def _wallet(sub: Any) -> None:
    p = sub.add_parser("wallet", help="local keys", description="Manage local keys (see also bittensor's btcli).")
    ws = p.add_subparsers(dest="wallet_cmd", required=True)
    c = ws.add_parser("create", help="create a password-less coldkey and hotkey (development; keep such keys off mainnet)")
    c.add_argument("--wallet.name", dest="wallet_name", default="default", help="coldkey name (default: %(default)s)")
    c.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default", help="hotkey name (default: %(default)s)")
    c.add_argument("--wallet.path", dest="wallet_path", default=str(Path.home() / ".bittensor" / "wallets"), help="wallets folder (default: %(default)s)")
    c.set_defaults(handler=_wallet_create)


def _wallet_create(args: argparse.Namespace) -> int:
    from omron_tee.config import create_wallet

    w = create_wallet(args.wallet_name, args.wallet_hotkey, args.wallet_path)
    print(f"wallet {args.wallet_name}/{args.wallet_hotkey} under {args.wallet_path}")
    print(f"  coldkey {w.coldkeypub.ss58_address}")
    print(f"  hotkey  {w.hotkey.ss58_address}")
    return 0


def _receipt(sub: Any) -> None:
    p = sub.add_parser("receipt", help="saved receipts", description="Work with receipts saved by the client SDK.")
    rs = p.add_subparsers(dest="receipt_cmd", required=True)
    v = rs.add_parser("verify", help="check a saved receipt offline",
                      description="Check a receipt file: the evidence against the policy (as of now, unless --now), "
                      "the binding of the enclave keys, the enclave's signature, the output (or completion) hash when it is included, "
                      "and that the file's model id names the model the receipt signs.")
    v.add_argument("file", help="a receipt file, or a saved response of the OpenAI-compatible path")
    v.add_argument("--policy", required=True, help="attestation policy file (TOML) to judge the evidence by")
    v.add_argument("--now", default=None, help="judge the evidence (collateral, TCB, revocation) as of this time (RFC 3339; default: now)")
    v.add_argument("--model-sha256", default=None, help="require the receipt to be for this model hash")
    v.add_argument("--proof", default=None, help="an inclusion proof (PrivateClient.inclusion_proof): also check the receipt is in the "
                   "validator's audit log at a root it committed on chain")
    v.add_argument("--subtensor.network", dest="network", default="embedded", help="the chain to read the committed root from, with --proof")
    v.add_argument("--netuid", type=int, default=1, help="subnet uid, with --proof (default: %(default)s)")
    v.add_argument("--chain.path", dest="chain_path", default=None, help="the embedded chain's file, with --proof")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(handler=_receipt_verify)


def _receipt_verify(args: argparse.Namespace) -> int:
    from omron_tee.attestation.validate.policy import Policy
    from omron_tee.cli.attestation import parse_time
    from omron_tee.exchange.receipt_file import verify_receipt_file
    from omron_tee.models.registry import ModelRegistry
    from omron_tee.validator.neuron import build_verifiers
    from omron_tee.workloads import default_workloads

    try:
        data = json.loads(Path(args.file).read_text())
    except OSError as e:
        raise OmronTeeError(f"cannot read {args.file}: {e.strerror}", reason=Reason.CONFIG) from None
    except ValueError:
        raise OmronTeeError(f"{args.file} is not JSON", reason=Reason.CONFIG) from None
    policy = Policy.load(args.policy)
    now = parse_time(args.now) if args.now else None
    try:
        model_hash = bytes.fromhex(args.model_sha256) if args.model_sha256 else None
    except ValueError:
        raise OmronTeeError(f"--model-sha256 {args.model_sha256!r} is not hex", reason=Reason.CONFIG) from None
    if isinstance(data, dict) and isinstance(data.get("omron_tee"), dict) and "receipt_file" in data["omron_tee"]:
        data = data["omron_tee"]["receipt_file"]  # a whole response of the OpenAI-compatible path, saved as it came
    releases, commitments, proof = None, None, None
    if args.proof or policy.releases.require_published:
        from omron_tee.cli.chain_flags import open_chain
        from omron_tee.validator.releases import read_releases

        with open_chain(args) as chain:
            commitments = [(c.hotkey, c.block, c.data) for c in chain.commitments()]
            releases = read_releases(chain, policy.releases) if policy.releases.require_published else None
    if args.proof:
        from omron_tee.transparency.records import InclusionProof

        try:
            proof = InclusionProof.from_json(json.loads(Path(args.proof).read_text()))
        except OSError as e:
            raise OmronTeeError(f"cannot read {args.proof}: {e.strerror}", reason=Reason.CONFIG) from None
        except ValueError:
            raise OmronTeeError(f"{args.proof} is not JSON", reason=Reason.CONFIG) from None
    check = verify_receipt_file(data, policy=policy, verifiers=build_verifiers(policy), workloads=default_workloads(),
                                models=ModelRegistry.builtin(), now=now, model_hash=model_hash, releases=releases)
    reasons, committed_at = list(check.reasons), None
    if proof is not None:
        from omron_tee.transparency.records import check_inclusion

        receipt_json = data.get("receipt") if isinstance(data, dict) else None
        problems, committed_at = check_inclusion(proof, receipt_json=receipt_json, miner_hotkey=check.miner_hotkey, commitments=commitments or [])
        reasons += [f"inclusion: {p}" for p in problems]
    ok = not reasons
    if args.json:
        print(json.dumps({"valid": ok, "reasons": reasons, "workload": check.workload, "model_sha256": check.model_hash.hex(),
                          "model_id": check.model_id, "miner_hotkey": check.miner_hotkey, "issued_at": check.issued_at,
                          **({"logged_by": proof.validator_hotkey, "entry": proof.index, "committed_at_block": committed_at} if proof else {})}))
    else:
        print(f"{check.workload or 'unreadable'} receipt: {'VALID' if ok else 'INVALID'}")
        print(f"  signed: model sha256 {check.model_hash.hex() or '?'}, by the enclave key the evidence binds")
        print(f"  labels in the file (not signed): model {check.model_id!r}, miner {check.miner_hotkey or '?'}")
        if proof is not None and committed_at is not None:
            print(f"  logged by validator {proof.validator_hotkey} as entry {proof.index} of {proof.size}, root committed on chain at block {committed_at}")
        for r in reasons:
            print(f"  - {r}")
    return 0 if ok else 1


def _neurons(sub: Any) -> None:
    for name, module in (("miner", "omron_tee.miner.neuron"), ("validator", "omron_tee.validator.neuron")):
        p = sub.add_parser(name, help=f"run a {name} (flags as neurons/{name}.py; `omron-tee {name} --help`)", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(handler=lambda a, m=module, n=name: importlib.import_module(m).main([x for x in a.rest if x != "--"], prog=f"omron-tee {n}"))


def build_parser() -> argparse.ArgumentParser:
    from omron_tee import __version__
    from omron_tee.cli.localnet import add_parser as add_localnet

    p = argparse.ArgumentParser(prog="omron-tee", description="omron-tee: private, verified inference for Bittensor with TEE attestation.")
    p.add_argument("--version", action="version", version=f"omron-tee {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_localnet(sub)
    _wallet(sub)
    _receipt(sub)
    for name in _PLUGINS:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        mod.register(sub)
    _neurons(sub)
    return p


_NEURONS = {"miner": "omron_tee.miner.neuron", "validator": "omron_tee.validator.neuron"}


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:2] == ["miner", "doctor"]:
        from omron_tee.cli.doctor import main as doctor

        return doctor(args_in[2:])
    if args_in and args_in[0] in _NEURONS:
        # The neurons parse their own flags (--help included), exactly as neurons/*.py do.
        rest = args_in[1:]
        return int(importlib.import_module(_NEURONS[args_in[0]]).main(rest[1:] if rest[:1] == ["--"] else rest, prog=f"omron-tee {args_in[0]}") or 0)
    parser = build_parser()
    args = parser.parse_args(args_in)
    try:
        return int(args.handler(args) or 0)
    except OmronTeeError as e:
        print(f"omron-tee: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
