"""The LLM part of the local network demo (``omron-tee localnet --llm``).

After the main demo: two more miner processes serving the default LLM
(gemma-3-270m) beside the ONNX models, one honest and one returning wrong
completions (``--dev.wrong_output``), a few scored LLM probes by the
validator (reference completion compared token by token, time to first
token and tokens per second: the wrong one is caught and scored down), and
one private streamed completion from a third-party client through the
validator's API, which relays ciphertext only. The receipt is saved and
checked offline. Neither the prompt nor the completion is printed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any


from omron_tee.chain.base import Endpoint
from omron_tee.client import PrivateClient
from omron_tee.config import create_wallet
from omron_tee.enclave.measurement import trusted_app_measurement
from omron_tee.devnet.processes import StartFailed, wait_serving
from omron_tee.errors import OmronTeeError
from omron_tee.exchange.receipt_file import verify_receipt_file
from omron_tee.exchange.requester import Answer
from omron_tee.models.llama import DEFAULT_MODEL_ID, default_llm_missing, default_spec
from omron_tee.validator.api.routes import running_api
from omron_tee.validator.releases import ReleaseWatcher

DEMO_PROMPT = "The three primary colors are"
DEMO_TOKENS = 24
PROBES = 3
PROBE_TOKENS = 16
LLM_ROLES = [
    ("llm", (), f"serves {DEFAULT_MODEL_ID} too, correct"),
    ("llm-wrong", ("--dev.wrong_output",), f"serves {DEFAULT_MODEL_ID}, wrong completions"),
]


def llm_miner_measurement(models: Any) -> bytes:
    """The measurement of a miner serving every shipped ONNX model and the default LLM (``--llm``)."""
    pairs = [(s.model_id, s.sha256) for s in models.specs() if s.model_id != DEFAULT_MODEL_ID]
    return trusted_app_measurement(pairs + [(DEFAULT_MODEL_ID, default_spec().sha256)])


def prepare(models: Any, policy: Any) -> Any:
    """Before the validator is built: its registry also holds the default LLM (so it judges it), and its
    policy also allows this release's LLM-serving build. Returns the policy."""
    measurement = llm_miner_measurement(models)
    models.add(default_spec())
    return replace(policy, simulated=replace(policy.simulated, measurements=policy.simulated.measurements | {measurement}))


async def run_llm_demo(net: Any, validator: Any, models: Any, console: Any, *, port_of: Any) -> dict[str, Any]:
    """The LLM demo (after ``prepare``); a failure or a missing package is reported in the result, never raised."""
    t0 = time.monotonic()
    missing = default_llm_missing()
    if missing:
        console.step(f"LLM: skipped ({', '.join(missing)} not installed; see docs/LLM.md)")
        return {"ok": False, "reason": "not installed: " + ", ".join(missing)}
    try:
        return await _run(net, validator, models, console, port_of=port_of, t0=t0)
    except OmronTeeError as e:
        console.say(f"    LLM demo failed: {e}")
        return {"ok": False, "error": str(e), "reason": e.reason, "elapsed_s": round(time.monotonic() - t0, 2)}


async def _run(net: Any, validator: Any, models: Any, console: Any, *, port_of: Any, t0: float) -> dict[str, Any]:
    console.step("LLM: two miners serving gemma-3-270m (llama.cpp, greedy, pinned) beside the ONNX models, in simulated enclaves")
    some_role = next(iter(net.roles.values()), None)
    miners = []  # (name, uid, hotkey, port, log, proc)
    for name, flags, what in LLM_ROLES:
        wallet = create_wallet(f"localnet-{name}-miner", "default", net.wallet_path)
        uid = net.chain.register(wallet)
        hotkey = wallet.hotkey.ss58_address
        port = port_of()
        log_path = net.dir / "logs" / f"{name}-miner.log"
        cmd = [
            sys.executable, "-m", "omron_tee.miner",
            "--netuid", "1", "--subtensor.network", "embedded", "--chain.path", str(net.chain_path),
            "--wallet.name", f"localnet-{name}-miner", "--wallet.hotkey", "default", "--wallet.path", str(net.wallet_path),
            "--axon.port", str(port), "--enclave", "simulated", "--llm", *flags,
        ]
        proc = subprocess.Popen(cmd, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        net.procs.append(proc)  # stopped with the other miners
        net.uids[hotkey] = uid
        if some_role is not None:
            net.roles[hotkey] = replace(some_role, name=name, flags=("--llm", *flags), description=what)
        miners.append((name, uid, hotkey, port, log_path, proc, what))
    prober = validator.prober
    # Meanwhile the validator loads its reference copy of the model (hash-checked).
    await asyncio.to_thread(models.runtime, DEFAULT_MODEL_ID)
    logs = {name: log_path for name, _, _, _, log_path, _, _ in miners}
    try:
        await asyncio.to_thread(wait_serving, {name: port for name, _, _, port, *_ in miners}, {name: proc for name, *_, proc, _ in miners},
                                timeout=60.0, tail=lambda name: logs[name].read_text()[-800:])
    except StartFailed as e:
        raise OmronTeeError(f"an LLM miner did not start: {e}") from None
    for name, uid, hotkey, port, log_path, proc, what in miners:
        console.say(f"    uid {uid}  {name:<11} {what:<36} port {port}  log {log_path}")
    console.say(f"    both up in {time.monotonic() - t0:.1f}s")
    policy = prober.policy  # it allows this release's LLM-serving build (``prepare``)
    validator.sync()
    by_hotkey = {n.hotkey: n for n in validator.miners()}

    console.step("LLM: the validator probes them with its benchmark prompts, compared token by token with its own reference")
    probes: dict[str, list] = {}
    for _ in range(PROBES):
        for name, uid, hotkey, *_ in miners:
            r = await prober.probe(by_hotkey[hotkey], DEFAULT_MODEL_ID, workload="llm")
            old, new = validator.record(r.outcome)
            console.event(f"uid {uid} {name:<10} {DEFAULT_MODEL_ID:<16} {r.outcome.reason:<12} {r.message} | score {old:.3f} -> {new:.3f}", r.outcome.ok)
            probes.setdefault(name, []).append({"ok": r.outcome.ok, "reason": r.outcome.reason, "message": r.message})
    validator.scores.flush()
    for name, uid, hotkey, *_ in miners:
        ok = sum(p["ok"] for p in probes.get(name, []))
        console.say(f"    uid {uid} {name:<10} {ok}/{len(probes.get(name, []))} completions match the reference; score {validator.scores.scores().get(hotkey, 0.0):.3f}")
    console.step("LLM: third-party client, a private streamed completion (prompt sealed to the enclave; the validator relays ciphertext)")
    api_port = port_of()
    async with running_api(validator, port=api_port) as url:
        net.chain.serve(net.validator_wallet, Endpoint("127.0.0.1", api_port))
        client = PrivateClient(url, validator.hotkey, net.client_wallet, policy=policy, verifiers=validator.prober.verifiers, models=models,
                               releases=ReleaseWatcher(net.chain, policy.releases).refresh)
        result: dict[str, Any] = {"model": DEFAULT_MODEL_ID, "llm_miners": {name: uid for name, uid, *_ in miners}, "probes": probes}
        try:
            chunks = 0
            final: Answer | None = None
            async for part in client.stream(DEFAULT_MODEL_ID, DEMO_PROMPT, max_tokens=DEMO_TOKENS, candidates=2):
                if isinstance(part, Answer):
                    final = part
                else:
                    chunks += 1
            assert final is not None
            path = net.dir / "llm-receipt.json"
            client.receipt_file(final).save(path)
            check = verify_receipt_file(json.loads(path.read_text()), policy=policy, verifiers=validator.prober.verifiers, workloads=client.workloads,
                                        models=models)
            n = len(final.result.tokens)
            tps = (n - 1) / (final.elapsed_s - final.ttft_s) if final.ttft_s is not None and n > 1 and final.elapsed_s > final.ttft_s else None
            console.say(f"    {n} tokens in {chunks} sealed chunks, each authenticated and in order; "
                        f"time to first token {final.ttft_s * 1000:.0f} ms, {tps:.1f} tokens/s" if tps else "")
            console.say(f"    answered by uid {net.uids.get(final.miner_hotkey)}; receipt covers the prompt and the whole output; "
                        f"the text is only in the client's own file {path}; "
                        f"offline check: {'valid' if check.ok else 'INVALID: ' + '; '.join(check.reasons)}")
            result.update(ok=True, miner_uid=net.uids.get(final.miner_hotkey), tokens=n, chunks=chunks, ttft_ms=round(final.ttft_s * 1000, 1) if final.ttft_s else None,
                          tokens_per_s=round(tps, 1) if tps else None, receipt=str(path), receipt_valid=check.ok)
        except OmronTeeError as e:
            console.say(f"    private completion failed: {e}")
            result.update(ok=False, error=str(e), reason=e.reason)
        finally:
            await client.aclose()
    result["elapsed_s"] = round(time.monotonic() - t0, 2)
    return result
