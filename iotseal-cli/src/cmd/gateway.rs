//! `iotseal gateway`: set up a gateway directory, rotate its identity key, run it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use iotseal_gateway::keys::{GatewayPublic, IdentityKeyFile, self_signed_cert};
use iotseal_gateway::{Gateway, Settings};
use iotseal_proto::SigAlg;

use crate::cmd::keygen::write_private;

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Create a gateway directory: identity key, TLS certificate, admin token, gateway.toml,
    /// and gateway.pub.toml (what devices pin).
    Init(InitArgs),
    /// Add a new identity key (both stay valid; devices pin the set), or retire one.
    RotateKey(RotateArgs),
    /// Run the gateway until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Directory to create the files in.
    #[arg(long)]
    dir: PathBuf,
    /// Identity key algorithms, comma-separated: ed25519, ecdsa-p256, mldsa65,
    /// ed25519+mldsa65. One identity key per algorithm, so that every suite whose signature
    /// algorithm is listed can be served (default: all four; docs/decisions.md D18).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ed25519,ecdsa-p256,mldsa65,ed25519+mldsa65"
    )]
    alg: Vec<SigAlg>,
    /// Use this TLS certificate (PEM) instead of generating a self-signed one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Listen address written to gateway.toml.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The URL devices use (default: from --listen).
    #[arg(long)]
    url: Option<String>,
    /// Overwrite an existing gateway.toml.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct RotateArgs {
    /// The gateway directory (with gateway.toml).
    #[arg(long)]
    dir: PathBuf,
    /// Algorithm of the new key (required when the gateway holds keys of several algorithms;
    /// otherwise that of its keys).
    #[arg(long, conflicts_with = "retire")]
    alg: Option<SigAlg>,
    /// Instead of adding a key, retire the key with this key id (hex).
    #[arg(long)]
    retire: Option<String>,
}

/// Every setting as a flag and an `IOTSEAL_*` variable (named after the key without its
/// section); values are TOML (`42`, `true`, `["a"]`) or plain strings, lists also `a,b`.
macro_rules! overrides {
    ($( $field:ident = $key:literal, $env:literal; )*) => {
        #[derive(Debug, Default, clap::Args)]
        struct Overrides {
            $(
                #[doc = concat!("Setting `", $key, "`.")]
                #[arg(long, env = $env, value_name = "VALUE", hide_env_values = true)]
                $field: Option<String>,
            )*
        }

        impl Overrides {
            fn pairs(&self) -> Vec<(&'static str, Option<&str>)> {
                vec![$( ($key, self.$field.as_deref()), )*]
            }
        }
    };
}

overrides! {
    listen = "listen", "IOTSEAL_LISTEN";
    data_dir = "data_dir", "IOTSEAL_DATA_DIR";
    storage = "storage", "IOTSEAL_STORAGE";
    storage_sync = "storage_sync", "IOTSEAL_STORAGE_SYNC";
    plain_http = "plain_http", "IOTSEAL_PLAIN_HTTP";
    proxy_protocol = "proxy_protocol", "IOTSEAL_PROXY_PROTOCOL";
    identity_keys = "identity_keys", "IOTSEAL_IDENTITY_KEYS";
    admin_token_file = "admin_token_file", "IOTSEAL_ADMIN_TOKEN_FILE";
    skew_secs = "skew_secs", "IOTSEAL_SKEW_SECS";
    tls_cert = "tls.cert", "IOTSEAL_TLS_CERT";
    tls_key = "tls.key", "IOTSEAL_TLS_KEY";
    tls_client_ca = "tls.client_ca", "IOTSEAL_TLS_CLIENT_CA";
    allowed_suites = "policy.allowed_suites", "IOTSEAL_ALLOWED_SUITES";
    require_pq_kem = "policy.require_pq_kem", "IOTSEAL_REQUIRE_PQ_KEM";
    require_pq_sig = "policy.require_pq_sig", "IOTSEAL_REQUIRE_PQ_SIG";
    max_body = "limits.max_body", "IOTSEAL_MAX_BODY";
    max_sessions = "limits.max_sessions", "IOTSEAL_MAX_SESSIONS";
    max_sessions_per_device = "limits.max_sessions_per_device", "IOTSEAL_MAX_SESSIONS_PER_DEVICE";
    idle_timeout_secs = "limits.idle_timeout_secs", "IOTSEAL_IDLE_TIMEOUT_SECS";
    session_lifetime_secs = "limits.session_lifetime_secs", "IOTSEAL_SESSION_LIFETIME_SECS";
    rekey_after_records = "limits.rekey_after_records", "IOTSEAL_REKEY_AFTER_RECORDS";
    rekey_after_bytes = "limits.rekey_after_bytes", "IOTSEAL_REKEY_AFTER_BYTES";
    rekey_after_secs = "limits.rekey_after_secs", "IOTSEAL_REKEY_AFTER_SECS";
    grace_secs = "limits.grace_secs", "IOTSEAL_GRACE_SECS";
    half_open = "limits.half_open", "IOTSEAL_HALF_OPEN";
    half_open_per_source = "limits.half_open_per_source", "IOTSEAL_HALF_OPEN_PER_SOURCE";
    half_open_cookie_threshold = "limits.half_open_cookie_threshold", "IOTSEAL_HALF_OPEN_COOKIE_THRESHOLD";
    half_open_secs = "limits.half_open_secs", "IOTSEAL_HALF_OPEN_SECS";
    nonce_cache = "limits.nonce_cache", "IOTSEAL_NONCE_CACHE";
    response_cache = "limits.response_cache", "IOTSEAL_RESPONSE_CACHE";
    handshake_rate_per_ip = "limits.handshake_rate_per_ip", "IOTSEAL_HANDSHAKE_RATE_PER_IP";
    handshake_burst_per_ip = "limits.handshake_burst_per_ip", "IOTSEAL_HANDSHAKE_BURST_PER_IP";
    rate_limit_table = "limits.rate_limit_table", "IOTSEAL_RATE_LIMIT_TABLE";
    replay_ack_interval_ms = "limits.replay_ack_interval_ms", "IOTSEAL_REPLAY_ACK_INTERVAL_MS";
    max_connections = "limits.max_connections", "IOTSEAL_MAX_CONNECTIONS";
    max_connections_per_ip = "limits.max_connections_per_ip", "IOTSEAL_MAX_CONNECTIONS_PER_IP";
    header_read_timeout_secs = "limits.header_read_timeout_secs", "IOTSEAL_HEADER_READ_TIMEOUT_SECS";
    request_timeout_secs = "limits.request_timeout_secs", "IOTSEAL_REQUEST_TIMEOUT_SECS";
    tls_handshake_timeout_secs = "limits.tls_handshake_timeout_secs", "IOTSEAL_TLS_HANDSHAKE_TIMEOUT_SECS";
    shutdown_grace_secs = "limits.shutdown_grace_secs", "IOTSEAL_SHUTDOWN_GRACE_SECS";
    sweep_interval_secs = "limits.sweep_interval_secs", "IOTSEAL_SWEEP_INTERVAL_SECS";
    park_after_secs = "limits.park_after_secs", "IOTSEAL_PARK_AFTER_SECS";
    retry_after_secs = "limits.retry_after_secs", "IOTSEAL_RETRY_AFTER_SECS";
    storage_queue = "limits.storage_queue", "IOTSEAL_STORAGE_QUEUE";
    storage_batch = "limits.storage_batch", "IOTSEAL_STORAGE_BATCH";
    storage_read_connections = "limits.storage_read_connections", "IOTSEAL_STORAGE_READ_CONNECTIONS";
    audit_queue = "limits.audit_queue", "IOTSEAL_AUDIT_QUEUE";
    max_record_age_secs = "records.max_record_age_secs", "IOTSEAL_MAX_RECORD_AGE_SECS";
    mqtt_broker = "mqtt.broker", "IOTSEAL_MQTT_BROKER";
    mqtt_client_id = "mqtt.client_id", "IOTSEAL_MQTT_CLIENT_ID";
    mqtt_topic_prefix = "mqtt.topic_prefix", "IOTSEAL_MQTT_TOPIC_PREFIX";
    mqtt_ca_file = "mqtt.ca_file", "IOTSEAL_MQTT_CA_FILE";
    mqtt_username = "mqtt.username", "IOTSEAL_MQTT_USERNAME";
    mqtt_password_file = "mqtt.password_file", "IOTSEAL_MQTT_PASSWORD_FILE";
    mqtt_max_record_age_secs = "mqtt.max_record_age_secs", "IOTSEAL_MQTT_MAX_RECORD_AGE_SECS";
    mqtt_session_expiry_secs = "mqtt.session_expiry_secs", "IOTSEAL_MQTT_SESSION_EXPIRY_SECS";
    mqtt_max_in_flight = "mqtt.max_in_flight", "IOTSEAL_MQTT_MAX_IN_FLIGHT";
    mqtt_qos0_in_flight = "mqtt.qos0_in_flight", "IOTSEAL_MQTT_QOS0_IN_FLIGHT";
    mqtt_tcp_nodelay = "mqtt.tcp_nodelay", "IOTSEAL_MQTT_TCP_NODELAY";
    cluster = "cluster.url", "IOTSEAL_CLUSTER";
    cluster_node_id = "cluster.node_id", "IOTSEAL_CLUSTER_NODE_ID";
    cluster_partitions = "cluster.partitions", "IOTSEAL_CLUSTER_PARTITIONS";
    cluster_lease_ms = "cluster.lease_ms", "IOTSEAL_CLUSTER_LEASE_MS";
    cluster_prefix = "cluster.prefix", "IOTSEAL_CLUSTER_PREFIX";
    cluster_forward_timeout_ms = "cluster.forward_timeout_ms", "IOTSEAL_CLUSTER_FORWARD_TIMEOUT_MS";
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The configuration file (gateway.toml); without it, every setting has its default and
    /// relative paths are relative to the current directory.
    #[arg(long, env = "IOTSEAL_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

pub(crate) fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Init(a) => init(a),
        Cmd::RotateKey(a) => rotate(a),
        Cmd::Run(a) => run_gateway(*a),
    }
}

fn provider() -> iotseal_proto::CryptoProvider {
    iotseal_crypto_awslc::default_provider()
}

fn url_for(listen: SocketAddr) -> String {
    Settings {
        listen,
        ..Settings::default()
    }
    .url_for(listen)
}

fn write_public(
    dir: &Path,
    url: String,
    keys: &[IdentityKeyFile],
    cert_pem: &str,
) -> Result<GatewayPublic> {
    let public = GatewayPublic::new(&provider(), url, keys, cert_pem)?;
    std::fs::write(dir.join("gateway.pub.toml"), public.to_toml()?)
        .context("writing gateway.pub.toml")?;
    Ok(public)
}

fn init(a: InitArgs) -> Result<()> {
    let p = provider();
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let config = a.dir.join("gateway.toml");
    if config.exists() && !a.force {
        bail!("{} exists (use --force to overwrite)", config.display());
    }
    let mut algs: Vec<SigAlg> = Vec::new();
    for alg in &a.alg {
        if algs.contains(alg) {
            bail!("--alg lists {alg} twice");
        }
        algs.push(*alg);
    }
    if algs.is_empty() {
        bail!("--alg: at least one algorithm");
    }
    let mut keys = Vec::with_capacity(algs.len());
    let mut key_names = Vec::with_capacity(algs.len());
    for (i, alg) in algs.iter().enumerate() {
        let key = IdentityKeyFile::generate(&p, *alg)?;
        let key_name = PathBuf::from(format!("identity-{}.key", i + 1));
        write_private(&a.dir.join(&key_name), key.to_toml().as_bytes())?;
        keys.push(key);
        key_names.push(key_name);
    }

    let mut settings = Settings {
        listen: a.listen,
        identity_keys: key_names.clone(),
        ..Settings::default()
    };
    let cert_pem = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = std::fs::canonicalize(cert)
                .with_context(|| format!("reading {}", cert.display()))?;
            let key =
                std::fs::canonicalize(key).with_context(|| format!("reading {}", key.display()))?;
            // Check the pair loads before writing a configuration around it.
            iotseal_gateway::tls::server_config(&cert, &key, None)?;
            settings.tls.cert = cert.clone();
            settings.tls.key = key;
            std::fs::read_to_string(&cert)?
        }
        _ => {
            let c = self_signed_cert(&[])?;
            std::fs::write(a.dir.join(&settings.tls.cert), &c.cert_pem)
                .context("writing the certificate")?;
            write_private(&a.dir.join(&settings.tls.key), c.key_pem.as_bytes())?;
            c.cert_pem
        }
    };
    let token = hex::encode(p.random_vec(32).map_err(|e| anyhow::anyhow!("{e}"))?);
    write_private(
        &a.dir.join(&settings.admin_token_file),
        format!("{token}\n").as_bytes(),
    )?;
    std::fs::write(&config, settings.commented_toml()).context("writing gateway.toml")?;
    let url = a.url.unwrap_or_else(|| url_for(a.listen));
    let public = write_public(&a.dir, url, &keys, &cert_pem)?;
    println!("gateway directory {}", a.dir.display());
    println!("  gateway.toml      configuration (every setting, with its default)");
    for ((name, alg), id) in key_names.iter().zip(&algs).zip(&public.identity) {
        println!(
            "  {:<17} {alg} identity key {} (secret, 0600)",
            name.display(),
            id.key_id
        );
    }
    println!(
        "  tls               certificate sha256 {}",
        public.tls_cert_sha256
    );
    println!("  admin.token       admin API token (secret, 0600)");
    println!("  gateway.pub.toml  what devices pin: {}", public.url);
    Ok(())
}

/// Rewrites the one `identity_keys = [...]` line of gateway.toml, keeping every comment.
fn rewrite_key_list(config: &Path, keys: &[PathBuf]) -> Result<()> {
    let text = std::fs::read_to_string(config)?;
    let list = keys
        .iter()
        .map(|k| format!("{:?}", k.display().to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut found = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("identity_keys") && l.contains('=') && l.contains(']') {
                found += 1;
                format!("identity_keys = [{list}]")
            } else {
                l.to_string()
            }
        })
        .collect();
    if found != 1 {
        bail!(
            "{}: expected one `identity_keys = [...]` line; set it to [{list}] by hand",
            config.display()
        );
    }
    let new = out.join("\n") + "\n";
    let check: Settings = toml::from_str(&new).context("rewritten gateway.toml")?;
    if check.identity_keys != keys {
        bail!("{}: could not rewrite identity_keys", config.display());
    }
    std::fs::write(config, new)?;
    Ok(())
}

fn rotate(a: RotateArgs) -> Result<()> {
    let p = provider();
    let config = a.dir.join("gateway.toml");
    let settings = Settings::load(&config)?;
    let mut files = settings.identity_keys.clone();
    let keys: Vec<IdentityKeyFile> = files
        .iter()
        .map(|f| IdentityKeyFile::load(&settings.resolve(f)))
        .collect::<Result<_, _>>()?;
    let mut keys_after = keys.clone();
    if let Some(kid) = &a.retire {
        let kid = kid.trim().to_ascii_lowercase();
        let mut idx = None;
        for (i, k) in keys.iter().enumerate() {
            if k.key_id_hex(&p)? == kid {
                idx = Some(i);
            }
        }
        let Some(i) = idx else {
            bail!("no identity key with key id {kid}");
        };
        if files.len() == 1 {
            bail!(
                "{kid} is the only identity key; add another first (rotate-key without --retire)"
            );
        }
        let file = settings.resolve(&files[i]);
        files.remove(i);
        keys_after.remove(i);
        rewrite_key_list(&config, &files)?;
        let mut retired = file.clone().into_os_string();
        retired.push(".retired");
        std::fs::rename(&file, &retired)?;
        println!(
            "retired key {kid} (file moved to {})",
            PathBuf::from(retired).display()
        );
    } else {
        let mut held: Vec<SigAlg> = Vec::new();
        for k in &keys {
            if !held.contains(&k.alg) {
                held.push(k.alg);
            }
        }
        let alg = match (a.alg, held.as_slice()) {
            (Some(alg), _) => alg,
            (None, [one]) => *one,
            (None, []) => SigAlg::Ed25519,
            (None, _) => bail!(
                "the gateway holds keys of several algorithms ({}): say which with --alg",
                held.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let key = IdentityKeyFile::generate(&p, alg)?;
        let name = (1..)
            .map(|n| PathBuf::from(format!("identity-{n}.key")))
            .find(|n| {
                !files.contains(n)
                    && !settings.resolve(n).exists()
                    && !settings.resolve(&n.with_extension("key.retired")).exists()
            })
            .expect("a free name");
        write_private(&settings.resolve(&name), key.to_toml().as_bytes())?;
        files.push(name.clone());
        rewrite_key_list(&config, &files)?;
        println!(
            "added {alg} identity key {} ({}); both keys are valid",
            key.key_id_hex(&p)?,
            name.display()
        );
        keys_after.push(key);
    }
    // Keep the URL and certificate devices already pin.
    let pub_path = a.dir.join("gateway.pub.toml");
    let (url, cert_pem) = match GatewayPublic::load(&pub_path) {
        Ok(old) => (old.url, old.tls_cert_pem),
        Err(_) => (
            settings.url_for(settings.listen),
            std::fs::read_to_string(settings.resolve(&settings.tls.cert))?,
        ),
    };
    write_public(&a.dir, url, &keys_after, &cert_pem)?;
    println!("updated gateway.pub.toml; restart the gateway to use the new key set");
    Ok(())
}

fn run_gateway(a: RunArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut settings = match &a.config {
        Some(p) => Settings::load(p)?,
        None => Settings::default(),
    };
    for (key, value) in a.overrides.pairs() {
        if let Some(v) = value {
            settings.set(key, v)?;
        }
    }
    settings.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let gw = Gateway::start(settings).await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {}", gw.url())?;
            out.flush()?;
        }
        shutdown_signal().await?;
        tracing::info!("signal received; shutting down");
        gw.stop().await?;
        Ok(())
    })
}

async fn shutdown_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_flag() {
        let flags: Vec<&str> = Overrides::default()
            .pairs()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for k in Settings::keys() {
            assert!(flags.contains(&k.as_str()), "no flag for {k}");
        }
        let mut s = Settings::default();
        for k in flags {
            assert!(
                Settings::keys().contains(&k.to_string()),
                "flag for unknown key {k}"
            );
            // Each key is settable by name.
            let v = match k {
                "listen" => "127.0.0.1:0",
                "storage" => "memory:",
                "storage_sync" => "normal",
                "identity_keys" | "policy.allowed_suites" => "[]",
                "plain_http"
                | "proxy_protocol"
                | "policy.require_pq_kem"
                | "policy.require_pq_sig"
                | "mqtt.tcp_nodelay" => "true",
                "handshake_rate_per_ip" | "limits.handshake_rate_per_ip" => "3.5",
                "data_dir" | "admin_token_file" | "tls.cert" | "tls.key" | "tls.client_ca" => "x",
                _ => "7",
            };
            s.set(k, v).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
    }
}
