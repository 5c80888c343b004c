//! The `neo-ops` command line: the arguments here, one function per
//! subcommand in the modules below. Errors print their whole chain and exit
//! non-zero.

mod admin;
mod log_writer;
mod plugin;
mod preflight;
mod run;
mod serve;
mod tenant;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::backends::db::Databases;
use crate::manifest::{self, Manifest};
use crate::services::Services;
use crate::settings::Settings;

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
    /// Where embedded databases, the mail outbox and the component cache live.
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
    /// Run a plugin's command (neo-ops run <plugin> [args…]), or one check
    /// plugin; `neo-ops run preflight …` is `neo-ops preflight …`.
    /// `neo-ops run <plugin> --help` prints that plugin's usage.
    // clap's own --help would take `run <plugin> --help` too: the help flag
    // is ours, so it reaches the plugin.
    #[command(disable_help_flag = true)]
    Run {
        /// The plugin (`--help` here: this help).
        #[arg(allow_hyphen_values = true)]
        plugin: String,
        /// Passed to the plugin as they are (e.g. --tenant acme --dry-run).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the preflight checklist (every check = true plugin); exit 1 when one fails.
    Preflight(PreflightArgs),
    /// Validate the manifest and that every component exports what its triggers need.
    Check,
    /// Apply pending migrations to the master and every tenant database.
    Migrate {
        /// List each database's pending migrations (and what would make
        /// migrate refuse one); change nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the list as JSON.
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
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
    /// Build and scaffold plugins (in the source tree this binary came from).
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Build plugins into components (seconds; no host rebuild) and print
    /// where each went. NAMEs are manifest names; none builds all.
    Build { names: Vec<String> },
    /// Scaffold a plugin: `new check <name>` for a preflight check, `new
    /// <name>` for a handler plugin; adds its block to the manifest.
    New {
        #[arg(num_args = 1..=2, required = true)]
        words: Vec<String>,
        /// Language of the scaffold.
        #[arg(long, default_value = "rust")]
        lang: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant and its migrated database.
    Create {
        /// 1 to 48 characters: a lowercase letter, then lowercase letters, digits, `_` or `-`.
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
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's settings in the master database.
    Set(TenantSetArgs),
}

#[derive(clap::Args, Debug, Default)]
pub struct TenantSetArgs {
    /// The tenant to change.
    pub name: String,
    /// Where the owner digest goes.
    #[arg(long)]
    pub owner_email: Option<String>,
    /// Human-readable name (mail sender name, console).
    #[arg(long)]
    pub display_name: Option<String>,
    /// IANA time zone of the tenant's business day (e.g. Asia/Kolkata).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Days customer PII is kept after the last order (purge).
    #[arg(long)]
    pub retention_days: Option<i64>,
    /// The tenant's plan name.
    #[arg(long)]
    pub plan: Option<String>,
    /// Show what would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(clap::Args, Debug, Default)]
pub struct PreflightArgs {
    /// Print the checklist as JSON (the HTTP route's envelope).
    #[arg(long)]
    pub json: bool,
    /// Run only these checks (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
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
        /// Refuse the token once this long has passed ("90d", "12h"; at most
        /// 3650d); by default it lasts until revoked.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List live tokens: id, role, name, when created and when they expire
    /// (never the secret).
    List {
        /// Include revoked and expired tokens.
        #[arg(long)]
        all: bool,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (the 8 hex digits after "neo_"; the whole
    /// token is accepted too), e.g. `neo-ops token revoke 1a2b3c4d --dry-run`.
    Revoke {
        /// The token's id (see `neo-ops token list`), or the whole token.
        token_id: String,
        /// Name the token that would be revoked; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain and report the first broken record.
    Verify {
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Enqueue a job with a JSON payload, for a tenant (or, said so, for none).
    // Every queue the project's plugins consume is per tenant: a job left
    // without one by a forgotten flag would only be dead-lettered.
    #[command(group(clap::ArgGroup::new("for").required(true).args(["tenant", "no_tenant"])))]
    Push {
        /// The queue, as a plugin's manifest names it (`queue = { name = … }`)
        queue: String,
        /// The job's payload: a JSON document
        payload: String,
        /// The tenant the job is for (the consumer runs for it).
        #[arg(long)]
        tenant: Option<String>,
        /// The job is for no tenant (a consumer of your own that needs none).
        #[arg(long)]
        no_tenant: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Lossy: an argument that is not UTF-8 is what clap refused.
            let args: Vec<String> = std::env::args_os()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            return usage_error(&e, json_in(&args));
        }
    };
    if !matches!(cli.command, Command::Serve { .. }) {
        end_quietly_on_a_closed_pipe();
    }
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
    let json = wants_json(&cli);
    let code = match rt.block_on(execute(cli)) {
        Ok(code) => code,
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("error: {message}");
            let bad_argument = e.downcast_ref::<BadArgument>().is_some();
            if json {
                // Before any output of its own (a bad manifest, no database).
                print_error_envelope(if bad_argument { 400 } else { 500 }, &message);
            }
            match bad_argument {
                true => ExitCode::from(2),
                false => ExitCode::FAILURE,
            }
        }
    };
    // A compile still running on a blocking thread (Ctrl-C during start-up
    // or a reload) is not waited for: the process leaves now.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// A command whose output goes into a reader that stops early (`neo-ops
/// tenant list | head -1`) ends there, quietly, as Unix tools do, instead of
/// `println!` panicking on the broken pipe. Not for `serve`, whose log may
/// go to a pipe that must not stop it; sockets never raise SIGPIPE (Rust
/// sends with `MSG_NOSIGNAL`).
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets a signal's disposition back to the default, before any
    // other thread exists; no handler runs our code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether the command was asked for JSON: its failure is then JSON on
/// stdout too, so a script reading the output sees it.
fn wants_json(cli: &Cli) -> bool {
    match &cli.command {
        Command::Run { args, .. } => json_in(args),
        Command::Preflight(args) => args.json,
        Command::Tenant(TenantCommand::List { json })
        | Command::Token(TokenCommand::List { json, .. })
        | Command::Audit(AuditCommand::Verify { json })
        | Command::Migrate { json, .. } => *json,
        _ => false,
    }
}

/// Whether a plugin's arguments ask for JSON (before any `--`).
fn json_in(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// A command line clap refused: `--help` and `--version` print and succeed;
/// a bad flag or value says why on stderr and exits 2, with the envelope on
/// stdout when `--json` was among the arguments (a script reading the
/// output sees the failure as it sees any other).
fn usage_error(e: &clap::Error, json: bool) -> ExitCode {
    let _ = e.print();
    let code = e.exit_code();
    if code != 0 && json {
        // Its first paragraph: "the following required arguments were not
        // provided: --dry-run", not the usage lines after it.
        let rendered = e.render().to_string();
        let said: Vec<&str> = rendered
            .lines()
            .map(str::trim)
            .skip_while(|l| l.is_empty())
            .take_while(|l| !l.is_empty())
            .collect();
        let said = said.join(" ");
        print_error_envelope(400, said.strip_prefix("error: ").unwrap_or(&said));
    }
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

/// A value on the command line that is wrong (`--retention-days 0`, an
/// unknown role): the command line is, as when clap refuses it, so it
/// exits 2 (and, with `--json`, says 400), not 1 as a command that failed.
#[derive(Debug)]
pub struct BadArgument(pub String);

impl std::fmt::Display for BadArgument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadArgument {}

/// Refuses a command line's value, saying why: [`BadArgument`].
fn bad_argument(message: impl Into<String>) -> anyhow::Error {
    BadArgument(message.into()).into()
}

/// The envelope HTTP callers get for a failure, on stdout (`error: …` goes
/// to stderr beside it).
fn print_error_envelope(code: u16, message: &str) {
    use std::io::Write;
    let envelope = serde_json::json!({"ok": false, "error": {"code": code, "message": message}});
    // Not `println!`: a reader that has gone away is no reason to panic.
    let _ = writeln!(std::io::stdout(), "{envelope}");
}

fn init_tracing(cli: &Cli) {
    let default = match &cli.command {
        Command::Serve { .. } => "info",
        // `--verbose` asks for the plugin's debug lines, as the spec's
        // scripts took it.
        Command::Run { args, .. } if args.iter().any(|a| a == "--verbose") => {
            "warn,neo_ops::progress=info,neo_ops::caps::log=debug"
        }
        // A command is quiet but for warnings and a long job's progress.
        _ => "warn,neo_ops::progress=info",
    };
    let filter = match std::env::var("NEO_OPS_LOG") {
        Ok(set) => tracing_subscriber::EnvFilter::try_new(&set).unwrap_or_else(|e| {
            // Said once, before anything logs: otherwise the lines asked
            // for are silently missing.
            eprintln!(
                "warning: NEO_OPS_LOG \"{set}\" is not a log filter ({e}); using \"{default}\""
            );
            tracing_subscriber::EnvFilter::new(default)
        }),
        Err(_) => tracing_subscriber::EnvFilter::new(default),
    };
    // Colour only for a person at a terminal: a pipe or a journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(log_writer::RedactedStderr);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve { listen } => serve::serve(&cli, listen).await,
        Command::Run { plugin, .. } if plugin == "--help" || plugin == "-h" => {
            use clap::CommandFactory;
            let mut cli = Cli::command();
            cli.build(); // so the usage line names `neo-ops run`
            if let Some(run) = cli.find_subcommand_mut("run") {
                run.print_long_help()?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { plugin, args } if plugin == "preflight" && !has_plugin(&cli, plugin)? => {
            preflight::from_run_args(&cli, args).await
        }
        Command::Run { plugin, args } => run::run(&cli, plugin, args).await,
        Command::Preflight(args) => preflight::preflight(&cli, args).await,
        Command::Check => run::check(&cli),
        Command::Migrate { dry_run: false, .. } => admin::migrate(&cli).await,
        Command::Migrate {
            dry_run: true,
            json,
        } => admin::migrate_dry_run(&cli, *json).await,
        Command::Tenant(TenantCommand::Create {
            name,
            display_name,
            demo,
        }) => tenant::create(&cli, name, display_name.as_deref(), *demo).await,
        Command::Tenant(TenantCommand::List { json }) => tenant::list(&cli, *json).await,
        Command::Tenant(TenantCommand::Set(args)) => tenant::set(&cli, args).await,
        Command::Token(TokenCommand::Create {
            role,
            name,
            expires_in,
        }) => admin::create_token(&cli, role, name, expires_in.as_deref()).await,
        Command::Token(TokenCommand::List { all, json }) => {
            admin::list_tokens(&cli, *all, *json).await
        }
        Command::Token(TokenCommand::Revoke { token_id, dry_run }) => {
            admin::revoke_token(&cli, token_id, *dry_run).await
        }
        Command::Audit(AuditCommand::Verify { json }) => admin::verify_audit(&cli, *json).await,
        Command::Queue(QueueCommand::Push {
            queue,
            payload,
            tenant,
            ..
        }) => admin::push_job(&cli, queue, payload, tenant.as_deref()).await,
        Command::Plugin(PluginCommand::Build { names }) => plugin::build(&cli, names),
        Command::Plugin(PluginCommand::New { words, lang }) => plugin::new(&cli, words, lang),
    }
}

fn load_manifest(path: &std::path::Path) -> anyhow::Result<Manifest> {
    Ok(manifest::load(path)?)
}

fn has_plugin(cli: &Cli, name: &str) -> anyhow::Result<bool> {
    Ok(load_manifest(&cli.manifest)?
        .plugins
        .iter()
        .any(|p| p.name == name))
}

/// Every service, for a command an operator runs by hand: it says so when
/// it made a new embedded database ([`admin_settings`]).
async fn connect_by_hand(cli: &Cli) -> anyhow::Result<Arc<Services>> {
    let (settings, fresh) = admin_settings(cli)?;
    let services = Services::connect(settings).await?;
    said_if_fresh(cli, fresh);
    Ok(services)
}

/// Every service for a dry run: the databases as they stand
/// ([`databases_to_read`]), never migrated or made.
async fn connect_to_read(cli: &Cli) -> anyhow::Result<Arc<Services>> {
    let db = databases_to_read(cli).await?;
    let settings = Settings::from_env(cli.data_dir.clone())?;
    Services::connect_over(settings, db).await
}

/// Text for one tab-separated column: control characters (a tab or a line
/// break in a display name) become spaces, so the columns stay columns.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The settings of an admin command, and whether it finds no master
/// database yet (no `POSTGRES_MASTER_URL`, no embedded one in the data
/// dir): run without the environment (under `sudo`, from another
/// directory) it would otherwise report success on a database `serve`
/// never reads, so it says it made a new one.
fn admin_settings(cli: &Cli) -> anyhow::Result<(Settings, bool)> {
    let settings = Settings::from_env(cli.data_dir.clone())?;
    let fresh = crate::backends::db::no_master_yet(&settings)?;
    Ok((settings, fresh))
}

fn said_if_fresh(cli: &Cli, fresh: bool) {
    if fresh {
        tracing::warn!(
            "no POSTGRES_MASTER_URL: this command made a new embedded database in \"{}\" (set POSTGRES_MASTER_URL and POSTGRES_TENANT_DSN_TEMPLATE to reach Postgres)",
            cli.data_dir.display()
        );
    }
}

/// What a command does to the databases.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Changes them: the master is migrated first (an embedded one made).
    Write,
    /// Reads only (a listing, the audit check, a dry run): the master as
    /// it stands, never migrated nor made.
    Read,
}

impl Access {
    fn unless(dry_run: bool) -> Self {
        if dry_run { Self::Read } else { Self::Write }
    }
}

/// Opens the databases alone (no Redis: a leaked token can be revoked, a
/// tenant listed, during a Redis outage), runs `work`, and closes the
/// pools whatever `work` returned.
async fn with_databases<T>(
    cli: &Cli,
    access: Access,
    work: impl AsyncFnOnce(&Databases) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let db = match access {
        Access::Write => {
            let (settings, fresh) = admin_settings(cli)?;
            settings.make_data_dir()?;
            let db = Databases::connect(&settings).await?;
            said_if_fresh(cli, fresh);
            db
        }
        Access::Read => databases_to_read(cli).await?,
    };
    let result = work(&db).await;
    db.close().await;
    result
}

/// The master as it stands, for a command that only reads. Migrating it
/// there would be a change nobody asked for: a newer neo-ops's `token
/// list` would leave the older `serve` refusing to start at its next
/// restart. A master behind this build is refused, naming what `migrate`
/// would apply; no master at all reads as an empty one, and none is made.
async fn databases_to_read(cli: &Cli) -> anyhow::Result<Arc<Databases>> {
    let (settings, fresh) = admin_settings(cli)?;
    if fresh {
        tracing::warn!(
            "no POSTGRES_MASTER_URL and no embedded database in \"{}\": nothing to read (set POSTGRES_MASTER_URL and POSTGRES_TENANT_DSN_TEMPLATE to reach Postgres)",
            cli.data_dir.display()
        );
        return Databases::empty(&settings, true).await;
    }
    let db = Databases::open_to_read(&settings).await?;
    let master = db.master_pending().await;
    let refused = match master.pending.as_deref() {
        Some([]) => return Ok(db),
        Some(behind) => anyhow::anyhow!(
            "the master database is behind this neo-ops: {} migration(s) to apply ({}); run `neo-ops migrate` first (`migrate --dry-run` lists every database), or use the neo-ops that serves it",
            behind.len(),
            admin::migration_list(behind)
        ),
        None => anyhow::anyhow!(
            "master database: {}",
            master
                .problem
                .as_deref()
                .unwrap_or("its migrations could not be read")
        ),
    };
    db.close().await;
    Err(refused)
}

/// As [`with_databases`], with every service (Redis too).
async fn with_services<T>(
    cli: &Cli,
    work: impl AsyncFnOnce(&Services) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let services = connect_by_hand(cli).await?;
    let result = work(&services).await;
    services.db.close().await;
    result
}
