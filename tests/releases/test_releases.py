"""Published releases: the record, the timelock rule, and the local network refusing and accepting builds by it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omron_tee.attestation.evidence import Claims, TeeType
from omron_tee.attestation.validate.policy import Policy
from omron_tee.attestation.validate.releases import OWNER, Release, ReleaseLog, ReleasePolicy, check_published
from omron_tee.config import create_wallet
from omron_tee.errors import ConfigError
from omron_tee.reasons import Reason
from omron_tee.validator.reward import Verdict

M = bytes(range(48))


def claims(measurement: bytes = M, tee: TeeType = TeeType.SIMULATED) -> Claims:
    return Claims(tee_type=tee, measurement=measurement, report_data=b"\0" * 64, debug=False)


def test_a_release_round_trips_through_its_commitment_text_within_the_chain_limit():
    for tee, n in ((TeeType.SIMULATED, 48), (TeeType.SGX, 32), (TeeType.TDX, 48), (TeeType.SEV_SNP, 48)):
        r = Release(tee, bytes([7]) * n, "v1.4.0-rc.1+build")
        text = r.to_commitment()
        assert len(text.encode()) <= 128 and Release.from_commitment(text) == r


@pytest.mark.parametrize("text", ["", "otee-release/1", "otee-release/1 simulated AAAA v1", "otee-release/2 simulated " + "A" * 64 + " v1",
                                  "otee-release/1 nvidia " + "A" * 64 + " v1", "otee-release/1 simulated " + "A" * 64 + " bad/label",
                                  "otee-release/1 simulated " + "!" * 64 + " v1", "x" * 10_000])
def test_anything_that_is_not_a_well_formed_release_is_ignored(text):
    assert Release.from_commitment(text) is None


def test_bad_releases_cannot_be_made():
    with pytest.raises(ConfigError):
        Release(TeeType.SGX, M, "v1")  # SGX measurements are 32 bytes
    with pytest.raises(ConfigError):
        Release(TeeType.SIMULATED, M, "")


def _log(*published: tuple[str, int, str], block: int, publisher: str = "owner-hk") -> ReleaseLog:
    return ReleaseLog.from_commitments(published, publisher=publisher, block=block)


def test_the_rule_names_unpublished_too_recent_and_unknown_and_accepts_old_enough_builds():
    rule = ReleasePolicy(True, OWNER, 100)
    text = Release(TeeType.SIMULATED, M, "v1").to_commitment()
    assert [c for c, _ in check_published(claims(), None, rule)] == [Reason.RELEASES_UNKNOWN]
    assert [c for c, _ in check_published(claims(), _log(block=500), rule)] == [Reason.MEASUREMENT_UNPUBLISHED]
    # Published by someone else: ignored.
    assert [c for c, _ in check_published(claims(), _log(("mallory", 10, text), block=500), rule)] == [Reason.MEASUREMENT_UNPUBLISHED]
    refused = check_published(claims(), _log(("owner-hk", 450, text), block=500), rule)
    assert [c for c, _ in refused] == [Reason.RELEASE_TOO_RECENT] and "50 to go" in refused[0][1]
    assert check_published(claims(), _log(("owner-hk", 400, text), block=500), rule) == []
    # Re-publishing never restarts the clock; another TEE's release of the same bytes does not count.
    assert check_published(claims(), _log(("owner-hk", 400, text), ("owner-hk", 499, text), block=500), rule) == []
    assert check_published(claims(tee=TeeType.TDX), _log(("owner-hk", 400, text), block=500), rule)[0][0] == Reason.MEASUREMENT_UNPUBLISHED
    assert check_published(claims(), None, ReleasePolicy()) == []  # no [releases]: nothing required
    named = ReleasePolicy(True, "owner-hk", 0)
    assert check_published(claims(), _log(("owner-hk", 1, text), block=2, publisher="someone"), named)[0][0] == Reason.RELEASES_UNKNOWN


def test_the_latest_release_commitment_is_the_published_set_and_clocks_survive_republication():
    from omron_tee.attestation.validate.releases import NONE, release_set_text

    a, b = Release(TeeType.SIMULATED, M, "a"), Release(TeeType.SIMULATED, bytes(48), "b")
    both, only_b, only_a = release_set_text([a, b]), release_set_text([b]), release_set_text([a])
    assert both.count("\n") == 1 and release_set_text([]) == NONE
    log = _log(("owner-hk", 10, only_a), ("owner-hk", 50, both), ("owner-hk", 90, both), block=100)
    assert {p.release.label: p.block for p in log.releases} == {"a": 10, "b": 50}  # listed without a break since
    # A build left out is withdrawn; listed again later, its clock starts again.
    log = _log(("owner-hk", 10, both), ("owner-hk", 50, only_b), ("owner-hk", 90, both), block=100)
    assert {p.release.label: p.block for p in log.releases} == {"a": 90, "b": 10}
    assert _log(("owner-hk", 10, both), ("owner-hk", 50, NONE), block=100).releases == ()
    # Commitments of another kind on the publisher's hotkey do not withdraw anything (on subtensor they overwrite: don't).
    log = _log(("owner-hk", 10, both), ("owner-hk", 50, "otee-audit/1 0123456789abcdef 5 AAAA"), block=100)
    assert {p.release.label for p in log.releases} == {"a", "b"}
    # What a reader saw before (subtensor keeps only the latest commitment) keeps a build's clock.
    seen = {(TeeType.SIMULATED, M): 3}
    log = ReleaseLog.from_commitments([("owner-hk", 90, both)], publisher="owner-hk", block=100, seen=seen)
    assert {p.release.label: p.block for p in log.releases} == {"a": 3, "b": 90}


def test_policy_section_parses_and_refuses_mistakes():
    p = Policy.from_toml('[releases]\nmin_age_blocks = 7200\n')
    assert p.releases == ReleasePolicy(True, OWNER, 7200)
    assert Policy.from_toml("").releases.require_published is False
    for bad in ('[releases]\nmin_age = 1\n', '[releases]\nmin_age_blocks = -1\n', '[releases]\nrequire_published = "yes"\n',
                '[releases]\npublisher = 3\n'):
        with pytest.raises(ConfigError):
            Policy.from_toml(bad)


def test_too_recent_is_no_strike_but_unpublished_is():
    from omron_tee.validator.scoring import Outcome

    def verdict(reason):
        return Outcome("hk", 1, False, reason, None, False, None).verdict

    assert verdict(Reason.RELEASE_TOO_RECENT) is Verdict.UNAVAILABLE
    assert verdict(Reason.MEASUREMENT_UNPUBLISHED) is Verdict.STRIKE
    assert verdict(Reason.RELEASES_UNKNOWN) is Verdict.NOT_SCORED


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "omron_tee.cli", *args], capture_output=True, text=True, timeout=120)


def test_on_the_network_unpublished_and_too_recent_builds_are_refused_and_a_published_one_earns(tmp_path):
    from omron_tee.devnet import network
    from omron_tee.enclave.measurement import trusted_app_measurement
    from omron_tee.models.registry import ModelRegistry
    from omron_tee.validator.neuron import local_dev_policy

    net = network.start(tmp_path / "net", honest=2, hostile={}, variants={"honest-b": "unpublished-build"})
    try:
        owner = create_wallet("owner", "default", net.wallet_path)
        net.chain.register(owner)
        net.chain.claim_owner(owner)
        models = ModelRegistry.builtin()
        shipped = [(s.model_id, s.sha256) for s in models.specs()]
        base = local_dev_policy(net.chain_path, models)
        variant = trusted_app_measurement(shipped, variant=b"unpublished-build")
        # The file allows both builds; only the chain tells them apart.
        policy = dataclasses.replace(base, simulated=dataclasses.replace(base.simulated, measurements=base.simulated.measurements | {variant}),
                                     releases=ReleasePolicy(True, OWNER, 40))
        chain_args = ["--chain.path", str(net.chain_path)]
        published = _cli("release", "publish", "--label", "v1", *chain_args, "--wallet.name", "owner", "--wallet.path", str(net.wallet_path), "--json")
        assert published.returncode == 0, published.stderr
        at = net.chain.block()

        def at_publication(listed):
            return next(r["block"] for r in listed["releases"] if r["label"] == "v1")

        listed = _cli("release", "list", *chain_args, "--min-age-blocks", "40")
        assert listed.returncode == 0 and "v1" in listed.stdout and "timelocked" in listed.stdout, listed.stdout
        # A second build joins the first in one commitment; withdrawing it leaves the first, clock untouched.
        wallet_args = ["--wallet.name", "owner", "--wallet.path", str(net.wallet_path)]
        assert _cli("release", "publish", "--label", "v1-llm", "--llm", *chain_args, *wallet_args).returncode == 0
        listed = json.loads(_cli("release", "list", *chain_args, "--json").stdout)
        assert sorted(r["label"] for r in listed["releases"]) == ["v1", "v1-llm"]
        llm = next(r for r in listed["releases"] if r["label"] == "v1-llm")
        withdrawn = _cli("release", "withdraw", "--measurement", llm["measurement"], *chain_args, *wallet_args)
        assert withdrawn.returncode == 0, withdrawn.stderr
        listed = json.loads(_cli("release", "list", *chain_args, "--json", "--history").stdout)
        assert [(r["label"], r["block"]) for r in listed["releases"]] == [("v1", at_publication(listed))]
        assert [sorted(b["label"] for b in h["builds"]) for h in listed["history"]] == [["v1"], ["v1", "v1-llm"], ["v1"]]

        async def rounds():
            v = net.validator(tmp_path / "scores.sqlite", timeout=2.0, policy=policy)
            try:
                first = {net.by_hotkey(e.result.outcome.hotkey).name: e.result.outcome for e in await v.step(2)}
                first_done[0] = net.chain.block()
                while net.chain.block() < at + 41:
                    await asyncio.sleep(0.05)
                v.releases.refresh(force=True)
                later = {net.by_hotkey(e.result.outcome.hotkey).name: e.result.outcome for e in await v.step(2)}
                return first, later
            finally:
                await v.prober.client.aclose()

        first_done = [0]
        first, later = asyncio.run(rounds())
        if first_done[0] - at < 40:  # the first round ran inside the timelock (a very slow machine may miss it)
            assert first["honest-a"].reason == Reason.RELEASE_TOO_RECENT and first["honest-a"].verdict is Verdict.UNAVAILABLE
        assert first["honest-b"].reason == Reason.MEASUREMENT_UNPUBLISHED and first["honest-b"].verdict is Verdict.STRIKE
        assert later["honest-a"].ok and later["honest-a"].reason == "ok"
        assert later["honest-b"].reason == Reason.MEASUREMENT_UNPUBLISHED
        assert "may earn" in _cli("release", "list", *chain_args, "--min-age-blocks", "40").stdout
    finally:
        net.stop()


def test_release_publish_computes_what_enclave_measure_prints():
    import json

    dry = _cli("release", "publish", "--label", "v1", "--dry-run", "--json")
    measured = _cli("enclave", "measure", "--json")
    assert dry.returncode == 0 and measured.returncode == 0, dry.stderr + measured.stderr
    assert json.loads(dry.stdout)["release"]["measurement"] == json.loads(measured.stdout)["values"]["measurement"]


def test_a_clean_export_of_the_tracked_sources_reproduces_the_published_measurement(tmp_path):
    """What CI checks on its clean clone: the measurement depends on tracked files only, not on this
    checkout's stray files or this process, so anyone can rebuild a published release from its commit."""
    import json
    import os
    import shutil

    root = Path(__file__).resolve().parents[2]
    tracked = subprocess.run(["git", "ls-files", "omron_tee"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, tmp_path / rel)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONHASHSEED": "7"}
    exported = subprocess.run([sys.executable, "-c", "from omron_tee.cli import main; main(['enclave', 'measure', '--json'])"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    here = json.loads(_cli("release", "publish", "--label", "v1", "--dry-run", "--json").stdout)
    stray = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "omron_tee"], cwd=root, capture_output=True, text=True).stdout
    assert json.loads(exported.stdout)["values"]["measurement"] == here["release"]["measurement"], (
        f"the measurement covers files git does not track; add or remove them:\n{stray}")
