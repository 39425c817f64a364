"""``omron-tee policy init``: write a working, commented attestation policy for a network and the builds it names.

    omron-tee policy init --chain.path ~/.omron-tee/embedded-chain.sqlite -o policy.toml      # the embedded chain
    omron-tee policy init --network finney -o policy.toml                                     # a template to fill

On the embedded chain the policy trusts that network's development attestation key
(the one its simulated miners sign with) and this release's builds: miners serving the
shipped models, with ``--llm``, and LLM-only. Elsewhere simulated enclaves are refused,
and the file holds one commented section per TEE, with the command that prints each
section's values (``omron-tee enclave measure``). The file is loaded back before it is
written, so what is written always parses.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


_TEMPLATES = """
# --- real TEEs: uncomment the sections you accept and fill in the measurements ---------------
# Values for this release: `omron-tee enclave measure --enclave sgx|tdx|sev-snp|nvidia ...` (docs/ENCLAVES.md).
#
# [sgx]
# mrenclave = ["<64 hex: MRENCLAVE of the Gramine build>"]
# accepted_tcb_statuses = ["UpToDate"]
#
# [tdx]
# measurements = [{ mrtd = "<96 hex>", rtmr = ["<96 hex>", "<96 hex>", "<96 hex>", ""] }]
# accepted_tcb_statuses = ["UpToDate"]
#
# [sev-snp]
# measurements = ["<96 hex: the launch measurement>"]
# min_tcb = { bootloader = 0, tee = 0, snp = 0, microcode = 0 }
#
# [nvidia]
# allow_any_measurement = false
# require_ocsp = true
"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("policy", help="write an attestation policy for validators and clients",
                              description="Write a working, commented attestation policy (docs/POLICY.md).")
    ps = p.add_subparsers(dest="policy_cmd", required=True, metavar="SUBCOMMAND")
    i = ps.add_parser("init", help="write a policy for a network and this release's builds",
                      description="On the embedded chain: trust its development key and this release's builds. Elsewhere: a template for real TEEs.")
    i.add_argument("--subtensor.network", dest="network", default="embedded", help="embedded (default), local, test or finney")
    i.add_argument("--chain.path", dest="chain_path", default=None, help="the embedded chain's file (default: as the neurons' default)")
    i.add_argument("--llm", action="store_true", help="also the LLMs named by --llm.gguf (the default LLM's builds are always included)")
    i.add_argument("--llm.gguf", dest="llm_gguf", action="append", default=[], metavar="PATH[=ID]", help="a GGUF model the miners serve")
    i.add_argument("-o", "--output", default="-", help="where to write it (default: standard output)")
    i.set_defaults(handler=init_cmd)


def init_cmd(args: argparse.Namespace) -> int:
    from omron_tee.attestation.validate.policy import Policy
    from omron_tee.config import dev_attestation_key_path, existing_chain_path, is_local
    from omron_tee.enclave.measurement import release_builds
    from omron_tee.enclave.simulated import dev_public_key
    from omron_tee.models.llama import default_spec, gguf_flag_specs
    from omron_tee.models.registry import ModelRegistry

    if is_local(args.network):
        chain_path = existing_chain_path(args.chain_path, "start the network first (`omron-tee localnet`, or a neuron) or name it with --chain.path")
        key = dev_public_key(dev_attestation_key_path(chain_path))
        onnx = [(s.model_id, s.sha256) for s in ModelRegistry.builtin().specs()]
        llms = [default_spec(), *gguf_flag_specs(args.llm_gguf)]
        builds = release_builds(onnx, [(s.model_id, s.sha256) for s in llms])
        text = (
            f"# Attestation policy for the embedded chain at {chain_path} (development only: simulated enclaves).\n"
            "# Written by `omron-tee policy init`; docs/POLICY.md explains every key.\n\n"
            "[general]\nmax_evidence_age_seconds = 120\nallow_debug = false\n\n"
            "[simulated]\nallow = true\n"
            f"# The network's development attestation key ({dev_attestation_key_path(chain_path)}): whoever holds it can forge evidence.\n"
            f'trusted_keys = ["{key.hex()}"]\n'
            "measurements = [\n" + "".join(f'    "{m.hex()}",  # {what}\n' for what, m in builds) + "]\n"
        )
    else:
        text = (
            f"# Attestation policy for {args.network}: real TEEs only (simulated enclaves are refused off a local network).\n"
            "# Written by `omron-tee policy init`; docs/POLICY.md explains every key.\n\n"
            "[general]\nmax_evidence_age_seconds = 120\nallow_debug = false\n" + _TEMPLATES
        )
    Policy.from_toml(text, source="the written policy")  # what is written always loads
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
        print(f"policy written to {args.output}", file=sys.stderr)
    return 0
