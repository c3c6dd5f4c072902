"""Encryption of stored OAuth secrets with the configuration's ``secrets_key``.

Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under a key derived
from ``secrets_key`` with HKDF, so the operator may give any long random string.
The same box seals the links end users open to authorize (they carry a timestamp
Fernet checks on opening).
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["InvalidToken", "SecretBox"]


class SecretBox:
    """Seals and opens text with a key derived from ``secrets_key``."""

    def __init__(self, secrets_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"plugway mcp oauth v1").derive(
            secrets_key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def open(self, sealed: str, *, ttl_s: int | None = None) -> str:
        """The text (raises ``InvalidToken`` if tampered with, sealed under another key, or older than ``ttl_s``)."""
        return self._fernet.decrypt(sealed.encode(), ttl=ttl_s).decode()
