"""A self-signed certificate for the TLS rows, made at bench time with ``openssl``.

Every TLS server gets the same pair (ECDSA P-256, the common choice on the
web, so the handshake and record costs are what deployments pay) and the load
generator trusts exactly that certificate. Nothing is kept between runs.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchCert:
    cert: Path
    key: Path


def make_cert(directory: Path) -> BenchCert:
    """A fresh pair for 127.0.0.1 and localhost in *directory* (replacing any old one)."""
    binary = shutil.which("openssl")
    if binary is None:
        raise SystemExit("bench: the TLS rows need the openssl command line")
    directory.mkdir(parents=True, exist_ok=True)
    pair = BenchCert(directory / "bench-cert.pem", directory / "bench-key.pem")
    subprocess.run(
        [binary, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "2",
         "-subj", "/CN=meshsub-bench", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return pair
