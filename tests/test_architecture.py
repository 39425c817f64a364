"""The import rules of docs/ARCHITECTURE.md, on full module paths: lower layers never import
higher ones, no library module imports a command-line module, and there are no import cycles.

Every ``import`` counts, function-local ones included (a function-local import that breaks a
cycle at load time is still a cycle in the design); only ``if TYPE_CHECKING:`` blocks are
skipped. The checker itself is tested on planted violations, so a rule cannot rot into a
test that passes on anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "omron_tee"

_ALL = ("attestation", "channel", "chain", "protocol", "models", "workloads", "wire", "enclave", "exchange", "miner", "validator", "client",
        "config", "cli", "devnet", "zk", "untrusted", "errors", "reasons", "transparency", "doctor")


def _except(*allowed: str) -> set[str]:
    """Every package but ``allowed`` (and ``reasons``, which every layer may name)."""
    return {f"omron_tee.{p}" for p in _ALL if p not in allowed and p != "reasons"}


_NEURON_SIDES = {"omron_tee.client", "omron_tee.cli", "omron_tee.devnet", "omron_tee.doctor"}

# module (or package) -> module prefixes it must never import (docs/ARCHITECTURE.md draws these layers)
FORBIDDEN: dict[str, set[str]] = {
    "omron_tee.reasons": _except() | {"omron_tee.reasons"},
    "omron_tee.errors": _except("errors"),
    "omron_tee.untrusted": _except("errors", "untrusted"),
    "omron_tee.config": _except("errors", "config"),
    "omron_tee.attestation": _except("errors", "untrusted", "attestation"),
    "omron_tee.transparency": _except("errors", "untrusted", "transparency"),
    "omron_tee.channel": _except("errors", "untrusted", "channel"),
    "omron_tee.chain": _except("errors", "chain", "config"),
    "omron_tee.models": _except("errors", "models"),
    "omron_tee.protocol": _except("errors", "untrusted", "attestation", "channel", "protocol"),
    "omron_tee.workloads": _except("errors", "untrusted", "models", "protocol", "workloads"),
    "omron_tee.wire": _except("errors", "untrusted", "protocol", "wire"),
    "omron_tee.zk": _except("errors", "untrusted", "models", "zk", "config"),
    "omron_tee.enclave": _except("errors", "untrusted", "attestation", "channel", "protocol", "models", "config", "enclave", "zk"),
    "omron_tee.exchange": _except("errors", "untrusted", "attestation", "channel", "protocol", "models", "workloads", "wire", "exchange"),
    "omron_tee.miner": {"omron_tee.validator", *_NEURON_SIDES},
    "omron_tee.validator": {"omron_tee.miner", *_NEURON_SIDES},
    "omron_tee.client": {"omron_tee.miner", "omron_tee.validator", "omron_tee.chain", "omron_tee.enclave", "omron_tee.cli", "omron_tee.devnet"},
    "omron_tee.devnet": {"omron_tee.cli"},
    "omron_tee.doctor": {"omron_tee.cli", "omron_tee.devnet"},
    # The validator's reward rule is pure, its store is SQLite only, its schedule sees neurons and workloads only.
    "omron_tee.validator.reward": _except(),
    "omron_tee.validator.store": _except(),
    "omron_tee.validator.schedule": _except("chain", "workloads"),
    "omron_tee.validator.weights": _except(),
    "omron_tee.validator.metrics": _except(),
}
# Where a lower layer reaches up on purpose (docs/ARCHITECTURE.md says why).
ALLOWED = {
    # The validator's default local policy uses enclave.measurement to know this release's measurement.
    ("omron_tee.validator", "omron_tee.enclave.measurement"),
}
# Which modules may know which workload they carry: the workloads themselves, and the few entry points
# that are about one workload by definition (the OpenAI completions adapter, the SDK's complete(), demos, CLIs).
WORKLOAD_AWARE = ("omron_tee.workloads", "omron_tee.validator.api.openai", "omron_tee.client", "omron_tee.devnet", "omron_tee.cli")
GENERIC_WORKLOAD_MODULES = ("omron_tee.workloads", "omron_tee.workloads.base")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in it, except ``if TYPE_CHECKING:`` blocks)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    package = root.name

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text())
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == package:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == package]
            deps.update(r for r in map(resolve, names) if r and r != mod)
        graph[mod] = deps
    return graph


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _rule_for(module: str, forbidden: dict[str, set[str]]) -> tuple[str, set[str]] | None:
    """The most specific rule covering ``module``."""
    keys = [k for k in forbidden if _under(module, k)]
    return (max(keys, key=len), forbidden[max(keys, key=len)]) if keys else None


def is_cli(module: str) -> bool:
    return module.split(".")[-1] in ("cli", "__main__") or _under(module, "omron_tee.cli")


def layering_violations(graph: dict[str, set[str]], forbidden: dict[str, set[str]] = FORBIDDEN, allowed=frozenset(ALLOWED)) -> list[str]:
    out = []
    for mod, deps in sorted(graph.items()):
        rule = _rule_for(mod, forbidden)
        for dep in sorted(deps):
            if not is_cli(mod) and is_cli(dep):
                out.append(f"{mod} imports the command-line module {dep}")
                continue
            if is_cli(mod) or rule is None or any(_under(mod, a) and _under(dep, b) for a, b in allowed):
                continue
            if any(_under(dep, f) for f in rule[1]) and not _under(dep, rule[0]):
                out.append(f"{mod} imports {dep} (forbidden for {rule[0]})")
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def workload_leaks(graph: dict[str, set[str]]) -> list[str]:
    """Modules outside ``WORKLOAD_AWARE`` that import a particular workload (not just the seam)."""
    return [f"{mod} imports {dep}" for mod, deps in sorted(graph.items()) for dep in sorted(deps)
            if _under(dep, "omron_tee.workloads") and dep not in GENERIC_WORKLOAD_MODULES and not any(_under(mod, a) for a in WORKLOAD_AWARE)]


def test_no_module_outside_the_workloads_knows_which_workload_it_carries() -> None:
    leaks = workload_leaks(import_graph())
    assert not leaks, "workload-specific imports:\n" + "\n".join(leaks)


def test_a_planted_workload_leak_is_caught(tmp_path: Path) -> None:
    root = _plant(tmp_path, {
        "workloads/base.py": "", "workloads/llm.py": "from omron_tee.workloads import base\n",
        "validator/prober.py": "from omron_tee.workloads.base import Workload\nfrom omron_tee.workloads.llm import Prompt\n",
    })
    assert workload_leaks(import_graph(root)) == ["omron_tee.validator.prober imports omron_tee.workloads.llm"]


def test_every_module_is_covered_by_a_rule_or_is_a_top_level_entry_point() -> None:
    top = {"omron_tee", "omron_tee.__main__"}
    uncovered = [m for m in import_graph() if _rule_for(m, FORBIDDEN) is None and m not in top and not is_cli(m)]
    assert not uncovered, f"modules without a layering rule: {uncovered}"


def test_layer_imports() -> None:
    bad = layering_violations(import_graph())
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


# --- the checker itself, on planted violations -------------------------------------------------


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "omron_tee"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return root


def test_a_planted_upward_import_is_caught(tmp_path: Path) -> None:
    root = _plant(tmp_path, {
        "errors.py": "",
        "attestation/evidence.py": "def f():\n    from omron_tee.validator.core import Validator  # reaching up, even inside a function\n",
        "validator/core.py": "from omron_tee.attestation.evidence import f\n",
        "validator/helper.py": "from omron_tee.cli.attestation import main\n",
        "cli/attestation.py": "",
        "channel/stream.py": "from omron_tee.workloads.tensor import Tensor\n",
        "workloads/tensor.py": "",
    })
    bad = layering_violations(import_graph(root))
    assert "omron_tee.attestation.evidence imports omron_tee.validator.core (forbidden for omron_tee.attestation)" in bad
    assert "omron_tee.validator.helper imports the command-line module omron_tee.cli.attestation" in bad
    assert "omron_tee.channel.stream imports omron_tee.workloads.tensor (forbidden for omron_tee.channel)" in bad
    assert not any(b.startswith("omron_tee.validator.core") for b in bad)  # downward imports are fine


def test_a_planted_cycle_is_caught(tmp_path: Path) -> None:
    root = _plant(tmp_path, {
        "models/registry.py": "from omron_tee.models.runtimes import load\n",
        "models/runtimes.py": "def load():\n    from omron_tee.models.onnx import Model\n",
        "models/onnx.py": "from omron_tee.models import registry\n",
        "models/spec.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from omron_tee.models.registry import X\n",
    })
    assert import_cycles(import_graph(root)) == [["omron_tee.models.onnx", "omron_tee.models.registry", "omron_tee.models.runtimes"]]


@pytest.mark.parametrize("module", ["omron_tee.cli", "omron_tee.cli.attestation", "omron_tee.cli.__main__", "omron_tee.miner.__main__"])
def test_cli_modules_are_recognised(module: str) -> None:
    assert is_cli(module)
