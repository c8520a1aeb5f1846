"""The health probe of plugins/module_utils/gunicorn_health.py against real servers on 127.0.0.1 and a unix socket.

The TLS servers use a certificate authority and leaf certificates made here with `cryptography`; nothing
leaves the loopback interface.
"""

import datetime
import ipaddress
import socketserver
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_health as health

VHOST = "app.example.test"


# --- certificates -----------------------------------------------------------------------------


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, subject_key, issuer, issuer_key, *, ca, names=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA, and leaf certificates for the virtual host name and for the address 127.0.0.1."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("graceful.gunicorn test CA", ca_key, "graceful.gunicorn test CA", ca_key, ca=True)
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    leaves = {
        "vhost": [x509.DNSName(VHOST)],
        "address": [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    }
    for label, names in leaves.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(label, key, "graceful.gunicorn test CA", ca_key, ca=False, names=names)
        (directory / (label + ".pem")).write_bytes(cert.public_bytes(serialization.Encoding.PEM) + _pem_key(key))
    return directory


# --- servers ----------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    """/health answers 200 `{"status": "ok"}`, /down 503, /moved a redirect to /health."""

    def do_GET(self):
        self.server.hosts.append(self.headers.get("Host"))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/health")
            body = b""
        elif self.path == "/down":
            self.send_response(503)
            body = b'{"status": "down"}'
        else:
            self.send_response(200)
            body = b'{"status": "ok"}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TLSServer(ThreadingHTTPServer):
    """Handshakes in the request thread, so a client that refuses the certificate ends only its own."""

    daemon_threads = True

    def __init__(self, certfile):
        super().__init__(("127.0.0.1", 0), Handler)
        self.hosts = []
        self.server_names = []
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile)
        self.context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)

    def finish_request(self, request, client_address):
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:
            return
        with tls:
            self.RequestHandlerClass(tls, client_address, self)


class PlainServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.hosts = []


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path):
        super().__init__(path, Handler)
        self.hosts = []


def _serving(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def vhost_server(pki):
    yield from _serving(TLSServer(str(pki / "vhost.pem")))


@pytest.fixture
def address_server(pki):
    yield from _serving(TLSServer(str(pki / "address.pem")))


@pytest.fixture
def plain_server():
    yield from _serving(PlainServer())


def _probe(url, **params):
    defaults = {"health_url": url, "health_path": "/health", "expected_status": [200], "health_timeout": 5.0}
    return health.build_probe(dict(defaults, **params))


def _url(server, scheme):
    return f"{scheme}://127.0.0.1:{server.server_address[1]}"


# --- TLS --------------------------------------------------------------------------------------


def test_https_fails_without_the_ca(vhost_server):
    result = health.probe_once(_probe(_url(vhost_server, "https"), host_header=VHOST, validate_certs=True))
    assert result["ok"] is False
    assert result["status"] is None
    assert "CERTIFICATE_VERIFY_FAILED" in result["detail"]
    assert vhost_server.hosts == []  # no request was sent over the unverified connection


def test_https_passes_with_the_ca_and_the_host_header_as_server_name(vhost_server, pki):
    probe = _probe(_url(vhost_server, "https"), host_header=VHOST, validate_certs=True, ca_path=str(pki / "ca.pem"))
    result = health.probe_once(probe)
    assert result["ok"] is True, result
    assert result["status"] == 200
    assert vhost_server.server_names == [VHOST]
    assert vhost_server.hosts == [VHOST]


def test_https_certificate_is_checked_against_the_host_header(vhost_server, pki):
    ca = str(pki / "ca.pem")
    url = _url(vhost_server, "https")
    without_header = health.probe_once(_probe(url, validate_certs=True, ca_path=ca))
    assert without_header["ok"] is False
    assert "127.0.0.1" in without_header["detail"]  # the address is not a name in the certificate
    other_name = health.probe_once(_probe(url, host_header="other.example.test", validate_certs=True, ca_path=ca))
    assert other_name["ok"] is False
    assert "other.example.test" in other_name["detail"]
    assert vhost_server.server_names == [None, "other.example.test"]  # no SNI for an address
    assert vhost_server.hosts == []


def test_https_without_host_header_verifies_the_address(address_server, pki):
    result = health.probe_once(_probe(_url(address_server, "https"), ca_path=str(pki / "ca.pem")))
    assert result["ok"] is True, result
    assert address_server.hosts == [f"127.0.0.1:{address_server.server_address[1]}"]


def test_validate_certs_false_accepts_an_unknown_certificate(vhost_server):
    result = health.probe_once(_probe(_url(vhost_server, "https"), validate_certs=False))
    assert result["ok"] is True, result
    assert result["status"] == 200


# --- plain HTTP -------------------------------------------------------------------------------


def test_error_status_and_redirect_are_answers_not_followed(plain_server):
    url = _url(plain_server, "http")
    down = health.probe_once(_probe(url, health_path="/down", body_pattern='"status": "ok"'))
    assert (down["ok"], down["status"], down["detail"]) == (False, 503, "status 503, expected 200")
    moved = health.probe_once(_probe(url, health_path="/moved"))
    assert (moved["ok"], moved["status"]) == (False, 302)
    assert len(plain_server.hosts) == 2  # the redirect to /health was not followed


def test_body_pattern_is_checked(plain_server):
    url = _url(plain_server, "http")
    assert health.probe_once(_probe(url, body_pattern='"status": "ok"'))["ok"] is True
    result = health.probe_once(_probe(url, body_pattern="degraded"))
    assert result["ok"] is False
    assert "body does not match" in result["detail"]


def test_proxy_settings_in_the_environment_are_ignored(plain_server, monkeypatch):
    # A proxy on a closed loopback port: the probe only passes if it goes straight to the server.
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    result = health.probe_once(_probe(_url(plain_server, "http")))
    assert result["ok"] is True, result


def test_refused_connection_is_a_failure_with_a_reason(plain_server):
    port = plain_server.server_address[1]
    plain_server.shutdown()
    plain_server.server_close()
    result = health.probe_once(_probe(f"http://127.0.0.1:{port}"))
    assert result["ok"] is False
    assert result["status"] is None
    assert "ConnectionRefusedError" in result["detail"]


def test_wait_healthy_counts_a_streak(plain_server):
    ok, summary = health.wait_healthy(_probe(_url(plain_server, "http")), 3, time.time() + 10, interval=0.01)
    assert ok is True
    assert summary["streak"] == 3 and summary["attempts"] == 3 and summary["failures"] == 0
    down = _probe(_url(plain_server, "http"), health_path="/down")
    ok, summary = health.wait_healthy(down, 1, time.time() + 10, interval=0.01, max_failures=2)
    assert ok is False
    assert summary["failures"] == 2 and summary["last"]["status"] == 503


# --- unix socket ------------------------------------------------------------------------------


def test_unix_socket_probe_sends_the_host_header(tmp_path):
    path = str(tmp_path / "app.sock")
    for server in _serving(UnixServer(path)):
        probe = health.build_probe(
            {"health_url": None, "health_socket": path, "health_path": "/health", "host_header": VHOST}
        )
        result = health.probe_once(probe)
        assert result["ok"] is True, result
        assert server.hosts == [VHOST]
        plain = health.probe_once(health.build_probe({"health_socket": path, "health_path": "/down"}))
        assert (plain["ok"], plain["status"]) == (False, 503)
        assert server.hosts == [VHOST, "localhost"]


def test_missing_unix_socket_is_a_failure(tmp_path):
    result = health.probe_once(health.build_probe({"health_socket": str(tmp_path / "absent.sock")}))
    assert result["ok"] is False
    assert "absent.sock" in result["detail"]
