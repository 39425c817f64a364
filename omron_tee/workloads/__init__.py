"""Workloads: what one kind of inference needs on every side of the exchange (``base`` says what).

``tensor`` (ONNX), ``zk`` (ONNX with an EZKL proof), ``llm`` (llama.cpp,
streamed). ``default_workloads`` is every workload this build carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omron_tee.workloads.base import Workloads
from omron_tee.workloads.llm import LlmWorkload
from omron_tee.workloads.tensor import TensorWorkload
from omron_tee.workloads.zk import ZkWorkload


def default_workloads(*, zk_verifiers: Mapping[str, Any] | None = None, llm_tokens: int | None = None,
                      zk_verify_fraction: float = 1.0) -> Workloads:
    llm = LlmWorkload() if llm_tokens is None else LlmWorkload(max_tokens=llm_tokens)
    return Workloads([TensorWorkload(), ZkWorkload(zk_verifiers, verify_fraction=zk_verify_fraction), llm])
