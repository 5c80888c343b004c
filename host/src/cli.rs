//! The `neo-ops` command line. Errors print their whole chain and exit non-zero.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::manifest::{self, Manifest, Role};
use crate::runtime::{InvokeError, Runtime};
use crate::services::Services;
use crate::settings::Settings;
use crate::{audit_log, auth, demo, server, triggers};

#[derive(Parser, Debug)]
#[command(
    name = "neo-ops",
    version,
    about = "Runs neo's operations tooling as sandboxed WebAssembly plugins"
)]
pub struct Cli {
    /// Plugin manifest.
    #[arg(
        long,
        env = "NEO_OPS_MANIFEST",
        default_value = "plugins.toml",
        global = true
    )]
    pub manifest: PathBuf,
    /// Where embedded databases, the kv snapshot, the mail outbox and the component cache live.
    #[arg(long, env = "NEO_OPS_DATA_DIR", default_value = "data", global = true)]
    pub data_dir: PathBuf,
    /// Log format.
    #[arg(long, env = "NEO_OPS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the manifest's routes and run its schedules and queue consumers.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "NEO_OPS_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Run a plugin's command: neo-ops run <plugin> [args…]; `neo-ops run
    /// preflight [--json]` runs the preflight checklist (exit 1 when a check fails).
    Run {
        plugin: String,
        /// Passed to the plugin as they are (e.g. --tenant acme --dry-run).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Validate the manifest and that every component exports what its triggers need.
    Check,
    /// Apply pending migrations to the master and every tenant database.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Work with queues.
    #[command(subcommand)]
    Queue(QueueCommand),
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant and its migrated database.
    Create {
        name: String,
        /// Human-readable name (defaults to the tenant name).
        #[arg(long)]
        display_name: Option<String>,
        /// Fill the new tenant with realistic demo data.
        #[arg(long)]
        demo: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it once (only its hash is stored).
    Create {
        /// admin or super_admin.
        #[arg(long)]
        role: String,
        /// Who or what the token is for.
        #[arg(long)]
        name: String,
    },
    /// Revoke a token by its id (the 8 hex digits after "neo_").
    Revoke { token_id: String },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain and report the first broken record.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Enqueue a job with a JSON payload.
    Push {
        queue: String,
        payload: String,
        /// The tenant the job is for (the consumer runs for it).
        #[arg(long)]
        tenant: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(cli: &Cli) {
    let default = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NEO_OPS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn load_manifest(path: &std::path::Path) -> anyhow::Result<Manifest> {
    Ok(manifest::load(path)?)
}

async fn connect(cli: &Cli) -> anyhow::Result<Arc<Services>> {
    Services::connect(Settings::from_env(cli.data_dir.clone())?).await
}

async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve { listen } => {
            let manifest = load_manifest(&cli.manifest)?;
            let services = connect(&cli).await?;
            let runtime = Arc::new(Runtime::load(&manifest, services)?);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| anyhow::anyhow!("listening on \"{listen}\": {e}"))?;
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                server::shutdown_signal().await;
                trigger.cancel();
            });
            server::run(listener, runtime, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { plugin, args }
            if plugin == "preflight" && !has_plugin(&cli.manifest, plugin)? =>
        {
            run_preflight(&cli, args).await
        }
        Command::Run { plugin, args } => {
            let mut manifest = load_manifest(&cli.manifest)?;
            if !manifest.plugins.iter().any(|p| &p.name == plugin) {
                anyhow::bail!("no plugin named \"{plugin}\" in {}", cli.manifest.display());
            }
            // Only the plugin being run is compiled and linked.
            manifest.plugins.retain(|p| &p.name == plugin);
            let services = connect(&cli).await?;
            let runtime = Runtime::load(&manifest, services.clone())?;
            let result = triggers::command::run(&runtime, plugin, args.clone()).await;
            services.db.close().await;
            match result {
                Ok(out) => {
                    use std::io::Write;
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&out.body)?;
                    if !out.body.ends_with(b"\n") && !out.body.is_empty() {
                        stdout.write_all(b"\n")?;
                    }
                    Ok(if out.status >= 400 {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    })
                }
                Err(InvokeError::Failed { message, .. }) => {
                    eprintln!("error: {message}");
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Check => {
            let manifest = load_manifest(&cli.manifest)?;
            // What `serve` builds, short of connecting: the route table and
            // every plugin compiled (warming the cache) and linked.
            let _routes =
                std::panic::catch_unwind(|| triggers::http::routes(manifest.plugins.iter()))
                    .map_err(|_| {
                        anyhow::anyhow!("the manifest's routes cannot be served (see above)")
                    })?;
            let engine = crate::runtime::engine::build_engine(1)?;
            crate::runtime::link_plugins(&engine, &manifest, &cli.data_dir.join("cache"))?;
            println!(
                "{}: {} plugin(s) ok",
                cli.manifest.display(),
                manifest.plugins.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let services = connect(&cli).await?;
            let n = services.db.migrate_tenants().await?;
            println!("master and {n} tenant database(s) migrated");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant(TenantCommand::Create {
            name,
            display_name,
            demo: with_demo,
        }) => {
            let services = connect(&cli).await?;
            services
                .db
                .create_tenant(name, display_name.as_deref().unwrap_or(name))
                .await?;
            println!("created tenant \"{name}\"");
            if *with_demo {
                let pool = services.db.tenant(name).await?;
                let counts = demo::seed(&pool, demo::DemoSize::default()).await?;
                println!("seeded demo data: {counts}");
            }
            services.db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant(TenantCommand::List { json }) => {
            let services = connect(&cli).await?;
            let rows = services
                .db
                .master()
                .query(
                    "SELECT name, display_name, plan FROM tenants WHERE deleted_at IS NULL ORDER BY name",
                    &[],
                )
                .await?;
            let list: Vec<serde_json::Value> = rows
                .rows
                .iter()
                .map(|r| {
                    let t = |i: usize| match &r[i] {
                        crate::backends::db::Value::Text(s) => s.clone(),
                        _ => String::new(),
                    };
                    serde_json::json!({"name": t(0), "display_name": t(1), "plan": t(2)})
                })
                .collect();
            if *json {
                println!("{}", serde_json::Value::Array(list));
            } else {
                for t in list {
                    println!(
                        "{}\t{}\t{}",
                        t["name"].as_str().unwrap_or(""),
                        t["plan"].as_str().unwrap_or(""),
                        t["display_name"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Create { role, name }) => {
            let role = Role::parse(role).ok_or_else(|| {
                anyhow::anyhow!("unknown role \"{role}\" (expected admin or super_admin)")
            })?;
            if name.trim().is_empty() {
                anyhow::bail!("token name must not be empty");
            }
            let services = connect(&cli).await?;
            let token = auth::create_token(services.db.master(), role, name).await?;
            println!("{token}");
            eprintln!("store this token now: it is not shown again");
            Ok(ExitCode::SUCCESS)
        }
        Command::Token(TokenCommand::Revoke { token_id }) => {
            let services = connect(&cli).await?;
            if auth::revoke_token(services.db.master(), token_id).await? {
                println!("revoked token {token_id}");
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!("no live token with id \"{token_id}\"")
            }
        }
        Command::Audit(AuditCommand::Verify { json }) => {
            let services = connect(&cli).await?;
            let v = audit_log::verify(services.db.master()).await?;
            if *json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                match &v.broken_at {
                    None => println!("audit chain intact: {} record(s)", v.records),
                    Some((id, why)) => println!(
                        "audit chain broken at record {id}: {why} ({} intact before it)",
                        v.records
                    ),
                }
            }
            Ok(if v.broken_at.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Queue(QueueCommand::Push {
            queue,
            payload,
            tenant,
        }) => {
            let services = connect(&cli).await?;
            let id =
                triggers::queue::enqueue(&services.kv, queue, tenant.as_deref(), payload).await?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn has_plugin(manifest: &std::path::Path, name: &str) -> anyhow::Result<bool> {
    Ok(load_manifest(manifest)?
        .plugins
        .iter()
        .any(|p| p.name == name))
}

/// `neo-ops run preflight [--json]`: the checklist `GET /api/admin/preflight`
/// serves, printed; exits non-zero when a check fails.
async fn run_preflight(cli: &Cli, args: &[String]) -> anyhow::Result<ExitCode> {
    let json = match args {
        [] => false,
        [flag] if flag == "--json" => true,
        [flag] if flag == "--help" || flag == "-h" => {
            println!(
                "usage: neo-ops run preflight [--json]\nRuns every check plugin (check = true in the manifest); exits 1 when one fails."
            );
            return Ok(ExitCode::SUCCESS);
        }
        other => anyhow::bail!(
            "unexpected argument \"{}\" (usage: neo-ops run preflight [--json])",
            other.join(" ")
        ),
    };
    let mut manifest = load_manifest(&cli.manifest)?;
    // Only the checks are compiled and linked.
    manifest.plugins.retain(|p| p.check);
    let services = connect(cli).await?;
    let runtime = Runtime::load(&manifest, services.clone())?;
    let report = crate::preflight::run(&runtime, &triggers::new_request_id()).await;
    services.db.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report.envelope())?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
