"""Provides the Standard Webhooks signature (https://www.standardwebhooks.com/) and the sealing
of endpoint secrets, so that the database and the admin never hold a secret in the clear."""

import base64
import functools
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings

PREFIX = "whsec_"


def secret_new() -> str:
    """A fresh signing secret: `whsec_` and 24 random bytes in base64, as Standard Webhooks'."""
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, key from the secret."""
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{msg_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _key(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"eventhub.webhooks.secret:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _fernet() -> MultiFernet:
    # A key of its own derived from SECRET_KEY, sealing new secrets; one from each of
    # SECRET_KEY_FALLBACKS still opens what was sealed before a rotation, until
    # `reseal_webhook_secrets` seals it again under the current key (docs/security.md).
    return _keys(settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)


@functools.lru_cache(maxsize=4)
def _keys(*secret_keys: str) -> MultiFernet:
    # Built once per set of keys, not per secret opened (the sender opens one per claim).
    return MultiFernet([_key(k) for k in secret_keys])


def secret_seal(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def secret_open(sealed: str) -> str:
    """The secret; raises cryptography's InvalidToken when no key in use sealed it."""
    return _fernet().decrypt(sealed.encode()).decode()


def secret_reseal(sealed: str) -> str:
    """The same secret sealed under the current SECRET_KEY (it may be sealed under a fallback)."""
    return _fernet().rotate(sealed.encode()).decode()
