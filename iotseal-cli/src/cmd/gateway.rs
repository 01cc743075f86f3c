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

/// One flag per setting, made from the settings' declaration ([`Settings::fields`]): the
/// flag's id is the setting's dotted name, its value the text [`Settings::apply_flag`] reads.
/// The settings' `IOTSEAL_*` variables are applied by [`Settings::apply_env`], below the flags.
#[derive(Debug, Default)]
struct Overrides {
    /// `(dotted name, value)` of each flag given, in declaration order.
    given: Vec<(String, String)>,
}

impl clap::FromArgMatches for Overrides {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let given = Settings::fields()
            .iter()
            .filter_map(|f| {
                let key = f.key();
                let v = m.get_one::<String>(&key)?.clone();
                Some((key, v))
            })
            .collect();
        Ok(Self { given })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for Overrides {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        Settings::fields().iter().fold(cmd, |cmd, f| {
            let doc = f.doc_lines().collect::<Vec<_>>().join(" ");
            cmd.arg(
                clap::Arg::new(f.key())
                    .long(f.flag())
                    .value_name("VALUE")
                    .help(format!("Setting `{}` [env: {}]", f.key(), f.env()))
                    .long_help(format!(
                        "Setting `{}` (docs/settings.md) [env: {}]. {doc}",
                        f.key(),
                        f.env()
                    ))
                    .help_heading("Settings"),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// `IOTSEAL_*` variables that are not gateway settings: every environment variable of the
/// command line's own options (found in its definition), and those of the workspace's tests,
/// benchmarks and scripts (by prefix). Any other `IOTSEAL_*` variable stops `gateway run`.
fn other_variable(var: &str) -> bool {
    const DEVELOPMENT: &[&str] = &[
        "IOTSEAL_TEST_",
        "IOTSEAL_REGEN_",
        "IOTSEAL_BLESS",
        "IOTSEAL_BIN",
        "IOTSEAL_BENCH",
        "IOTSEAL_LIB_DIR",
        "IOTSEAL_FIRMWARE_LIB_DIR",
        "IOTSEAL_VECTORS",
        "IOTSEAL_LAB_DEBUG",
        "IOTSEAL_GATEWAY_ARGS",
        "IOTSEAL_KILL9_SEED",
        "IOTSEAL_SQLITE_CRASH_",
        "IOTSEAL_PG_CRASH_",
        "IOTSEAL_QUEUE_CRASH_",
    ];
    fn walk(cmd: &clap::Command, var: &str) -> bool {
        cmd.get_arguments()
            .any(|a| a.get_env().is_some_and(|e| e == var))
            || cmd.get_subcommands().any(|c| walk(c, var))
    }
    DEVELOPMENT.iter().any(|p| var.starts_with(p))
        || walk(&<crate::Cli as clap::CommandFactory>::command(), var)
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The configuration file (gateway.toml); without it, every setting has its default and
    /// relative paths are relative to the current directory.
    #[arg(long, env = "IOTSEAL_CONFIG")]
    config: Option<PathBuf>,
    /// Worker threads of the gateway's runtime (default: one per CPU; `bench handshakes` reports
    /// at 1 and 2). Not a setting: how this process runs, not what the gateway does.
    #[arg(long, env = "IOTSEAL_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: Option<u16>,
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
    // Defaults, then the file, then the environment, then the flags; checked once at the end.
    let settings = Settings::layered(
        a.config.as_deref(),
        std::env::vars_os(),
        other_variable,
        &a.overrides.given,
    )?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = a.worker_threads {
        rt.worker_threads(usize::from(n));
    }
    let rt = rt.enable_all().build()?;
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
        use clap::{CommandFactory, FromArgMatches};
        let cmd = crate::Cli::command();
        let run = cmd
            .find_subcommand("gateway")
            .and_then(|g| g.find_subcommand("run"))
            .expect("gateway run");
        let mut args = vec!["run".to_string()];
        for k in Settings::keys() {
            let f = Settings::field(&k).unwrap();
            let arg = run
                .get_arguments()
                .find(|a| a.get_long() == Some(f.flag().as_str()))
                .unwrap_or_else(|| panic!("no flag for {k}"));
            assert_eq!(arg.get_id().as_str(), k);
            // Each key is settable from its flag's text.
            let v = match k.as_str() {
                "listen" => "127.0.0.1:0",
                "storage" => "memory:",
                "storage_sync" => "normal",
                "identity_keys" | "policy.allowed_suites" => "[]",
                "plain_http"
                | "proxy_protocol"
                | "policy.require_pq_kem"
                | "policy.require_pq_sig"
                | "mqtt.tcp_nodelay" => "true",
                "limits.handshake_rate_per_ip" => "3.5",
                "data_dir" | "admin_token_file" | "tls.cert" | "tls.key" | "tls.client_ca" => "x",
                _ => "7",
            };
            args.push(format!("--{}={v}", f.flag()));
        }
        let m = run.clone().try_get_matches_from(&args).unwrap();
        let o = Overrides::from_arg_matches(&m).unwrap();
        assert_eq!(o.given.len(), Settings::keys().len());
        let mut s = Settings::default();
        for (k, v) in &o.given {
            s.apply_flag(k, v).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        assert_eq!(s.limits.max_body, 7);
        assert_eq!(s.cluster.url, "7");
    }

    #[test]
    fn other_variables_are_not_settings() {
        for v in [
            "IOTSEAL_CONFIG",
            "IOTSEAL_GATEWAY",
            "IOTSEAL_PINS",
            "IOTSEAL_TEST_PG",
        ] {
            assert!(other_variable(v), "{v}");
            assert!(Settings::fields().iter().all(|f| f.env() != v), "{v}");
        }
        assert!(!other_variable("IOTSEAL_MAX_BODDY"));
    }
}
