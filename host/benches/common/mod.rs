//! Set-up shared by the Postgres benchmarks: a throwaway master database (and
//! tenant databases under its name), a manifest in a temp dir, settings.

use neo_ops::settings::Settings;
use sqlx::PgPool;
use std::path::PathBuf;

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct PgBench {
    pub admin: PgPool,
    pub prefix: String,
    /// Holds the manifest and the data dir until the bench ends.
    _dir: tempfile::TempDir,
    pub manifest: PathBuf,
    pub settings: Settings,
}

impl PgBench {
    pub async fn new(manifest_text: &str) -> Self {
        // A smaller pool for profilers that cannot reserve 128 slots'
        // address space (valgrind), as `neo-ops` itself allows; read before
        // anything is created, so a bad value leaves nothing behind.
        let max_instances = neo_ops::settings::max_instances(
            std::env::var("NEO_OPS_MAX_INSTANCES").ok().as_deref(),
        )
        .unwrap();
        let perf_map =
            neo_ops::settings::perf_map(std::env::var("NEO_OPS_PERF_MAP").ok().as_deref()).unwrap();
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let prefix = format!("neo_bench_{id}");
        let admin = PgPool::connect(PG_ADMIN)
            .await
            .expect("Postgres on 127.0.0.1:5432");
        sqlx::query(&format!("CREATE DATABASE {prefix}"))
            .execute(&admin)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("plugins.toml");
        std::fs::write(&manifest, manifest_text).unwrap();
        let mut settings = Settings::embedded(dir.path().join("data"));
        settings.postgres_master_url = Some(Self::url(&prefix));
        settings.postgres_tenant_dsn_template = Some(Self::url(&format!("{prefix}_{{tenant}}")));
        settings.max_instances = max_instances;
        settings.perf_map = perf_map;
        Self {
            admin,
            prefix,
            _dir: dir,
            manifest,
            settings,
        }
    }

    pub fn url(database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{database}")
    }

    /// Drops the master database and every tenant database made under it.
    pub async fn drop_databases(&self) {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
                .bind(format!("{}%", self.prefix))
                .fetch_all(&self.admin)
                .await
                .unwrap();
        for db in names {
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                .execute(&self.admin)
                .await
                .unwrap();
        }
    }
}
