"""The ONNX runtime: real accuracy, reproducibility, input checks, tolerances, benchmark inputs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from omron_tee.errors import ModelError
from omron_tee.models.registry import ModelRegistry
from omron_tee.models.spec import ModelSpec
from omron_tee.models.onnx import OnnxModel, session_options
from omron_tee.models.runtimes import default_runtimes
from omron_tee.models.samples import load_samples
from omron_tee.workloads.tensor import outputs_match, sample_input
from omron_tee.workloads.tensor import Tensor

REG = ModelRegistry.builtin()


@pytest.fixture(scope="module")
def models() -> dict[str, OnnxModel]:
    return {s.model_id: OnnxModel(s) for s in REG.specs()}


def _predict(model: OnnxModel, inputs: np.ndarray) -> np.ndarray:
    spec = model.spec
    return np.concatenate([model.run(row.reshape(spec.input_shape).astype(np.float32)) for row in inputs])


# --- real behaviour on held-out data ------------------------------------------------------------


@pytest.mark.parametrize("model_id", ["digits-mlp", "breast-cancer-mlp"])
def test_classifiers_reach_their_manifest_accuracy(models, model_id: str) -> None:
    spec = REG.get(model_id)
    bank = load_samples(spec)
    assert bank is not None and len(bank.targets) == spec.metric("test_samples")
    probs = _predict(models[model_id], bank.inputs)
    assert np.all((probs >= 0) & (probs <= 1))
    if spec.task == "classification":
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        pred = probs.argmax(axis=1)
    else:
        pred = (probs[:, 0] >= 0.5).astype(int)
    accuracy = float(np.mean(pred == bank.targets))
    assert accuracy == pytest.approx(spec.metric("test_accuracy"), abs=1e-3)
    assert accuracy > 0.95


def test_regressor_reaches_its_manifest_r2(models) -> None:
    spec = REG.get("diabetes-mlp")
    bank = load_samples(spec)
    assert bank is not None
    pred = _predict(models["diabetes-mlp"], bank.inputs)[:, 0]
    y = bank.targets
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert np.isfinite(pred).all()
    assert r2 == pytest.approx(spec.metric("test_r2"), abs=1e-3)
    assert r2 > 0.3  # better than predicting the mean, on a hard split
    assert np.mean(np.abs(y - pred)) == pytest.approx(spec.metric("test_mae"), abs=1e-2)


def test_digit_images_are_read_as_digits(models) -> None:
    bank = load_samples(REG.get("digits-mlp"))
    assert bank is not None
    for digit in range(10):
        row = bank.inputs[np.flatnonzero(bank.targets == digit)[0]]
        probs = models["digits-mlp"].run(row.reshape(1, 64).astype(np.float32))
        assert probs.shape == (1, 10) and probs.dtype == np.float32
        assert int(probs.argmax()) == digit


# --- reproducibility -----------------------------------------------------------------------------


def test_outputs_are_bit_identical_across_sessions() -> None:
    rng = np.random.default_rng(7)
    for spec in REG.specs():
        a, b = OnnxModel(spec), default_runtimes().load(spec)
        for _ in range(25):
            x = sample_input(spec, rng)
            assert a.run(x).tobytes() == b.run(x).tobytes()


def test_session_options_are_pinned() -> None:
    import onnxruntime as ort

    so = session_options()
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (1, 1)
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert so.use_deterministic_compute is True
    assert so.get_session_config_entry("session.load_model_format") == "ONNX"


# --- input validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros((1, 64), dtype=np.float64), r"input dtype: expected float32, got float64"),
        (np.zeros((1, 64), dtype=np.int64), r"input dtype: expected float32, got int64"),
        (np.zeros((1, 64), dtype=">f4"), r"input dtype: expected float32, got >f4"),
        (np.zeros(64, dtype=np.float32), r"input shape: expected \[1, 64\], got \[64\]"),
        (np.zeros((2, 64), dtype=np.float32), r"input shape: expected \[1, 64\], got \[2, 64\]"),
        (np.zeros((1, 8, 8), dtype=np.float32), r"input shape: expected \[1, 64\], got \[1, 8, 8\]"),
        ([[0.0] * 64], r"input must be a numpy array, got list"),
        (np.full((1, 64), np.nan, dtype=np.float32), r"input contains NaN or infinity"),
        (np.full((1, 64), np.inf, dtype=np.float32), r"input contains NaN or infinity"),
    ],
)
def test_bad_inputs_are_model_errors_naming_expected_and_got(models, x, message: str) -> None:
    with pytest.raises(ModelError, match=r"model 'digits-mlp': " + message) as e:
        models["digits-mlp"].run(x)
    assert e.value.reason == "bad-input"


def test_wire_tensors_and_strided_arrays_run(models) -> None:
    spec = REG.get("breast-cancer-mlp")
    x = sample_input(spec, np.random.default_rng(1))
    expected = models["breast-cancer-mlp"].run(x)
    readonly = Tensor.from_json(Tensor.from_array(x).to_json()).to_array()  # read-only, as the enclave gets it
    assert not readonly.flags.writeable
    strided = np.asfortranarray(np.repeat(x, 2, axis=1))[:, ::2]
    assert not strided.flags.c_contiguous
    for arr in (readonly, strided):
        assert models["breast-cancer-mlp"].run(arr).tobytes() == expected.tobytes()


def test_run_is_fast(models) -> None:
    model = models["digits-mlp"]
    x = sample_input(model.spec, np.random.default_rng(0))
    times = []
    for _ in range(200):
        t = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - t)
    assert float(np.median(times)) < 2e-3  # ~6 us here; generous for shared CI machines


# --- tolerance ------------------------------------------------------------------------------------------


def test_outputs_match_within_tolerance_only() -> None:
    spec = REG.get("digits-mlp")  # atol 1e-5, rtol 1e-4
    ref = np.full((1, 10), 0.1, dtype=np.float32)
    assert outputs_match(spec, ref, ref.copy())
    assert outputs_match(spec, ref, ref + np.float32(1e-5))  # within atol + rtol * 0.1 = 2e-5
    assert not outputs_match(spec, ref, ref + np.float32(3e-5))
    assert outputs_match(spec, ref, ref.astype(np.float64))  # dtype alone is no mismatch
    swapped = ref.copy()
    swapped[0, :2] = [0.9, 0.0]
    assert not outputs_match(spec, ref, swapped)


def test_outputs_match_rtol_scales_with_the_reference() -> None:
    spec = REG.get("diabetes-mlp")  # atol 1e-3, rtol 1e-4
    ref = np.array([[200.0]], dtype=np.float32)
    assert outputs_match(spec, ref, ref + np.float32(0.02))  # 1e-3 + 0.02
    assert not outputs_match(spec, ref, ref + np.float32(0.03))


@pytest.mark.parametrize(
    "got",
    [
        np.full((1, 10), np.nan, dtype=np.float32),
        np.full((1, 10), np.inf, dtype=np.float32),
        np.full((10,), 0.1, dtype=np.float32),
        np.full((1, 11), 0.1, dtype=np.float32),
        np.full((1, 10), "0.1"),
    ],
    ids=["nan", "inf", "flat-shape", "wrong-width", "strings"],
)
def test_outputs_match_refuses_nan_inf_and_wrong_shapes(got: np.ndarray) -> None:
    spec = REG.get("digits-mlp")
    ref = np.full((1, 10), 0.1, dtype=np.float32)
    assert not outputs_match(spec, ref, got)


def test_nan_never_matches_even_itself() -> None:
    spec = REG.get("diabetes-mlp")
    nan = np.array([[np.nan]], dtype=np.float32)
    assert not outputs_match(spec, nan, nan)
    # A reference that is not the spec's shape is refused too, even if both agree.
    assert not outputs_match(spec, np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32))


# --- benchmark inputs ----------------------------------------------------------------------------------


def test_sample_input_is_realistic_fresh_and_reproducible(models) -> None:
    for spec in REG.specs():
        bank = load_samples(spec)
        assert bank is not None
        xs = [sample_input(spec, np.random.default_rng(3)) for _ in range(2)]
        assert xs[0].tobytes() == xs[1].tobytes()  # same seed, same input
        rng = np.random.default_rng(4)
        draws = np.stack([sample_input(spec, rng) for _ in range(50)])
        assert draws.shape == (50, *spec.input_shape) and draws.dtype == np.float32
        assert len({d.tobytes() for d in draws}) == 50  # fresh every time
        flat = draws.reshape(50, -1)
        assert np.all(flat >= bank.feature_min.astype(np.float32)) and np.all(flat <= bank.feature_max.astype(np.float32))
        # Close to some real row: a small perturbation of real data, not noise.
        nearest = np.min(np.abs(flat[:, None, :] - bank.inputs[None, :, :]).max(axis=2), axis=1)
        assert np.all(nearest <= 0.6 * bank.feature_std.max())
        for x in draws[:5]:
            assert np.isfinite(models[spec.model_id].run(x)).all()


def test_sample_input_without_a_bank(tmp_path) -> None:
    base = REG.get("digits-mlp")
    spec = ModelSpec(**{**base.__dict__, "samples_path": None, "samples_sha256": None})
    assert load_samples(spec) is None
    x = sample_input(spec, np.random.default_rng(0))
    assert x.shape == (1, 64) and x.dtype == np.float32 and np.isfinite(x).all()
    ints = ModelSpec(**{**spec.__dict__, "input_dtype": "int64"})
    xi = sample_input(ints, np.random.default_rng(0))
    assert xi.dtype == np.int64 and set(np.unique(xi)) <= {0, 1}
