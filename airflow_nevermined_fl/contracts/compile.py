"""Compile the Nevermined contracts with solc-js (``docker/devchain/compile.js``), cached by pinned versions.

The cache lives in ``<cache dir>/contracts/<key>/artifacts.json`` where ``key`` hashes the pinned npm
dependencies, the compile script and the contract list: a warm start never recompiles.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from airflow_nevermined_fl.contracts import CONTRACTS
from airflow_nevermined_fl.contracts.errors import ChainError
from airflow_nevermined_fl.paths import PROJECT_DIR, cache_dir

DEVCHAIN_DIR = PROJECT_DIR / "docker" / "devchain"
# npm ships anvil per platform as an optional dependency: @foundry-rs/anvil-<os>-<arch>.
ANVIL_PLATFORMS = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}

Artifacts = dict[str, dict[str, Any]]


def _require_node_modules() -> Path:
    modules = DEVCHAIN_DIR / "node_modules"
    if not (modules / "solc").is_dir() or not (modules / "@nevermined-io" / "contracts").is_dir():
        raise ChainError(f"{modules} is not installed: run `make setup` (npm ci in {DEVCHAIN_DIR})")
    return modules


def anvil_binary() -> Path:
    """The anvil binary shipped by the pinned ``@foundry-rs/anvil`` npm package."""
    modules = _require_node_modules()
    system = "darwin" if sys.platform == "darwin" else "linux"
    arch = ANVIL_PLATFORMS.get(platform.machine().lower(), platform.machine())
    path = modules / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    if not path.is_file():
        raise ChainError(f"anvil binary not found at {path}: run `make setup`")
    return path


def artifacts_key() -> str:
    """Cache key: pinned dependency versions + compile script + contract list."""
    package = json.loads((DEVCHAIN_DIR / "package.json").read_text())
    digest = hashlib.sha256()
    digest.update(json.dumps(package["dependencies"], sort_keys=True).encode())
    digest.update((DEVCHAIN_DIR / "compile.js").read_bytes())
    digest.update(",".join(CONTRACTS).encode())
    return digest.hexdigest()[:16]


def artifacts_file() -> Path:
    return cache_dir() / "contracts" / artifacts_key() / "artifacts.json"


def compile_contracts(force: bool = False) -> Path:
    """Compile unless a cached result for the current key exists; returns the artifacts file."""
    target = artifacts_file()
    if target.exists() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be compiling the same key
        if target.exists() and not force:
            return target
        _require_node_modules()
        node = shutil.which("node")
        if node is None:
            raise ChainError("node (Node.js) is not on PATH: it is needed to compile the contracts")
        tmp = target.with_suffix(".tmp")
        result = subprocess.run(
            [node, "compile.js", str(tmp), *CONTRACTS],
            cwd=DEVCHAIN_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ChainError(f"contract compilation failed:\n{result.stderr[-4000:]}")
        tmp.replace(target)
    return target


def load_artifacts() -> Artifacts:
    """``{name: {"abi": [...], "bytecode": "0x..."}}`` for every contract in :data:`CONTRACTS`."""
    return json.loads(compile_contracts().read_text())["contracts"]
