"""The development SRS, derived deterministically: every local process builds the same circuit.

``ezkl.gen_srs`` draws the SRS's secret ``tau`` from the operating system's randomness and takes
no seed, so two processes (a validator and a miner with separate circuit caches) got two SRSs,
two verifying keys, and an honest proof that one side could not verify. Here ``tau`` is a hash
of a fixed label and ``logrows``, and the file is written in the format ezkl reads (halo2's KZG
parameters, ``SerdeFormat::RawBytes``): ``k`` as u32 little-endian; ``2^k`` G1 points
``tau^i G``; ``2^k`` G1 points ``L_i(tau) G`` (the Lagrange basis over the ``2^k``-th roots of
unity); ``G2`` and ``tau G2``. Coordinates are BN254 base-field elements in Montgomery form,
little-endian. The result is what halo2's ``ParamsKZG::setup`` computes for that ``tau``.

Everyone can compute ``tau``, so anyone can forge proofs under this SRS: it is for the embedded
development network only, where ``zk.circuits.dev_srs`` confines it; production uses a ceremony
SRS file. The curve arithmetic is written out here because no maintained Python library writes
halo2's parameter format, and general-purpose ones (py_ecc) multiply by double-and-add over
Python objects; the fixed-base table below takes about 0.4 ms a point here (3.2 s for the 8192
points of 2^12).
Correctness is checked end to end by the tests: ezkl sets up, proves and verifies with it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# BN254 (alt_bn128): base field p, scalar field r, G1: y^2 = x^3 + 3, generator (1, 2).
P = 21888242871839275222246405745257275088696311157297823662689037894645226208583
R = 21888242871839275222246405745257275088548364400416034343698204186575808495617
G1 = (1, 2)
G2 = (
    (10857046999023057135944570762232829481370756359578518086990519993285655852781,
     11559732032986387107991004021392285783925812861821192530917403151452391805634),
    (8495653923123431417604973247489272438418190587263600148770280649306958101930,
     4082367875863433681332203403145435568316851327593401208105741076214120093531),
)
ROOT_OF_UNITY = 0x03DDB9F5166D18B798865EA93DD31F743215CF6DD39329C8D34F1ED960C37C9C  # halo2curves Fr, 2^28-th
TWO_ADICITY = 28
MONT = pow(2, 256, P)
VERSION = "v1"  # of the derivation: part of the file name, so a change never meets an old file
LABEL = b"omron-tee development SRS v1 (public tau: forgeable, embedded network only)"
WINDOW = 8


def tau_for(logrows: int) -> int:
    """The SRS secret for ``logrows``: public by design."""
    return int.from_bytes(hashlib.sha512(LABEL + logrows.to_bytes(4, "little")).digest(), "big") % R


# G1 in Jacobian coordinates (X, Y, Z), x = X/Z^2, y = Y/Z^3; Z == 0 is the point at infinity.

def _double(p1: tuple[int, int, int]) -> tuple[int, int, int]:
    x, y, z = p1
    if z == 0 or y == 0:
        return (1, 1, 0)
    a = x * x % P
    b = y * y % P
    c = b * b % P
    d = 2 * ((x + b) * (x + b) - a - c) % P
    e = 3 * a % P
    x3 = (e * e - 2 * d) % P
    return x3, (e * (d - x3) - 8 * c) % P, 2 * y * z % P


def _add_affine(p1: tuple[int, int, int], q: tuple[int, int]) -> tuple[int, int, int]:
    """Jacobian + affine (madd-2007-bl)."""
    x1, y1, z1 = p1
    if z1 == 0:
        return q[0], q[1], 1
    z1z1 = z1 * z1 % P
    u2 = q[0] * z1z1 % P
    s2 = q[1] * z1 * z1z1 % P
    h = (u2 - x1) % P
    rr = 2 * (s2 - y1) % P
    if h == 0:
        return _double(p1) if rr == 0 else (1, 1, 0)
    hh = h * h % P
    i = 4 * hh % P
    j = h * i % P
    v = x1 * i % P
    x3 = (rr * rr - j - 2 * v) % P
    y3 = (rr * (v - x3) - 2 * y1 * j) % P
    z3 = ((z1 + h) * (z1 + h) - z1z1 - hh) % P
    return x3, y3, z3


def _to_affine(points: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Batch conversion (one inversion for all, Montgomery's trick); no point may be infinity."""
    prefix, acc = [], 1
    for _, _, z in points:
        prefix.append(acc)
        acc = acc * z % P
    inv = pow(acc, -1, P)
    out: list[tuple[int, int]] = [(0, 0)] * len(points)
    for k in range(len(points) - 1, -1, -1):
        x, y, z = points[k]
        zi = inv * prefix[k] % P
        inv = inv * z % P
        zi2 = zi * zi % P
        out[k] = (x * zi2 % P, y * zi2 * zi % P)
    return out


class _FixedBase:
    """``d * 2^(WINDOW*i) * G`` for every window i and digit d, so a multiplication is additions only."""

    def __init__(self, base: tuple[int, int], bits: int = 256) -> None:
        self.windows = (bits + WINDOW - 1) // WINDOW
        rows: list[tuple[int, int, int]] = []
        start = (base[0], base[1], 1)
        for _ in range(self.windows):
            row, acc = [], (1, 1, 0)
            start_affine = _to_affine([start])[0]
            for _ in range((1 << WINDOW) - 1):
                acc = _add_affine(acc, start_affine)
                row.append(acc)
            rows.extend(row)
            for _ in range(WINDOW):
                start = _double(start)
        flat = _to_affine(rows)
        size = (1 << WINDOW) - 1
        self.table = [flat[i * size:(i + 1) * size] for i in range(self.windows)]

    def mul(self, k: int) -> tuple[int, int, int]:
        acc = (1, 1, 0)
        mask = (1 << WINDOW) - 1
        for i in range(self.windows):
            d = (k >> (WINDOW * i)) & mask
            if d:
                acc = _add_affine(acc, self.table[i][d - 1])
        return acc


# G2 over Fq2 = Fq[u]/(u^2 + 1), affine, double-and-add: only tau * G2 is needed.

def _f2_mul(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return ((a[0] * b[0] - a[1] * b[1]) % P, (a[0] * b[1] + a[1] * b[0]) % P)


def _f2_inv(a: tuple[int, int]) -> tuple[int, int]:
    n = pow((a[0] * a[0] + a[1] * a[1]) % P, -1, P)
    return (a[0] * n % P, -a[1] * n % P)


def _f2_sub(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return ((a[0] - b[0]) % P, (a[1] - b[1]) % P)


def _g2_add(p1, q):  # type: ignore[no-untyped-def]
    if p1 is None:
        return q
    if q is None:
        return p1
    (x1, y1), (x2, y2) = p1, q
    if x1 == x2:
        if y1 != y2 or y1 == (0, 0):
            return None
        lam = _f2_mul(_f2_mul((3, 0), _f2_mul(x1, x1)), _f2_inv(_f2_mul((2, 0), y1)))
    else:
        lam = _f2_mul(_f2_sub(y2, y1), _f2_inv(_f2_sub(x2, x1)))
    x3 = _f2_sub(_f2_sub(_f2_mul(lam, lam), x1), x2)
    return (x3, _f2_sub(_f2_mul(lam, _f2_sub(x1, x3)), y1))


def g2_mul(k: int):  # type: ignore[no-untyped-def]
    acc, add = None, G2
    while k:
        if k & 1:
            acc = _g2_add(acc, add)
        add = _g2_add(add, add)
        k >>= 1
    return acc


def _fq(v: int) -> bytes:
    return (v * MONT % P).to_bytes(32, "little")


def srs_bytes(logrows: int) -> bytes:
    """The development SRS for ``logrows``, byte for byte what ezkl reads."""
    if not 1 <= logrows <= TWO_ADICITY:
        raise ValueError(f"logrows {logrows} out of range")
    n = 1 << logrows
    tau = tau_for(logrows)
    omega = pow(ROOT_OF_UNITY, 1 << (TWO_ADICITY - logrows), R)
    base = _FixedBase(G1)
    powers, t = [], 1
    for _ in range(n):
        powers.append(t)
        t = t * tau % R
    multiplier = (pow(tau, n, R) - 1) * pow(n, -1, R) % R
    lagrange, w = [], 1
    for _ in range(n):
        lagrange.append(multiplier * w % R * pow((tau - w) % R, -1, R) % R)
        w = w * omega % R
    g = _to_affine([base.mul(s) for s in powers])
    gl = _to_affine([base.mul(s) for s in lagrange])
    s_g2 = g2_mul(tau)
    out = bytearray(logrows.to_bytes(4, "little"))
    for x, y in g + gl:
        out += _fq(x) + _fq(y)
    for (x, y) in (G2, s_g2):
        out += _fq(x[0]) + _fq(x[1]) + _fq(y[0]) + _fq(y[1])
    return bytes(out)


def write_srs(path: Path, logrows: int) -> None:
    path.write_bytes(srs_bytes(logrows))
