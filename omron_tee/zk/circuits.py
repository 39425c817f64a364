"""EZKL circuits of pinned ONNX models, built once and cached by the model's sha256.

Layout of the cache (default ``~/.omron-tee/circuits``, or ``$OMRON_TEE_CIRCUITS``)::

    <cache>/<model sha256>/model.onnx        the hash-checked bytes the circuit was built from
    <cache>/<model sha256>/settings.json     EZKL settings, calibrated on the model's sample inputs
    <cache>/<model sha256>/model.compiled    the compiled circuit
    <cache>/<model sha256>/circuit.json      what we measured and decided (scales, tolerance, versions)
    <cache>/<model sha256>/keys/<srs sha256[:16]>/vk.key, pk.key
    <cache>/<model sha256>.input-hashed/...  the same for a circuit with another input visibility
    <cache>/dev-srs/k<logrows>.srs           development SRS (embedded network only)

Settings and the compiled circuit do not depend on the SRS; the keys do, so
they live under the SRS's hash. The proving key is large (tens of MB) and
never belongs in git; everything here is rebuilt on demand.

SRS rules: production uses a ceremony SRS file at a configured path
(``--srs``). ``gen_srs`` makes an SRS whose toxic waste this machine saw: whoever
ran it can forge proofs. It is allowed only on the embedded development
network, and says so loudly. Nothing is ever downloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omron_tee.config import is_local
from omron_tee.errors import ConfigError
from omron_tee.models.spec import ModelSpec, read_pinned, sha256_file
from omron_tee.zk.dev_srs import VERSION as DEV_SRS_VERSION, write_srs
from omron_tee.zk.errors import ZkError
from omron_tee.reasons import Reason

log = logging.getLogger("omron_tee.zk")

CIRCUIT_SCHEMA = 2  # 2: canonical settings (circuits built apart agree); older caches are rebuilt
DEFAULT_CACHE_DIR = Path.home() / ".omron-tee" / "circuits"
# Small circuits fit in 2^12 rows; proving time grows with the rows, so try that first.
DEFAULT_MAX_LOGROWS = 12
# The scale (bits of fraction) calibration may pick; 13 keeps the MLPs' error small.
DEFAULT_SCALES = (13, 10, 7)
CALIBRATION_ROWS = 32
# The zk tolerance is this many times the largest error measured on the calibration rows...
TOLERANCE_MARGIN = 4.0
# ...and at least this many quanta of the output scale.
MIN_TOLERANCE_QUANTA = 16
# How the input appears in a proof: "private" (not at all: the default), "hashed" (its Poseidon
# hash is public, so a requester who knows the input can check the proof is about it), "public".
VISIBILITIES = ("private", "hashed", "public")

DEV_SRS_WARNING = (
    "DEVELOPMENT SRS: derived from a public seed (omron_tee.zk.dev_srs), so every local process builds "
    "the same circuit, and ANYONE CAN FORGE PROOFS under it. Use it only on the embedded local network; "
    "production needs a ceremony SRS file (miners: --zk.srs PATH; omron-tee circuits build: --srs PATH)."
)


def default_cache_dir() -> Path:
    return Path(os.environ.get("OMRON_TEE_CIRCUITS") or DEFAULT_CACHE_DIR).expanduser()


def ezkl_module() -> Any:
    try:
        import ezkl
    except ImportError:
        raise ZkError("the zk proof system needs the 'ezkl' package (pip install ezkl==23.0.5)", reason=Reason.ZK_UNAVAILABLE) from None
    return ezkl


def ezkl_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ezkl")
    except PackageNotFoundError:
        return "unknown"


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an ezkl function; older releases return awaitables, current ones return values."""
    result = fn(*args, **kwargs)
    if not inspect.isawaitable(result):
        return result

    async def wait() -> Any:
        return await result

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    box: dict[str, Any] = {}

    def run() -> None:  # a loop is running in this thread: use a fresh one elsewhere
        try:
            box["value"] = asyncio.run(wait())
        except BaseException as e:  # re-raised below in the caller's thread
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (miners and a validator may build at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- SRS ------------------------------------------------------------------------


@dataclass(frozen=True)
class Srs:
    path: Path
    sha256: bytes
    dev: bool

    @property
    def tag(self) -> str:
        return self.sha256.hex()[:16]


def ceremony_srs(path: str | Path) -> Srs:
    """A ceremony SRS file (e.g. from the KZG ceremony), at a path the operator configured."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"SRS file {p} does not exist; production needs a ceremony SRS file (nothing is downloaded)")
    return Srs(p.resolve(), sha256_file(p), dev=False)


_warned: set[Path] = set()


def dev_srs(logrows: int, *, cache_dir: Path, network: str, create: bool = True) -> Srs:
    """The development SRS for the embedded network only (``zk.dev_srs``: the same bytes on every
    machine, so validators and miners with separate caches agree); anyone can forge proofs under it."""
    if not is_local(network):
        raise ConfigError(f"a generated SRS can forge proofs and is refused on '{network}'; pass a ceremony SRS file (--zk.srs PATH on a miner, --srs PATH to circuits build)")
    path = cache_dir / "dev-srs" / f"k{logrows}-{DEV_SRS_VERSION}.srs"  # a random k<N>.srs of older releases is not reused
    if path not in _warned:  # loudly, once per process and file
        _warned.add(path)
        log.warning(DEV_SRS_WARNING)
    with _locked(cache_dir / "dev-srs" / ".lock"):
        if not path.is_file():
            if not create:
                raise ZkError(f"no development SRS at {path}: build the circuit first (omron-tee circuits build MODEL --dev-srs)", reason=Reason.ZK_NOT_BUILT)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            write_srs(tmp, logrows)
            os.replace(tmp, path)
            (path.parent / "WARNING.txt").write_text(DEV_SRS_WARNING + "\n")
    return Srs(path, sha256_file(path), dev=True)


# --- circuits ---------------------------------------------------------------------


@dataclass(frozen=True)
class Circuit:
    """The built artifacts of one model's circuit, with what a prover and a verifier need to know."""

    model_id: str
    model_sha256: bytes
    dir: Path
    srs: Srs
    logrows: int
    input_scale: int
    output_scale: int
    atol: float  # how far the dequantised public output may be from the float output
    rtol: float
    input_visibility: str
    output_visibility: str
    output_shape: tuple[int, ...]
    max_calibration_error: float

    @property
    def settings_path(self) -> Path:
        return self.dir / "settings.json"

    @functools.cached_property
    def circuit_id(self) -> bytes:
        """What identifies this circuit for a proof: sha256 over its compiled settings and its verifying
        key (which depends on the SRS). A prover and a verifier agree on a proof exactly when their ids do."""
        h = hashlib.sha256(b"omron-tee circuit id v1\0")
        for p in (self.settings_path, self.vk_path):
            h.update(hashlib.sha256(p.read_bytes()).digest())
        return h.digest()

    @property
    def compiled_path(self) -> Path:
        return self.dir / "model.compiled"

    @property
    def keys_dir(self) -> Path:
        return self.dir / "keys" / self.srs.tag

    @property
    def vk_path(self) -> Path:
        return self.keys_dir / "vk.key"

    @property
    def pk_path(self) -> Path:
        return self.keys_dir / "pk.key"

    def dequantise(self, felts: list[str]) -> np.ndarray:
        """Public output field elements -> floats in the model's output shape."""
        ezkl = ezkl_module()
        n = int(np.prod(self.output_shape))
        if len(felts) != n:
            raise ZkError(f"circuit of {self.model_id!r} has {n} outputs, got {len(felts)}")
        values = [float(call(ezkl.felt_to_float, str(f), self.output_scale)) for f in felts]
        return np.asarray(values, dtype=np.float64).reshape(self.output_shape)

    def input_instances(self, x: np.ndarray) -> list[str]:
        """The public instances a proof of input ``x`` carries before its outputs (none when private)."""
        if self.input_visibility == "private":
            return []
        ezkl = ezkl_module()
        felts = [str(call(ezkl.float_to_felt, float(v), self.input_scale)) for v in np.asarray(x, dtype=np.float64).reshape(-1)]
        if self.input_visibility == "public":
            return felts
        return [str(h) for h in call(ezkl.poseidon_hash, felts)]

    def within_tolerance(self, proven: np.ndarray, claimed: np.ndarray) -> bool:
        claimed = np.asarray(claimed, dtype=np.float64)
        if claimed.shape != proven.shape or not np.isfinite(claimed).all():
            return False
        return bool(np.allclose(proven, claimed, atol=self.atol, rtol=self.rtol))


def input_json(x: np.ndarray) -> str:
    """EZKL's input file format for one flattened input (the content, not a path)."""
    return json.dumps({"input_data": [np.asarray(x, dtype=np.float64).reshape(-1).tolist()]})


def _calibration_rows(spec: ModelSpec) -> np.ndarray:
    from omron_tee.models.samples import load_samples
    from omron_tee.models.samples import sample_input

    bank = load_samples(spec)
    if bank is not None:
        rows = bank.inputs[:CALIBRATION_ROWS]
    else:
        rng = np.random.default_rng(0)
        rows = np.stack([sample_input(spec, rng).reshape(-1) for _ in range(CALIBRATION_ROWS)]).astype(np.float64)
    return np.asarray(rows, dtype=np.float64)


def _circuit_from_meta(spec: ModelSpec, d: Path, meta: dict[str, Any], srs: Srs) -> Circuit:
    return Circuit(
        model_id=spec.model_id,
        model_sha256=spec.sha256,
        dir=d,
        srs=srs,
        logrows=int(meta["logrows"]),
        input_scale=int(meta["input_scale"]),
        output_scale=int(meta["output_scale"]),
        atol=float(meta["atol"]),
        rtol=float(meta["rtol"]),
        input_visibility=str(meta["input_visibility"]),
        output_visibility=str(meta["output_visibility"]),
        output_shape=tuple(meta["output_shape"]),
        max_calibration_error=float(meta["max_calibration_error"]),
    )


def _read_meta(d: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((d / "circuit.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _meta_current(meta: dict[str, Any] | None, spec: ModelSpec, input_visibility: str) -> bool:
    return bool(
        meta
        and meta.get("schema") == CIRCUIT_SCHEMA
        and meta.get("model_sha256") == spec.sha256_hex
        and meta.get("ezkl_version") == ezkl_version()
        and meta.get("input_visibility") == input_visibility
    )


def _canonicalise_settings(path: Path) -> None:
    """Make two builds of one model's settings byte-identical, so their circuits (and keys) agree.

    ezkl (23) writes its settings from hash maps and hash sets: the range checks a circuit needs
    come out in a different order from one run to the next, and the order decides the circuit's
    column layout, hence its verifying key; a timestamp differs too. Sorted, with the timestamp
    zeroed, two processes that build the same model with the same ezkl and SRS get the same
    circuit (tests/zk/test_zk_agreement.py)."""
    s = json.loads(path.read_text())
    for key in ("required_lookups", "required_range_checks"):
        if isinstance(s.get(key), list):
            s[key] = sorted(s[key], key=lambda v: json.dumps(v, sort_keys=True))
    if "timestamp" in s:
        s["timestamp"] = 0
    path.write_text(json.dumps(s, sort_keys=True, separators=(",", ":")))


def _build_settings(spec: ModelSpec, d: Path, *, max_logrows: int | None, input_visibility: str) -> dict[str, Any]:
    """gen_settings -> calibrate -> compile -> measure the quantisation error. Returns the meta."""
    ezkl = ezkl_module()
    t0 = time.perf_counter()
    model = d / "model.onnx"
    _write_atomic(model, read_pinned(spec.path, spec.sha256, f"model {spec.model_id!r}"))
    settings, compiled = d / "settings.json", d / "model.compiled"
    rows = _calibration_rows(spec)
    calib = d / "calibration.json"
    calib.write_text(json.dumps({"input_data": [rows.reshape(-1).tolist()]}))

    run_args = ezkl.PyRunArgs()
    run_args.input_visibility = input_visibility
    run_args.output_visibility = "public"
    run_args.param_visibility = "fixed"  # the weights are part of the circuit (and of the model hash)
    errors = []
    for limit in (max_logrows, None) if max_logrows is not None else (None,):
        try:
            call(ezkl.gen_settings, str(model), str(settings), py_run_args=run_args)
            call(ezkl.calibrate_settings, str(calib), str(model), str(settings), "resources", scales=list(DEFAULT_SCALES), max_logrows=limit)
            break
        except Exception as e:  # ezkl raises RuntimeError; the calibration inputs are public samples
            errors.append(f"max_logrows={limit}: {str(e)[:300]}")
    else:
        raise ZkError(f"cannot calibrate a circuit for {spec.model_id!r}: {'; '.join(errors)}", reason=Reason.ZK_BUILD_FAILED)
    _canonicalise_settings(settings)
    call(ezkl.compile_circuit, str(model), str(compiled), str(settings))
    s = json.loads(settings.read_text())
    logrows = int(s["run_args"]["logrows"])
    (out_scale,) = s["model_output_scales"] if len(s["model_output_scales"]) == 1 else (None,)
    if out_scale is None:
        raise ZkError(f"model {spec.model_id!r} has {len(s['model_output_scales'])} outputs; zk circuits serve one")

    # The circuit computes in fixed point: measure how far it strays from the float model.
    from omron_tee.models.onnx import OnnxModel  # zk circuits are of ONNX models only

    rt = OnnxModel(spec)
    probe = Circuit(spec.model_id, spec.sha256, d, Srs(Path(), b"", True), logrows, int(s["run_args"]["input_scale"]), int(out_scale), 0.0, 0.0, input_visibility, "public", spec.output_shape, 0.0)
    worst = 0.0
    for row in rows:
        x = row.reshape(spec.input_shape).astype(np.dtype(spec.input_dtype))
        w = call(ezkl.gen_witness, input_json(x), str(compiled), None)
        got = probe.dequantise([f for out in w["outputs"] for f in out])
        worst = max(worst, float(np.max(np.abs(got - rt.run(x).astype(np.float64)))))
    quantum = 2.0 ** -int(out_scale)
    atol = max(TOLERANCE_MARGIN * worst, MIN_TOLERANCE_QUANTA * quantum)
    meta = {
        "schema": CIRCUIT_SCHEMA,
        "model_id": spec.model_id,
        "model_sha256": spec.sha256_hex,
        "ezkl_version": ezkl_version(),
        "logrows": logrows,
        "input_scale": int(s["run_args"]["input_scale"]),
        "param_scale": int(s["run_args"]["param_scale"]),
        "output_scale": int(out_scale),
        "input_visibility": input_visibility,
        "output_visibility": "public",
        "output_shape": list(spec.output_shape),
        "num_rows": s.get("num_rows"),
        "calibration_rows": int(rows.shape[0]),
        "max_calibration_error": worst,
        "atol": atol,
        "rtol": 0.0,
        "settings_sha256": sha256_file(settings).hex(),
        "compiled_sha256": sha256_file(compiled).hex(),
        "built_at": int(time.time()),
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    _write_atomic(d / "circuit.json", (json.dumps(meta, indent=2) + "\n").encode())
    return meta


def _resolve_srs(logrows: int, *, cache_dir: Path, srs_path: str | Path | None, dev_network: str | None, create: bool) -> Srs:
    if srs_path is not None:
        return ceremony_srs(srs_path)
    if dev_network is not None:
        return dev_srs(logrows, cache_dir=cache_dir, network=dev_network, create=create)
    raise ConfigError(
        "zk circuits need an SRS: pass --srs PATH (a ceremony SRS file), or --dev-srs on the embedded local network"
    )


def build_circuit(
    spec: ModelSpec,
    *,
    cache_dir: str | Path | None = None,
    srs_path: str | Path | None = None,
    dev_network: str | None = None,
    max_logrows: int | None = DEFAULT_MAX_LOGROWS,
    input_visibility: str = "private",
    proving_key: bool = True,
    build: bool = True,
) -> Circuit:
    """The circuit of ``spec``, from the cache or built now.

    ``srs_path``: a ceremony SRS file. ``dev_network``: the network name when
    a generated SRS is acceptable (only the embedded network). ``proving_key``:
    whether the proving key is needed (a verifier needs only the verifying key).
    ``build=False`` only loads, and raises ``ZkError`` (reason zk-not-built) if
    something is missing.
    """
    if "zk" not in spec.proof_systems:
        raise ZkError(f"model {spec.model_id!r} declares proof systems {list(spec.proof_systems)}, not zk", reason=Reason.ZK_UNSUPPORTED)
    if spec.runtime != "onnx":
        raise ZkError(f"model {spec.model_id!r} runs on {spec.runtime!r}; zk circuits are built from ONNX models")
    if input_visibility not in VISIBILITIES:
        raise ConfigError(f"input visibility must be one of {', '.join(VISIBILITIES)}")
    ezkl = ezkl_module()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    d = cache / (spec.sha256_hex if input_visibility == "private" else f"{spec.sha256_hex}.input-{input_visibility}")
    d.mkdir(parents=True, exist_ok=True)
    with _locked(d / ".lock"):
        meta = _read_meta(d)
        if not _meta_current(meta, spec, input_visibility) or not (d / "model.compiled").is_file():
            if not build:
                raise ZkError(f"no circuit for {spec.model_id!r} in {cache}: run `omron-tee circuits build {spec.model_id}`", reason=Reason.ZK_NOT_BUILT)
            log.info("building the zk circuit of %s (sha256 %s…)", spec.model_id, spec.sha256_hex[:16])
            meta = _build_settings(spec, d, max_logrows=max_logrows, input_visibility=input_visibility)
        assert meta is not None
        srs = _resolve_srs(int(meta["logrows"]), cache_dir=cache, srs_path=srs_path, dev_network=dev_network, create=build)
        circuit = _circuit_from_meta(spec, d, meta, srs)
        kd = circuit.keys_dir
        marker = kd / "keys.json"
        want = {"compiled_sha256": meta["compiled_sha256"], "srs_sha256": srs.sha256.hex(), "dev_srs": srs.dev}
        try:
            have = json.loads(marker.read_text())
        except (OSError, ValueError):
            have = None
        keys_ok = have == want and circuit.vk_path.is_file() and (circuit.pk_path.is_file() or not proving_key)
        if not keys_ok:
            if not build:
                raise ZkError(f"no keys for {spec.model_id!r} with SRS {srs.path} in {cache}: run `omron-tee circuits build`", reason=Reason.ZK_NOT_BUILT)
            kd.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            vk_tmp, pk_tmp = kd / f".vk.{os.getpid()}.tmp", kd / f".pk.{os.getpid()}.tmp"
            try:
                ok = call(ezkl.setup, str(circuit.compiled_path), str(vk_tmp), str(pk_tmp), srs_path=str(srs.path))
            except Exception as e:
                raise ZkError(f"ezkl setup failed for {spec.model_id!r} with SRS {srs.path}: {str(e)[:300]}", reason=Reason.ZK_BUILD_FAILED) from None
            if ok is False:
                raise ZkError(f"ezkl setup failed for {spec.model_id!r}", reason=Reason.ZK_BUILD_FAILED)
            os.replace(vk_tmp, circuit.vk_path)
            os.replace(pk_tmp, circuit.pk_path)
            _write_atomic(marker, json.dumps(want).encode())
            log.info("keys of %s built in %.1fs (SRS %s%s)", spec.model_id, time.perf_counter() - t0, srs.tag, ", DEVELOPMENT" if srs.dev else "")
    return circuit
