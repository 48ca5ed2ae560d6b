//! `sluice-server`: starts the broker. Zero configuration listens on 127.0.0.1:9092 with data
//! under ./data; flags and server.properties (Kafka's key names) change that.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sluice_server::alloc::GuardedAlloc;
use sluice_server::config::ServerConfig;

/// Survives allocations sized by hostile length prefixes (see `sluice_server::alloc`).
#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-server",
    version,
    about = "Kafka-compatible broker (thread-per-core, io_uring)"
)]
struct Args {
    /// Address of the first listener (of `listeners`; PLAINTEXT when none is configured).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
    /// Address clients of the first listener are given (its advertised.listeners entry).
    #[arg(long, value_name = "HOST:PORT")]
    advertised: Option<String>,
    /// Where partition logs and the catalog live.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Shards (one glommio executor per core); default: all cores.
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// This broker's id in a cluster (node.id / broker.id).
    #[arg(long, value_name = "ID")]
    node_id: Option<i32>,
    /// The metadata quorum's voters, id@host:port,... (controller.quorum.voters); the voter
    /// whose id is --node-id binds its address. Without it the broker is a single node.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    controller_quorum_voters: Option<String>,
    /// A server.properties file (Kafka key names).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override one property, like kafka-server-start.sh --override key=value.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-server: {e}");
            return ExitCode::from(2);
        }
    };
    // block the stop signals before the shards start so that only this thread receives them
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice-server: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let broker = match sluice_server::start(config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sluice-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    // one line per listener, then the line scripts wait for (the first listener's address)
    for (name, protocol, addr) in &broker.listeners {
        println!(
            "sluice-server listener {name} {} on {addr}",
            protocol.name()
        );
    }
    if let Some(addr) = broker.http_addr {
        println!("sluice-server http on {addr} (metrics: http://{addr}/metrics, console: http://{addr}/)");
    }
    println!("sluice-server listening on {}", broker.addr);
    let stop = broker.stopper();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "stopping");
            stop();
        }
    });
    broker.join();
    tracing::info!("bye");
    ExitCode::SUCCESS
}

fn build_config(args: &Args) -> Result<ServerConfig, String> {
    let mut c = ServerConfig::default();
    if let Some(path) = &args.config {
        c.load_file(path).map_err(|e| e.to_string())?;
    }
    for o in &args.overrides {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| format!("--override {o:?}: expected key=value"))?;
        c.set(k.trim(), v).map_err(|e| e.to_string())?;
    }
    if let Some(l) = args.listen {
        c.listeners.set_first_addr(l);
    }
    if let Some(a) = &args.advertised {
        let (h, p) = a
            .rsplit_once(':')
            .ok_or_else(|| format!("--advertised {a:?}: expected HOST:PORT"))?;
        let p: u16 = p
            .parse()
            .map_err(|_| format!("--advertised {a:?}: bad port"))?;
        c.listeners.set_first_advertised(h.to_string(), p);
    }
    if let Some(id) = args.node_id {
        c.set("node.id", &id.to_string())
            .map_err(|e| e.to_string())?;
    }
    if let Some(v) = &args.controller_quorum_voters {
        c.set("controller.quorum.voters", v)
            .map_err(|e| e.to_string())?;
    }
    if let Some(d) = &args.data_dir {
        c.data_dir = d.clone();
    }
    if let Some(n) = args.cores {
        if n == 0 {
            return Err("--cores must be at least 1".into());
        }
        c.cores = n;
    }
    Ok(c)
}
