"""Certificates made at test time with the ``openssl`` command line: a CA, server
pairs (one for each side of a reload), client pairs from that CA and from a stranger."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    ca: Path
    server: Pair  # CN server-1
    server2: Pair  # CN server-2, same CA: what a rotation installs
    client: Pair  # CN alice, signed by ca
    stranger: Pair  # CN mallory, signed by another CA
    other_key: Path  # a key matching no certificate here


def _openssl(*args: str | Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("the openssl command line is needed to make test certificates")
    subprocess.run([binary, *map(str, args)], check=True, capture_output=True)


def _ca(directory: Path, name: str) -> Pair:
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        "req", "-x509", *_EC, "-keyout", pair.key, "-out", pair.cert, "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )
    return pair


def _leaf(directory: Path, ca: Pair, name: str, usage: str, san: str | None) -> Pair:
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    lines = ["basicConstraints=CA:FALSE", f"extendedKeyUsage={usage}"]
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl("req", *_EC, "-keyout", pair.key, "-out", csr, "-subj", f"/CN={name}/O=meshsub tests")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
        "-out", pair.cert, "-days", "2", "-extfile", ext,
    )
    return pair


def make_certs(directory: Path) -> Certs:
    ca = _ca(directory, "meshsub-test-ca")
    other_ca = _ca(directory, "stranger-ca")
    san = "IP:127.0.0.1,DNS:localhost"
    other_key = directory / "other.key"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-out", other_key)
    return Certs(
        ca=ca.cert,
        server=_leaf(directory, ca, "server-1", "serverAuth", san),
        server2=_leaf(directory, ca, "server-2", "serverAuth", san),
        client=_leaf(directory, ca, "alice", "clientAuth", None),
        stranger=_leaf(directory, other_ca, "mallory", "clientAuth", None),
        other_key=other_key,
    )
