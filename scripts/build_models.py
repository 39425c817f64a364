#!/usr/bin/env python
"""Train and export the models shipped in omron_tee/models/assets/.

Each model is a small MLP trained with scikit-learn on a dataset bundled with
scikit-learn (no download), then written to ONNX by hand with onnx.helper
using only Gemm, Relu, Softmax and Sigmoid, float32, batch 1: the graphs stay
small enough to prove with EZKL later. Input standardisation (and, for the
regressor, target scaling) is folded into the first and last Gemm, so the
models take raw feature values and give results in real units.

Fixed seeds and one BLAS thread make the build deterministic: on the same
library versions it rewrites the same bytes. ``--check`` rebuilds into a
temporary folder and compares hashes with the committed manifest.

scikit-learn is needed only here, at build time: ``pip install scikit-learn``.

    .venv/bin/python scripts/build_models.py            # rebuild the assets
    .venv/bin/python scripts/build_models.py --check    # verify they are reproducible
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

try:
    import sklearn
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
    from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from threadpoolctl import threadpool_limits
except ImportError:
    sys.exit("build_models.py needs scikit-learn (build time only): .venv/bin/pip install scikit-learn")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from omron_tee.models.onnx import PROVIDERS, session_options  # noqa: E402

ASSETS = ROOT / "omron_tee" / "models" / "assets"
OPSET = 17
IR_VERSION = 8  # pinned: onnx.helper otherwise stamps its own newest IR version, changing the bytes
SEED = 0
TEST_SIZE = 0.25


@dataclass(frozen=True)
class Recipe:
    model_id: str
    description: str
    task: str  # "classification" | "binary-classification" | "regression"
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    hidden: int
    alpha: float
    output_name: str
    atol: float
    rtol: float
    # "tee", "zk" or both; zk only for models small enough to prove quickly (see docs/ZK.md).
    proof_systems: tuple[str, ...] = ("tee",)


def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return X, 1 - y  # scikit-learn labels benign as 1; the model outputs P(malignant)


RECIPES = [
    Recipe(
        model_id="digits-mlp",
        description="Handwritten digit classifier (UCI 8x8 digits): 64 pixel intensities 0-16, row-major -> probabilities of digits 0-9. MLP 64-32-10, ReLU, softmax.",
        task="classification",
        load=lambda: load_digits(return_X_y=True),
        hidden=32,
        alpha=1.0,
        output_name="probabilities",
        atol=1e-5,
        rtol=1e-4,
    ),
    Recipe(
        model_id="diabetes-mlp",
        description="Diabetes progression regressor: 10 raw baseline features (age, sex, bmi, bp, s1-s6) -> disease progression one year later. MLP 10-16-1, ReLU.",
        task="regression",
        load=lambda: load_diabetes(return_X_y=True, scaled=False),
        hidden=16,
        alpha=60.0,
        output_name="progression",
        atol=1e-3,
        rtol=1e-4,
        proof_systems=("tee", "zk"),  # the smallest shipped model: its EZKL circuit proves in about a second
    ),
    Recipe(
        model_id="breast-cancer-mlp",
        description="Breast tumour classifier (Wisconsin diagnostic): 30 raw cell-nucleus features -> probability the tumour is malignant. MLP 30-16-1, ReLU, sigmoid.",
        task="binary-classification",
        load=_breast_cancer,
        hidden=16,
        alpha=10.0,
        output_name="p_malignant",
        atol=1e-5,
        rtol=1e-4,
    ),
]


def _train(r: Recipe, Xtr: np.ndarray, ytr: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train on standardised data; return float64 (W, b) layers that take raw inputs and give raw outputs."""
    mu = Xtr.mean(axis=0)
    sd = Xtr.std(axis=0)
    sd[sd == 0] = 1.0  # constant pixels (digits' corners): leave them as they are
    Z = (Xtr - mu) / sd
    common = dict(hidden_layer_sizes=(r.hidden,), activation="relu", solver="lbfgs", alpha=r.alpha, max_iter=2000, random_state=SEED)
    if r.task == "regression":
        ym, ys = ytr.mean(), ytr.std()
        est = MLPRegressor(**common).fit(Z, (ytr - ym) / ys)
    else:
        est = MLPClassifier(**common).fit(Z, ytr)
    (W0, W1), (b0, b1) = est.coefs_, est.intercepts_
    # relu((x - mu) / sd @ W0 + b0) == relu(x @ (W0 / sd[:, None]) + (b0 - (mu / sd) @ W0))
    W0f = W0 / sd[:, None]
    b0f = b0 - (mu / sd) @ W0
    if r.task == "regression":
        W1, b1 = W1 * ys, b1 * ys + ym
    return [(W0f, b0f), (W1, b1)]


def _export(r: Recipe, layers: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    (W0, b0), (W1, b1) = layers
    n_in, n_out = W0.shape[0], W1.shape[1]
    inits = [
        numpy_helper.from_array(W0.astype(np.float32), "W0"),
        numpy_helper.from_array(b0.astype(np.float32), "b0"),
        numpy_helper.from_array(W1.astype(np.float32), "W1"),
        numpy_helper.from_array(b1.astype(np.float32), "b1"),
    ]
    head = {"classification": "Softmax", "binary-classification": "Sigmoid", "regression": None}[r.task]
    logits = "logits" if head else r.output_name
    nodes = [
        helper.make_node("Gemm", ["input", "W0", "b0"], ["hidden_pre"], name="dense0"),
        helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="relu0"),
        helper.make_node("Gemm", ["hidden", "W1", "b1"], [logits], name="dense1"),
    ]
    if head == "Softmax":
        nodes.append(helper.make_node("Softmax", [logits], [r.output_name], name="softmax", axis=-1))
    elif head == "Sigmoid":
        nodes.append(helper.make_node("Sigmoid", [logits], [r.output_name], name="sigmoid"))
    graph = helper.make_graph(
        nodes,
        r.model_id,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info(r.output_name, TensorProto.FLOAT, [1, n_out])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="omron-tee scripts/build_models.py",
        producer_version="1",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        doc_string=r.description,
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _run_onnx(data: bytes, X: np.ndarray) -> np.ndarray:
    """Run the exported bytes row by row (batch is fixed at 1) with the runtime's pinned options."""
    sess = ort.InferenceSession(data, sess_options=session_options(), providers=list(PROVIDERS))
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: row[None, :].astype(np.float32)})[0] for row in X])


def _f32(values: np.ndarray) -> list:
    """Numbers as the shortest text that round-trips their float32 value (ints stay ints)."""
    out = []
    for v in np.asarray(values, dtype=np.float32).ravel():
        f = float(np.format_float_positional(v, unique=True, trim="-"))
        out.append(int(f) if f.is_integer() else f)
    return out


def build(r: Recipe, out_dir: Path) -> dict:
    X, y = r.load()
    X = X.astype(np.float64)
    stratify = None if r.task == "regression" else y
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=TEST_SIZE, random_state=SEED, stratify=stratify)
    with threadpool_limits(limits=1):  # one BLAS thread: the same sums in the same order on every build
        layers = _train(r, Xtr, ytr)
    data = _export(r, layers)

    # Check the export against the float64 weights it came from.
    (W0, b0), (W1, b1) = layers
    ref = np.maximum(Xte @ W0 + b0, 0) @ W1 + b1
    if r.task == "classification":
        ref = np.exp(ref - ref.max(axis=1, keepdims=True))
        ref /= ref.sum(axis=1, keepdims=True)
    elif r.task == "binary-classification":
        ref = 1 / (1 + np.exp(-ref))
    got_te = _run_onnx(data, Xte)
    got_tr = _run_onnx(data, Xtr)
    export_err = float(np.max(np.abs(got_te - ref) / (np.abs(ref) + 1)))
    if export_err > 1e-4:
        raise SystemExit(f"{r.model_id}: exported ONNX differs from the trained weights by {export_err:.2e}")

    if r.task == "regression":
        metrics = {
            "train_r2": r2_score(ytr, got_tr[:, 0]),
            "test_r2": r2_score(yte, got_te[:, 0]),
            "test_mae": mean_absolute_error(yte, got_te[:, 0]),
        }
        targets = _f32(yte)
    else:
        pred = (lambda p: p.argmax(axis=1)) if r.task == "classification" else (lambda p: (p[:, 0] >= 0.5).astype(int))
        metrics = {"train_accuracy": accuracy_score(ytr, pred(got_tr)), "test_accuracy": accuracy_score(yte, pred(got_te))}
        targets = [int(t) for t in yte]
    metrics = {k: round(float(v), 4) for k, v in metrics.items()}

    samples = {
        "schema": 1,
        "model": r.model_id,
        "split": f"scikit-learn train_test_split(test_size={TEST_SIZE}, random_state={SEED}) held-out rows",
        "inputs": [_f32(row) for row in Xte],
        "targets": targets,
        # Statistics of the training rows, for sampling realistic benchmark inputs.
        "feature_min": _f32(Xtr.min(axis=0)),
        "feature_max": _f32(Xtr.max(axis=0)),
        "feature_std": _f32(Xtr.std(axis=0)),
    }
    samples_bytes = (json.dumps(samples, separators=(",", ":")) + "\n").encode()
    model_file, samples_file = f"{r.model_id}.onnx", f"{r.model_id}.samples.json"
    (out_dir / model_file).write_bytes(data)
    (out_dir / samples_file).write_bytes(samples_bytes)
    print(f"{r.model_id:18s} sha256 {hashlib.sha256(data).hexdigest()}  {len(data):6d} B  {metrics}  export err {export_err:.1e}")
    return {
        "id": r.model_id,
        "file": model_file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "runtime": "onnx",
        "task": r.task,
        "description": r.description,
        "input": {"name": "input", "shape": [1, W0.shape[0]], "dtype": "float32"},
        "output": {"name": r.output_name, "shape": [1, W1.shape[1]]},
        "tolerance": {"atol": r.atol, "rtol": r.rtol},
        "proof_systems": list(r.proof_systems),
        "metrics": metrics | {"test_samples": len(yte), "train_samples": len(ytr)},
        "samples": {"file": samples_file, "sha256": hashlib.sha256(samples_bytes).hexdigest()},
    }


def write_all(out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "schema": 1,
        "generator": "scripts/build_models.py",
        "built_with": {"scikit-learn": sklearn.__version__, "numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "models": [build(r, out_dir) for r in RECIPES],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ASSETS, help="output folder (default: the package assets)")
    ap.add_argument("--check", action="store_true", help="rebuild into a temporary folder and compare with the committed manifest")
    args = ap.parse_args()
    if not args.check:
        write_all(args.out)
        return 0
    committed = {m["id"]: m for m in json.loads((ASSETS / "manifest.json").read_text())["models"]}
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = write_all(Path(tmp))["models"]
    bad = [
        m["id"]
        for m in rebuilt
        if m["id"] not in committed or (m["sha256"], m["samples"]["sha256"]) != (committed[m["id"]]["sha256"], committed[m["id"]]["samples"]["sha256"])
    ]
    if bad or len(rebuilt) != len(committed):
        print(f"NOT reproducible here: {', '.join(bad) or 'model set differs'} (library versions differ from the build's?)")
        return 1
    print("reproducible: every rebuilt model and sample bank matches the committed sha256")
    return 0


if __name__ == "__main__":
    sys.exit(main())
