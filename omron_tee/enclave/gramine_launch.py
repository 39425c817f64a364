"""The miner's options inside a Gramine SGX enclave, and the checks they pass.

The interpreter's command line is fixed in the manifest (``python3 -I -B -m
omron_tee.cli enclave gramine-miner``) because anything the host could put
there (``-c CODE``, another module) would run arbitrary code under this
enclave's MRENCLAVE. The operator chooses the miner's options through one
environment variable, ``OMRON_TEE_MINER_ARGS`` (shell-quoted), the only one
the manifest lets in. They go through the miner's own flag parser, so an
unknown flag is refused; ``--enclave`` is forced to ``sgx`` (a host asking
for another backend is refused, not ignored); the wallet is read from the
``/wallets`` mount unless the options name another path.
"""

from __future__ import annotations

import argparse
import shlex

ENV = "OMRON_TEE_MINER_ARGS"
WALLETS = "/wallets"


class LaunchError(Exception):
    pass


def miner_argv(raw: str, parser: argparse.ArgumentParser) -> list[str]:
    """The miner's argv for the options in ``raw`` (checked with the miner's ``parser``)."""
    try:
        args = shlex.split(raw)
    except ValueError as e:
        raise LaunchError(f"{ENV} is not valid shell quoting: {e}") from None
    parser.exit_on_error = False
    try:
        ns, unknown = parser.parse_known_args(args)
    except argparse.ArgumentError as e:
        raise LaunchError(f"{ENV}: {e}") from None
    except SystemExit:  # the parser printed its own message
        raise LaunchError(f"{ENV}: the miner's flag parser refused these options (see above)") from None
    if unknown:
        raise LaunchError(f"{ENV}: unknown option(s) {' '.join(unknown)}")
    if getattr(ns, "enclave", "auto") not in ("auto", "sgx"):
        raise LaunchError(f"{ENV}: --enclave {ns.enclave} inside an SGX enclave; the enclave attests with sgx only")
    out = list(args)
    if not any(a == "--wallet.path" or a.startswith("--wallet.path=") for a in args):
        out += ["--wallet.path", WALLETS]
    return out + ["--enclave", "sgx"]  # argparse keeps the last value: sgx, whatever came before
