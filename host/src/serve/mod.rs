//! `medallion serve`: the lake over the PostgreSQL wire protocol, for psql, JDBC/ODBC drivers
//! and BI tools. The protocol and the `pg_catalog` those clients query come from
//! datafusion-postgres (on pgwire); this module plugs in the lake's tables, keeps the server
//! read-only ([`read_only`]), bounds each query's time ([`time_limit`]; [`yield_points`] make
//! a stopped query stop working at once) and memory (the engine's pool), and asks for a
//! password (SCRAM-SHA-256) whenever it listens beyond loopback. On a second port, [`http`]
//! serves the dashboard, the lake's files, and the report and alerts of a pipeline watched in
//! the same process ([`Live`]); with a certificate ([`tls`]) both ports are encrypted.

pub mod catalog;
mod compat;
pub mod http;
pub mod read_only;
pub mod time_limit;
mod tls;
mod yield_points;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::noop::NoopStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{
    gen_salted_password, ScramAuth, SCRAM_ITERATIONS,
};
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password,
};
use datafusion_postgres::pgwire::api::cancel::DefaultCancelHandler;
use datafusion_postgres::pgwire::api::{
    ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers, METADATA_USER,
};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::{serve_with_handlers, DfSessionService, QueryHook, ServerOptions};
use medallion_core::query::{new_context, EngineOptions};
use medallion_core::storage::Storage;

use catalog::LakeCatalog;
use time_limit::TimeLimited;

/// How `medallion serve` listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub lake: String,
    pub bind: IpAddr,
    pub pg_port: u16,
    /// The password clients must give (SCRAM-SHA-256); required off loopback.
    pub password: Option<String>,
    pub tls: Option<(String, String)>,
    pub max_connections: usize,
    /// How long one query may run (`--query-timeout`); None: no limit but a connection's own
    /// `statement_timeout`.
    pub query_timeout: Option<Duration>,
    pub engine: EngineOptions,
    /// Port of the HTTP side; 0 turns it off.
    pub http_port: u16,
    /// The dashboard's folder (web/ of the repository).
    pub web: PathBuf,
    /// What a pipeline running in this process shares with the HTTP side.
    pub live: Live,
}

/// The dashboard's folder in the checkout this binary was built from.
pub fn default_web_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../web"))
}

/// What a pipeline watched by this process (`serve --run … --watch`) shows over HTTP.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Its alerts, for `/api/alerts`.
    pub alerts: Option<crate::alerts::Broadcast>,
    /// Its last batch report, for `/api/report`.
    pub report: Option<Arc<LastReport>>,
}

/// The last report of a watched pipeline, as JSON.
#[derive(Debug, Default)]
pub struct LastReport(RwLock<Option<serde_json::Value>>);

impl LastReport {
    pub fn set(&self, report: serde_json::Value) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    pub fn get(&self) -> Option<serde_json::Value> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The user name clients log in as when a password is set.
pub const USER: &str = "medallion";

/// Serves until the process is stopped.
pub async fn serve(storage: Arc<dyn Storage>, opts: ServeOptions) -> anyhow::Result<()> {
    if !opts.bind.is_loopback() && opts.password.is_none() {
        bail!(
            "refusing to listen on {} without a password: anyone who can reach it could read the lake. \
             Give one with --password-file FILE or MEDALLION_SERVE_PASSWORD, or bind 127.0.0.1",
            opts.bind
        );
    }
    let https = match &opts.tls {
        Some((cert, key)) => Some(tls::https(cert, key)?),
        None => None,
    };
    // Fail before saying "serving" if the port is taken (the server binds it again below;
    // a script waiting for the banner must not see it for a server that never listened).
    std::net::TcpListener::bind((opts.bind, opts.pg_port))
        .with_context(|| format!("listening on {}:{}", opts.bind, opts.pg_port))?;
    let http_listener = match opts.http_port {
        0 => None,
        port => Some(
            tokio::net::TcpListener::bind((opts.bind, port))
                .await
                .with_context(|| format!("listening for HTTP on {}:{port}", opts.bind))?,
        ),
    };
    let ctx = Arc::new(yield_points::with_yield_points(new_context(opts.engine)));
    setup_pg_catalog(
        &ctx,
        &ctx.state()
            .config()
            .options()
            .catalog
            .default_catalog
            .clone(),
        Arc::new(datafusion_postgres::auth::AuthManager::default()),
    )
    .map_err(|e| anyhow::anyhow!("setting up pg_catalog: {e}"))?;
    compat::register(&ctx);
    let lake = Arc::new(LakeCatalog::new(&ctx, storage.clone(), &opts.lake)?);
    let n = lake
        .refresh()
        .await
        .with_context(|| format!("listing the lake {}", opts.lake))?;
    eprintln!("serving {n} tables of {}", opts.lake);
    tokio::spawn({
        let lake = lake.clone();
        async move {
            loop {
                tokio::time::sleep(catalog::REFRESH).await;
                if let Err(e) = lake.refresh().await {
                    eprintln!("listing the lake for new tables failed (will retry): {e:#}");
                }
            }
        }
    });

    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(read_only::ReadOnly),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
    ];
    let session = Arc::new(TimeLimited::new(
        Arc::new(DfSessionService::new_with_hooks(ctx, hooks)),
        opts.query_timeout,
    ));
    let connections = Arc::new(ConnectionManager::new());
    let mut server = ServerOptions::new()
        .with_host(opts.bind.to_string())
        .with_port(opts.pg_port)
        .with_max_connections(opts.max_connections);
    if let Some((cert, key)) = &opts.tls {
        server = server
            .with_tls_cert_path(Some(cert.clone()))
            .with_tls_key_path(Some(key.clone()));
    }
    let listening = format!(
        "postgresql://{}{}:{}/lake{}",
        if opts.password.is_some() {
            "medallion@"
        } else {
            ""
        },
        opts.bind,
        opts.pg_port,
        if opts.tls.is_some() {
            "?sslmode=require"
        } else {
            ""
        }
    );
    let limit = match opts.query_timeout {
        Some(d) => format!("queries stopped after {}", time_limit::human(d)),
        None => "no query time limit".to_string(),
    };
    eprintln!(
        "PostgreSQL protocol on {listening} (read-only; schemas bronze, silver, gold, quarantine; {limit})"
    );
    if let Some(listener) = http_listener {
        let site = http::Site::new(
            storage,
            &opts.lake,
            &opts.web,
            opts.live.clone(),
            opts.password.as_deref(),
        );
        let addr = listener
            .local_addr()
            .context("the HTTP listener's address")?;
        let base = format!(
            "{}://{addr}",
            if https.is_some() { "https" } else { "http" }
        );
        // `?live`: the page then follows the pipeline's report and alerts (without a pipeline
        // those answer 404, which a browser logs as an error).
        let page = if opts.live.report.is_some() {
            "?live"
        } else {
            ""
        };
        let dashboard = match site.dashboard_problem() {
            None => format!("dashboard {base}/{page}"),
            Some(problem) => format!("no dashboard: {problem}"),
        };
        let live = if opts.live.report.is_some() {
            format!(", {base}/api/report, alerts (SSE) {base}/api/alerts")
        } else {
            String::new()
        };
        eprintln!(
            "HTTP on {base}/ : {dashboard}; lake files (read-only, Range) {base}/lake/{live}"
        );
        tokio::spawn(http::run(listener, Arc::new(site), https));
    }
    let result = match opts.password {
        None => {
            let handlers = Handlers {
                session,
                cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
                startup: Trust { connections },
            };
            serve_with_handlers(Arc::new(handlers), &server).await
        }
        Some(password) => {
            let handlers = Handlers {
                session,
                cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
                startup: Scram {
                    connections,
                    source: Arc::new(OnePassword::new(password)),
                },
            };
            serve_with_handlers(Arc::new(handlers), &server).await
        }
    };
    result.with_context(|| format!("listening on {}:{}", opts.bind, opts.pg_port))
}

/// One way to start a connection: with or without a password.
trait Startup: Send + Sync + 'static {
    type Handler: datafusion_postgres::pgwire::api::auth::StartupHandler + 'static;
    fn handler(&self) -> Arc<Self::Handler>;
}

struct Handlers<S> {
    session: Arc<TimeLimited>,
    cancel: Arc<DefaultCancelHandler>,
    startup: S,
}

impl<S: Startup> PgWireServerHandlers for Handlers<S> {
    fn simple_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(
        &self,
    ) -> Arc<impl datafusion_postgres::pgwire::api::query::ExtendedQueryHandler> {
        self.session.clone()
    }

    fn startup_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::auth::StartupHandler> {
        self.startup.handler()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogRefusals)
    }

    fn cancel_handler(&self) -> Arc<impl datafusion_postgres::pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// Loopback without a password: every local user may read the lake, as with its files.
struct Trust {
    connections: Arc<ConnectionManager>,
}

struct TrustHandler {
    connections: Arc<ConnectionManager>,
}

#[async_trait::async_trait]
impl NoopStartupHandler for TrustHandler {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

impl Startup for Trust {
    type Handler = TrustHandler;
    fn handler(&self) -> Arc<TrustHandler> {
        Arc::new(TrustHandler {
            connections: self.connections.clone(),
        })
    }
}

/// SCRAM-SHA-256 against one password; a fresh handler per connection (it holds the
/// exchange's state).
struct Scram {
    connections: Arc<ConnectionManager>,
    source: Arc<OnePassword>,
}

impl Startup for Scram {
    type Handler = SASLAuthStartupHandler<DefaultServerParameterProvider>;
    fn handler(&self) -> Arc<Self::Handler> {
        let mut scram = ScramAuth::new(self.source.clone());
        scram.set_iterations(SCRAM_ITERATIONS);
        Arc::new(
            SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                .with_scram(scram)
                .with_connection_manager(self.connections.clone()),
        )
    }
}

/// The server's one password, kept salted and hashed as SCRAM needs it.
#[derive(Debug)]
struct OnePassword {
    salt: [u8; 16],
    salted: Vec<u8>,
}

impl OnePassword {
    fn new(password: String) -> Self {
        let salt: [u8; 16] = rand::random();
        let salted = gen_salted_password(&password, &salt, SCRAM_ITERATIONS);
        Self { salt, salted }
    }
}

#[async_trait::async_trait]
impl AuthSource for OnePassword {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        match login.user() {
            Some(USER) => Ok(Password::new(Some(self.salt.to_vec()), self.salted.clone())),
            other => Err(PgWireError::InvalidPassword(
                other.unwrap_or("").to_string(),
            )),
        }
    }
}

/// Logs refused logins (who and from where, never what password was tried).
struct LogRefusals;

impl ErrorHandler for LogRefusals {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        if let PgWireError::InvalidPassword(_) = error {
            // The startup message's user: libpq leaves SCRAM's own user name empty.
            let user = client
                .metadata()
                .get(METADATA_USER)
                .map_or("", |u| u.as_str());
            let why = if user == USER {
                "wrong password".to_string()
            } else {
                format!("the only user is `{USER}`")
            };
            eprintln!(
                "refused a login as `{user}` from {}: {why}",
                client.socket_addr()
            );
        }
    }
}
