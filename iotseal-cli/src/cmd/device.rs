//! `iotseal device`: register, list, show and revoke devices through a running gateway's
//! admin API.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use iotseal_gateway::client::{Client, Method};
use iotseal_gateway::keys::GatewayPublic;
use iotseal_proto::SigAlg;
use serde_json::{Value, json};

/// Arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Args)]
struct ConnArgs {
    /// Gateway URL (default: the url of --pins, else https://127.0.0.1:8443).
    #[arg(long, global = true, env = "IOTSEAL_GATEWAY")]
    gateway: Option<String>,
    /// The gateway's gateway.pub.toml: trust exactly its TLS certificate.
    #[arg(long, global = true, env = "IOTSEAL_PINS")]
    pins: Option<PathBuf>,
    /// File holding the admin token.
    #[arg(long, global = true, env = "IOTSEAL_ADMIN_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The admin token (prefer --token-file or IOTSEAL_ADMIN_TOKEN).
    #[arg(
        long,
        global = true,
        env = "IOTSEAL_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Create a device identity (id, algorithm, key pair) in a file with mode 0600.
    Keygen(KeygenArgs),
    /// Register a device's public key.
    Add(AddArgs),
    /// List devices.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one device.
    Show {
        /// Device id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device: its sessions end at once and it cannot handshake again.
    Revoke {
        /// Device id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct AddArgs {
    /// Device id (1 to 32 bytes); default: the `id` of --key-file.
    #[arg(long)]
    id: Option<String>,
    /// Key algorithm; default: the `alg` of --key-file, else ed25519.
    #[arg(long)]
    alg: Option<SigAlg>,
    /// Public key, hex.
    #[arg(
        long,
        conflicts_with = "key_file",
        required_unless_present = "key_file"
    )]
    public_key: Option<String>,
    /// A key file (from `iotseal keygen` or a device identity file); only its public part
    /// is sent.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct KeygenArgs {
    /// Device id (1 to 32 bytes).
    #[arg(long)]
    id: String,
    /// Output file (private; mode 0600).
    #[arg(long)]
    out: PathBuf,
    /// Signature algorithm: ed25519, ecdsa-p256, mldsa65, ed25519+mldsa65.
    #[arg(long, default_value = "ed25519")]
    alg: SigAlg,
}

fn keygen(k: &KeygenArgs) -> Result<()> {
    if k.id.is_empty() || k.id.len() > iotseal_proto::handshake::MAX_DEVICE_ID {
        bail!(
            "--id must be 1 to {} bytes",
            iotseal_proto::handshake::MAX_DEVICE_ID
        );
    }
    if k.out.exists() {
        bail!("{} exists; not overwriting an identity", k.out.display());
    }
    let p = iotseal_crypto_awslc::default_provider();
    let ident = iotseal_device::IdentityFile::generate(&p, &k.id, k.alg)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ident.save(&k.out).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "device {} ({}) public key: {}",
        ident.id, ident.alg, ident.public_key
    );
    println!(
        "register it: iotseal device add --key-file {} --pins gateway.pub.toml --token-file admin.token",
        k.out.display()
    );
    Ok(())
}

pub(crate) fn run(a: Args) -> Result<()> {
    if let Cmd::Keygen(k) = &a.cmd {
        return keygen(k);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(a))
}

struct Admin {
    client: Client,
    auth: String,
}

impl Admin {
    fn new(c: &ConnArgs) -> Result<Self> {
        let pins = c
            .pins
            .as_ref()
            .map(|p| GatewayPublic::load(p))
            .transpose()?;
        let url = c
            .gateway
            .clone()
            .or_else(|| pins.as_ref().map(|p| p.url.clone()))
            .unwrap_or_else(|| "https://127.0.0.1:8443".into());
        let tls = match &pins {
            Some(p) => Some(iotseal_gateway::tls::pinned_client_config(&p.cert_der()?)?),
            None if url.starts_with("https://") => {
                bail!("--pins FILE (the gateway's gateway.pub.toml) is needed for {url}")
            }
            None => None,
        };
        let token = match (&c.token, &c.token_file) {
            (Some(t), _) => t.trim().to_string(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_string(),
            (None, None) => {
                bail!("an admin token is needed: --token-file FILE, IOTSEAL_ADMIN_TOKEN or --token")
            }
        };
        Ok(Self {
            client: Client::new(&url, tls)?,
            auth: format!("Bearer {token}"),
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let r = self
            .client
            .request(
                method,
                path,
                &[
                    ("authorization", self.auth.as_str()),
                    ("content-type", "application/json"),
                ],
                body,
            )
            .await?;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        match r.status {
            200..=299 => Ok(v),
            401 => bail!("unauthorized: check the admin token"),
            s => bail!(
                "gateway answered {s}: {}",
                v.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("(no detail)")
            ),
        }
    }
}

fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn run_async(a: Args) -> Result<()> {
    let admin = Admin::new(&a.conn)?;
    match a.cmd {
        Cmd::Keygen(_) => unreachable!("handled in run"),
        Cmd::Add(add) => {
            let (id, alg, pk) = add_fields(&add)?;
            let v = admin
                .call(
                    Method::POST,
                    "/v1/devices",
                    Some(json!({ "id": id, "alg": alg.to_string(), "public_key": pk })),
                )
                .await?;
            if add.json {
                println!("{v}");
            } else {
                println!(
                    "registered {} ({}, key id {})",
                    str_of(&v, "id"),
                    str_of(&v, "alg"),
                    str_of(&v, "key_id")
                );
            }
        }
        Cmd::List { json } => {
            let v = admin.call(Method::GET, "/v1/devices", None).await?;
            if json {
                println!("{v}");
            } else {
                print_table(v.as_array().map(Vec::as_slice).unwrap_or_default());
            }
        }
        Cmd::Show { id, json } => {
            let v = admin
                .call(
                    Method::GET,
                    &format!("/v1/devices/{}", path_segment(&id)),
                    None,
                )
                .await?;
            if json {
                println!("{v}");
            } else {
                print_device(&v);
            }
        }
        Cmd::Revoke { id, json } => {
            let v = admin
                .call(
                    Method::POST,
                    &format!("/v1/devices/{}/revoke", path_segment(&id)),
                    None,
                )
                .await?;
            if json {
                println!("{v}");
            } else {
                println!(
                    "revoked {id}; {} live session(s) ended",
                    v.get("sessions_ended").and_then(Value::as_u64).unwrap_or(0)
                );
            }
        }
    }
    Ok(())
}

/// (id, alg, public key hex) from the flags and the key file.
fn add_fields(a: &AddArgs) -> Result<(String, SigAlg, String)> {
    let file: Option<toml::Table> = a
        .key_file
        .as_ref()
        .map(|f| -> Result<toml::Table> {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", f.display()))
        })
        .transpose()?;
    let field = |k: &str| {
        file.as_ref()
            .and_then(|t| t.get(k))
            .and_then(toml::Value::as_str)
            .map(str::to_string)
    };
    let id =
        a.id.clone()
            .or_else(|| field("id"))
            .context("--id is needed (the key file has no id)")?;
    let alg = match (a.alg, field("alg")) {
        (Some(x), _) => x,
        (None, Some(s)) => s.parse().context("alg in the key file")?,
        (None, None) => SigAlg::Ed25519,
    };
    let pk = match (&a.public_key, field("public_key")) {
        (Some(pk), _) => pk.trim().to_string(),
        (None, Some(pk)) => pk,
        (None, None) => bail!("no public key: --public-key HEX or --key-file FILE"),
    };
    Ok((id, alg, pk))
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn u64_of(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn ago(v: &Value) -> String {
    let Some(t) = v.get("last_seen_ms").and_then(Value::as_u64) else {
        return "never".into();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let s = now.saturating_sub(t) / 1000;
    match s {
        0..=119 => format!("{s}s ago"),
        120..=7199 => format!("{}m ago", s / 60),
        7200..=172_799 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn print_table(devices: &[Value]) {
    let header = [
        "ID",
        "ALG",
        "KEY ID",
        "STATUS",
        "SESSIONS",
        "RECORDS",
        "READINGS",
        "LAST SEEN",
    ];
    let rows: Vec<[String; 8]> = devices
        .iter()
        .map(|d| {
            [
                str_of(d, "id").to_string(),
                str_of(d, "alg").to_string(),
                str_of(d, "key_id").to_string(),
                if d.get("revoked").and_then(Value::as_bool) == Some(true) {
                    "revoked".into()
                } else {
                    "active".into()
                },
                u64_of(d, "active_sessions").to_string(),
                u64_of(d, "records_accepted").to_string(),
                u64_of(d, "readings").to_string(),
                ago(d),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(&header.map(String::from)));
    for r in &rows {
        println!("{}", line(r));
    }
    if rows.is_empty() {
        println!("(no devices)");
    }
}

fn print_device(d: &Value) {
    let status = if d.get("revoked").and_then(Value::as_bool) == Some(true) {
        "revoked"
    } else {
        "active"
    };
    println!("id               {}", str_of(d, "id"));
    println!("alg              {}", str_of(d, "alg"));
    println!("key id           {}", str_of(d, "key_id"));
    println!("public key       {}", str_of(d, "public_key"));
    println!("status           {status}");
    println!("registered (ms)  {}", u64_of(d, "created_ms"));
    println!("last seen        {}", ago(d));
    println!("active sessions  {}", u64_of(d, "active_sessions"));
    println!("handshakes       {}", u64_of(d, "handshakes"));
    println!("records          {}", u64_of(d, "records_accepted"));
    println!("readings         {}", u64_of(d, "readings"));
}
