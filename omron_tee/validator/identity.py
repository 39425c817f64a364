"""One enclave, one hotkey: refuse evidence whose keys or hardware already back another miner.

The report data binds each attestation to the miner's hotkey, so a miner
cannot present another miner's enclave as its own. What the binding cannot
stop is one operator running many hotkeys on one machine (or one enclave
modified to serve several): the same hardware identity (SEV-SNP chip id,
Intel PPID, NVIDIA device key) or the same channel keys would then earn
several times. This registry remembers which hotkey first presented each
identity and names a refusal for any other hotkey presenting it, as long as
the first is still registered. Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from omron_tee.attestation.evidence import Claims
from omron_tee.attestation.binding import EnclavePublicKeys

MAX_IDENTITIES_PER_HOTKEY = 64  # an enclave that restarts gets new keys; old ones age out


@dataclass(frozen=True)
class Identity:
    kind: str  # "hpke-key", "signing-key" or "platform:<tee type>"
    value: bytes


def identities_of(keys: EnclavePublicKeys, claims: Claims) -> list[Identity]:
    """Everything in one verified attestation that must not back two hotkeys."""
    out = [Identity("hpke-key", keys.hpke_public), Identity("signing-key", keys.signing_public)]
    for c in (claims, *claims.attached):
        if c.platform_id:
            out.append(Identity(f"platform:{c.tee_type.value}", c.platform_id))
    return out


class IdentityRegistry:
    def __init__(self) -> None:
        self._owner: dict[Identity, str] = {}
        self._held: dict[str, deque[Identity]] = {}

    def claim(self, hotkey: str, identities: list[Identity]) -> str | None:
        """None if ``hotkey`` may present ``identities`` (now recorded as its own), else why not."""
        for ident in identities:
            owner = self._owner.get(ident)
            if owner is not None and owner != hotkey:
                what = "hardware" if ident.kind.startswith("platform:") else "enclave keys"
                return f"the same {what} ({ident.kind}) already back the miner {owner[:12]}…; one enclave earns for one hotkey"
        held = self._held.setdefault(hotkey, deque())
        for ident in identities:
            if self._owner.get(ident) == hotkey:
                continue
            self._owner[ident] = hotkey
            held.append(ident)
            if len(held) > MAX_IDENTITIES_PER_HOTKEY:
                old = held.popleft()
                if self._owner.get(old) == hotkey:
                    del self._owner[old]
        return None

    def retain(self, hotkeys: set[str]) -> None:
        """Forget the identities of hotkeys no longer registered (their hardware may serve a new one)."""
        for hotkey in [h for h in self._held if h not in hotkeys]:
            for ident in self._held.pop(hotkey):
                if self._owner.get(ident) == hotkey:
                    del self._owner[ident]

    def owner(self, ident: Identity) -> str | None:
        return self._owner.get(ident)
