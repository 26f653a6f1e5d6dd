"""TLS without sockets: the pin format, the generated certificate, loading errors, and the
flags and config keys that turn TLS on (the sockets are in tests/integration/test_tls.py)."""

from __future__ import annotations

import datetime
import json
import os
import ssl
import stat
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from krabfast.cli import build_parser
from krabfast.cli.gateway import gateway_settings
from krabfast.client.tls import INVALID_FINGERPRINT, normalize_fingerprint, pinned_context
from krabfast.gateway import tls
from krabfast.gateway.config_file import ConfigFileError, parse_config

HEX = "9fa9ef865d443fd891327a0b472ef77cd03f2d8f89f49a91ac00c6152bbd79d9"


def colons(hex_: str) -> str:
    return ":".join(hex_[i:i + 2] for i in range(0, 64, 2))


# -- the pin ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [HEX, HEX.upper(), colons(HEX).upper(), f"sha256:{HEX}",
                                  f"  SHA256:{colons(HEX)}  "])
def test_pin_forms_the_reference_accepts(text):
    assert normalize_fingerprint(text) == HEX


@pytest.mark.parametrize("text", ["", HEX[:-1], HEX + "0", colons(HEX)[:-3], "zz" * 32,
                                  colons(HEX).replace(":", "-"), f"sha1:{HEX}",
                                  f"{HEX[:32]} {HEX[32:]}"])
def test_invalid_pins_are_refused_in_the_reference_words(text):
    with pytest.raises(ValueError) as err:
        normalize_fingerprint(text)
    assert str(err.value) == INVALID_FINGERPRINT


def test_pinned_context_does_not_verify_the_chain_but_keeps_the_pin():
    ctx = pinned_context(colons(HEX))
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.pinned_fingerprint == HEX


# -- the generated certificate ---------------------------------------------------------------

def cfg(state_dir, **kw):
    base = dict(state_dir=str(state_dir), tls_cert_path=None, tls_key_path=None,
                tls_ca_path=None, tls_auto_generate=True)
    return SimpleNamespace(**{**base, **kw})


def test_generated_pair_is_the_reference_kind(tmp_path):
    got = tls.load_server_tls(cfg(tmp_path))
    assert got.generated
    base = tmp_path / "gateway" / "tls"
    assert got.cert_path == base / "gateway-cert.pem" and got.key_path == base / "gateway-key.pem"
    for path in (got.cert_path, got.key_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert sorted(os.listdir(base)) == ["gateway-cert.pem", "gateway-key.pem"]  # no staging left
    assert got.key_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    cert = x509.load_pem_x509_certificate(got.cert_path.read_bytes())
    name = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    assert name == ["openclaw-gateway"] and cert.issuer == cert.subject
    assert isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().key_size == 2048
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=3650)
    basic = cert.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    assert basic.critical and basic.value.ca
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert got.fingerprint == tls.certificate_fingerprint(got.cert_path.read_bytes())
    assert got.context.minimum_version == ssl.TLSVersion.TLSv1_3


def test_second_start_reuses_the_pair(tmp_path):
    first = tls.load_server_tls(cfg(tmp_path))
    second = tls.load_server_tls(cfg(tmp_path))
    assert not second.generated and second.fingerprint == first.fingerprint


def test_one_file_missing_is_an_error_not_a_new_pair(tmp_path):
    first = tls.load_server_tls(cfg(tmp_path))
    first.key_path.unlink()
    with pytest.raises(tls.TlsError, match=r"^gateway tls: cert/key missing \(.*gateway-key.pem\)"):
        tls.load_server_tls(cfg(tmp_path))
    assert tls.certificate_fingerprint(first.cert_path.read_bytes()) == first.fingerprint


def test_no_auto_generate_means_no_pair(tmp_path):
    with pytest.raises(tls.TlsError, match="cert/key missing .*autoGenerate is off"):
        tls.load_server_tls(cfg(tmp_path, tls_auto_generate=False))
    assert not (tmp_path / "gateway").exists()


def test_a_key_of_another_certificate_is_refused(tmp_path):
    a = tls.load_server_tls(cfg(tmp_path / "a"))
    b = tls.load_server_tls(cfg(tmp_path / "b"))
    with pytest.raises(tls.TlsError, match=r"^gateway tls: failed to load cert \(.*b/gateway/tls/"
                                           r"gateway-key.pem is not the key of .*a/gateway"):
        tls.load_server_tls(cfg(tmp_path, tls_cert_path=str(a.cert_path),
                                tls_key_path=str(b.key_path)))
    with pytest.raises(tls.TlsError, match="gateway-cert.pem: not an unencrypted PEM private key"):
        tls.load_server_tls(cfg(tmp_path, tls_cert_path=str(a.cert_path),
                                tls_key_path=str(a.cert_path)))


def test_not_a_certificate_is_refused(tmp_path):
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate\n")
    key = tls.load_server_tls(cfg(tmp_path / "a")).key_path
    with pytest.raises(tls.TlsError, match="^gateway tls: failed to load cert"):
        tls.load_server_tls(cfg(tmp_path, tls_cert_path=str(bad), tls_key_path=str(key)))


def test_memory_state_dir_needs_explicit_files():
    with pytest.raises(tls.TlsError, match=":memory: .*--tls-cert and --tls-key"):
        tls.load_server_tls(cfg(":memory:"))


# -- flags and config keys --------------------------------------------------------------------

def settings(argv, config=None, tmp_path=None):
    if config is not None:
        path = tmp_path / "openclaw.json"
        path.write_text(json.dumps(config))
        argv = ["--config", str(path), *argv]
    args = build_parser().parse_args(["gateway", *argv])
    kw, _ = gateway_settings(args, {})
    return kw


def test_tls_off_unless_asked(tmp_path):
    assert "tls_enabled" not in settings([])


def test_tls_flag_and_no_tls_over_the_file(tmp_path):
    assert settings(["--tls"])["tls_enabled"] is True
    on = {"gateway": {"tls": {"enabled": True}}}
    assert settings([], on, tmp_path)["tls_enabled"] is True
    assert settings(["--no-tls"], on, tmp_path)["tls_enabled"] is False


def test_cert_and_key_flags_load_a_real_certificate(tmp_path):
    kw = settings(["--tls-cert", "c.pem", "--tls-key", "k.pem"])
    assert kw["tls_enabled"] is True and kw["tls_auto_generate"] is False
    assert (kw["tls_cert_path"], kw["tls_key_path"]) == ("c.pem", "k.pem")


@pytest.mark.parametrize("argv, message", [
    (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
    (["--tls-key", "k.pem"], "--tls-cert and --tls-key go together"),
    (["--no-tls", "--tls-cert", "c.pem", "--tls-key", "k.pem"], "--no-tls with --tls-cert"),
])
def test_flag_mistakes(argv, message):
    with pytest.raises(ValueError, match=message):
        settings(argv)


def test_config_keys():
    got = parse_config({"gateway": {"tls": {"enabled": True, "autoGenerate": False,
                                            "certPath": "~/c.pem", "keyPath": "/k.pem",
                                            "caPath": "/ca.pem"}}}, "f.json", {}).values
    assert got == {"tls_enabled": True, "tls_auto_generate": False, "tls_cert_path": "~/c.pem",
                   "tls_key_path": "/k.pem", "tls_ca_path": "/ca.pem"}


@pytest.mark.parametrize("tls_value, message", [
    ({"enabled": "yes"}, 'gateway.tls.enabled: expected true or false, got "yes"'),
    ({"autoGenerate": 1}, "gateway.tls.autoGenerate: expected true or false, got 1"),
    ({"certPath": "  "}, "gateway.tls.certPath: expected a non-empty string"),
    ({"keyPath": 3}, "gateway.tls.keyPath: expected a non-empty string"),
    ("on", 'gateway.tls: expected an object, got "on"'),
])
def test_invalid_config_values_name_the_key(tls_value, message):
    with pytest.raises(ConfigFileError) as err:
        parse_config({"gateway": {"tls": tls_value}}, "f.json", {})
    assert str(err.value).startswith(f"config f.json: {message}"), str(err.value)


# -- caPath: the chain the server sends ---------------------------------------------------------

def _chain(tmp_path):
    """root -> intermediate -> leaf (127.0.0.1): the leaf file alone, the intermediate, the
    root, the leaf's key."""
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = datetime.datetime.now(datetime.timezone.utc)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
    names = [x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, n)])
             for n in ("test root", "test intermediate", "127.0.0.1")]
    certs = []
    for i in range(3):
        issuer = max(i - 1, 0)
        b = (x509.CertificateBuilder().subject_name(names[i]).issuer_name(names[issuer])
             .public_key(keys[i].public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=i < 2, path_length=None), critical=True))
        if i == 2:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        certs.append(b.sign(keys[issuer], hashes.SHA256()))
    paths = []
    for name, cert in zip(("root.pem", "intermediate.pem", "leaf.pem"), certs):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key = tmp_path / "leaf-key.pem"
    key.write_bytes(keys[2].private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    root, intermediate, leaf = paths
    return leaf, intermediate, root, key


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    """A TLS handshake through memory BIOs (no sockets); raises what the client raises."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    done = [False, False]
    for _ in range(10):
        for i, (obj, out, peer_in) in enumerate(((client, c_out, s_in), (server, s_out, c_in))):
            if not done[i]:
                try:
                    obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done):
            return
    raise AssertionError("handshake did not finish")


def test_ca_path_completes_the_chain_sent(tmp_path):
    leaf, intermediate, root, key = _chain(tmp_path)
    client = ssl.create_default_context(cafile=str(root))  # trusts the root only
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(tls.server_context(leaf, key), client)
    _handshake(tls.server_context(leaf, key, intermediate), ssl.create_default_context(
        cafile=str(root)))
    got = tls.load_server_tls(cfg(tmp_path, tls_cert_path=str(leaf), tls_key_path=str(key),
                                  tls_ca_path=str(intermediate)))
    _handshake(got.context, ssl.create_default_context(cafile=str(root)))
