//! Quarry's configuration: one TOML file plus `QUARRY__SECTION__KEY`
//! environment overrides (e.g. `QUARRY__DATABASE__URL`,
//! `QUARRY__MODEL__BASE_URL`, `QUARRY__MODELS__ROUTING__MODEL`), merged by
//! figment. Every section rejects unknown keys, so a typo fails start-up
//! instead of being ignored.

use std::{net::SocketAddr, path::Path};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use quarry_auth::{AuthConfig, PolicyConfig};
use quarry_llm::{LlmError, ModelConfig, ModelsConfig, TaskModels, embed::EmbeddingConfig};
use quarry_orchestrator::{BudgetConfig, OrchestratorConfig};
use quarry_search::SearchConfig;
use quarry_search_sync::SyncConfig;
use quarry_sql::service::SqlToolConfig;
use quarry_summary::SummaryConfig;
use serde::{Deserialize, Serialize};

/// Prefix of environment overrides; `__` separates nesting levels.
pub const ENV_PREFIX: &str = "QUARRY__";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening address and shutdown.
    #[serde(default)]
    pub server: ServerConfig,
    /// The source database.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// JWT verification and per-tenant rate limits.
    pub auth: AuthConfig,
    /// Who may do and see what: roles → scopes, tables, columns, masks, row
    /// filters, database role, collections, summary kinds. Absent: no role
    /// is known and every request is refused (default deny). Reloaded from
    /// the configuration file on SIGHUP.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The file this configuration was loaded from (for reloads).
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
    /// The chat model; absent means no model (router mode only) unless a
    /// `[models.<task>]` table gives one.
    #[serde(default)]
    pub model: Option<ModelConfig>,
    /// Per-task changes to `[model]`: `[models.routing]` (router
    /// classification and the SQL judge), `[models.sql]` (SQL generation and
    /// repair), `[models.answer]` (agentic mode). See [`ModelsConfig`];
    /// [`Config::task_models`] resolves them.
    #[serde(default)]
    pub models: ModelsConfig,
    /// The embedding model for schema linking (and, later, search); absent
    /// means linking by words and values only.
    #[serde(default)]
    pub embedding: Option<EmbeddingConfig>,
    /// The SQL tool.
    #[serde(default)]
    pub sql: SqlToolConfig,
    /// `[cache]`: the result cache (SQL results until a table read
    /// changes) and the model-response cache (deterministic replies); off
    /// by default. See [`quarry_sql::cache`] and [`quarry_llm::cache`].
    #[serde(default)]
    pub cache: quarry_sql::cache::CacheConfig,
    /// The orchestrator.
    #[serde(default)]
    pub orchestrator: OrchestratorConfig,
    /// Token and cost budgets per tenant (UTC day and month; `0` = no
    /// limit) and `[budgets.tenants.<tenant>]` changes; default: no limits.
    #[serde(default)]
    pub budgets: BudgetConfig,
    /// The search tool and its collections; absent means no SearchService.
    #[serde(default)]
    pub search: Option<SearchConfig>,
    /// How the index sync batches and polls (used where `server.run_sync`).
    #[serde(default)]
    pub sync: SyncConfig,
    /// The summaries tool: kinds, builder schedule; absent means no
    /// SummaryService. `definitions` paths are relative to the working
    /// directory (the repository root for `dev/quarry.toml`).
    #[serde(default)]
    pub summary: Option<SummaryConfig>,
    /// Traces: the OTLP collector spans are sent to (none by default), the
    /// service name, the sampling ratio. The binary installs the subscriber
    /// with it ([`crate::Telemetry::init`]) before [`serve`](crate::serve).
    #[serde(default)]
    pub tracing: crate::TracingConfig,
    /// The Prometheus endpoint (`[metrics] listen`); default: none.
    #[serde(default)]
    pub metrics: crate::metrics::MetricsConfig,
    /// The MCP endpoint (`/mcp`) where the assistant role runs: on by
    /// default; public URL, authorization servers, accepted hosts.
    #[serde(default)]
    pub mcp: crate::mcp::McpConfig,
}

/// `[server]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// After SIGTERM/SIGINT, how long in-flight requests may take to finish
    /// before they are cut off, in seconds. Default 10.
    pub shutdown_grace_secs: u64,
    /// URL of a separate SqlService (`quarry serve --role sql` elsewhere);
    /// empty means the one in this process.
    pub sql_url: Option<String>,
    /// URL of a separate SearchService; empty means the one in this process
    /// (when `[search]` is configured).
    pub search_url: Option<String>,
    /// Run the index sync (change data capture from the source tables into
    /// the search sidecars) in this process. Several processes may: one
    /// leads per collection (PostgreSQL advisory lock), the others wait.
    /// Default true.
    pub run_sync: bool,
    /// URL of a separate SummaryService; empty means the one in this process
    /// (when `[summary]` is configured).
    pub summary_url: Option<String>,
    /// Run the summary builder (at start-up if `summary.build_on_start`, then
    /// every `summary.refresh_interval_secs`) in this process. Several
    /// processes may: a PostgreSQL advisory lock lets one build at a time.
    /// Default true.
    pub run_summary_builder: bool,
    /// A development setup: allows an inline HS256 secret without `iss` and
    /// `aud`, and a database login or query role that is a superuser or has
    /// `BYPASSRLS`. Production configs leave it false (the default), and
    /// Quarry then refuses to start with any of those.
    pub development: bool,
    /// `[server.web]`: the origins whose pages may call over grpc-web
    /// (CORS); default none, so only the console this node serves.
    pub web: crate::web::WebConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            shutdown_grace_secs: 10,
            sql_url: None,
            search_url: None,
            run_sync: true,
            summary_url: None,
            run_summary_builder: true,
            development: false,
            web: crate::web::WebConfig::default(),
        }
    }
}

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// libpq-style URL, e.g. `postgres://quarry_reader@db:5432/data`.
    /// Default: the development server `dev/pg.sh` starts.
    pub url: String,
    /// Most pooled connections of this process to `url`: one pool, shared
    /// by the tools, the orchestrator's conversation store and the index
    /// sync ([`quarry_db::Pools`]). Default 16.
    pub pool_size: usize,
    /// How long a request waits for a free connection before it fails with
    /// `UNAVAILABLE`, in milliseconds. Default 5,000.
    pub pool_wait_ms: u64,
}

impl DatabaseConfig {
    /// An empty registry of shared pools whose connections are waited for
    /// at most `pool_wait_ms`: one per process (or per one-off command).
    pub fn pools(&self) -> quarry_db::Pools {
        quarry_db::Pools::new(std::time::Duration::from_millis(self.pool_wait_ms))
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:54329/quarry".to_string(),
            pool_size: 16,
            pool_wait_ms: 5_000,
        }
    }
}

#[derive(Serialize)]
struct Defaults {
    server: ServerConfig,
    database: DatabaseConfig,
}

impl Config {
    /// Loads `path` (if given) and the process environment's overrides.
    ///
    /// # Errors
    /// A figment error naming the key and source at fault.
    pub fn load(path: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut config: Self = Self::figment(path, Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(Box::new)?;
        config.source = path.map(Path::to_path_buf);
        Ok(config)
    }

    /// Parses a configuration from TOML layers, later layers overriding
    /// earlier ones key by key (no file, no environment): how tests inject
    /// settings.
    ///
    /// # Errors
    /// A figment error naming the key at fault.
    pub fn from_toml_layers(layers: &[&str]) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Defaults {
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
        }));
        for layer in layers {
            figment = figment.merge(Toml::string(layer));
        }
        figment.extract().map_err(Box::new)
    }

    /// Each task's model settings: `[models.<task>]` over `[model]`, `[model]`
    /// alone for a task without a table, none for a task with neither.
    ///
    /// # Errors
    /// [`LlmError::Config`] whose message starts with the key at fault
    /// (`models.routing.base_url must be set: ...`, `model.temperature ...`).
    pub fn task_models(&self) -> Result<TaskModels, LlmError> {
        self.models.resolve(self.model.as_ref())
    }

    /// Builds the figment with a given environment provider (tests inject a
    /// synthetic one instead of touching the process environment).
    pub fn figment(path: Option<&Path>, env: Env) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Defaults {
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
        }));
        if let Some(path) = path {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment.merge(env)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn file_and_env_overrides_merge() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "q.toml",
                r#"
                [auth]
                jwt_secret = "0123456789abcdef0123456789abcdef"
                [sql]
                schemas = ["tate"]
                "#,
            )?;
            jail.set_env("QUARRY__DATABASE__URL", "postgres://x@h:1/db");
            jail.set_env("QUARRY__ORCHESTRATOR__MAX_STEPS", "3");
            let config = Config::load(Some(Path::new("q.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.database.url, "postgres://x@h:1/db");
            assert_eq!(config.orchestrator.max_steps, 3);
            assert_eq!(config.sql.schemas, vec!["tate".to_string()]);
            assert!(config.model.is_none());
            Ok(())
        });
    }

    #[test]
    fn a_task_model_is_set_by_table_or_environment_and_inherits_the_rest() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "q.toml",
                r#"
                [auth]
                jwt_secret = "0123456789abcdef0123456789abcdef"
                [model]
                base_url = "https://api.openai.com/v1"
                model = "gpt-4o"
                api_key_env = "OPENAI_API_KEY"
                [models.sql]
                temperature = 0.0
                [models.routing.price]
                input_per_million = 0.15
                output_per_million = 0.6
                "#,
            )?;
            jail.set_env("QUARRY__MODELS__ROUTING__MODEL", "gpt-4o-mini");
            let config = Config::load(Some(Path::new("q.toml"))).map_err(|e| e.to_string())?;
            let models = config.task_models().map_err(|e| e.to_string())?;
            let routing = models.routing.ok_or("no routing model")?;
            assert_eq!(routing.model, "gpt-4o-mini");
            assert_eq!(routing.base_url, "https://api.openai.com/v1");
            assert_eq!(routing.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
            assert_eq!(routing.price.map(|p| p.input_per_million), Some(0.15));
            let sql = models.sql.ok_or("no sql model")?;
            assert_eq!((sql.model.as_str(), sql.temperature), ("gpt-4o", Some(0.0)));
            assert_eq!(models.answer.as_ref(), config.model.as_ref());
            Ok(())
        });
    }

    #[test]
    fn a_task_table_without_a_model_section_must_name_its_endpoint() {
        let config = Config::from_toml_layers(&[
            "[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n\
             [models.routing]\nmodel = \"gpt-4o-mini\"\n",
        ])
        .unwrap();
        let err = config.task_models().unwrap_err().to_string();
        assert!(err.contains("models.routing.base_url"), "{err}");

        let err = Config::from_toml_layers(&[
            "[auth]\njwt_secret = \"x\"\n[models.routing]\nmodle = \"m\"\n",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("modle"), "{err}");
    }

    #[test]
    fn cors_origins_are_none_unless_listed_and_each_must_be_an_origin() {
        let auth = "[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"";
        let config = Config::from_toml_layers(&[auth]).expect("defaults");
        assert!(config.server.web.cors_origins.is_empty());
        let config = Config::from_toml_layers(&[
            auth,
            "[server.web]\ncors_origins = [\"https://app.example\", \"http://127.0.0.1:8080\"]",
        ])
        .expect("origins");
        assert_eq!(
            config.server.web.cors_origins,
            ["https://app.example", "http://127.0.0.1:8080"]
        );
        assert!(config.server.web.cors_layer().is_ok());
        let config = Config::from_toml_layers(&[
            auth,
            "[server.web]\ncors_origins = [\"https://app.example/x\"]",
        ])
        .expect("parses");
        let error = config
            .server
            .web
            .cors_layer()
            .expect_err("a path is not an origin");
        assert!(
            error.to_string().contains("server.web.cors_origins"),
            "{error}"
        );
        let typo = Config::from_toml_layers(&[auth, "[server.web]\ncors_origin = []"])
            .expect_err("unknown key");
        assert!(typo.to_string().contains("cors_origin"), "{typo}");
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        let auth = "[auth]\njwt_secret = \"0123456789abcdef0123456789abcdef\"\n";
        let config = Config::from_toml_layers(&[auth]).unwrap();
        assert_eq!(config.metrics.listen, None);
        assert_eq!(config.metrics.max_tenant_labels, 1000);
        let config =
            Config::from_toml_layers(&[auth, "[metrics]\nlisten = \"127.0.0.1:0\"\n"]).unwrap();
        assert_eq!(
            config.metrics.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 0)))
        );
        let err = Config::from_toml_layers(&[auth, "[metrics]\nlisen = \"127.0.0.1:0\"\n"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "q.toml",
                "[auth]\njwt_secret = \"x\"\n[sql]\nschemaz = []\n",
            )?;
            let err = Config::load(Some(Path::new("q.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("schemaz"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_development_config_parses_and_its_collections_validate() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/quarry.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config: Config = Config::figment(None, Env::prefixed("QUARRY_TEST_UNUSED__"))
            .merge(Toml::string(&text))
            .extract()
            .unwrap();
        let search = config.search.unwrap();
        assert_eq!(search.collections[0].name, "artworks");
        for (i, c) in search.collections.iter().enumerate() {
            quarry_search::Collection::from_config(c, &format!("search.collections[{i}]")).unwrap();
        }
        assert!(config.server.run_sync);
        // the demo policy validates and has at least three roles
        let policy = quarry_auth::Policy::new(&config.policy).unwrap();
        let roles: Vec<&str> = policy.role_names().collect();
        assert_eq!(roles, ["analyst", "curator", "visitor"]);
        let mut summary = config.summary.unwrap();
        summary
            .load_definitions(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .unwrap();
        let kinds: Vec<&str> = summary.kinds.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(kinds, ["artist", "movement", "decade", "collection"]);
        summary.validate_static().unwrap();
    }

    /// The configurations the Kubernetes manifests mount (k8s/, ConfigMap
    /// `quarry-config`) load with Quarry's own loader plus the Secret's
    /// environment, pass the production checks (`development = false`), and
    /// differ only in the tool URLs; the golden pairs and summary kinds they
    /// mount are the demo's. So the manifests cannot drift from the schema.
    #[test]
    fn the_kubernetes_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let config_dir = root.join("k8s/base/config");
        let split_path = config_dir.join("quarry.toml");
        let single_path = root.join("k8s/overlays/single/quarry.toml");
        let mut loaded = Vec::new();
        for path in [&split_path, &single_path] {
            figment::Jail::expect_with(|jail| {
                // What Secret quarry-secrets holds (envFrom).
                jail.set_env(
                    "QUARRY__DATABASE__URL",
                    "postgres://quarry@postgres:5432/quarry",
                );
                jail.set_env("QUARRY_JWT_SECRET", "0123456789abcdef0123456789abcdef");
                jail.set_env("QUARRY_MODEL_API_KEY", "sk-test");
                jail.set_env("QUARRY__POLICY__HASH_SALT", "salt");
                let config = Config::load(Some(path)).map_err(|e| e.to_string())?;
                assert_eq!(
                    config.database.url,
                    "postgres://quarry@postgres:5432/quarry"
                );
                config.auth.validate(false).map_err(|e| e.to_string())?;
                config
                    .auth
                    .secret_with(|name| std::env::var(name).ok())
                    .map_err(|e| e.to_string())?;
                crate::models::Models::from_config(&config).map_err(|e| format!("{e:#}"))?;
                loaded.push(config);
                Ok(())
            });
        }
        let [split, single] = <[Config; 2]>::try_from(loaded).unwrap();

        // Pods listen on every interface at the port of the probes and Services.
        assert_eq!(split.server.listen, SocketAddr::from(([0, 0, 0, 0], 50051)));
        assert!(!split.server.development);
        assert_eq!(split.policy.hash_salt, "salt");
        let urls = [
            split.server.sql_url.as_deref(),
            split.server.search_url.as_deref(),
            split.server.summary_url.as_deref(),
        ];
        assert_eq!(
            urls,
            [
                Some("http://quarry-sql:50051"),
                Some("http://quarry-search:50051"),
                Some("http://quarry-summary:50051"),
            ]
        );
        let mut server = split.server.clone();
        (server.sql_url, server.search_url, server.summary_url) = (None, None, None);
        assert_eq!(server, single.server);
        assert_eq!(
            format!("{:?}", split.policy),
            format!("{:?}", single.policy)
        );
        let rest = |c: &Config| {
            format!(
                "{:?}",
                (
                    &c.database,
                    &c.auth,
                    &c.model,
                    &c.models,
                    &c.embedding,
                    &c.sql
                )
            ) + &format!(
                "{:?}",
                (&c.orchestrator, &c.budgets, &c.search, &c.sync, &c.summary)
            )
        };
        assert_eq!(rest(&split), rest(&single));

        // Files the ConfigMap mounts at /etc/quarry: the demo's, unchanged.
        let mount = Path::new("/etc/quarry");
        assert_eq!(
            split.sql.golden_path.as_deref(),
            Some(mount.join("golden.json").as_path())
        );
        let summary = split.summary.clone().unwrap();
        assert_eq!(summary.definitions, ["/etc/quarry/summaries.toml"]);
        for (mounted, demo) in [
            ("golden.json", "demo/golden/tate.json"),
            ("summaries.toml", "demo/summaries/tate.toml"),
        ] {
            let copy = std::fs::read(config_dir.join(mounted)).unwrap();
            let original = std::fs::read(root.join(demo)).unwrap();
            assert!(
                copy == original,
                "k8s/base/config/{mounted} differs from {demo}"
            );
        }
        let mut summary = summary;
        summary.definitions = vec![config_dir.join("summaries.toml").display().to_string()];
        summary.load_definitions(&root).unwrap();
        summary.validate_static().unwrap();
        let search = split.search.unwrap();
        assert_eq!(search.index_dir, Path::new("/var/lib/quarry/search"));
        for (i, c) in search.collections.iter().enumerate() {
            quarry_search::Collection::from_config(c, &format!("search.collections[{i}]")).unwrap();
        }
        quarry_auth::Policy::new(&split.policy).unwrap();
    }
}
