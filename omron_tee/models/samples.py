"""A model's bank of real held-out inputs (and their targets), pinned by hash like the model, and sampling from it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from omron_tee.errors import ModelError
from omron_tee.models.spec import ModelSpec, read_pinned

# How far a sampled benchmark input strays from its real bank row, in feature standard deviations.
SAMPLE_NOISE = 0.1


@dataclass(frozen=True)
class SampleBank:
    """Real held-out inputs of a model (one row per sample, flattened) with their targets."""

    inputs: np.ndarray  # float64 [n, features]
    targets: np.ndarray  # [n]: class labels or regression targets
    feature_min: np.ndarray
    feature_max: np.ndarray
    feature_std: np.ndarray
    split: str


@lru_cache(maxsize=64)
def _load_bank(path: Path, sha256: bytes, model_id: str, features: int) -> SampleBank:
    what = f"samples of model {model_id!r}"
    try:
        doc = json.loads(read_pinned(path, sha256, what))
        inputs = np.asarray(doc["inputs"], dtype=np.float64)
        bank = SampleBank(
            inputs=inputs,
            targets=np.asarray(doc["targets"], dtype=np.float64),
            feature_min=np.asarray(doc["feature_min"], dtype=np.float64),
            feature_max=np.asarray(doc["feature_max"], dtype=np.float64),
            feature_std=np.asarray(doc["feature_std"], dtype=np.float64),
            split=str(doc.get("split", "")),
        )
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{what}: {path} is not a valid sample bank") from None
    n = inputs.shape[0] if inputs.ndim == 2 else 0
    if n == 0 or inputs.shape[1] != features or bank.targets.shape != (n,) or any(
        a.shape != (features,) for a in (bank.feature_min, bank.feature_max, bank.feature_std)
    ):
        raise ModelError(f"{what}: {path} does not hold rows of {features} features with one target each")
    for a in (bank.inputs, bank.targets, bank.feature_min, bank.feature_max, bank.feature_std):
        a.setflags(write=False)  # shared through the cache
    return bank


def load_samples(spec: ModelSpec) -> SampleBank | None:
    """The model's bank of real inputs, hash-checked, or None if it has none."""
    if spec.samples_path is None or spec.samples_sha256 is None:
        return None
    return _load_bank(spec.samples_path, spec.samples_sha256, spec.model_id, int(np.prod(spec.input_shape)))


def sample_input(spec: ModelSpec, rng: np.random.Generator) -> np.ndarray:
    """A realistic, fresh input for benchmarks.

    With a sample bank: a random real row plus small noise (a tenth of each
    feature's spread), clipped to the feature's observed range, so inputs
    look like real data but are never exact repeats. Without one: standard
    normal floats, or 0/1 integers.
    """
    dtype = np.dtype(spec.input_dtype)
    bank = load_samples(spec)
    if bank is None:
        if dtype.kind == "f":
            return rng.standard_normal(spec.input_shape).astype(dtype)
        return rng.integers(0, 2, size=spec.input_shape).astype(dtype)
    row = bank.inputs[rng.integers(0, bank.inputs.shape[0])]
    x = row + rng.standard_normal(row.shape) * (SAMPLE_NOISE * bank.feature_std)
    x = np.clip(x, bank.feature_min, bank.feature_max)
    if dtype.kind != "f":
        x = np.rint(x)
    return x.reshape(spec.input_shape).astype(dtype)
