"""``omron-tee circuits build MODEL [--srs PATH | --dev-srs] [--cache DIR]``: EZKL artifacts of a model."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from omron_tee.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser("circuits", help="zk circuits of models (EZKL)", description="Build and inspect the EZKL circuits of models that declare the zk proof system.")
    cs = p.add_subparsers(dest="circuits_cmd", required=True)
    b = cs.add_parser(
        "build",
        help="build (or load from the cache) a model's circuit: settings, compiled circuit, keys",
        description="Turn a model's ONNX file into EZKL artifacts (private input, public output by default), "
        "calibrated on its sample inputs, cached under the model's sha256. Nothing is downloaded: pass a ceremony "
        "SRS file, or --dev-srs on the embedded local network (such an SRS can forge proofs).",
    )
    b.add_argument("model", help="a model id of the registry (e.g. diabetes-mlp) or a path to an ONNX file")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--srs", default=None, help="ceremony SRS file (production)")
    g.add_argument("--dev-srs", action="store_true", help="generate a development SRS (embedded network only; it CAN FORGE PROOFS)")
    b.add_argument("--network", default="embedded", help="network the circuit is for; --dev-srs is refused unless it is 'embedded' (default: %(default)s)")
    b.add_argument("--cache", default=None, help="cache folder (default: $OMRON_TEE_CIRCUITS or ~/.omron-tee/circuits)")
    b.add_argument("--input-visibility", default="private", choices=["private", "hashed", "public"],
                   help="the model input in the proof: private (default), hashed (its Poseidon hash is public), public")
    b.add_argument("--max-logrows", type=int, default=None, help="try to fit the circuit in 2^N rows first (default: 12)")
    b.add_argument("--json", action="store_true", help="print the circuit's description as JSON")
    b.set_defaults(handler=_build)


def _spec(model: str) -> Any:
    from pathlib import Path

    from omron_tee.models.registry import ModelRegistry

    reg = ModelRegistry.builtin()
    if model in reg:
        return reg.get(model)
    if Path(model).suffix == ".onnx" and Path(model).is_file():
        return reg.add_file(model, proof_systems=("tee", "zk"))
    raise ConfigError(f"{model!r} is neither a known model ({', '.join(reg.ids())}) nor an .onnx file")


def _build(args: argparse.Namespace) -> int:
    from omron_tee.zk.circuits import DEFAULT_MAX_LOGROWS, DEV_SRS_WARNING, build_circuit

    if not args.srs and not args.dev_srs:
        raise ConfigError("pass --srs PATH (a ceremony SRS file) or --dev-srs (embedded local network only)")
    spec = _spec(args.model)
    if args.dev_srs:
        bar = "!" * 78
        print(f"{bar}\n{DEV_SRS_WARNING}\n{bar}", file=sys.stderr)
    t0 = time.perf_counter()
    c = build_circuit(
        spec,
        cache_dir=args.cache,
        srs_path=args.srs,
        dev_network=args.network if args.dev_srs else None,
        max_logrows=args.max_logrows or DEFAULT_MAX_LOGROWS,
        input_visibility=args.input_visibility,
    )
    info = {
        "model": c.model_id,
        "model_sha256": c.model_sha256.hex(),
        "dir": str(c.dir),
        "settings": str(c.settings_path),
        "compiled": str(c.compiled_path),
        "vk": str(c.vk_path),
        "pk": str(c.pk_path),
        "srs": str(c.srs.path),
        "srs_sha256": c.srs.sha256.hex(),
        "circuit_id": c.circuit_id.hex(),
        "dev_srs": c.srs.dev,
        "logrows": c.logrows,
        "input_scale": c.input_scale,
        "output_scale": c.output_scale,
        "input_visibility": c.input_visibility,
        "output_visibility": c.output_visibility,
        "max_calibration_error": c.max_calibration_error,
        "atol": c.atol,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"circuit of {c.model_id} (sha256 {info['model_sha256'][:16]}…) in {c.dir}")
        print(f"  circuit id {info['circuit_id']} (settings + verifying key: a miner's and a validator's must be equal)")
        print(f"  2^{c.logrows} rows, scales in/out {c.input_scale}/{c.output_scale}, input {c.input_visibility}, output {c.output_visibility}")
        print(f"  quantisation error on calibration rows ≤ {c.max_calibration_error:.4g}; zk tolerance {c.atol:.4g}")
        print(f"  keys for SRS {c.srs.path} ({'DEVELOPMENT, can forge proofs' if c.srs.dev else 'ceremony'}): vk {c.vk_path.name}, pk {c.pk_path.name} (pk stays out of git)")
        print(f"  {info['seconds']:.1f}s")
    return 0
