"""A TLS edge in front of the app server and the bare page's server, as fly.io's proxy stands in
front of the app in production: browsers speak HTTP/2 to it (every request multiplexed over one
connection), it speaks HTTP/1.1 to the servers behind it.

nginx, with a self-signed certificate for 127.0.0.1 made on the spot. Chromium is told to trust
that key (`--ignore-certificate-errors-spki-list`), so the pages are a normal secure origin to it:
with a certificate error instead, Chromium would keep nothing in its HTTP cache, and every warm
visit would fetch everything again.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONF = """
worker_processes 1;
user root;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
  ssl_certificate {folder}/cert.pem;
  ssl_certificate_key {folder}/key.pem;
  map $http_upgrade $connection_upgrade {{ default upgrade; "" ""; }}
{servers}
}}
"""
SERVER = """
  upstream {name} {{ server {origin}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    location / {{
      proxy_pass http://{name};
      proxy_http_version 1.1;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-Proto https;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_buffering off;
      proxy_read_timeout 1h;
    }}
  }}
"""


def _certificate(folder: Path) -> str:
    """Write a self-signed certificate for 127.0.0.1 and its key; return the key's SPKI hash in the
    form Chromium's --ignore-certificate-errors-spki-list takes."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return base64.b64encode(digest.finalize()).decode()


class Edge:
    """nginx on free ports in front of each origin (`http://127.0.0.1:PORT`), until `stop()`;
    `urls[origin]` is its https address, `chromium_args` what Chromium needs to trust it."""

    def __init__(self, origins: list[str], ports: list[int]) -> None:
        if not Path(NGINX).exists():
            raise SystemExit("--edge needs nginx (Debian: apt-get install nginx-light)")
        self.folder = Path(tempfile.mkdtemp(prefix="mesh-bench-edge-"))
        spki = _certificate(self.folder)
        self.chromium_args = [f"--ignore-certificate-errors-spki-list={spki}"]
        self.urls = {origin: f"https://127.0.0.1:{port}" for origin, port in zip(origins, ports, strict=True)}
        servers = "".join(
            SERVER.format(name=f"origin{i}", origin=urlsplit(origin).netloc, port=port)
            for i, (origin, port) in enumerate(zip(origins, ports, strict=True))
        )
        conf = self.folder / "nginx.conf"
        conf.write_text(CONF.format(folder=self.folder, servers=servers))
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.folder), "-c", str(conf), "-g", "daemon off;"],
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        for url in self.urls.values():
            while True:
                try:
                    httpx.get(url, verify=False, timeout=1)
                    break
                except httpx.TransportError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"nginx did not start: {(self.folder / 'error.log').read_text(errors='replace')}")
                    time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
