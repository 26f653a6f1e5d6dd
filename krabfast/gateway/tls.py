"""The gateway's TLS certificate: load it, or generate the reference's self-signed one.

As the reference (docs/reference/web-facts.md, 5.): with TLS on and no certPath/keyPath,
the pair is `<state dir>/gateway/tls/gateway-cert.pem` and `gateway-key.pem`, generated at
start when both are missing and autoGenerate is not false: RSA 2048, SHA-256, 3650 days,
subject = issuer = CN=openclaw-gateway, basicConstraints critical CA:TRUE, no
subjectAltName, the key PKCS#8 unencrypted, both files 0600. Generated with `cryptography`
(the reference runs `openssl req`), staged in temp dirs beside the targets and published
with a hard link, which never replaces a file another process published meanwhile.
The server accepts TLS 1.3 only, as the reference (`minVersion: "TLSv1.3"`).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("krabfast.gateway")

CERT_NAME = "gateway-cert.pem"
KEY_NAME = "gateway-key.pem"
COMMON_NAME = "openclaw-gateway"
VALID_DAYS = 3650
MAX_PEM_BYTES = 1 << 20  # a certificate or key file larger than this is a wrong path


class TlsError(ValueError):
    """TLS cannot be set up; str() is one line in the reference's words."""


@dataclass(frozen=True)
class ServerTls:
    context: ssl.SSLContext
    fingerprint: str  # SHA-256 of the leaf certificate's DER, lowercase hex
    cert_path: Path
    key_path: Path
    generated: bool   # made at this start


def tls_dir(state_dir: str | os.PathLike | None) -> Path:
    """`<state dir>/gateway/tls` (the state dir as the store resolves it)."""
    from krabfast.store.db import default_state_dir

    if state_dir == ":memory:":
        raise TlsError("gateway tls: --state-dir :memory: has nowhere to keep a generated "
                       "certificate: give --tls-cert and --tls-key (or another --state-dir)")
    root = Path(state_dir) if state_dir else default_state_dir()
    return root.expanduser() / "gateway" / "tls"


def cert_paths(cfg) -> tuple[Path, Path]:
    """(cert, key) for a GatewayConfig: its tls_cert_path/tls_key_path, else the default
    names under the state dir (each one on its own, as the reference)."""
    cert = Path(cfg.tls_cert_path).expanduser() if cfg.tls_cert_path else None
    key = Path(cfg.tls_key_path).expanduser() if cfg.tls_key_path else None
    if cert is None or key is None:
        base = tls_dir(cfg.state_dir)
        cert = cert or base / CERT_NAME
        key = key or base / KEY_NAME
    return cert.resolve(), key.resolve()


def certificate_fingerprint(pem: bytes) -> str:
    """SHA-256 of the DER of the first certificate in `pem` (the leaf); TlsError if none."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise TlsError(f"gateway tls: failed to load cert ({exc})") from None
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def _self_signed() -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) as `openssl req -x509 -newkey rsa:2048 -sha256 -days 3650 -nodes
    -subj /CN=openclaw-gateway` makes them (its default extensions included, so a client
    sees the same kind of certificate from either gateway)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, COMMON_NAME)])
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _stage(directory: Path, prefix: str, data: bytes) -> Path:
    """`data` in a fresh 0600 file in a 0700 temp dir under `directory`, synced."""
    stage = Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
    path = stage / "file.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def _publish(staged: Path, final: Path) -> None:
    """Link `staged` to `final`; FileExistsError when `final` appeared meanwhile (kept)."""
    try:
        os.link(staged, final)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network/FUSE mounts): an exclusive copy
        with open(staged, "rb") as src, \
                os.fdopen(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as dst:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())


def generate(cert_path: Path, key_path: Path) -> None:
    """Make the self-signed pair at these paths (neither exists yet). A file another
    gateway published first is left as it is: the caller then loads what is there."""
    cert_pem, key_pem = _self_signed()
    staged = []
    try:
        for final, data, kind in ((key_path, key_pem, "key"), (cert_path, cert_pem, "cert")):
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            staged.append(_stage(final.parent, f".krabfast-gateway-tls-{kind}-", data))
            try:
                _publish(staged[-1], final)
            except FileExistsError:
                log.warning("gateway tls: %s appeared while generating; keeping it", final)
    finally:
        for path in staged:
            shutil.rmtree(path.parent, ignore_errors=True)


def _read(path: Path) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise TlsError(f"gateway tls: failed to load cert ({path} is larger than "
                       f"{MAX_PEM_BYTES} bytes: not a PEM file)")
    return data


def server_context(cert_path: Path, key_path: Path, ca_path: Path | None = None
                   ) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_path, key_path)
    if ca_path is not None:
        # As Node's `ca`: the CA store, from which OpenSSL also completes the chain it
        # sends (intermediates missing from the cert file).
        ctx.load_verify_locations(cafile=str(ca_path))
    return ctx


def load_server_tls(cfg) -> ServerTls:
    """The TLS setup of a GatewayConfig with tls_enabled; TlsError on any problem."""
    cert_path, key_path = cert_paths(cfg)
    generated = False
    if not cert_path.exists() and not key_path.exists() and cfg.tls_auto_generate:
        try:
            generate(cert_path, key_path)
        except OSError as exc:
            raise TlsError(f"gateway tls: failed to generate cert ({exc})") from None
        generated = True
        log.info("gateway tls: generated self-signed cert at %s", cert_path)
    missing = [str(p) for p in (cert_path, key_path) if not p.exists()]
    if missing:
        why = "" if cfg.tls_auto_generate else ", and autoGenerate is off"
        raise TlsError(f"gateway tls: cert/key missing ({', '.join(missing)}{why})")
    ca_path = Path(cfg.tls_ca_path).expanduser().resolve() if cfg.tls_ca_path else None
    try:
        pem = _read(cert_path)
        _read(key_path)
        fp = certificate_fingerprint(pem)
        context = server_context(cert_path, key_path, ca_path)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"gateway tls: failed to load cert ({_why(exc, cert_path, key_path)})"
                       ) from None
    return ServerTls(context, fp, cert_path, key_path, generated)


def _why(exc: BaseException, cert: Path, key: Path) -> str:
    if isinstance(exc, ssl.SSLError):
        if exc.reason == "KEY_VALUES_MISMATCH":
            return f"{key} is not the key of {cert}"
        # The certificate parsed already (its fingerprint): what failed is the key.
        return f"{key}: not an unencrypted PEM private key ({exc.reason or exc.strerror})"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
