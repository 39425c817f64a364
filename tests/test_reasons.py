"""One ``Reason`` enum for every refusal: no string literal where a reason is given, no dead member."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from omron_tee.reasons import Reason

ROOT = Path(__file__).resolve().parent.parent / "omron_tee"
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _reason_positions(tree: ast.AST) -> list[ast.expr]:
    """The expressions that give a reason: ``reason=`` arguments and class defaults, the reason of
    a (reason, message) refusal appended to a list, of ``_fail(...)`` and ``Outcome(...)``, of a
    ``{"reason": ...}`` entry, and what ``.reason`` is compared with."""
    out: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "reason":
            out.append(node.value)
        elif isinstance(node, ast.keyword) and node.arg == "reason_codes":
            out.append(node.value)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
            if "reason" in names and node.value is not None:
                value = node.value
                if isinstance(value, ast.Tuple) and isinstance(targets[0], ast.Tuple):  # reason, message = ..., ...
                    value = value.elts[[e.id for e in targets[0].elts if isinstance(e, ast.Name)].index("reason")]
                out.append(value)
        elif isinstance(node, ast.List):  # [(reason, message), ...] refusals
            out.extend(e.elts[0] for e in node.elts if isinstance(e, ast.Tuple) and len(e.elts) == 2 and isinstance(e.elts[1], (ast.Constant, ast.JoinedStr)))
        elif isinstance(node, ast.Call):
            fn = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if fn == "_fail" and len(node.args) >= 3:
                out.append(node.args[2])
            elif fn == "Outcome" and len(node.args) >= 4:
                out.append(node.args[3])
            elif fn == "append" and node.args and isinstance(node.args[0], ast.Tuple) and len(node.args[0].elts) == 2:
                out.append(node.args[0].elts[0])
        elif isinstance(node, ast.Dict):
            out.extend(v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant) and k.value == "reason")
        elif isinstance(node, ast.Compare) and isinstance(node.left, (ast.Attribute, ast.Name)):
            if getattr(node.left, "attr", getattr(node.left, "id", None)) == "reason":
                out.extend(n for c in node.comparators for n in ast.walk(c) if isinstance(n, ast.expr))
    return out


def test_no_reason_is_a_string_literal() -> None:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "reasons.py":
            continue
        tree = ast.parse(path.read_text())
        # Not reasons: a subscript's key (e["path"]) and getattr's attribute name.
        skip = {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
        skip |= {id(n.args[1]) for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "getattr" and len(n.args) > 1}
        given = [n for pos in _reason_positions(tree) for n in ast.walk(pos) if id(n) not in skip]  # a ternary's branches too
        for node in given:
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SLUG.match(node.value):
                bad.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.value!r} (use Reason.{node.value.upper().replace('-', '_')})")
    assert not bad, "reasons given as string literals:\n" + "\n".join(bad)


def test_reasons_are_unique_stable_slugs_and_all_used() -> None:
    values = [r.value for r in Reason]
    assert len(values) == len(set(values))
    assert all(SLUG.match(v) for v in values)
    assert all(r.name == r.value.upper().replace("-", "_") for r in Reason)
    used = set()
    for path in ROOT.rglob("*.py"):
        if path.name != "reasons.py":
            used.update(re.findall(r"\bReason\.([A-Z0-9_]+)\b", path.read_text()))
    unknown = sorted(used - set(Reason.__members__))
    assert not unknown, f"Reason members used but not defined: {unknown}"
    dead = sorted(set(Reason.__members__) - used)
    assert not dead, f"Reason members nothing gives: {dead}"


def test_a_reason_is_its_slug_everywhere() -> None:
    import json

    assert Reason.TOO_DEEP == "too-deep" and f"{Reason.TOO_DEEP}" == "too-deep" and str(Reason.TOO_DEEP) == "too-deep"
    assert json.dumps({"reason": Reason.TOO_DEEP}) == '{"reason": "too-deep"}'
