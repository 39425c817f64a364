"""The shipped Gramine manifest template: renders to TOML with the guarantees its comments claim.

gramine-manifest is Jinja2 with Gramine's globals; the globals are stood in here with the same
shapes (gramine.runtimedir(), python.get_sys_path() yielding pathlib.Path), so the template's
logic is rendered for real. Signing needs Gramine and SGX hardware and is not run here.
"""

from __future__ import annotations

import pathlib
import tomllib
from pathlib import Path

import jinja2
import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "gramine" / "omron-tee-miner.manifest.template"
VENV = "/opt/omron-tee/venv"
SYS_PATH = ["/usr/lib/python3.11", "/usr/lib/python3.11/lib-dynload", f"{VENV}/lib/python3.11/site-packages", "/usr/lib/python3.11/os.py"]


class _Runtimedir:
    def __call__(self, libc: str = "glibc") -> pathlib.Path:
        return pathlib.Path("/usr/lib/x86_64-linux-gnu/gramine/runtime") / libc

    def __str__(self) -> str:
        return str(self())


class _P(type(pathlib.Path())):  # a Path whose is_dir() does not need the file to exist here
    def is_dir(self) -> bool:  # type: ignore[override]
        return not self.name.endswith(".py")


def render(**overrides: str) -> dict:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals["gramine"] = {"runtimedir": _Runtimedir(), "libos": pathlib.Path("/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so")}
    env.globals["python"] = {"get_sys_path": lambda interpreter: [_P(p) for p in SYS_PATH]}
    variables = {
        "venv": VENV, "arch_libdir": "/lib/x86_64-linux-gnu", "log_level": "error", "enclave_size": "8G", "max_threads": "64",
        "debug": "false", "isvprodid": "1", "isvsvn": "1", "ca_bundle": f"{VENV}/lib/python3.11/site-packages/certifi/cacert.pem",
    }
    variables.update(overrides)
    return tomllib.loads(env.from_string(TEMPLATE.read_text()).render(**variables))


def test_renders_to_a_manifest_with_dcap_attestation():
    m = render()
    assert m["sgx"]["remote_attestation"] == "dcap"
    assert m["sgx"]["debug"] is False and m["sgx"]["isvprodid"] == 1 and m["sgx"]["file_check_policy"] == "strict"


def test_the_host_cannot_choose_the_code():
    m = render()
    # A fixed interpreter command line: no host argv, no host environment beyond the miner options.
    assert m["loader"]["argv"] == ["python3", "-I", "-B", "-m", "omron_tee.cli", "enclave", "gramine-miner"]
    assert "insecure__use_cmdline_argv" not in m["loader"] and "insecure__use_host_env" not in m["loader"]
    passthrough = [k for k, v in m["loader"]["env"].items() if isinstance(v, dict)]
    assert passthrough == ["OMRON_TEE_MINER_ARGS"]
    # Only the wallet is allowed (unmeasured); everything that can run is trusted.
    assert m["sgx"]["allowed_files"] == ["file:wallets/"]
    trusted = m["sgx"]["trusted_files"]
    assert f"file:{VENV}/" in trusted and "file:/usr/lib/python3.11/" in trusted and "file:/usr/lib/python3.11/os.py" in trusted
    # Every mounted host path is trusted, except the wallet and the in-enclave tmpfs.
    for mount in m["fs"]["mounts"]:
        if mount.get("type") == "tmpfs" or mount["path"] == "/wallets":
            continue
        uri = mount["uri"].removeprefix("file:")
        assert any(t.removeprefix("file:").rstrip("/") == uri.rstrip("/") for t in trusted), mount


def test_venv_paths_are_not_mounted_twice():
    paths = [m["path"] for m in render()["fs"]["mounts"]]
    assert len(paths) == len(set(paths))
    assert not any(p.startswith(VENV + "/") for p in paths)


def test_debug_build_is_a_variable_not_an_edit():
    assert render(debug="true")["sgx"]["debug"] is True


def test_missing_variable_fails_loudly():
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.globals["gramine"] = {"runtimedir": _Runtimedir()}
    env.globals["python"] = {"get_sys_path": lambda i: []}
    with pytest.raises(jinja2.UndefinedError):
        env.from_string(TEMPLATE.read_text()).render(venv=VENV)
