"""Test certificates, made at test time with `cryptography` (no private key is committed): a CA,
server certificates for 127.0.0.1/localhost and client certificates with a chosen subject,
validity and (optionally) an encrypted key."""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc)


@dataclass
class Issued:
    cert: Path  # PEM certificate
    key: Path  # PEM private key
    both: Path  # key then certificate, one file (Kafka's PEM keystore)
    ca: Path  # the issuing CA's certificate


class CA:
    def __init__(self, directory, name="sluice test CA"):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        slug = name.replace(" ", "-")
        self.path = self.dir / f"{slug}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem, subject, server=False, expired=False, password=None, client_too=False):
        """A certificate for `subject` ([(oid, value)] in DER order, e.g.
        [(NameOID.ORGANIZATION_NAME, "lab"), (NameOID.COMMON_NAME, "usercc")]); a server one
        names 127.0.0.1 and localhost (`client_too`: usable as a client certificate as well, as a
        broker's is between brokers). Files: <stem>.crt, <stem>.key, <stem>.pem (key + cert)."""
        key = ec.generate_private_key(ec.SECP256R1())
        if expired:
            before, after = NOW - dt.timedelta(days=10), NOW - dt.timedelta(days=1)
        else:
            before, after = NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=30)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
        if client_too:
            usage.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(o, v) for o, v in subject]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(before)
            .not_valid_after(after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if server:
            import ipaddress

            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = b.sign(self.key, hashes.SHA256())
        enc = (
            serialization.BestAvailableEncryption(password.encode())
            if password
            else serialization.NoEncryption()
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        out = Issued(
            self.dir / f"{stem}.crt", self.dir / f"{stem}.key", self.dir / f"{stem}.pem", self.path
        )
        out.cert.write_bytes(cert_pem)
        out.key.write_bytes(key_pem)
        out.both.write_bytes(key_pem + cert_pem)
        return out

    def server(self, stem="broker", password=None):
        return self.issue(
            stem, [(NameOID.COMMON_NAME, "localhost")], server=True, password=password
        )

    def broker(self, stem, cn):
        """A broker's certificate: a server one (127.0.0.1, localhost) that also authenticates
        the broker as a client of the other brokers' listeners, subject CN=`cn`."""
        return self.issue(stem, [(NameOID.COMMON_NAME, cn)], server=True, client_too=True)

    def client(self, stem, cn, org="lab", expired=False):
        return self.issue(
            stem,
            [(NameOID.ORGANIZATION_NAME, org), (NameOID.COMMON_NAME, cn)],
            expired=expired,
        )
