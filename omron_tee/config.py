"""Command-line configuration shared by the neurons: the subnet template's standard flags.

``--netuid``, ``--subtensor.network``, ``--subtensor.chain_endpoint``,
``--wallet.name``, ``--wallet.hotkey``, ``--wallet.path``, ``--logging.debug``, ``--logging.json``,
plus ``--chain.path`` for the embedded development chain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import bittensor as bt

from omron_tee.errors import ConfigError

T = TypeVar("T")

DEFAULT_HOME = Path(os.environ.get("OMRON_TEE_HOME", Path.home() / ".omron-tee"))
EMBEDDED = "embedded"
LOCAL_NETWORKS = {EMBEDDED}


def add_standard_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("subnet")
    g.add_argument("--netuid", type=int, default=1, help="subnet uid (default: 1)")
    g.add_argument("--subtensor.network", dest="network", default=EMBEDDED,
                   help="chain to use: 'embedded' (the built-in development chain, default), 'local' (a subtensor at ws://127.0.0.1:9944), 'test', 'finney', or a ws:// URL")
    g.add_argument("--subtensor.chain_endpoint", dest="chain_endpoint", default=None, help="explicit ws:// endpoint of a subtensor node (overrides --subtensor.network)")
    g.add_argument("--chain.path", dest="chain_path", default=DEFAULT_CHAIN_PATH,
                   help="SQLite file of the embedded chain; processes sharing it share one local network (default: %(default)s)")
    g.add_argument("--chain.create", dest="chain_create", action="store_true",
                   help="start a new embedded chain at --chain.path if there is none (without it a missing file named there is an error: a typo "
                   "would otherwise start an empty network); the default path is always created when missing")
    w = p.add_argument_group("wallet")
    w.add_argument("--wallet.name", dest="wallet_name", default="default", help="coldkey name (default: %(default)s)")
    w.add_argument("--wallet.hotkey", dest="wallet_hotkey", default="default", help="hotkey name (default: %(default)s)")
    w.add_argument("--wallet.path", dest="wallet_path", default=str(Path.home() / ".bittensor" / "wallets"), help="wallets folder (default: %(default)s)")
    lg = p.add_argument_group("logging")
    lg.add_argument("--logging.debug", dest="log_debug", action="store_true", help="verbose logs")
    lg.add_argument("--logging.info", dest="log_info", action="store_true", help="informational logs (the default)")
    lg.add_argument("--logging.json", dest="log_json", action="store_true", help="one JSON object per log line (time, level, logger, message)")


DEFAULT_CHAIN_PATH = str(DEFAULT_HOME / "embedded-chain.sqlite")


def embedded_chain_path(args: argparse.Namespace) -> str:
    """The embedded chain's file the flags name; ``ConfigError`` if it is missing at a path given by
    hand and ``--chain.create`` was not (a mistyped path must not start a fresh, empty network)."""
    path = Path(args.chain_path).expanduser()
    if not path.exists() and str(path) != str(Path(DEFAULT_CHAIN_PATH)) and not getattr(args, "chain_create", False):
        raise ConfigError(f"no embedded chain at {path}: check --chain.path, or pass --chain.create to start a new network there")
    return str(path)


def existing_chain_path(chain_path: str | None, hint: str) -> Path:
    """The embedded chain's file a read-only command names (default: the neurons'), which must exist:
    opening a missing one would create an empty chain. ``hint``: what to do when it is missing."""
    path = Path(chain_path or DEFAULT_CHAIN_PATH).expanduser()
    if not path.exists():
        raise ConfigError(f"no embedded chain at {path}: {hint}")
    return path


def network_of(args: argparse.Namespace) -> str:
    return args.chain_endpoint or args.network


def is_local(network: str) -> bool:
    return network in LOCAL_NETWORKS


def dev_attestation_key_path(chain_path: str | Path) -> Path:
    """Where a local network keeps its simulated-enclave attestation key (beside its chain file)."""
    p = Path(chain_path)
    return p.with_name(p.stem + ".simulated-attestation.key")


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"


class _JsonFormatter(_UtcFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record), "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()})


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_logging(args: argparse.Namespace, name: str) -> logging.Logger:
    """Dated UTC timestamps (or JSON lines with ``--logging.json``); information on stdout, warnings and
    errors on stderr (what pm2 files as out and error logs)."""
    level = logging.DEBUG if getattr(args, "log_debug", False) else logging.INFO
    formatter = _JsonFormatter() if getattr(args, "log_json", False) else _UtcFormatter(f"%(asctime)s %(levelname)-5s {name} %(message)s")
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(_Below(logging.WARNING))
    err.setLevel(logging.WARNING)
    for h in (out, err):
        h.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [out, err]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "websockets", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(f"omron_tee.{name}")


# glibc's malloc gives a freed block of a MiB or more back to the kernel (its mmap and trim thresholds
# follow the largest block freed, then trim the heap's top past twice that), so the next large message
# takes a page fault per 4 KiB, zeroed, for each of its copies: a 1 MiB tensor's exchange cost the miner
# about 2 ms more (bench/bench_large_tensor.py --default-allocator). Kept instead: blocks up to 32 MiB (the
# largest answer a validator reads) come from the heap, and up to 64 MiB of free heap is kept.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 64 << 20


def tune_allocator() -> bool:
    """Keep freed large buffers for reuse (glibc's ``mallopt``); False where the C library is not glibc."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
        return bool(libc.mallopt(m_mmap_threshold, _MMAP_THRESHOLD)) and bool(libc.mallopt(m_trim_threshold, _TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def run_async(main: "Coroutine[Any, Any, T]") -> T:
    """Run ``main`` on uvloop where it is installed (about 20 % less per-request overhead), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def check_port_free(ip: str, port: int, flag: str) -> None:
    """A clear error now, rather than announcing an endpoint and then failing to bind it."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as e:
            raise ConfigError(f"cannot listen on {ip}:{port} ({e.strerror}): choose another {flag}") from None


def load_wallet(args: argparse.Namespace) -> bt.Wallet:
    """The wallet named by the flags; a clear error if its hotkey file is missing."""
    wallet = bt.Wallet(name=args.wallet_name, hotkey=args.wallet_hotkey, path=args.wallet_path)
    hotkey_file = Path(args.wallet_path).expanduser() / args.wallet_name / "hotkeys" / args.wallet_hotkey
    if not hotkey_file.exists():
        raise ConfigError(
            f"no hotkey '{args.wallet_hotkey}' in wallet '{args.wallet_name}' under {args.wallet_path}: "
            f"create one with `omron-tee wallet create --wallet.name {args.wallet_name} --wallet.hotkey {args.wallet_hotkey}`"
        )
    return wallet


def create_wallet(name: str, hotkey: str, path: str | Path) -> bt.Wallet:
    """A password-less coldkey and hotkey (development and automation; keep such keys off mainnet)."""
    wallet = bt.Wallet(name=name, hotkey=hotkey, path=str(path))
    coldkey_file = Path(path).expanduser() / name / "coldkeypub.txt"
    if not coldkey_file.exists():
        wallet.create_new_coldkey(use_password=False, overwrite=True, suppress=True)
    hotkey_file = Path(path).expanduser() / name / "hotkeys" / hotkey
    if not hotkey_file.exists():
        wallet.create_new_hotkey(use_password=False, overwrite=True, suppress=True)
    return wallet
