"""The data dir's privacy secrets: `<data_dir>/privacy/keys.json`, private, made once.

- `pii_key`: the key of the keyed hash (BLAKE2b, 256 bits) of PII fields (`pii = [{path,
  action = "hash"}]`): the same value hashes the same way for as long as the data dir lives,
  so joins still work, and nobody without the file can test a guess.
- `salt`: the salt of subject hashes (the suppression list, regulation records), so that
  neither holds an identifier and a leaked list cannot be checked against a list of emails.

Several processes (gateway workers, the pipeline, a command) may be the first to need them:
the file is created by a hard link of a complete private file, which fails when another
process won, and then that one is read.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from trackd.errors import ConfigError
from trackd.private import write_private

DIRECTORY = "privacy"
FILE_NAME = "keys.json"


def privacy_dir(data_dir: Path) -> Path:
    return data_dir / DIRECTORY


@dataclass(frozen=True)
class Keys:
    pii_key: bytes
    salt: bytes

    def subject_hash(self, subject_type: str, subject_id: str) -> str:
        """The salted hash naming a subject (`u` user id, `a` anonymous id) in trackd's files."""
        return hashlib.blake2b(f"{subject_type}:{subject_id}".encode(), key=self.salt,
                               digest_size=32).hexdigest()

    def pii_hash(self, text: str) -> str:
        """Keyed BLAKE2b (a MAC, and several times cheaper than HMAC-SHA256 in Python)."""
        return hashlib.blake2b(text.encode(), key=self.pii_key, digest_size=32).hexdigest()


def load_keys(data_dir: Path) -> Keys:
    """The data dir's keys, generated on first use."""
    directory = privacy_dir(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / FILE_NAME
    if not path.exists():
        partial = directory / f"new-{os.getpid()}-{secrets.token_hex(4)}"
        write_private(partial, json.dumps({"pii_key": secrets.token_hex(32),
                                           "salt": secrets.token_hex(32)}))
        try:
            os.link(partial, path)
        except FileExistsError:
            pass  # another process made them first: theirs are the keys
        finally:
            partial.unlink()
    try:
        doc = json.loads(path.read_text())
        return Keys(bytes.fromhex(doc["pii_key"]), bytes.fromhex(doc["salt"]))
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path}: not a trackd privacy key file (restore it from a backup: "
                          "without it hashed PII fields no longer match)") from None
