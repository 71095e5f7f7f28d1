"""The committed contract artifact is what the committed Solidity source compiles to."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from prosum_ledger.adapters.evm.abi import load_artifact

ROOT = Path(__file__).resolve().parents[3]
SOURCE = ROOT / "services/ledger-adapter/contracts/ProsumLedger.sol"
BUILD = ROOT / "services/ledger-adapter/contracts/build.mjs"
SOLC = ROOT / "node_modules/solc/package.json"


def test_artifact_was_built_from_the_current_source() -> None:
    # Cheap and needs no compiler: catches a source edited without rebuilding the artifact.
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    assert load_artifact().source_sha256 == digest, "run `npm run build:contracts`"


def test_artifact_names_the_pinned_compiler() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["solc"]
    assert load_artifact().compiler_version.startswith(f"{pinned}+commit.")


def test_artifact_has_every_function_the_backend_calls() -> None:
    required = {
        "grant",
        "revoke",
        "mintEnergy",
        "mintEcoin",
        "burnEcoin",
        "settleBatch",
        "anchor",
        "balanceOf",
        "permissionsOf",
        "totalSupply",
        "commandBlock",
        "settledIn",
        "anchoredIn",
    }
    present = {item["name"] for item in load_artifact().abi if item["type"] == "function"}
    assert required <= present, required - present


@pytest.mark.skipif(
    not SOLC.exists() or shutil.which("node") is None,
    reason="node_modules/solc is not installed (run `npm ci` in the repository root)",
)
def test_rebuilding_from_source_reproduces_the_committed_artifact() -> None:
    result = subprocess.run(
        ["node", str(BUILD), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr or result.stdout
