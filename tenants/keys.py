"""Provides the format of API keys: how they are made, hashed and recognised."""

import hashlib
import secrets

KEY_PREFIX = "ehk_"


def key_generate() -> tuple[str, str]:
    """Returns (visible prefix, whole key); the key carries 256 random bits."""
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def key_hash(raw_key: str) -> str:
    """Hash of a key as stored; with 256 bits of entropy a fast hash is enough."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


def key_looks_whole(value: str) -> bool:
    return value.startswith(KEY_PREFIX) and len(value) > len(KEY_PREFIX) + 20
