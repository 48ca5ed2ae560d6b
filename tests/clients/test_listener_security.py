"""Per-listener security keys (Kafka's `listener.name.<listener>.` prefix): two SSL listeners on
one broker, each with its own certificate from its own CA and its own client-auth rule, and two
SASL listeners offering different mechanisms. A client of one listener is refused on the other
exactly where the keys differ."""

import time

from certs import CA
from test_sasl import JAAS, can_connect, listener, round_trip, sasl_conf, set_scram
from test_tls import metadata_ok, ssl_conf, ssl_round_trip


def test_two_ssl_listeners_with_their_own_certificates(broker_factory, tmp_path):
    inner = CA(tmp_path / "inner", name="inner CA")
    partner = CA(tmp_path / "partner", name="partner CA")
    b = broker_factory(overrides=[
        "listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,PARTNER://127.0.0.1:0",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,PARTNER:SSL",
        # broker-wide keys: what the SSL listener uses
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={inner.server().both}",
        # the partner listener: another certificate, and client certificates required
        f"listener.name.partner.ssl.keystore.location={partner.server('partner-server').both}",
        "listener.name.partner.ssl.client.auth=required",
        f"listener.name.partner.ssl.truststore.location={partner.path}",
    ])
    inner_boot, partner_boot = listener(b, "SSL"), listener(b, "PARTNER")
    ssl_round_trip(inner_boot, inner, "inner-topic")
    # the partner listener shows the partner CA's certificate: an inner client does not trust it
    t0 = time.monotonic()
    assert not metadata_ok(partner_boot, ssl_conf(inner), timeout=5)
    assert time.monotonic() - t0 < 6
    # and wants a client certificate of the partner CA
    assert not metadata_ok(partner_boot, ssl_conf(partner), timeout=5)
    acme = partner.client("acme", "acme")
    ssl_round_trip(partner_boot, partner, "partner-topic", client=acme)
    # the SSL listener kept the broker-wide keys: no client certificate needed there
    assert not metadata_ok(inner_boot, ssl_conf(partner), timeout=5), "partner CA trusted inside"
    assert metadata_ok(inner_boot, ssl_conf(inner))


def test_sasl_listeners_offer_their_own_mechanisms(broker_factory):
    b = broker_factory(overrides=[
        "listeners=PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SCRAM://127.0.0.1:0",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,"
        "SCRAM:SASL_PLAINTEXT",
        JAAS,
        "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN",
        "listener.name.scram.sasl.enabled.mechanisms=SCRAM-SHA-256",
    ])
    set_scram(b.bootstrap, "alice", "alice-scram")
    plain = sasl_conf("SASL_PLAINTEXT", "PLAIN", "alice", "alice-secret")
    scram = sasl_conf("SASL_PLAINTEXT", "SCRAM-SHA-256", "alice", "alice-scram")
    round_trip(listener(b, "SASL_PLAINTEXT"), plain, "plain-topic")
    round_trip(listener(b, "SCRAM"), scram, "scram-topic")
    # each mechanism only where it is enabled
    assert not can_connect(listener(b, "SCRAM"), plain)
    assert not can_connect(listener(b, "SASL_PLAINTEXT"), scram)
