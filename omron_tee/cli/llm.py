"""``omron-tee llm``: a private completion from the command line, and checking a saved one.

    omron-tee llm complete --validator URL --validator-hotkey SS58 --policy policy.toml "The capital of France is"
    omron-tee receipt verify llm-receipt.json --policy policy.toml   (one check for every receipt)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from omron_tee.errors import OmronTeeError
from omron_tee.reasons import Reason


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("llm", help="private LLM completions (the prompt sealed to an attested enclave)",
                              description="Private, streamed, receipted completions through a validator that relays what it cannot read. See docs/LLM.md.")
    ls = p.add_subparsers(dest="llm_cmd", required=True, metavar="SUBCOMMAND")
    c = ls.add_parser("complete", help="stream a private completion to stdout",
                      description="Attest the validator's LLM miners with this client's own nonce and policy, seal the prompt to one, "
                      "and print the completion as its sealed chunks arrive (each checked); the receipt covers the whole output.")
    # Each flag also has bittensor's dotted spelling, as the neurons use (--validator.hotkey ...).
    c.add_argument("prompt", help="the text the model continues (a base model: completion, not chat)")
    c.add_argument("--validator", "--validator.url", dest="validator", required=True, help="the validator's API URL, e.g. http://127.0.0.1:8092")
    c.add_argument("--validator-hotkey", "--validator.hotkey", dest="validator_hotkey", required=True, help="the validator's hotkey (requests are signed for it)")
    c.add_argument("--policy", "--client.policy", dest="policy", required=True, help="attestation policy file (TOML) this client trusts (`omron-tee policy init` writes one)")
    c.add_argument("--model", "--llm.model", dest="model", default=None, help="model id (default: the shipped default LLM)")
    c.add_argument("--model-sha256", "--llm.sha256", dest="model_sha256", default=None, help="pin the model's sha256 (default: the pinned hash of the default LLM)")
    c.add_argument("--max-tokens", "--llm.max_tokens", dest="max_tokens", type=int, default=32, help="new tokens at most (default: %(default)s)")
    c.add_argument("--receipt", default=None, help="save the receipt (with the completion) to this file; check it with `omron-tee receipt verify`")
    c.add_argument("--wallet.name", dest="wallet_name", default="default", help="this client's coldkey name (default: %(default)s)")
    c.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default", help="the hotkey that signs the requests (default: %(default)s)")
    c.add_argument("--wallet.path", dest="wallet_path", default=str(Path.home() / ".bittensor" / "wallets"), help="wallets folder (default: %(default)s)")
    c.set_defaults(handler=_complete)


def _complete(args: argparse.Namespace) -> int:
    from omron_tee.attestation.validate.policy import Policy
    from omron_tee.client import PrivateClient
    from omron_tee.config import load_wallet
    from omron_tee.exchange.requester import Answer
    from omron_tee.models.llama import DEFAULT_MODEL_ID, DEFAULT_SHA256, default_spec
    from omron_tee.models.registry import ModelRegistry
    from omron_tee.models.spec import ModelSpec
    from omron_tee.validator.neuron import build_verifiers

    policy = Policy.load(args.policy)
    model = args.model or DEFAULT_MODEL_ID
    if args.model_sha256:
        try:
            sha = bytes.fromhex(args.model_sha256)
        except ValueError:
            sha = b""
        if len(sha) != 32:
            raise OmronTeeError("--model-sha256 must be 64 hex characters", reason=Reason.CONFIG)
    elif model == DEFAULT_MODEL_ID:
        sha = DEFAULT_SHA256
    else:
        raise OmronTeeError("--model-sha256 is required for a model other than the default", reason=Reason.CONFIG)
    # The client pins the model by hash: the receipt must sign exactly this one (no local file needed).
    import dataclasses

    pinned: ModelSpec = dataclasses.replace(default_spec(), model_id=model, sha256=sha)
    wallet = load_wallet(args)

    async def go() -> Answer:
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        client = PrivateClient(args.validator, args.validator_hotkey, wallet, policy=policy, verifiers=build_verifiers(policy),
                               models=ModelRegistry([pinned]))
        final = None
        try:
            async for part in client.stream(model, args.prompt, max_tokens=args.max_tokens):
                if isinstance(part, Answer):
                    final = part
                else:
                    sys.stdout.write(decoder.decode(part.data))
                    sys.stdout.flush()
        finally:
            await client.aclose()
        assert final is not None
        if args.receipt:
            client.receipt_file(final).save(args.receipt)
        return final

    a = asyncio.run(go())
    print()
    n = len(a.result.tokens)
    ttft = f"; first after {a.ttft_s * 1000:.0f} ms" if a.ttft_s is not None else ""
    print(f"[{n} tokens from miner {a.miner_hotkey}{ttft}; receipt verified]", file=sys.stderr)
    if args.receipt:
        print(f"[receipt saved to {args.receipt}; check it with `omron-tee receipt verify`]", file=sys.stderr)
    return 0
