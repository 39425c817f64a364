"""``omron-tee enclave detect`` and ``omron-tee enclave measure``.

detect   what this machine offers for each TEE type and, when a backend is
         not usable, why (exit 0 when some hardware TEE is usable, else 1).
measure  the reference values a validator puts in its policy for this release
         of the trusted app, with a TOML snippet ready for the policy file.
gramine-miner
         the miner's entry point inside a Gramine SGX enclave (the manifest's fixed
         command line); its options come from $OMRON_TEE_MINER_ARGS, checked.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Any

from omron_tee.attestation.evidence import TeeType
from omron_tee.enclave import reference as ref
from omron_tee.enclave.host import HostPaths
from omron_tee.errors import ConfigError, OmronTeeError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("enclave", help="detect TEE hardware; print reference measurements",
                              description="Inspect this machine's TEE support and compute the measurements validators allow-list.")
    es = p.add_subparsers(dest="enclave_cmd", required=True, metavar="SUBCOMMAND")

    d = es.add_parser("detect", help="which TEE backends this machine offers, and why others are not usable",
                      description="Check every backend (sgx via Gramine, tdx, sev-snp, nvidia GPUs, simulated) and say why "
                      "each is or is not usable here. Exit status 0 when a hardware TEE is usable, 1 when none is.")
    d.add_argument("--json", action="store_true", help="print a JSON list")
    d.add_argument("--root", default="/", help=argparse.SUPPRESS)  # inspect another root (tests, mounted images)
    d.set_defaults(handler=detect_cmd)

    m = es.add_parser(
        "measure",
        help="print the measurement a validator should put in its policy",
        description="Print the reference values of the trusted app for a validator's policy, and a TOML snippet. "
        "simulated: from the code and the shipped models. sgx: from the enclave's .sig (--sig) or gramine-sgx-sign's "
        "output (--sign-output). tdx: from a quote of the reference image (--quote). sev-snp: from the image with "
        "sev-snp-measure (--ovmf ...) or from a report (--report). --live attests on this machine instead.",
    )
    add_build_flags(m)
    m.add_argument("--live", action="store_true", help="attest on this machine's TEE and read the values from its evidence")
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.add_argument("--root", default="/", help=argparse.SUPPRESS)
    m.set_defaults(handler=measure_cmd)

    g = es.add_parser("gramine-miner", help="run the miner inside a Gramine SGX enclave (the manifest's entry point)",
                      description="The entry point gramine/omron-tee-miner.manifest.template fixes. The miner's flags come from "
                      "the OMRON_TEE_MINER_ARGS environment variable (shell-quoted), are checked with the miner's own parser, "
                      "and --enclave is forced to sgx. See gramine/README.md.")
    g.set_defaults(handler=gramine_miner_cmd)


def add_build_flags(m: argparse.ArgumentParser) -> None:
    """The flags that name one build of the trusted app (``enclave measure``, ``release publish``)."""
    m.add_argument("--enclave", choices=["simulated", "sgx", "tdx", "sev-snp"], default=None,
                   help="TEE type (default: inferred from the other flags, else simulated)")
    m.add_argument("--models", default="", help="simulated: comma-separated model ids (default: every shipped model); "
                   "gemma3-270m names the default LLM")
    m.add_argument("--llm", action="store_true", help="simulated: the build of a miner started with --llm (the shipped models and the default LLM)")
    m.add_argument("--llm.gguf", dest="llm_gguf", action="append", default=[], metavar="PATH[=ID]",
                   help="simulated: also a GGUF model the miner serves (as the miner's --llm.gguf); repeatable")
    m.add_argument("--sig", type=Path, help="sgx: the SIGSTRUCT file gramine-sgx-sign wrote (e.g. gramine/omron-tee-miner.sig)")
    m.add_argument("--sign-output", type=Path, help="sgx: a saved log of gramine-sgx-sign's output")
    m.add_argument("--quote", type=Path, help="sgx/tdx: a quote file of the reference build (raw bytes)")
    m.add_argument("--report", type=Path, help="sev-snp: an attestation report file of the reference image (raw bytes)")
    m.add_argument("--ovmf", type=Path, help="sev-snp: the OVMF firmware the VMM launches")
    m.add_argument("--kernel", type=Path, help="sev-snp: the kernel (direct boot with measured kernel hashes)")
    m.add_argument("--initrd", type=Path, help="sev-snp: the initrd")
    m.add_argument("--append", default=None, help="sev-snp: the kernel command line")
    m.add_argument("--vcpus", type=int, help="sev-snp: number of vCPUs")
    m.add_argument("--vcpu-type", default="EPYC-v4", help="sev-snp: QEMU vCPU model (default: %(default)s)")
    m.add_argument("--guest-features", type=lambda x: int(x, 0), default=0x1, help="sev-snp: SEV_FEATURES of the guest (default: 0x1)")


def _fail(e: OmronTeeError) -> int:
    print(f"omron-tee enclave: error: {e}", file=sys.stderr)
    return 2


def detect_cmd(args: argparse.Namespace) -> int:
    from omron_tee.enclave.select import detect_all

    try:
        found = detect_all(paths=HostPaths.under(args.root))
    except OmronTeeError as e:
        return _fail(e)
    if args.json:
        print(json.dumps([{"tee_type": a.tee_type.value, "usable": a.usable, "detail": a.detail} for a in found], indent=2))
    else:
        for a in found:
            print(f"{a.tee_type.value:<10} {'usable' if a.usable else 'no':<7} {a.detail}")
    cpu = [a.tee_type for a in found if a.usable and a.tee_type in (TeeType.SGX, TeeType.TDX, TeeType.SEV_SNP)]
    gpu = any(a.usable and a.tee_type is TeeType.NVIDIA for a in found)
    if not args.json:
        if cpu:
            with_gpu = gpu and cpu[0] in (TeeType.TDX, TeeType.SEV_SNP)
            print(f"\n--enclave auto would use: {cpu[0].value}" + (" with NVIDIA GPU evidence attached" if with_gpu else ""))
        else:
            print("\nno CPU TEE usable here" + (" (the CC GPUs need a TDX or SEV-SNP VM around them)" if gpu else "")
                  + ": --enclave auto refuses to start on test/finney; on a local network it falls back to simulated")
    return 0 if cpu else 1


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from None


def _infer(args: argparse.Namespace) -> str:
    if args.enclave:
        return args.enclave
    if args.sig or args.sign_output:
        return "sgx"
    if args.report or args.ovmf:
        return "sev-snp"
    if args.quote:
        data = _read(args.quote, "quote")
        if len(data) >= 8:
            (tee,) = struct.unpack_from("<I", data, 4)
            return "tdx" if tee == 0x81 else "sgx"
        raise ConfigError(f"{args.quote} is too short to be a quote")
    if getattr(args, "live", False):
        raise ConfigError("--live needs --enclave sgx, tdx or sev-snp")
    return "simulated"


def reference_values(args: argparse.Namespace) -> ref.ReferenceValues:
    kind = _infer(args)
    if getattr(args, "live", False):
        return _live(kind, HostPaths.under(args.root))
    if kind == "simulated":
        return _simulated(args.models, llm=getattr(args, "llm", False), gguf=getattr(args, "llm_gguf", []))
    if kind == "sgx":
        if args.sig:
            return ref.sgx_reference_from_sigstruct(_read(args.sig, "SIGSTRUCT"), source=str(args.sig))
        if args.sign_output:
            try:
                text = args.sign_output.read_text(errors="replace")
            except OSError as e:
                raise ConfigError(f"cannot read {args.sign_output}: {e.strerror or e}") from None
            return ref.sgx_reference_from_sign_output(text)
        if args.quote:
            return ref.sgx_reference_from_quote(_read(args.quote, "quote"))
        raise ConfigError("sgx: give --sig FILE (the .sig gramine-sgx-sign wrote; build it with `make -C gramine`), --sign-output FILE or --quote FILE")
    if kind == "tdx":
        if args.quote:
            return ref.tdx_reference_from_quote(_read(args.quote, "quote"))
        raise ConfigError(
            "tdx: the TD's MRTD and RTMRs depend on its firmware, kernel, initrd and command line. Boot the reference image "
            "once and run `omron-tee enclave measure --enclave tdx --live` inside it, or pass --quote FILE (see docs/ENCLAVES.md)"
        )
    if kind == "sev-snp":
        if args.report:
            return ref.snp_reference_from_report(_read(args.report, "report"))
        if args.ovmf:
            if not args.vcpus:
                raise ConfigError("sev-snp: --vcpus N is required with --ovmf (the launch digest covers one VMSA per vCPU)")
            return ref.snp_reference_from_image(
                ovmf=args.ovmf, vcpus=args.vcpus, vcpu_type=args.vcpu_type, kernel=args.kernel, initrd=args.initrd,
                append=args.append, guest_features=args.guest_features,
            )
        raise ConfigError(f"sev-snp: pass --ovmf FILE --vcpus N [--kernel --initrd --append] to compute it ({ref.SEV_SNP_MEASURE_HINT}), "
                          "--report FILE, or --live inside the reference VM")
    raise ConfigError(f"unknown enclave type {kind!r}")


def _simulated(models_arg: str, *, llm: bool = False, gguf: list[str] | None = None) -> ref.ReferenceValues:
    try:
        from omron_tee.models.llama import default_spec, gguf_flag_specs
        from omron_tee.models.registry import ModelRegistry
    except ImportError:
        raise ConfigError("the model registry (omron_tee.models) is not available in this install") from None
    registry = ModelRegistry.builtin()
    wanted = [m for m in models_arg.split(",") if m]
    # The LLMs a miner may serve are known by their pinned hash: no model file is read here.
    llms = ([default_spec()] if llm or default_spec().model_id in wanted else []) + gguf_flag_specs(gguf or [])
    for s in llms:
        if s.model_id not in registry:
            registry.add(s)
    if wanted:
        specs = [registry.get(m) for m in wanted] + [s for s in llms if s.model_id not in wanted]
    else:
        specs = registry.specs()
    return ref.simulated_reference([(s.model_id, s.sha256) for s in specs])


def _live(kind: str, paths: HostPaths) -> ref.ReferenceValues:
    from omron_tee.enclave.select import select_backend
    from omron_tee.enclave.tdx import MEASUREMENT_PROBE

    if kind not in ("sgx", "tdx", "sev-snp"):
        raise ConfigError("--live needs --enclave sgx, tdx or sev-snp")
    # The network only matters for the simulated fallback, which an explicit kind never takes.
    backend = select_backend(kind, network="finney", paths=paths, gpus=False)
    evidence = backend.attest(MEASUREMENT_PROBE)
    if kind == "sgx":
        values = ref.sgx_reference_from_quote(evidence.quote)
    elif kind == "tdx":
        values = ref.tdx_reference_from_quote(evidence.quote)
    else:
        values = ref.snp_reference_from_report(evidence.quote)
    values.notes[0] = "read from this machine's live evidence, not verified"
    return values


def measure_cmd(args: argparse.Namespace) -> int:
    try:
        values = reference_values(args)
    except OmronTeeError as e:
        return _fail(e)
    if args.json:
        print(json.dumps(values.to_json(), indent=2))
        return 0
    print(f"{values.tee_type.value} reference values:")
    for k, v in values.values.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                print(f"  {k}.{kk}: {vv}")
        else:
            print(f"  {k}: {v}")
    for note in values.notes:
        print(f"  note: {note}")
    print("\n# for the validator's policy file:")
    print(values.to_toml(), end="")
    return 0


def gramine_miner_cmd(args: argparse.Namespace) -> int:
    import os

    from omron_tee.enclave.gramine_launch import ENV, LaunchError, miner_argv
    from omron_tee.miner import neuron

    try:
        argv = miner_argv(os.environ.get(ENV, ""), neuron.build_parser())
    except LaunchError as e:
        print(f"omron-tee enclave gramine-miner: {e}", file=sys.stderr)
        return 2
    return neuron.main(argv)
