"""The RFC 9162 log: roots and audit paths against the RFC's recursive definitions, and hostile proofs refused."""

from __future__ import annotations

import hashlib

import pytest

from omron_tee.transparency.merkle import MerkleLog, leaf_hash, node_hash, verify_inclusion


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, literally."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaf_hash(leaves[0])
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1, literally."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return rfc_path(m, leaves[:k]) + [mth(leaves[k:])]
    return rfc_path(m - k, leaves[k:]) + [mth(leaves[:k])]


@pytest.fixture(scope="module")
def log_and_leaves():
    leaves = [f"entry {i}".encode() for i in range(70)]
    log = MerkleLog()
    for x in leaves:
        log.append(x)
    return log, leaves


def test_roots_and_paths_equal_the_rfc_definitions_at_every_size(log_and_leaves):
    log, leaves = log_and_leaves
    assert log.root(0) == hashlib.sha256(b"").digest()
    for size in range(1, len(leaves) + 1):
        root = log.root(size)
        assert root == mth(leaves[:size])
        for m in range(size):
            path = log.inclusion_proof(m, size)
            assert path == rfc_path(m, leaves[:size])
            assert verify_inclusion(leaf_hash(leaves[m]), m, size, path, root)


def test_a_three_leaf_tree_by_hand():
    a, b, c = b"a", b"b", b"c"
    log = MerkleLog()
    for x in (a, b, c):
        log.append(x)
    root = node_hash(node_hash(leaf_hash(a), leaf_hash(b)), leaf_hash(c))
    assert log.root() == root
    assert log.inclusion_proof(2) == [node_hash(leaf_hash(a), leaf_hash(b))]
    assert log.inclusion_proof(0) == [leaf_hash(b), leaf_hash(c)]


def test_the_cache_of_wide_subtrees_gives_the_same_roots():
    log = MerkleLog()
    leaves = [i.to_bytes(4, "big") for i in range(1100)]
    for x in leaves:
        log.append(x)
    assert log.root(1024) == mth(leaves[:1024])
    assert log.root() == mth(leaves)  # second time from the cache
    assert log.root() == mth(leaves)
    assert verify_inclusion(leaf_hash(leaves[700]), 700, 1100, log.inclusion_proof(700), log.root())


def test_forged_or_malformed_proofs_are_refused(log_and_leaves):
    log, leaves = log_and_leaves
    size, m = 37, 11
    root, path, leaf = log.root(size), log.inclusion_proof(m, size), leaf_hash(leaves[m])
    assert verify_inclusion(leaf, m, size, path, root)
    assert not verify_inclusion(leaf_hash(b"forged"), m, size, path, root)
    assert not verify_inclusion(leaf, m + 1, size, path, root)
    # (The size is bound by the commitment, which holds size and root together: check_inclusion
    # requires both to be what the validator committed.)
    assert not verify_inclusion(leaf, m, 16, path, root)
    assert not verify_inclusion(leaf, m, size, path[:-1], root)
    assert not verify_inclusion(leaf, m, size, path + [path[0]], root)
    assert not verify_inclusion(leaf, m, size, [bytes(32)] + path[1:], root)
    assert not verify_inclusion(leaf, m, size, path, bytes(32))
    assert not verify_inclusion(leaf, size, size, path, root)
    assert not verify_inclusion(leaf, -1, size, path, root)
    assert not verify_inclusion(leaf, m, size, [b"short"] * len(path), root)
    assert not verify_inclusion(leaf, m, size, [bytes(32)] * 65, root)
    with pytest.raises(IndexError):
        log.inclusion_proof(size, size)
    with pytest.raises(IndexError):
        log.root(len(leaves) + 1)
