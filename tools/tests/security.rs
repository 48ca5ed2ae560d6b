//! `sluice --command-config` / `-X` against in-process brokers with TLS listeners: a CA, broker
//! and client certificates made at test time with rcgen (no key is kept), a produce/consume
//! round trip and a consumer group over SSL, mutual TLS, the host name check and its `none`
//! switch, a wrong CA, plaintext to a TLS listener, and bad settings with their exit codes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use sluice_server::config::{SecurityProtocol, ServerConfig};

mod common;
use common::Broker;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A CA that signs certificates into `dir`.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    path: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("self-signed");
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).expect("write ca");
        Ca { cert, key, path }
    }

    /// (certificate file, key file, key + certificate file)
    fn issue(
        &self,
        dir: &Path,
        file: &str,
        cn: &str,
        names: &[&str],
        client: bool,
    ) -> (PathBuf, PathBuf, PathBuf) {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        if client {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign");
        let (c, k, both) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
            dir.join(format!("{file}.pem")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        std::fs::write(&both, format!("{}{}", key.serialize_pem(), cert.pem())).expect("pem");
        (c, k, both)
    }
}

/// A broker with a PLAINTEXT and an SSL listener.
struct TlsBroker {
    _broker: Broker,
    plain: String,
    ssl: String,
}

impl TlsBroker {
    fn start(settings: &[(&str, String)]) -> TlsBroker {
        let broker = Broker::start_with(|config| {
            config.cores = 1;
            config
                .set("listeners", "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0")
                .expect("listeners");
            for (k, v) in settings {
                config.set(k, v).expect("setting");
            }
        });
        TlsBroker {
            plain: broker.listener(SecurityProtocol::Plaintext),
            ssl: broker.listener(SecurityProtocol::Ssl),
            _broker: broker,
        }
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn sluice(args: &[&str], stdin: Option<&[u8]>) -> Out {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    if let Some(input) = stdin {
        let mut i = child.stdin.take().expect("stdin");
        i.write_all(input).expect("write stdin");
    }
    let o = child.wait_with_output().expect("wait");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let o = sluice(args, stdin);
    assert_eq!(o.code, 0, "sluice {args:?}: {}", o.stderr);
    o.stdout
}

/// A failure: the exit code and a one-line `sluice: error: ...` message.
fn fails(args: &[&str], code: i32) -> String {
    let o = sluice(args, None);
    assert_eq!(o.code, code, "sluice {args:?}: {} {}", o.stdout, o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", o.stderr);
    assert!(lines[0].starts_with("sluice: error: "), "{}", lines[0]);
    lines[0].to_string()
}

#[test]
fn ssl_through_command_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let other = Ca::new(dir.path(), "other-ca");
    let (_, _, broker_pem) = ca.issue(
        dir.path(),
        "broker",
        "localhost",
        &["127.0.0.1", "localhost"],
        false,
    );
    let b = TlsBroker::start(&[
        ("ssl.keystore.type", "PEM".into()),
        ("ssl.keystore.location", broker_pem.display().to_string()),
    ]);
    let props = dir.path().join("client.properties");
    std::fs::write(
        &props,
        format!(
            "# as for kafka-topics.sh\nsecurity.protocol=ssl\nssl.ca.location={}\n",
            ca.path.display()
        ),
    )
    .expect("properties");
    let cc = props.to_str().expect("utf-8 path");
    let ssl = b.ssl.as_str();

    let created = ok(
        &[
            "-b",
            ssl,
            "--command-config",
            cc,
            "topic",
            "create",
            "t",
            "--partitions",
            "2",
        ],
        None,
    );
    assert_eq!(created.trim(), "Created topic t.");
    // the producer's pipeline over TLS
    let lines: String = (0..5000).map(|i| format!("message-{i}\n")).collect();
    ok(
        &[
            "-b",
            ssl,
            "--command-config",
            cc,
            "produce",
            "t",
            "--acks",
            "all",
        ],
        Some(lines.as_bytes()),
    );
    // the host name the certificate names
    let port = ssl.rsplit_once(':').expect("port").1;
    let by_name = format!("localhost:{port}");
    let consumed = ok(
        &[
            "-b",
            &by_name,
            "--command-config",
            cc,
            "consume",
            "t",
            "--from-beginning",
            "-n",
            "5000",
            "--timeout",
            "10000",
        ],
        None,
    );
    assert_eq!(consumed.lines().count(), 5000);
    // a group member: coordinator and heartbeat connections over TLS too
    let grouped = ok(
        &[
            "-b",
            ssl,
            "--command-config",
            cc,
            "consume",
            "t",
            "--group",
            "g",
            "--from-beginning",
            "-n",
            "5000",
            "--timeout",
            "10000",
        ],
        None,
    );
    assert_eq!(grouped.lines().count(), 5000);
    let described = ok(
        &[
            "-b",
            ssl,
            "--command-config",
            cc,
            "group",
            "describe",
            "g",
            "--output",
            "json",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&described).expect("json");
    assert!(described.contains("\"t\""), "{v}");

    // -X alone, and -X overriding the file
    let x = format!("ssl.ca.location={}", ca.path.display());
    let listed = ok(
        &[
            "-b",
            ssl,
            "-X",
            "security.protocol=SSL",
            "-X",
            &x,
            "topic",
            "list",
        ],
        None,
    );
    assert_eq!(listed.trim(), "t");
    let wrong = format!("ssl.ca.location={}", other.path.display());
    let e = fails(
        &[
            "-b",
            ssl,
            "--command-config",
            cc,
            "-X",
            &wrong,
            "topic",
            "list",
        ],
        1,
    );
    assert!(e.contains("TLS handshake with"), "{e}");
    assert!(e.contains("not trusted"), "{e}");
    assert!(e.contains("UnknownIssuer"), "{e}");

    // plaintext to the TLS listener, TLS to the plaintext one
    let e = fails(&["-b", ssl, "topic", "list"], 1);
    assert!(e.contains("answered in TLS"), "{e}");
    let plain = b.plain.as_str();
    let e = fails(&["-b", plain, "--command-config", cc, "topic", "list"], 1);
    assert!(e.contains("TLS handshake with"), "{e}");
    assert_eq!(ok(&["-b", plain, "topic", "list"], None).trim(), "t");

    // bad settings: usage errors
    let e = fails(
        &["-b", ssl, "-X", "security.protocol=SSL", "topic", "list"],
        2,
    );
    assert!(e.contains("ssl.ca.location is required"), "{e}");
    let e = fails(
        &["-b", ssl, "-X", "security.protocol=TLS", "topic", "list"],
        2,
    );
    assert!(e.contains("security.protocol"), "{e}");
    let e = fails(
        &["-b", ssl, "-X", "sasl.mechanism=GSSAPI", "topic", "list"],
        2,
    );
    assert!(e.contains("sasl.mechanism"), "{e}");
    let e = fails(&["-b", ssl, "-X", "nonsense", "topic", "list"], 2);
    assert!(e.contains("key=value"), "{e}");
    let e = fails(
        &[
            "-b",
            ssl,
            "--command-config",
            "/nonexistent.properties",
            "topic",
            "list",
        ],
        2,
    );
    assert!(e.contains("/nonexistent.properties"), "{e}");
    let e = fails(
        &[
            "-b",
            ssl,
            "-X",
            "security.protocol=SSL",
            "-X",
            "ssl.ca.location=/nonexistent.pem",
            "topic",
            "list",
        ],
        2,
    );
    assert!(e.contains("/nonexistent.pem"), "{e}");
    // an unknown key: a warning, and the command runs
    let o = sluice(
        &[
            "-b",
            ssl,
            "--command-config",
            cc,
            "-X",
            "linger.ms=5",
            "topic",
            "list",
        ],
        None,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stderr.trim(),
        "sluice: warning: unknown setting linger.ms ignored"
    );
}

#[test]
fn mutual_tls_and_the_host_name_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    // a broker certificate that does not name 127.0.0.1
    let (_, _, broker_pem) = ca.issue(dir.path(), "broker", "broker", &["wrong.example"], false);
    let (client_crt, client_key, _) = ca.issue(dir.path(), "client", "usercc", &[], true);
    let b = TlsBroker::start(&[
        ("ssl.keystore.type", "PEM".into()),
        ("ssl.keystore.location", broker_pem.display().to_string()),
        ("ssl.client.auth", "required".into()),
        ("ssl.truststore.location", ca.path.display().to_string()),
    ]);
    let ssl = b.ssl.as_str();
    let ca_x = format!("ssl.ca.location={}", ca.path.display());
    let base = [
        "-b",
        ssl,
        "-X",
        "security.protocol=SSL",
        "-X",
        ca_x.as_str(),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    let v = with(&["topic", "list"]);
    let e = fails(&args(&v), 1);
    assert!(e.contains("not valid for name"), "{e}");
    assert!(
        e.contains("ssl.endpoint.identification.algorithm=none"),
        "{e}"
    );

    let v = with(&[
        "-X",
        "ssl.endpoint.identification.algorithm=none",
        "topic",
        "list",
    ]);
    let e = fails(&args(&v), 1);
    assert!(e.contains("requires a client certificate"), "{e}");

    let cert_x = format!("ssl.certificate.location={}", client_crt.display());
    let key_x = format!("ssl.key.location={}", client_key.display());
    let mtls = [
        "-X",
        "ssl.endpoint.identification.algorithm=none",
        "-X",
        cert_x.as_str(),
        "-X",
        key_x.as_str(),
    ];
    let v = with(&[&mtls[..], &["topic", "create", "m"]].concat());
    assert_eq!(ok(&args(&v), None).trim(), "Created topic m.");
    let v = with(&[&mtls[..], &["produce", "m"]].concat());
    ok(&args(&v), Some(b"one\ntwo\nthree\n"));
    let v = with(
        &[
            &mtls[..],
            &[
                "consume",
                "m",
                "--from-beginning",
                "-n",
                "3",
                "--timeout",
                "10000",
            ],
        ]
        .concat(),
    );
    assert_eq!(ok(&args(&v), None), "one\ntwo\nthree\n");

    // half a client key pair is a usage error
    let v = with(&["-X", cert_x.as_str(), "topic", "list"]);
    let e = fails(&args(&v), 2);
    assert!(e.contains("ssl.key.location"), "{e}");
}

/// Starts a broker with `listeners` and `settings`, or `None` (with a note) when this broker
/// build refuses them (SASL listeners before the broker has SASL).
fn try_start(
    listeners: &str,
    settings: &[(&str, String)],
) -> Option<(sluice_server::BrokerHandle, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        cores: 1,
        http_listen: None,
        ..ServerConfig::default()
    };
    config.set("listeners", listeners).ok()?;
    for (k, v) in settings {
        if let Err(e) = config.set(k, v) {
            eprintln!("skipped: this broker does not take {k}: {e}");
            return None;
        }
    }
    match sluice_server::start(config) {
        Ok(h) => Some((h, dir)),
        Err(e) => {
            eprintln!("skipped: this broker refuses {listeners}: {e}");
            None
        }
    }
}

fn listener(h: &sluice_server::BrokerHandle, p: SecurityProtocol) -> String {
    h.listeners
        .iter()
        .find(|(_, q, _)| *q == p)
        .map(|(_, _, a)| a.to_string())
        .expect("listener")
}

#[test]
fn scram_users_and_sasl_logins() {
    let Some((h, _dir)) = try_start(
        "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        &[
            (
                "sasl.enabled.mechanisms",
                "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into(),
            ),
            (
                "listener.name.sasl_plaintext.plain.sasl.jaas.config",
                "org.apache.kafka.common.security.plain.PlainLoginModule required \
                 user_alice=\"alice-secret\";"
                    .into(),
            ),
        ],
    ) else {
        return;
    };
    let plain = listener(&h, SecurityProtocol::Plaintext);
    let sasl = listener(&h, SecurityProtocol::SaslPlaintext);
    let p = plain.as_str();

    // SCRAM credentials through AlterUserScramCredentials / DescribeUserScramCredentials
    let set = ok(
        &[
            "-b",
            p,
            "user",
            "scram",
            "set",
            "bob",
            "--mechanism",
            "SCRAM-SHA-256",
            "--password",
            "bob-secret",
            "--iterations",
            "8192",
        ],
        None,
    );
    assert_eq!(set.trim(), "Completed updating config for user bob.");
    ok(
        &[
            "-b",
            p,
            "user",
            "scram",
            "set",
            "bob",
            "--mechanism",
            "scram-sha-512",
            "--password",
            "bob-secret",
        ],
        None,
    );
    assert_eq!(
        ok(&["-b", p, "user", "scram", "list", "bob"], None).trim(),
        "SCRAM credential configs for user-principal 'bob' are SCRAM-SHA-256=iterations=8192, \
         SCRAM-SHA-512=iterations=4096"
    );
    let json = ok(
        &["-b", p, "user", "scram", "list", "--output", "json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v[0]["user"], "bob");
    assert_eq!(v[0]["credentials"][0]["iterations"], 8192);
    let e = fails(
        &[
            "-b",
            p,
            "user",
            "scram",
            "set",
            "bob",
            "--mechanism",
            "SCRAM-SHA-256",
            "--password",
            "x",
            "--iterations",
            "100",
        ],
        2,
    );
    assert!(e.contains("--iterations"), "{e}");

    // logins: PLAIN and both SCRAMs, through the producer's pipeline and a consumer
    let s = sasl.as_str();
    let login = |mech: &str, user: &str, pw: &str| -> Vec<String> {
        [
            "-b".to_string(),
            s.to_string(),
            "-X".into(),
            "security.protocol=SASL_PLAINTEXT".into(),
            "-X".into(),
            format!("sasl.mechanism={mech}"),
            "-X".into(),
            format!("sasl.username={user}"),
            "-X".into(),
            format!("sasl.password={pw}"),
        ]
        .to_vec()
    };
    let with = |base: Vec<String>, rest: &[&str]| -> Vec<String> {
        base.into_iter()
            .chain(rest.iter().map(|s| s.to_string()))
            .collect()
    };
    let v = with(
        login("PLAIN", "alice", "alice-secret"),
        &["topic", "create", "s"],
    );
    assert_eq!(ok(&args(&v), None).trim(), "Created topic s.");
    let v = with(
        login("SCRAM-SHA-256", "bob", "bob-secret"),
        &["produce", "s"],
    );
    ok(&args(&v), Some(b"a\nb\n"));
    let v = with(
        login("SCRAM-SHA-512", "bob", "bob-secret"),
        &[
            "consume",
            "s",
            "--from-beginning",
            "-n",
            "2",
            "--timeout",
            "10000",
        ],
    );
    assert_eq!(ok(&args(&v), None), "a\nb\n");
    let v = with(login("SCRAM-SHA-256", "bob", "wrong"), &["topic", "list"]);
    let e = fails(&args(&v), 1);
    assert!(e.contains("authentication failed: "), "{e}");
    let v = with(login("PLAIN", "alice", "wrong"), &["topic", "list"]);
    let e = fails(&args(&v), 1);
    assert!(e.contains("authentication failed: "), "{e}");

    // deleting a credential
    ok(
        &[
            "-b",
            p,
            "user",
            "scram",
            "delete",
            "bob",
            "--mechanism",
            "SCRAM-SHA-512",
        ],
        None,
    );
    assert_eq!(
        ok(&["-b", p, "user", "scram", "list"], None).trim(),
        "SCRAM credential configs for user-principal 'bob' are SCRAM-SHA-256=iterations=8192"
    );
    h.stop();
}
