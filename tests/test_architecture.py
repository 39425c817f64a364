"""The import rules of docs/ARCHITECTURE.md: lower layers never import higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "omron_tee"

# package (or module) -> omron_tee subpackages it must never import
FORBIDDEN = {
    "untrusted": {"attestation", "channel", "chain", "protocol", "models", "wire", "enclave", "exchange", "miner", "validator", "client", "config", "localnet", "cli", "devnet"},
    "errors": {"attestation", "channel", "chain", "protocol", "models", "wire", "enclave", "exchange", "miner", "validator", "client", "config", "localnet", "cli", "devnet"},
    "attestation": {"channel", "chain", "protocol", "models", "wire", "enclave", "exchange", "miner", "validator", "client", "localnet", "cli", "devnet"},
    "channel": {"attestation", "chain", "protocol", "models", "wire", "enclave", "exchange", "miner", "validator", "client", "config", "localnet", "cli", "devnet"},
    "chain": {"attestation", "channel", "protocol", "models", "wire", "enclave", "exchange", "miner", "validator", "client", "localnet", "cli", "devnet"},
    "protocol": {"chain", "models", "wire", "enclave", "exchange", "miner", "validator", "client", "localnet", "cli", "devnet"},
    "wire": {"attestation", "chain", "models", "enclave", "exchange", "miner", "validator", "client", "localnet", "cli", "devnet"},
    "exchange": {"chain", "wire", "enclave", "miner", "validator", "client", "localnet", "cli", "devnet"},
    "enclave": {"chain", "wire", "exchange", "miner", "validator", "client", "localnet", "devnet"},
    "miner": {"validator", "client", "localnet", "cli", "devnet"},
    "validator": {"miner", "client", "localnet", "cli", "devnet"},
    "client": {"miner", "chain", "localnet", "cli", "devnet"},
    # zk/ sits beside models/: circuits, provers and verifiers know nothing of the network.
    "zk": {"chain", "wire", "enclave", "exchange", "miner", "validator", "client", "localnet", "llm", "devnet"},
    # devnet/ starts processes for tests and benchmarks: nothing of the product imports it.
    "devnet": {"localnet", "cli"},
    # llm/ is a feature slice across layers; its lower modules obey their layer's rules.
    "llm/model": {"chain", "wire", "enclave", "exchange", "miner", "validator", "client", "localnet", "devnet"},
    "llm/stream": {"chain", "wire", "enclave", "exchange", "miner", "validator", "client", "localnet", "devnet"},
    "llm/enclave": {"chain", "wire", "validator", "client", "localnet", "devnet"},
    "llm/requester": {"chain", "wire", "enclave", "miner", "validator", "client", "localnet", "devnet"},
    "llm/transport": {"chain", "enclave", "miner", "validator", "client", "localnet", "devnet"},
    "llm/scoring": {"chain", "wire", "enclave", "exchange", "miner", "validator", "client", "localnet", "devnet"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("omron_tee."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("omron_tee."):
                    found.add(alias.name.split(".")[1])
    return found


def _files(unit: str) -> list[Path]:
    pkg = ROOT / unit
    return sorted(pkg.rglob("*.py")) if pkg.is_dir() else [ROOT / f"{unit}.py"]


@pytest.mark.parametrize("unit", sorted(FORBIDDEN))
def test_layer_imports(unit: str) -> None:
    bad = []
    for f in _files(unit):
        # A package's own command-line plug-in is an entry point, not part of its layer.
        if f.name == "cli.py" and f.parent != ROOT:
            continue
        for target in _imports(f) & FORBIDDEN[unit]:
            bad.append(f"{f.relative_to(ROOT)} imports omron_tee.{target}")
    assert not bad, "layering broken:\n" + "\n".join(bad)
