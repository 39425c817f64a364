"""An append-only Merkle log as RFC 9162 (Certificate Transparency 2.0) defines it, section 2.1.

Leaf hash ``SHA-256(0x00 || data)``, node hash ``SHA-256(0x01 || left || right)``, the
tree of n leaves split at the largest power of two below n; inclusion proofs are the
RFC's audit paths and are verified with its algorithm (2.1.3.2), so any RFC 9162
implementation can check ours.

Written here rather than taken from a library: the maintained Python implementation
(pymerkle) is GPL-3.0, which this MIT project cannot ship, and pins its dependencies
exactly; the RFC's algorithms are a few dozen lines over ``hashlib``, and
tests/transparency check them against the RFC's own definitions on every size to 70
and against hand-built trees.
"""

from __future__ import annotations

import hashlib
import threading

HASH_LEN = 32
_CACHE_MIN = 256  # perfect subtrees at least this wide keep their root: a root or proof then costs O(log n) cached lookups
MAX_PROOF_LEN = 64  # a path longer than this is for more than 2**64 leaves: hostile


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleLog:
    """Leaf hashes in one bytearray (32 bytes a leaf), the roots of wide perfect subtrees cached."""

    def __init__(self) -> None:
        self._hashes = bytearray()
        self._cache: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._hashes) // HASH_LEN

    def append(self, data: bytes) -> int:
        """Add a leaf; its index."""
        return self.append_hash(leaf_hash(data))

    def append_hash(self, digest: bytes) -> int:
        with self._lock:
            self._hashes += digest
            return len(self) - 1

    def leaf(self, index: int) -> bytes:
        return bytes(self._hashes[index * HASH_LEN:(index + 1) * HASH_LEN])

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default all); the empty tree's is SHA-256 of nothing."""
        size = len(self) if size is None else size
        self._check_size(size)
        if size == 0:
            return hashlib.sha256(b"").digest()
        return self._mth(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The audit path of leaf ``index`` in the tree of the first ``size`` leaves (RFC 9162 2.1.3.1)."""
        size = len(self) if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise IndexError(f"leaf {index} is not in a tree of {size} leaves")
        path: list[bytes] = []
        start, n, m = 0, size, index
        # Walk down from the root, collecting the sibling of each subtree the leaf is in; the RFC
        # lists them from the leaf upwards.
        while n > 1:
            k = _split(n)
            if m < k:
                path.append(self._mth(start + k, n - k))
                n = k
            else:
                path.append(self._mth(start, k))
                start, n, m = start + k, n - k, m - k
        return path[::-1]

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= len(self):
            raise IndexError(f"the log has {len(self)} leaves, not {size}")

    def _mth(self, start: int, n: int) -> bytes:
        if n == 1:
            return self.leaf(start)
        perfect = n & (n - 1) == 0 and start % n == 0
        if perfect and n >= _CACHE_MIN:
            hit = self._cache.get((start, n))
            if hit is not None:
                return hit
        k = _split(n)
        out = node_hash(self._mth(start, k), self._mth(start + k, n - k))
        if perfect and n >= _CACHE_MIN:
            self._cache[(start, n)] = out  # leaves never change, so neither does a full subtree's root
        return out


def verify_inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does ``path`` prove the leaf hash ``leaf`` is leaf ``index`` of the tree of
    ``size`` leaves whose root is ``root``? Never raises for hostile input."""
    if not (isinstance(index, int) and isinstance(size, int) and 0 <= index < size) or len(path) > MAX_PROOF_LEN:
        return False
    if any(not isinstance(p, bytes) or len(p) != HASH_LEN for p in path) or len(leaf) != HASH_LEN or len(root) != HASH_LEN:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
