"""``omron-tee miner doctor``: the verdict validators will reach on this miner, and why (``omron_tee.doctor``).

    omron-tee miner doctor --wallet.name miner --chain.path ~/.omron-tee/embedded-chain.sqlite
    omron-tee miner doctor --wallet.name miner --subtensor.network finney --netuid 2 --policy subnet-policy.toml

Exit status 0 when the validator's appraisal, run here, verifies this miner; 1 when it does
not (each finding says why and what to do); 2 for a mistake in the command.
"""

from __future__ import annotations

import argparse
import json
import sys

from omron_tee.errors import OmronTeeError


def build_parser() -> argparse.ArgumentParser:
    from omron_tee.cli.chain_flags import add_chain_flags, add_wallet_flags

    p = argparse.ArgumentParser(prog="omron-tee miner doctor", description="Run, on this miner's machine and as its hotkey, the appraisal "
                                "validators run (against the policy and the releases published on chain), and ask each validator for its "
                                "signed verdict on this miner; say in plain words what each concludes and why.")
    add_wallet_flags(p, name="default", whose="the miner's")
    add_chain_flags(p)
    p.add_argument("--policy", default=None, help="the validators' attestation policy (TOML); on the embedded chain the default is the "
                   "policy.toml the local network wrote beside its chain, else its development policy")
    p.add_argument("--workload", default=None, help="probe this workload (tensor, zk, llm) instead of the one a validator would pick")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds for each exchange (default: %(default)s)")
    p.add_argument("--no-validators", action="store_true", help="do not ask the validators for their verdicts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: list[str]) -> int:
    from omron_tee.cli.chain_flags import open_chain
    from omron_tee.config import is_local, load_wallet, run_async
    from omron_tee.doctor import diagnose, render
    from omron_tee.models.registry import ModelRegistry
    from omron_tee.validator.neuron import load_policy

    args = build_parser().parse_args(argv)
    try:
        wallet = load_wallet(args)
        models = ModelRegistry.builtin()
        if is_local(args.network) and not args.policy:
            from pathlib import Path

            from omron_tee.config import existing_chain_path

            args.chain_path = str(existing_chain_path(args.chain_path, "is the network running? (name it with --chain.path)"))
            written = Path(args.chain_path).with_name("policy.toml")  # what `omron-tee localnet` wrote for its validators
            args.policy = str(written) if written.exists() else None
        if not is_local(args.network) and not args.policy:
            from omron_tee.errors import ConfigError

            raise ConfigError(f"on '{args.network}' the doctor needs --policy FILE: the attestation policy the subnet's validators use")
        policy = load_policy(argparse.Namespace(policy=args.policy, chain_path=args.chain_path), args.network, models)
        with open_chain(args) as chain:
            d = run_async(diagnose(chain, wallet, policy=policy, models=models, timeout=args.timeout, ask_validators=not args.no_validators,
                                       workload=args.workload))
    except OmronTeeError as e:
        print(f"omron-tee miner doctor: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        def f(x):
            return None if x is None else {"source": x.source, "verdict": x.verdict, "reason": x.reason, "message": x.message, "signed": x.signed,
                                           "advice": x.advice, "details": x.details}
        print(json.dumps({"hotkey": d.hotkey, "uid": d.uid, "endpoint": d.endpoint, "ok": d.ok, "problems": list(d.problems), "local": f(d.local),
                          "validators": [f(v) for v in d.validators]}, indent=2))
    else:
        print("\n".join(render(d)))
    return 0 if d.ok else 1
