"""
Optional TLS for a node's port and its peer links (C{--tls-cert},
C{--tls-key}, C{--tls-ca}), with Twisted's C{ssl} support (pyOpenSSL, from
C{twisted[tls]}).

The port speaks TLS to clients and peers alike.  Clients present no
certificate; with a CA, a connection that presents one must present one
signed by it, and only such a connection may send peer lines.  A node's peer
links present the node's certificate and check the peer's against the CA
(by the address in the cluster config), or against the system's trust
store without one.

Only a node or client that uses TLS imports this module, so the others do
not pay for loading OpenSSL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import attrs
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)

T = TypeVar("T")


class TLSFileError(ValueError):
    """A certificate or key file that cannot be used; C{str()} is one line naming it."""


@attrs.frozen
class TLSConfig:
    """
    This node's certificate and key, and the CA its peers' certificates
    must be signed by (L{None}: the system's trust store).
    """

    certificate: ssl.PrivateCertificate
    authority: ssl.Certificate | None

    def serverOptions(self) -> IOpenSSLServerConnectionCreator:
        """
        How the port speaks TLS: this node's certificate; with a CA, a
        client certificate is asked for (not required: clients have none)
        and must be signed by the CA when given.
        """
        if self.authority is None:
            return self.certificate.options()
        # trustRoot would demand a certificate of every client; the older
        # verify/caCerts arguments can ask for one without demanding it.
        return ssl.CertificateOptions(
            privateKey=self.certificate.privateKey.original,
            certificate=self.certificate.original,
            verify=True,
            caCerts=[self.authority.original],
            requireCertificate=False,
        )

    def clientOptions(self, host: str) -> IOpenSSLClientConnectionCreator:
        """How a peer link to C{host} speaks TLS: verify the peer, show our certificate."""
        trustRoot = (
            ssl.platformTrust()
            if self.authority is None
            else ssl.trustRootFromCertificates([self.authority])
        )
        return ssl.optionsForClientTLS(
            host, trustRoot=trustRoot, clientCertificate=self.certificate
        )


def loadTLS(certPath: str, keyPath: str, caPath: str | None = None) -> TLSConfig:
    """
    Read this node's certificate and key (PEM), and the CA certificate.

    @raise TLSFileError: naming the file that cannot be read or parsed, or
        the key that does not match the certificate.
    """
    certificate = _read(certPath, "--tls-cert", "certificate", ssl.Certificate.loadPEM)
    key = _read(keyPath, "--tls-key", "private key", _loadKey)
    if not key.matches(certificate.getPublicKey()):
        raise TLSFileError(f"--tls-key {keyPath}: does not match --tls-cert {certPath}")
    private = ssl.PrivateCertificate.fromCertificateAndKeyPair(certificate, key)
    authority = None
    if caPath is not None:
        authority = _read(caPath, "--tls-ca", "certificate", ssl.Certificate.loadPEM)
    return TLSConfig(private, authority)


def _loadKey(data: bytes) -> ssl.KeyPair:
    return ssl.KeyPair.load(data, crypto.FILETYPE_PEM)


def _read(path: str, option: str, kind: str, parse: Callable[[bytes], T]) -> T:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TLSFileError(f"{option} {path}: cannot read it: {e.strerror}") from None
    try:
        return parse(data)
    except (crypto.Error, SSL.Error, ValueError):
        raise TLSFileError(f"{option} {path}: not a PEM {kind}") from None


def clientTLS(caPath: str | None = None) -> Callable[[str], IOpenSSLClientConnectionCreator]:
    """
    How a client (L{txraft.clientlib}) speaks TLS to the node at a host:
    checking its certificate for that host against the CA certificate in
    C{caPath}, or against the system's trust store without one.

    @raise TLSFileError: if C{caPath} cannot be read or parsed.
    """
    trustRoot = (
        ssl.platformTrust()
        if caPath is None
        else ssl.trustRootFromCertificates(
            [_read(caPath, "--tls-ca", "certificate", ssl.Certificate.loadPEM)]
        )
    )
    return lambda host: ssl.optionsForClientTLS(host, trustRoot=trustRoot)
