"""CurveZMQ keys: who may talk to a `loopmon serve` that listens beyond this machine.

`loopmon keys generate DIR` writes a key pair for the server and one for collectors,
plus `DIR/authorized/` holding the public keys the server accepts. Give the server
DIR; give each collector machine a copy of `server.key` (public) and
`collector.key_secret`. More collectors: generate more pairs and copy their public
`.key` files into the server's `authorized/`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

SERVER = "server"
COLLECTOR = "collector"
AUTHORIZED = "authorized"


class KeyError_(Exception):
    """Keys missing or unreadable; the message says which file and how to make it."""


def generate(folder: str | Path) -> dict[str, Path]:
    """Create server and collector key pairs in `folder` (refusing to overwrite)."""
    folder = Path(folder)
    if (folder / f"{SERVER}.key_secret").exists():
        raise KeyError_(f"{folder} already holds keys; remove them first or choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    server_public, server_secret = zmq.auth.create_certificates(folder, SERVER)
    collector_public, collector_secret = zmq.auth.create_certificates(folder, COLLECTOR)
    authorized = folder / AUTHORIZED
    authorized.mkdir(exist_ok=True)
    shutil.copy(collector_public, authorized / f"{COLLECTOR}.key")
    for secret in (server_secret, collector_secret):
        Path(secret).chmod(0o600)
    return {
        "server_public": Path(server_public),
        "server_secret": Path(server_secret),
        "collector_public": Path(collector_public),
        "collector_secret": Path(collector_secret),
        "authorized": authorized,
    }


def _load(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeyError_(f"{path}: no such key file (make keys with `loopmon keys generate DIR`)")
    try:
        public, private = zmq.auth.load_certificate(path)
    except Exception as err:
        raise KeyError_(f"{path}: not a CurveZMQ key file ({err})") from None
    if secret and private is None:
        raise KeyError_(f"{path}: holds no secret key")
    return public, private


@dataclass
class ServerKeys:
    public: bytes
    secret: bytes
    authorized: Path

    @classmethod
    def load(cls, folder: str | Path) -> "ServerKeys":
        folder = Path(folder)
        public, secret = _load(folder / f"{SERVER}.key_secret", secret=True)
        authorized = folder / AUTHORIZED
        if not authorized.is_dir():
            raise KeyError_(f"{authorized}: no folder of authorized collector keys")
        assert secret is not None
        return cls(public, secret, authorized)

    def apply(self, socket: zmq.Socket, context: zmq.Context) -> ThreadAuthenticator:
        """Make `socket` a Curve server that only lets in the authorized collectors."""
        auth = ThreadAuthenticator(context)
        auth.start()
        auth.configure_curve(domain="*", location=str(self.authorized))
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_server = True
        return auth


@dataclass
class CollectorKeys:
    public: bytes
    secret: bytes
    server_public: bytes

    @classmethod
    def load(cls, folder: str | Path) -> "CollectorKeys":
        folder = Path(folder)
        public, secret = _load(folder / f"{COLLECTOR}.key_secret", secret=True)
        server_public, _ = _load(folder / f"{SERVER}.key", secret=False)
        assert secret is not None
        return cls(public, secret, server_public)

    def apply(self, socket: zmq.Socket) -> None:
        socket.curve_secretkey = self.secret
        socket.curve_publickey = self.public
        socket.curve_serverkey = self.server_public
