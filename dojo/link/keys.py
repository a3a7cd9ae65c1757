"""The link's CurveZMQ key files, as `zmq.auth` writes them:

    KEYS/learner.key, learner.key_secret      the learner's key pair
    KEYS/<actor>.key, <actor>.key_secret      one pair per actor; the actor id is the file's stem
    KEYS/authorized/<actor>.key               public keys the learner accepts

The learner needs `learner.key_secret` and `authorized/`; an actor needs its `<actor>.key_secret` and
`learner.key`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import zmq.auth

LEARNER_KEY_NAME = "learner"
AUTHORIZED_DIR = "authorized"


def check_key_name(name: str, what: str = "key name") -> str:
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"{what} must be letters, digits, '-' or '_', got {name!r}")
    return name


def create_keys(run_dir: str | os.PathLike, actors: Sequence[str] = ("actor-0",), exist_ok: bool = False) -> Path:
    """Create RUN/keys with a learner key pair and one pair per actor; return the keys folder. With
    `exist_ok`, pairs already there are kept and only the missing ones made (a run that gains actors).

    Secret key files are 0600 and the folder 0700. Existing key files are never overwritten.
    """
    keys = Path(run_dir) / "keys"
    authorized = keys / AUTHORIZED_DIR
    for name in [LEARNER_KEY_NAME, *actors]:
        check_key_name(name)
        if (keys / f"{name}.key_secret").exists() and not exist_ok:
            raise FileExistsError(f"key file {keys / (name + '.key_secret')} already exists; not overwriting it")
    if len(set(actors)) != len(actors) or LEARNER_KEY_NAME in actors:
        raise ValueError(f"actor names must be unique and not {LEARNER_KEY_NAME!r}, got {list(actors)}")
    old_umask = os.umask(0o077)  # so a secret key is never readable by others, not even for a moment
    try:
        authorized.mkdir(parents=True, exist_ok=True)
        os.chmod(keys, 0o700)
        for name in [LEARNER_KEY_NAME, *actors]:
            if (keys / f"{name}.key_secret").exists():
                continue
            public_file, secret_file = zmq.auth.create_certificates(keys, name)
            os.chmod(secret_file, 0o600)
            os.chmod(public_file, 0o644)
            if name != LEARNER_KEY_NAME:
                (authorized / f"{name}.key").write_bytes(Path(public_file).read_bytes())
    finally:
        os.umask(old_umask)
    return keys


def read_key_file(path: Path, what: str, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} key file not found: {path} (the learner creates keys in RUN/keys; "
                                f"copy them here)")
    if secret:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(f"secret key file {path} has mode {mode:04o}; expected 0600 "
                                  f"(run: chmod 600 {path})")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {what} key file {path}: {e}") from e
    if secret and secret_key is None:
        raise ValueError(f"{what} key file {path} holds no secret key; expected a .key_secret file")
    return public, secret_key


def load_authorized(folder: Path) -> dict[bytes, str]:
    """Public key (z85) -> actor id (the file's stem) for every key file in `folder`."""
    if not folder.is_dir():
        raise FileNotFoundError(f"authorized-keys folder not found: {folder} (expected actors' .key files there)")
    names = {}
    for path in sorted(folder.glob("*.key")):
        public, _ = read_key_file(path, "authorized actor", secret=False)
        names[public] = path.stem
    if not names:
        raise FileNotFoundError(f"no actor keys (*.key) in authorized-keys folder {folder}")
    return names


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"learner address must be HOST:PORT with a port in 1..65535, got {address!r}")
    return host, int(port)


def bracket(host: str) -> str:
    """An IPv6 host in brackets, as a URL needs it."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
