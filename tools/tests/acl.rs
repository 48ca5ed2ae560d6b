//! `sluice acl add|list|remove` against an in-process broker with an authorizer (the plaintext
//! client is `User:ANONYMOUS`, a super user here): the seed lab's ACLs for `User:usercc`,
//! kafka-acls.sh's listing layout, JSON, removal by filter, PREFIXED patterns, argument errors
//! (exit 2), a broker without an authorizer (SecurityDisabled, exit 1) and a principal without
//! ALTER/DESCRIBE on the cluster (ClusterAuthorizationFailed, exit 1).

use std::process::{Command, Stdio};

use serde_json::{json, Value};

mod common;
use common::Broker;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A broker with the ACL authorizer on (`Some(super.users)`) or off.
fn start(authorizer: Option<&str>) -> Broker {
    Broker::start_with(|config| {
        if let Some(super_users) = authorizer {
            config
                .set("authorizer.class.name", "x")
                .expect("authorizer.class.name");
            config.set("super.users", super_users).expect("super.users");
        }
    })
}

impl Broker {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = Command::new(BIN)
            .arg("--bootstrap-server")
            .arg(&self.addr)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run sluice");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run(args);
        assert_eq!(
            code,
            0,
            "sluice {} failed with {code}:\nstdout: {stdout}\nstderr: {stderr}",
            args.join(" ")
        );
        stdout
    }

    /// Asserts exit code `code` and one `sluice: error:` line containing `needle`; the line.
    fn fails(&self, args: &[&str], code: i32, needle: &str) -> String {
        let (got, stdout, stderr) = self.run(args);
        assert_eq!(
            got,
            code,
            "sluice {}: expected exit {code}:\nstdout: {stdout}\nstderr: {stderr}",
            args.join(" ")
        );
        assert!(stdout.is_empty(), "stdout: {stdout}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("sluice: error: "))
            .collect();
        assert_eq!(errors.len(), 1, "stderr: {stderr:?}");
        assert!(
            errors[0].contains(needle),
            "{:?} lacks {needle:?}",
            errors[0]
        );
        errors[0].to_string()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }
}

fn topic_header(name: &str, pattern: &str) -> String {
    format!(
        "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name={name}, \
         patternType={pattern})`: "
    )
}

fn usercc(operation: &str) -> String {
    format!("\t(principal=User:usercc, host=*, operation={operation}, permissionType=ALLOW)")
}

#[test]
fn acl_add_list_remove_as_the_seed_lab() {
    let b = start(Some("User:ANONYMOUS"));
    assert_eq!(b.ok(&["acl", "list"]), "", "no ACLs yet");

    // the seed lab, as kafka-acls.sh --add would make it
    let added = b.ok(&[
        "acl",
        "add",
        "--allow-principal",
        "User:usercc",
        "--operation",
        "Create",
        "--operation",
        "Read",
        "--operation",
        "Write",
        "--operation",
        "Describe",
        "--topic",
        "Topic_One",
        "--topic",
        "Topic_Two",
        "--topic",
        "Topic_Four",
    ]);
    assert!(
        added.starts_with(
            "Adding ACLs for resource `ResourcePattern(resourceType=TOPIC, name=Topic_Four, \
             patternType=LITERAL)`: \n"
        ),
        "{added}"
    );
    assert_eq!(added.lines().filter(|l| l.starts_with('\t')).count(), 12);
    b.ok(&[
        "acl",
        "add",
        "--allow-principal",
        "User:usercc",
        "--operation",
        "READ",
        "--group",
        "*",
    ]);

    // kafka-acls.sh --list --topic Topic_Four, line for line
    let listed = b.ok(&["acl", "list", "--topic", "Topic_Four"]);
    let want = [
        topic_header("Topic_Four", "LITERAL"),
        usercc("READ"),
        usercc("WRITE"),
        usercc("CREATE"),
        usercc("DESCRIBE"),
    ]
    .join("\n")
        + "\n";
    assert_eq!(listed, want);

    // everything: four resources, a blank line between them
    let all = b.ok(&["acl", "list"]);
    assert_eq!(all.matches("Current ACLs for resource").count(), 4, "{all}");
    assert_eq!(all.matches("\n\n").count(), 3, "{all}");
    assert!(all.contains(
        "Current ACLs for resource `ResourcePattern(resourceType=GROUP, name=*, \
         patternType=LITERAL)`: \n\t(principal=User:usercc, host=*, operation=READ, \
         permissionType=ALLOW)\n"
    ));
    assert_eq!(b.ok(&["acl", "list", "--principal", "User:other"]), "");
    assert_eq!(
        b.ok(&["acl", "list", "--principal", "User:usercc"]),
        all,
        "every ACL is usercc's"
    );

    // JSON
    let v = b.json(&["acl", "list", "--topic", "Topic_Four"]);
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[0],
        json!({
            "resource_type": "TOPIC", "name": "Topic_Four", "pattern_type": "LITERAL",
            "principal": "User:usercc", "host": "*", "operation": "READ", "permission": "ALLOW"
        })
    );
    let ops: Vec<&str> = rows
        .iter()
        .map(|r| r["operation"].as_str().expect("operation"))
        .collect();
    assert_eq!(ops, ["READ", "WRITE", "CREATE", "DESCRIBE"]);
    assert_eq!(b.json(&["acl", "list"]).as_array().map(Vec::len), Some(13));

    // remove one
    let removed = b.ok(&[
        "acl",
        "remove",
        "--topic",
        "Topic_Four",
        "--operation",
        "Write",
        "--allow-principal",
        "User:usercc",
    ]);
    assert_eq!(
        removed,
        "Removed ACLs for resource `ResourcePattern(resourceType=TOPIC, name=Topic_Four, \
         patternType=LITERAL)`: \n"
            .to_string()
            + &usercc("WRITE")
            + "\n"
    );
    assert_eq!(
        b.ok(&["acl", "list", "--topic", "Topic_Four"]),
        [
            topic_header("Topic_Four", "LITERAL"),
            usercc("READ"),
            usercc("CREATE"),
            usercc("DESCRIBE"),
        ]
        .join("\n")
            + "\n"
    );
    // the same again removes nothing
    assert_eq!(
        b.ok(&[
            "acl",
            "remove",
            "--topic",
            "Topic_Four",
            "--operation",
            "Write",
            "--allow-principal",
            "User:usercc",
        ]),
        ""
    );
    // a DENY filter does not match ALLOW ACLs
    assert_eq!(
        b.ok(&[
            "acl",
            "remove",
            "--topic",
            "Topic_Two",
            "--deny-principal",
            "User:usercc"
        ]),
        ""
    );

    // PREFIXED, DENY and hosts
    b.ok(&[
        "acl",
        "add",
        "--deny-principal",
        "User:mallory",
        "--deny-host",
        "10.0.0.1",
        "--operation",
        "DescribeConfigs",
        "--operation",
        "all",
        "--topic",
        "Topic_",
        "--resource-pattern-type",
        "PREFIXED",
    ]);
    let prefixed = b.ok(&[
        "acl",
        "list",
        "--topic",
        "Topic_",
        "--resource-pattern-type",
        "prefixed",
    ]);
    assert_eq!(
        prefixed,
        [
            topic_header("Topic_", "PREFIXED"),
            "\t(principal=User:mallory, host=10.0.0.1, operation=ALL, permissionType=DENY)"
                .to_string(),
            "\t(principal=User:mallory, host=10.0.0.1, operation=DESCRIBE_CONFIGS, \
             permissionType=DENY)"
                .to_string(),
        ]
        .join("\n")
            + "\n"
    );
    assert_eq!(
        b.ok(&[
            "acl",
            "list",
            "--topic",
            "Topic_",
            "--resource-pattern-type",
            "literal"
        ]),
        ""
    );
    // MATCH: what applies to Topic_Four: its literal ACLs and the prefix
    let matching = b.json(&[
        "acl",
        "list",
        "--topic",
        "Topic_Four",
        "--resource-pattern-type",
        "match",
    ]);
    let names: Vec<(String, String)> = matching
        .as_array()
        .expect("array")
        .iter()
        .map(|r| (r["name"].to_string(), r["pattern_type"].to_string()))
        .collect();
    assert_eq!(names.len(), 5, "{matching}");
    assert_eq!(
        names
            .iter()
            .filter(|(n, p)| n == "\"Topic_\"" && p == "\"PREFIXED\"")
            .count(),
        2
    );
    let gone = b.json(&["acl", "remove", "--principal", "User:mallory"]);
    assert_eq!(gone.as_array().map(Vec::len), Some(2), "{gone}");
    assert!(gone
        .as_array()
        .expect("array")
        .iter()
        .all(|r| r["permission"] == "DENY" && r["pattern_type"] == "PREFIXED"));

    // cluster and transactional ids
    b.ok(&[
        "acl",
        "add",
        "--allow-principal",
        "User:usercc",
        "--operation",
        "IdempotentWrite",
        "--cluster",
        "--operation",
        "describe",
    ]);
    b.ok(&[
        "acl",
        "add",
        "--allow-principal",
        "User:usercc",
        "--operation",
        "Write",
        "--transactional-id",
        "tx-1",
    ]);
    assert_eq!(
        b.ok(&["acl", "list", "--cluster"]),
        "Current ACLs for resource `ResourcePattern(resourceType=CLUSTER, name=kafka-cluster, \
         patternType=LITERAL)`: \n\
         \t(principal=User:usercc, host=*, operation=DESCRIBE, permissionType=ALLOW)\n\
         \t(principal=User:usercc, host=*, operation=IDEMPOTENT_WRITE, permissionType=ALLOW)\n"
    );
    let tx = b.json(&["acl", "list", "--transactional-id", "tx-1"]);
    assert_eq!(tx[0]["resource_type"], "TRANSACTIONAL_ID");

    // bad arguments: exit 2, nothing sent
    b.fails(&["acl", "remove"], 2, "--all");
    b.fails(
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:x",
            "--operation",
            "Read",
        ],
        2,
        "a resource is required",
    );
    b.fails(
        &["acl", "add", "--operation", "Read", "--topic", "t"],
        2,
        "a principal is required",
    );
    b.fails(
        &["acl", "add", "--allow-principal", "User:x", "--topic", "t"],
        2,
        "--operation",
    );
    b.fails(
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:x",
            "--operation",
            "Fly",
            "--topic",
            "t",
        ],
        2,
        "unknown operation",
    );
    b.fails(
        &[
            "acl",
            "add",
            "--allow-principal",
            "usercc",
            "--operation",
            "Read",
            "--topic",
            "t",
        ],
        2,
        "Type:name",
    );
    b.fails(
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:x",
            "--operation",
            "Write",
            "--group",
            "g",
        ],
        2,
        "operation WRITE is not valid on a GROUP",
    );
    b.fails(
        &[
            "acl",
            "add",
            "--allow-host",
            "1.2.3.4",
            "--operation",
            "Read",
            "--topic",
            "t",
        ],
        2,
        "--allow-principal",
    );
    b.fails(
        &["acl", "list", "--resource-pattern-type", "sideways"],
        2,
        "sideways",
    );

    // --all wipes everything
    let wiped = b.json(&["acl", "remove", "--all"]);
    assert_eq!(wiped.as_array().map(Vec::len), Some(15), "{wiped}");
    assert_eq!(b.ok(&["acl", "list"]), "");
}

#[test]
fn acl_without_an_authorizer_is_security_disabled() {
    let b = start(None);
    let line = b.fails(
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:usercc",
            "--operation",
            "Read",
            "--topic",
            "Topic_One",
        ],
        1,
        "acl add: SecurityDisabled (error code 54): No Authorizer is configured.",
    );
    assert_eq!(
        line,
        "sluice: error: acl add: SecurityDisabled (error code 54): No Authorizer is configured."
    );
    b.fails(
        &["acl", "list"],
        1,
        "acl list: SecurityDisabled (error code 54)",
    );
    b.fails(
        &["acl", "remove", "--topic", "Topic_One"],
        1,
        "acl remove: SecurityDisabled (error code 54)",
    );
}

#[test]
fn acl_without_cluster_alter_is_cluster_authorization_failed() {
    // an authorizer, but ANONYMOUS is no super user and has no ACL on the cluster
    let b = start(Some("User:admin"));
    b.fails(
        &[
            "acl",
            "add",
            "--allow-principal",
            "User:usercc",
            "--operation",
            "Read",
            "--topic",
            "Topic_One",
        ],
        1,
        "acl add: ClusterAuthorizationFailed (error code 31)",
    );
    b.fails(
        &["acl", "list"],
        1,
        "acl list: ClusterAuthorizationFailed (error code 31)",
    );
    b.fails(
        &["acl", "remove", "--all"],
        1,
        "acl remove: ClusterAuthorizationFailed (error code 31)",
    );
}
