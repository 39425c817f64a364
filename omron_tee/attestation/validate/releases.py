"""Published releases: the builds a subnet's owner committed on chain, and the timelock rule.

A release names one build of the trusted app for one TEE type: its measurement
(SGX MRENCLAVE, TDX MRTD, SEV-SNP launch digest, the simulated enclave's
code-and-models digest) and a label. The publisher's latest release commitment
lists, one per line (up to three: the Commitments pallet's fields), the builds
published now (``omron-tee release publish``); a build left out of it is withdrawn.
A build's publication block is the first of the commitments that have listed it
without a break up to the latest, so republishing never restarts its clock. A
validator whose policy has a ``[releases]`` section accepts evidence only when its
measurement is published by the named publisher and has been for at least
``min_age_blocks`` blocks, so the community can rebuild and inspect a build
(``omron-tee enclave measure``) before it earns anything.

subtensor keeps only a hotkey's latest commitment: there the blocks come from it,
and from what the validator itself has seen (``validator.releases``); the
publisher's hotkey must commit nothing else, or its releases are overwritten.

This module is pure: the chain's commitments and the current block come in as a
``ReleaseLog``, as ``now`` does for the rest of the policy. Commitments are hostile
input (any registered hotkey can commit any text): only the publisher's are read,
and a text that is not a well-formed release is ignored, never an error.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from omron_tee.attestation.evidence import Claims, TeeType
from omron_tee.errors import ConfigError
from omron_tee.reasons import Reason

TAG = "otee-release/1"
MAX_LABEL = 40
# The lengths each TEE's measurement has (bytes): anything else is not a release of ours.
MEASUREMENT_LENGTHS = {TeeType.SIMULATED: 48, TeeType.SGX: 32, TeeType.TDX: 48, TeeType.SEV_SNP: 48}
_LABEL = re.compile(r"[A-Za-z0-9._:+@-]{1,%d}" % MAX_LABEL)
OWNER = "owner"  # the policy's publisher meaning "the subnet's owner hotkey, as the chain says"

Refusal = tuple[Reason, str]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Release:
    """One build: the TEE type, its measurement, and a label (e.g. ``v1.4.0``)."""

    tee: TeeType
    measurement: bytes
    label: str

    def __post_init__(self) -> None:
        want = MEASUREMENT_LENGTHS.get(self.tee)
        if want is None:
            raise ConfigError(f"releases are published for {', '.join(t.value for t in MEASUREMENT_LENGTHS)}, not {self.tee.value}")
        if len(self.measurement) != want:
            raise ConfigError(f"a {self.tee.value} measurement is {want} bytes, not {len(self.measurement)}")
        if not _LABEL.fullmatch(self.label):
            raise ConfigError(f"release label {self.label!r} must be 1-{MAX_LABEL} characters of A-Z a-z 0-9 . _ : + @ -")

    def to_commitment(self) -> str:
        """The commitment text (at most 128 bytes: the measurement in unpadded base64url)."""
        return f"{TAG} {self.tee.value} {_b64(self.measurement)} {self.label}"

    @classmethod
    def from_commitment(cls, text: str) -> Release | None:
        """The release a commitment text states, or None for any text that is not one."""
        parts = text.split(" ") if isinstance(text, str) and len(text) <= 256 else []
        if len(parts) != 4 or parts[0] != TAG:
            return None
        try:
            return cls(TeeType(parts[1]), _unb64(parts[2]), parts[3])
        except (ValueError, binascii.Error, ConfigError):
            return None


NONE = f"{TAG} none"  # a release commitment that lists no build: every earlier one is withdrawn


def releases_in(text: str) -> dict[tuple[TeeType, bytes], Release] | None:
    """The well-formed releases a commitment's lines state, by (TEE, measurement); None when it is no
    release commitment at all (malformed lines are ignored)."""
    out: dict[tuple[TeeType, bytes], Release] = {}
    marked = False
    for line in text.split("\n")[:8] if isinstance(text, str) else ():
        if line == NONE:
            marked = True
        r = Release.from_commitment(line)
        if r is not None:
            out.setdefault((r.tee, r.measurement), r)
    return out if out or marked else None


def release_set_text(releases: Iterable[Release]) -> str:
    """The commitment that publishes exactly ``releases`` (one per line; the chain takes at most three)."""
    return "\n".join(r.to_commitment() for r in releases) or NONE


@dataclass(frozen=True)
class PublishedRelease:
    release: Release
    block: int  # the block its commitment landed in
    publisher: str


@dataclass(frozen=True)
class ReleaseLog:
    """The releases one publisher committed, as read at ``block``."""

    publisher: str
    block: int
    releases: tuple[PublishedRelease, ...]

    @classmethod
    def from_commitments(cls, commitments: Iterable[tuple[str, int, str]], *, publisher: str, block: int,
                         seen: Mapping[tuple[TeeType, bytes], int] | None = None) -> ReleaseLog:
        """From (hotkey, block, text) triples, oldest first: the builds the publisher's latest release
        commitment lists, each with the block since which it has been listed without a break (or,
        from ``seen``, an earlier block the reader saw it listed since)."""
        sets = []
        for hotkey, at, text in commitments:
            if hotkey == publisher:
                listed = releases_in(text)
                if listed is not None:  # a commitment of another kind (it should not share the hotkey) is not a release set
                    sets.append((int(at), listed))
        sets.sort(key=lambda s: s[0])  # stable: commitments of one block keep the chain's order
        if not sets:
            return cls(publisher, int(block), ())
        found = []
        for key, release in sets[-1][1].items():
            since = sets[-1][0]
            for at, listed in reversed(sets[:-1]):
                if key not in listed:
                    break
                since = at
            if seen is not None and key in seen:
                since = min(since, seen[key])
            found.append(PublishedRelease(release, since, publisher))
        return cls(publisher, int(block), tuple(sorted(found, key=lambda p: p.block)))

    def first_published(self, tee: TeeType, measurement: bytes) -> PublishedRelease | None:
        """The earliest publication of this build (a re-publication never restarts its clock)."""
        return next((p for p in self.releases if p.release.tee is tee and p.release.measurement == measurement), None)


@dataclass(frozen=True)
class ReleasePolicy:
    """The policy's ``[releases]`` section."""

    require_published: bool = False
    publisher: str = OWNER
    min_age_blocks: int = 0

    KEYS = frozenset({"require_published", "publisher", "min_age_blocks"})

    @classmethod
    def parse(cls, sec: dict) -> ReleasePolicy:
        unknown = sorted(set(sec) - cls.KEYS)
        if unknown:
            raise ConfigError(f"policy [releases]: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(cls.KEYS))})")
        require = sec.get("require_published", True)
        publisher = sec.get("publisher", OWNER)
        age = sec.get("min_age_blocks", 0)
        if not isinstance(require, bool):
            raise ConfigError("policy releases.require_published must be true or false")
        if not isinstance(publisher, str) or not publisher or len(publisher) > 64:
            raise ConfigError('policy releases.publisher must be "owner" or an ss58 hotkey')
        if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= 10**7:
            raise ConfigError("policy releases.min_age_blocks must be an integer in 0..10000000")
        return cls(require, publisher, age)


def check_published(claims: Claims, log: ReleaseLog | None, rule: ReleasePolicy) -> list[Refusal]:
    """Why ``claims``' build may not earn under ``rule`` given the chain's ``log`` (empty: it may).

    Only the CPU TEE's (or simulated enclave's) measurement is a release: an attached GPU's
    measurements are judged by the policy's ``[nvidia]`` section.
    """
    if not rule.require_published:
        return []
    if log is None:
        return [(Reason.RELEASES_UNKNOWN, "the releases published on chain could not be read, so no build can be checked against them")]
    if rule.publisher != OWNER and log.publisher != rule.publisher:
        return [(Reason.RELEASES_UNKNOWN, f"the releases read are {log.publisher}'s, but the policy trusts {rule.publisher}'s")]
    published = log.first_published(claims.tee_type, claims.measurement)
    short = claims.measurement.hex()[:16] + "…"
    if published is None:
        return [(Reason.MEASUREMENT_UNPUBLISHED, f"{claims.tee_type.value} build {short} was never published on chain by {log.publisher}")]
    age = log.block - published.block
    if age < rule.min_age_blocks:
        return [(Reason.RELEASE_TOO_RECENT, f"{claims.tee_type.value} build {short} ({published.release.label}) was published at block "
                 f"{published.block}, {age} blocks ago; builds earn {rule.min_age_blocks} blocks after publication "
                 f"({rule.min_age_blocks - age} to go)")]
    return []
