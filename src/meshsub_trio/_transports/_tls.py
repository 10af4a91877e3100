"""TLS as bytes in, bytes out: the server's context, and one connection's record layer.

Sans-IO: a :class:`TlsLayer` is an ``ssl.SSLObject`` between two
``ssl.MemoryBIO`` buffers, so the host keeps reading and writing its socket
itself (``os.read``, the non-blocking ``os.write`` and its backlog) and only
hands ciphertext in and takes ciphertext out where bytes cross the socket.
:class:`TlsContexts` is the one place the server's ``SSLContext`` lives;
``reload`` swaps it (SIGHUP) so new handshakes use new files while open
connections keep theirs.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

log = logging.getLogger("meshsub_trio.tls")

_READ_SIZE = 65536
#: ``--client-cert`` values and what they ask of the client.
CLIENT_CERT_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


class TlsConfigError(ValueError):
    """The TLS files cannot be used; the message is one line a person can act on."""


def build_context(
    certfile: str,
    keyfile: str | None = None,
    ca_certs: str | None = None,
    client_cert: str | None = None,
) -> ssl.SSLContext:
    """A server context: Python's modern defaults, TLS 1.2 or later, ALPN ``http/1.1``.

    *client_cert* is ``none``, ``optional`` or ``required`` (the default when
    *ca_certs* names the CAs that client certificates must chain to).
    """
    mode = client_cert or ("required" if ca_certs else "none")
    if mode not in CLIENT_CERT_MODES:
        raise TlsConfigError(f"--client-cert must be required, optional or none, not {mode!r}")
    if mode != "none" and not ca_certs:
        raise TlsConfigError(f"--client-cert {mode} needs --ca-certs FILE (the clients' CA)")
    for flag, path in (("--certfile", certfile), ("--keyfile", keyfile), ("--ca-certs", ca_certs)):
        if path is not None:
            _readable(flag, path)
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca_certs)
    except (ssl.SSLError, OSError) as error:
        raise TlsConfigError(
            f"--ca-certs {ca_certs}: not a PEM CA bundle ({_why(error)})"
        ) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    context.verify_mode = CLIENT_CERT_MODES[mode]
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as error:
        key = keyfile or certfile
        if "KEY_VALUES_MISMATCH" in str(error) or "key values mismatch" in str(error):
            raise TlsConfigError(
                f"the key in {key} does not match the certificate in {certfile}"
            ) from None
        raise TlsConfigError(
            f"cannot load the certificate {certfile} and key {key}: not a PEM certificate "
            f"and its unencrypted private key ({_why(error)})"
        ) from None
    except OSError as error:
        raise TlsConfigError(f"cannot load {certfile}: {_why(error)}") from None
    return context


def _readable(flag: str, path: str) -> None:
    try:
        with open(path, "rb") as file:
            file.read(1)
    except OSError as error:
        raise TlsConfigError(f"{flag} {path}: {error.strerror or error}") from None


def _why(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or getattr(error, "strerror", None) or error)


class TlsContexts:
    """The server's one ``SSLContext`` and the files it is built from."""

    def __init__(
        self,
        certfile: str,
        keyfile: str | None = None,
        ca_certs: str | None = None,
        client_cert: str | None = None,
    ) -> None:
        self._files = (certfile, keyfile, ca_certs, client_cert)
        self.context = build_context(*self._files)
        #: How many times the files were loaded again (a counter for tests and logs).
        self.reloads = 0

    def reload(self) -> bool:
        """Build a new context from the same paths and use it for new handshakes.

        A broken new pair keeps the old context (one ERROR line): a typo during
        a certificate rotation must not take the server down.
        """
        try:
            context = build_context(*self._files)
        except TlsConfigError as error:
            log.error("TLS reload failed, keeping the previous certificate: %s", error)
            return False
        self.context = context
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self._files[0])
        return True


class TlsLayer:
    """One connection's TLS state: ciphertext in, plaintext out, and back."""

    __slots__ = ("_incoming", "_object", "_outgoing")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    def handshake(self, data: bytes) -> bool:
        """Feed handshake bytes; whether the handshake is complete (``ssl.SSLError`` if
        it failed). Send :meth:`pending` after each call, also after a failure (the alert)."""
        if data:
            self._incoming.write(data)
        try:
            self._object.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def pending(self) -> bytes:
        """Ciphertext the layer produced and the socket still has to carry."""
        return self._outgoing.read()

    def feed(self, data: bytes) -> bytes:
        """Ciphertext in, all the plaintext it completes out (b"": a record is partial).

        Raises ``ssl.SSLZeroReturnError`` when the peer sent close_notify and
        ``ssl.SSLError`` for a corrupt record: either way the connection is over.
        """
        if data:
            self._incoming.write(data)
        read = self._object.read
        try:
            plain = read(_READ_SIZE)
        except ssl.SSLWantReadError:
            return b""
        if not self._incoming.pending and len(plain) < _READ_SIZE:
            return plain  # the usual case: one read took it all
        chunks = [plain]
        while True:
            try:
                chunk = read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """Plaintext in, the records to write out (with anything else pending, in order)."""
        view = memoryview(data)
        write = self._object.write
        while view:
            view = view[write(view) :]
        return self._outgoing.read()

    @property
    def peer_cert(self) -> dict[str, Any] | None:
        """The verified client certificate (``SSLSocket.getpeercert()``'s dict), or None."""
        cert = self._object.getpeercert()
        return dict(cert) if cert else None

    @property
    def version(self) -> str | None:
        return self._object.version()


def subject_of(cert: dict[str, Any] | None) -> dict[str, str]:
    """A certificate's subject as a flat dict (``{"commonName": "alice", ...}``)."""
    if not cert:
        return {}
    return {name: value for rdn in cert.get("subject", ()) for name, value in rdn}
