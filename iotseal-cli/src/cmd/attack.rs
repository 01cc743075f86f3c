//! `iotseal attack`: the threat lab. An intercepting proxy on loopback between simulated
//! devices and a gateway tries man-in-the-middle, replay, reordering, tampering, downgrade,
//! impersonation and denial-of-service attacks through the live system, against iotseal or
//! against the original design (`--target legacy`), and reports what stopped each one. With
//! `--mqtt`, the broker-side attacks instead: the lab's gateway takes requests through an MQTT
//! broker, and an attacker client of that broker eavesdrops, replays and injects on the
//! iotseal topics.

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use iotseal_device::GatewayPins;
use iotseal_lab::{GatewayLimits, GatewaySpec, LabOptions, Target};

use crate::cmd::simulate::admin_token;

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Attack a running gateway at this URL (default: a gateway started in this process with
    /// small limits, so the slow attacks take seconds).
    #[arg(long, conflicts_with = "in_process")]
    gateway: Option<String>,
    /// The running gateway's pins file (gateway.pub.toml), with --gateway.
    #[arg(long, requires = "gateway")]
    pins: Option<PathBuf>,
    /// File with the running gateway's admin token, with --gateway (devices are registered
    /// and revoked, readings and metrics read, through the admin API).
    #[arg(long, requires = "gateway")]
    token_file: Option<PathBuf>,
    /// Start a gateway in this process (the default).
    #[arg(long)]
    in_process: bool,
    /// What to attack: iotseal, or legacy (the original design, rebuilt inside the lab).
    #[arg(long, default_value = "iotseal")]
    target: String,
    /// Only these attacks (comma-separated names; see --list).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Print a JSON list of outcomes.
    #[arg(long)]
    json: bool,
    /// List the attacks and exit.
    #[arg(long)]
    list: bool,
    /// Run the broker-side attacks (mqtt-*) instead: the lab's gateway (in process) serves
    /// over the MQTT broker --mqtt-broker, where the attacker is one more client.
    #[arg(long, conflicts_with = "gateway")]
    mqtt: bool,
    /// The MQTT broker for --mqtt (HOST:PORT, plain MQTT).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:1883")]
    mqtt_broker: String,
    /// The running gateway's skew_secs (default: the gateway's default).
    #[arg(long, requires = "gateway")]
    skew_secs: Option<u64>,
    /// The running gateway's records.max_record_age_secs.
    #[arg(long, requires = "gateway")]
    max_record_age_secs: Option<u64>,
    /// The running gateway's limits.header_read_timeout_secs.
    #[arg(long, requires = "gateway")]
    header_read_timeout_secs: Option<u64>,
    /// The running gateway's limits.request_timeout_secs.
    #[arg(long, requires = "gateway")]
    request_timeout_secs: Option<u64>,
    /// The running gateway's limits.half_open.
    #[arg(long, requires = "gateway")]
    half_open: Option<usize>,
    /// The running gateway's limits.max_body.
    #[arg(long, requires = "gateway")]
    max_body: Option<usize>,
    /// The running gateway's limits.max_connections_per_ip.
    #[arg(long, requires = "gateway")]
    max_connections_per_ip: Option<usize>,
}

pub(crate) fn run(a: Args) -> Result<()> {
    if a.list {
        for n in iotseal_lab::ATTACKS {
            println!("{n}");
        }
        for n in iotseal_lab::MQTT_ATTACKS {
            println!("{n} (with --mqtt)");
        }
        return Ok(());
    }
    let target: Target = a.target.parse().map_err(|e| anyhow!("{e}"))?;
    if a.mqtt {
        if target == Target::Legacy {
            bail!("the legacy design has no MQTT binding; drop --mqtt or --target legacy");
        }
        iotseal_lab::check_mqtt_names(&a.only).map_err(|e| anyhow!("{e}"))?;
    } else {
        iotseal_lab::check_names(&a.only).map_err(|e| anyhow!("{e}"))?;
    }
    let gateway = match &a.gateway {
        None => GatewaySpec::InProcess { data_dir: None },
        Some(url) => {
            if target == Target::Legacy {
                bail!("the legacy target runs inside the lab only; drop --gateway");
            }
            let pins_path = a
                .pins
                .clone()
                .ok_or_else(|| anyhow!("--gateway needs --pins FILE (gateway.pub.toml)"))?;
            let mut pins = GatewayPins::load(&pins_path).map_err(|e| anyhow!("{e}"))?;
            pins.url = url.clone();
            let token = admin_token(None, a.token_file.clone())?;
            let mut limits = GatewayLimits::default();
            if let Some(v) = a.skew_secs {
                limits.skew_secs = v;
            }
            if let Some(v) = a.max_record_age_secs {
                limits.max_record_age_secs = v;
            }
            if let Some(v) = a.header_read_timeout_secs {
                limits.header_read_timeout_secs = v;
            }
            if let Some(v) = a.request_timeout_secs {
                limits.request_timeout_secs = v;
            }
            if let Some(v) = a.half_open {
                limits.half_open = v;
            }
            if let Some(v) = a.max_body {
                limits.max_body = v;
            }
            if let Some(v) = a.max_connections_per_ip {
                limits.max_connections_per_ip = v;
            }
            GatewaySpec::Remote {
                pins,
                token,
                limits,
            }
        }
    };
    let options = LabOptions {
        gateway,
        only: a.only.clone(),
        progress: !a.json,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let outcomes = if a.mqtt {
        rt.block_on(iotseal_lab::run_mqtt(&options, &a.mqtt_broker))
    } else {
        rt.block_on(iotseal_lab::run_all(target, &options))
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else if a.mqtt {
        println!("target: {target} over MQTT (broker {})\n", a.mqtt_broker);
        print!("{}", iotseal_lab::table(&outcomes));
    } else {
        println!("target: {target}\n");
        print!("{}", iotseal_lab::table(&outcomes));
    }
    let errors: Vec<_> = outcomes
        .iter()
        .filter_map(|o| o.error.as_ref().map(|e| format!("{}: {e}", o.name)))
        .collect();
    if !errors.is_empty() {
        bail!(
            "the lab could not run every attack:\n  {}",
            errors.join("\n  ")
        );
    }
    if target == Target::Iotseal {
        let through: Vec<_> = outcomes
            .iter()
            .filter(|o| o.applicable && o.blocked != Some(true))
            .map(|o| o.name.as_str())
            .collect();
        if !through.is_empty() {
            bail!("not blocked: {}", through.join(", "));
        }
    }
    Ok(())
}
