"""HTTPS: one SSLContext built from the TLS settings, the same way in the master and the zygote.

The master builds it once at start only to check the files (a missing key or a wrong password is a
config error, exit 2, before anything binds); the zygote builds the one its workers use, so every
generation re-reads the certificate and a HUP after renewing it serves the new one. forkserve
builds the context itself rather than passing the file names to uvicorn: uvicorn always calls
``set_ciphers`` (with its own default list), and its ``ssl_version`` is a protocol constant, where
a lowest accepted version is what an operator means.

``ssl`` is imported only when --certfile is set: a master serving plain HTTP never needs it (with
OpenSSL's own allocations, 1.7 MiB that no worker shares; docs/design.md "Memory").
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from forkserve.config.settings import Config
from forkserve.errors import ConfigError

if TYPE_CHECKING:
    import ssl


def _readable(flag: str, path: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(f"{flag} {path}: no such file; pass a PEM file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{flag} {path}: not readable by this user")


def server_context(config: Config) -> ssl.SSLContext | None:
    """The server's SSLContext, or None when --certfile is not set; ConfigError for bad TLS settings."""
    if not config.certfile:
        given = [
            flag for flag, value in (("--keyfile", config.keyfile), ("--ca-certs", config.ca_certs)) if value
        ]
        if given or config.cert_reqs != "none":
            flag = given[0] if given else "--cert-reqs"
            raise ConfigError(f"{flag} is set but --certfile is not; pass --certfile to serve HTTPS")
        return None
    if config.proxy_protocol:
        # The header comes before the TLS handshake, below the layer the protocols see.
        raise ConfigError(
            "--proxy-protocol with --certfile: the PROXY header is read only on plain HTTP; "
            "terminate TLS at the proxy and serve plain HTTP behind it, or drop --proxy-protocol"
        )
    _readable("--certfile", config.certfile)
    if config.keyfile:
        _readable("--keyfile", config.keyfile)
    import ssl

    versions = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
    cert_reqs = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = versions[config.ssl_version]
    try:
        context.load_cert_chain(config.certfile, config.keyfile, config.keyfile_password)
    except ssl.SSLError as exc:
        files = config.certfile + (f" / --keyfile {config.keyfile}" if config.keyfile else "")
        raise ConfigError(
            f"--certfile {files}: {exc.reason or exc}; check that the key matches the certificate "
            "(and --keyfile-password if the key is encrypted)"
        ) from None
    if config.ca_certs:
        _readable("--ca-certs", config.ca_certs)
        try:
            context.load_verify_locations(config.ca_certs)
        except ssl.SSLError as exc:
            raise ConfigError(f"--ca-certs {config.ca_certs}: {exc.reason or exc}") from None
    elif config.cert_reqs != "none":
        raise ConfigError(f"--cert-reqs {config.cert_reqs} needs --ca-certs to verify client certificates")
    context.verify_mode = cert_reqs[config.cert_reqs]
    # Offered by ALPN: a client that speaks HTTP/2 gets it only where the protocol class can.
    context.set_alpn_protocols(["h2", "http/1.1"] if config.http == "zttp" else ["http/1.1"])
    if config.ciphers:
        try:
            context.set_ciphers(config.ciphers)
        except ssl.SSLError:
            raise ConfigError(
                f"--ciphers {config.ciphers!r}: OpenSSL matches no cipher; see `openssl ciphers`"
            ) from None
    return context
