"""Identity's configuration refuses default secrets outside development, and in development
makes the missing ones once, in the data folder."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from prosum_identity.adapters.settings import IdentitySettings, resolve_secrets
from prosum_identity.cli import main

STRONG = "Zx8-very-long-random-ops-secret-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("PROSUM_"):
            monkeypatch.delenv(key)


def settings(**values: object) -> IdentitySettings:
    return IdentitySettings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("environment", ["production", "test"])
def test_outside_development_the_ops_secret_must_be_given(environment: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="OPS_CLIENT_SECRET must be set"):
        resolve_secrets(
            settings(key_encryption_keys=Fernet.generate_key().decode()), environment, tmp_path
        )
    assert not (tmp_path / "identity").exists(), "nothing generated outside development"


@pytest.mark.parametrize("secret", ["changeme", "ops", "secret", "Password", "short-but-random-9"])
def test_outside_development_a_default_or_short_secret_is_refused(
    secret: str, tmp_path: Path
) -> None:
    kek = Fernet.generate_key().decode()
    with pytest.raises(ValueError, match="default or too short"):
        resolve_secrets(
            settings(ops_client_secret=secret, key_encryption_keys=kek), "production", tmp_path
        )


def test_outside_development_the_key_encryption_key_must_be_given(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="KEY_ENCRYPTION_KEYS must be set"):
        resolve_secrets(settings(ops_client_secret=STRONG), "production", tmp_path)


def test_key_encryption_keys_must_be_fernet_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Fernet keys"):
        resolve_secrets(
            settings(ops_client_secret=STRONG, key_encryption_keys="not-a-key"),
            "production",
            tmp_path,
        )


def test_production_takes_strong_secrets_and_several_encryption_keys(tmp_path: Path) -> None:
    new, old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    secrets = resolve_secrets(
        settings(ops_client_secret=STRONG, key_encryption_keys=f"{new}, {old}"),
        "production",
        tmp_path,
    )
    assert (secrets.ops_client_secret, secrets.key_encryption_keys) == (STRONG, (new, old))
    assert STRONG not in repr(secrets)


def test_development_makes_missing_secrets_once_and_says_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = resolve_secrets(settings(), "development", tmp_path)
    printed = capsys.readouterr().err
    assert first.ops_client_secret in printed and "ops" in printed
    path = tmp_path / "identity" / "dev-secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = resolve_secrets(settings(), "development", tmp_path)
    assert again == first, "a restart finds the same secrets (and can unseal its keys)"
    assert capsys.readouterr().err == ""


def test_development_never_prints_a_generated_secret_it_does_not_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = resolve_secrets(settings(ops_client_secret="dev"), "development", tmp_path)
    assert made.ops_client_secret == "dev", "anything goes in development"
    assert capsys.readouterr().err == ""


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROSUM_IDENTITY_THRESHOLD_TTL_S", "120")
    monkeypatch.setenv("PROSUM_IDENTITY_DEFAULT_MAX_ORDER_WH", "2500")
    policy = IdentitySettings().policy()
    assert policy.threshold_ttl_s == 120
    assert policy.default_limits.max_order_wh == 2500
    monkeypatch.setenv("PROSUM_IDENTITY_OPS_CLIENT_ID", "cl-ops")
    with pytest.raises(ValueError, match="cannot start with cl-"):
        IdentitySettings()


def test_serve_stops_with_the_reason_when_the_configuration_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROSUM_ENVIRONMENT", "production")
    monkeypatch.setenv("PROSUM_DB_URL", "postgresql+psycopg://db/identity")
    monkeypatch.setenv("PROSUM_KAFKA_BOOTSTRAP_SERVERS", "kafka-0.kafka:9092")
    monkeypatch.setenv("PROSUM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PROSUM_IDENTITY_OPS_CLIENT_SECRET", "changeme")
    with pytest.raises(SystemExit) as stopped:
        main(["serve"])
    assert stopped.value.code == 2
    assert "configuration refused" in capsys.readouterr().err
