//! `sluice`: the admin CLI. Topics, console produce/consume, consumer groups and lag, record
//! deletion, log dirs, the cluster, SCRAM users, ACLs, a live view (`top`), and an offline dump
//! of segment files.
//! Output follows Kafka's tools (kafka-topics.sh, kafka-consumer-groups.sh, kafka-acls.sh,
//! kafka-dump-log.sh); `--output json` gives machine-readable output everywhere. Errors are one
//! line on stderr (`sluice: error: ...`); the exit code is 0 on success, 1 when something failed
//! and 2 for bad arguments.

mod acl;
mod admin;
mod consume;
mod dump;
mod group;
mod out;
mod produce;
mod quota;
mod top;
mod topic;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_tools::security::{self, ClientSecurity};

use out::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Broker(s) to bootstrap from: host:port[,host:port...]
    #[arg(
        long = "bootstrap-server",
        short = 'b',
        alias = "brokers",
        global = true,
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,
    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Client security settings in a Java properties file (as kafka-topics.sh's):
    /// security.protocol, sasl.mechanism, sasl.username, sasl.password, ssl.ca.location,
    /// ssl.certificate.location, ssl.key.location, ssl.endpoint.identification.algorithm
    #[arg(long = "command-config", global = true, value_name = "FILE")]
    pub command_config: Option<PathBuf>,
    /// A client setting (repeatable, overrides --command-config), as kcat's -X, e.g.
    /// -X security.protocol=SSL -X ssl.ca.location=ca.pem
    #[arg(short = 'X', global = true, value_name = "KEY=VALUE", value_parser = security::parse_override)]
    pub settings: Vec<(String, String)>,
    /// What --command-config and -X make (set in main).
    #[arg(skip)]
    pub security: Arc<ClientSecurity>,
}

impl Global {
    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Admin CLI for sluice and other Kafka-compatible brokers",
    after_help = "Exit codes: 0 success, 1 failure (broker unreachable, unknown topic or group, \
                  broker error, damaged segment), 2 bad arguments."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe, delete and configure topics (kafka-topics.sh)
    #[command(subcommand)]
    Topic(topic::TopicCmd),
    /// Produce one message per line of stdin (kafka-console-producer.sh)
    Produce(produce::ProduceArgs),
    /// Print messages of a topic (kafka-console-consumer.sh)
    Consume(consume::ConsumeArgs),
    /// List, describe (offsets and lag), delete consumer groups and reset their offsets
    /// (kafka-consumer-groups.sh)
    #[command(subcommand)]
    Group(group::GroupCmd),
    /// Delete records below an offset (kafka-delete-records.sh)
    #[command(subcommand)]
    Records(admin::RecordsCmd),
    /// Bytes stored per topic and partition (kafka-log-dirs.sh)
    LogDirs(admin::LogDirsArgs),
    /// The cluster: id, controller, brokers, and the metadata quorum
    #[command(subcommand)]
    Cluster(admin::ClusterCmd),
    /// Print the batches of segment files offline (kafka-dump-log.sh)
    DumpLog(dump::DumpLogArgs),
    /// SCRAM users: set, list and delete credentials (kafka-configs.sh --entity-type users)
    #[command(subcommand)]
    User(user::UserCmd),
    /// ACLs: add, list and remove (kafka-acls.sh)
    #[command(subcommand)]
    Acl(acl::AclCmd),
    /// Client quotas: set, list and delete producer_byte_rate, consumer_byte_rate and
    /// request_percentage of users and client ids (kafka-configs.sh --entity-type
    /// users|clients)
    #[command(subcommand)]
    Quota(quota::QuotaCmd),
    /// Live view: per topic end offsets, messages/s, bytes stored and bytes/s; per consumer
    /// group its state, members and lag (refreshed every --interval-ms)
    Top(top::TopArgs),
}

fn run(cli: Cli) -> Result<(), CliError> {
    let g = &cli.global;
    match cli.cmd {
        Command::Topic(c) => topic::run(g, c),
        Command::Produce(a) => produce::run(g, a),
        Command::Consume(a) => consume::run(g, a),
        Command::Group(c) => group::run(g, c),
        Command::Records(c) => admin::records(g, c),
        Command::LogDirs(a) => admin::log_dirs(g, a),
        Command::Cluster(c) => admin::cluster(g, c),
        Command::DumpLog(a) => dump::run(g, a),
        Command::User(c) => user::run(g, c),
        Command::Acl(c) => acl::run(g, c),
        Command::Quota(c) => quota::run(g, c),
        Command::Top(a) => top::run(g, a),
    }
}

/// The security settings of --command-config and -X (warnings on stderr); a bad one is a
/// usage error.
fn client_security(g: &Global) -> Result<ClientSecurity, CliError> {
    let parsed = ClientSecurity::from_file_and_overrides(g.command_config.as_deref(), &g.settings)
        .map_err(|e| CliError::usage(e.to_string()))?;
    for w in &parsed.warnings {
        out::print_warning(w);
    }
    parsed
        .security
        .prepare()
        .map_err(|e| CliError::usage(e.to_string()))?;
    Ok(parsed.security)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    return ExitCode::SUCCESS;
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    return ExitCode::from(2);
                }
                _ => {
                    out::print_error(&CliError::Usage(out::clap_message(&e)));
                    return ExitCode::from(2);
                }
            }
        }
    };
    let mut cli = cli;
    match client_security(&cli.global) {
        Ok(s) => cli.global.security = Arc::new(s),
        Err(e) => {
            out::print_error(&e);
            return ExitCode::from(e.exit_code());
        }
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out::print_error(&e);
            ExitCode::from(e.exit_code())
        }
    }
}
