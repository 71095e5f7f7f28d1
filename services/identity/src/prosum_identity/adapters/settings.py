"""Identity's settings (``PROSUM_IDENTITY_*``) and its two secrets.

- ``PROSUM_IDENTITY_OPS_CLIENT_SECRET``: the secret of the first ops client
  (``PROSUM_IDENTITY_OPS_CLIENT_ID``, default ``ops``), from which ops creates every other
  client.
- ``PROSUM_IDENTITY_KEY_ENCRYPTION_KEYS``: Fernet keys (comma-separated; the first one seals,
  all of them unseal, so the key can be rotated) that encrypt the token-signing keys at rest.

Outside development both must be set, and a short or well-known ops secret is refused. In
development a missing one is generated once into ``<data dir>/identity/dev-secrets.json``
(mode 0600) and the ops secret is printed once, when the file is made.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from prosum_identity.application.policy import IdentityPolicy
from prosum_identity.domain.clients import MIN_SECRET_LENGTH
from prosum_identity.domain.model import Limits

# Secrets that appear in examples, tutorials and our own docs: never acceptable in production.
WELL_KNOWN_SECRETS = frozenset(
    {
        "ops",
        "secret",
        "changeme",
        "change-me",
        "password",
        "prosum",
        "admin",
        "development",
        "dev",
        "test",
        "ops-secret",
    }
)


class IdentitySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROSUM_IDENTITY_", extra="ignore")

    ops_client_id: str = Field(default="ops", min_length=1, max_length=128)
    ops_client_secret: SecretStr | None = None
    key_encryption_keys: SecretStr | None = Field(
        default=None, description="comma-separated Fernet keys; the first seals"
    )
    access_token_ttl_s: int = Field(default=900, ge=1, le=86_400)
    threshold_ttl_s: int = Field(default=900, ge=1, le=86_400)
    challenge_ttl_s: int = Field(default=60, ge=1, le=3_600)
    challenge_limit: int = Field(default=10, ge=1, le=128, description="challenges per window")
    challenge_window_s: int = Field(default=60, ge=1, le=86_400)
    default_max_order_wh: int = Field(default=100_000, ge=0)
    default_max_open_wh: int = Field(default=500_000, ge=0)
    default_max_ecoin: int = Field(default=10_000_000, ge=0)
    key_publish_lead_s: int = Field(
        default=30, ge=0, le=86_400, description="a new signing key is published this long first"
    )
    key_maintenance_interval_s: float = Field(default=5.0, gt=0, le=3_600)

    @field_validator("ops_client_id")
    @classmethod
    def _not_a_client_id(cls, value: str) -> str:
        if value.startswith("cl-"):
            raise ValueError("the ops client id cannot start with cl- (created clients do)")
        return value

    def policy(self) -> IdentityPolicy:
        return IdentityPolicy(
            access_token_ttl_s=self.access_token_ttl_s,
            threshold_ttl_s=self.threshold_ttl_s,
            challenge_ttl_s=self.challenge_ttl_s,
            challenge_limit=self.challenge_limit,
            challenge_window_s=self.challenge_window_s,
            default_limits=Limits(
                self.default_max_order_wh, self.default_max_open_wh, self.default_max_ecoin
            ),
            key_publish_lead_s=self.key_publish_lead_s,
        )


@dataclass(frozen=True)
class IdentitySecrets:
    ops_client_id: str
    ops_client_secret: str
    key_encryption_keys: tuple[str, ...]

    def __repr__(self) -> str:
        return f"IdentitySecrets(ops_client_id={self.ops_client_id!r}, ...)"


def resolve_secrets(
    settings: IdentitySettings, environment: str, data_dir: Path
) -> IdentitySecrets:
    """The configured secrets, checked; in development the missing ones from the dev file."""
    development = environment == "development"
    ops_secret = _value(settings.ops_client_secret)
    kek = _value(settings.key_encryption_keys)
    if not development:
        if ops_secret is None:
            raise ValueError(
                f"PROSUM_IDENTITY_OPS_CLIENT_SECRET must be set outside development ({environment})"
            )
        if ops_secret.lower() in WELL_KNOWN_SECRETS or len(ops_secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                "PROSUM_IDENTITY_OPS_CLIENT_SECRET is a default or too short: outside "
                f"development it must be a random secret of at least {MIN_SECRET_LENGTH} "
                "characters"
            )
        if kek is None:
            raise ValueError(
                "PROSUM_IDENTITY_KEY_ENCRYPTION_KEYS must be set outside development "
                f"({environment})"
            )
    if ops_secret is None or kek is None:
        dev, created = _dev_secrets(data_dir / "identity")
        if ops_secret is None and created:
            print(
                f"identity (development): the ops client {settings.ops_client_id!r} has the "
                f"generated secret {dev['ops_client_secret']} (kept in {data_dir / 'identity'}; "
                "set PROSUM_IDENTITY_OPS_CLIENT_SECRET to choose one)",
                file=sys.stderr,
                flush=True,
            )
        ops_secret = ops_secret or dev["ops_client_secret"]
        kek = kek or dev["key_encryption_key"]
    keys = tuple(k.strip() for k in kek.split(",") if k.strip())
    for key in keys:
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ValueError(
                "PROSUM_IDENTITY_KEY_ENCRYPTION_KEYS must be Fernet keys (32 bytes, urlsafe "
                "base64), separated by commas"
            ) from None
    if not keys:
        raise ValueError("PROSUM_IDENTITY_KEY_ENCRYPTION_KEYS holds no key")
    return IdentitySecrets(settings.ops_client_id, ops_secret, keys)


def _value(secret: SecretStr | None) -> str | None:
    if secret is None:
        return None
    return secret.get_secret_value() or None


def _dev_secrets(folder: Path) -> tuple[dict[str, str], bool]:
    """Development secrets, made once and kept (mode 0600) so that a restart can still unseal
    its signing keys and the ops secret stays the same; True when this call made them."""
    path = folder / "dev-secrets.json"
    if path.exists():
        return _read_secrets(path), False
    folder.mkdir(parents=True, exist_ok=True)
    made = {
        "ops_client_secret": secrets.token_urlsafe(32),
        "key_encryption_key": Fernet.generate_key().decode("ascii"),
    }
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return _read_secrets(path), False
    with os.fdopen(descriptor, "w") as handle:
        json.dump(made, handle)
    return made, True


def _read_secrets(path: Path) -> dict[str, str]:
    for _ in range(50):  # a process that just created the file may still be writing it
        text = path.read_text()
        if text:
            loaded: dict[str, str] = json.loads(text)
            return loaded
        time.sleep(0.02)
    raise ValueError(f"{path} is empty: delete it to have new development secrets made")
