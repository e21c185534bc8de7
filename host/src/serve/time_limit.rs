//! The time limit on each query: `medallion serve --query-timeout`, which a connection may lower
//! with PostgreSQL's `SET statement_timeout`.
//!
//! datafusion-postgres plans a query in its handler and hands pgwire a stream of rows, which
//! pgwire drains after the handler has returned, so a timeout around the handler would stop
//! planning but not the work. [`TimeLimited`] wraps the handler for both protocols: planning
//! runs under the deadline, and every result stream is wrapped so that when the deadline passes
//! the DataFusion stream is dropped (its tasks end, its memory returns to the pool) and the
//! client gets SQLSTATE 57014, PostgreSQL's `query_canceled`, naming the limit. The connection
//! stays usable, as after any error.
//!
//! As with PostgreSQL's `statement_timeout`, the deadline starts when a Query or an Execute
//! message arrives: a portal read in pieces (JDBC's fetch size) gets the limit per Execute, and
//! the client's pauses between them are not counted. Statements sent together in one simple
//! Query share one deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{Response, SendableRowStream};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::messages::extendedquery::Execute;
use datafusion_postgres::pgwire::messages::simplequery::Query;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, Stream};
use tokio::time::{Instant, Sleep};

/// `--query-timeout` when none is given: long enough for any dashboard or ad-hoc question,
/// short enough that a forgotten cross join does not hold a core for an afternoon.
pub const DEFAULT: Duration = Duration::from_secs(5 * 60);

/// Where `SET statement_timeout` leaves its value: datafusion-postgres's `SetShowHook` keeps it
/// in the connection's metadata, in milliseconds, and removes it for 0.
const STATEMENT_TIMEOUT_MS: &str = "statement_timeout_ms";

/// Whose limit a query ran into, for the message that cancels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Server,
    Session { server: Option<Duration> },
}

#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    limit: Duration,
    source: Source,
}

impl Deadline {
    /// The limit that applies: the server's, or the connection's `statement_timeout` when lower.
    fn starting_now(server: Option<Duration>, session: Option<Duration>) -> Option<Deadline> {
        let (limit, source) = match (server, session) {
            (Some(s), Some(c)) if c < s => (c, Source::Session { server }),
            (Some(s), _) => (s, Source::Server),
            (None, Some(c)) => (c, Source::Session { server }),
            (None, None) => return None,
        };
        Some(Deadline {
            at: Instant::now() + limit,
            limit,
            source,
        })
    }

    fn error(&self) -> PgWireError {
        let limit = human(self.limit);
        let message = match self.source {
            Source::Server => format!(
                "canceling statement due to statement timeout: it ran longer than this server's \
                 limit of {limit} (medallion serve --query-timeout DURATION sets it, 0 turns it off)"
            ),
            Source::Session { server } => format!(
                "canceling statement due to statement timeout: it ran longer than this \
                 connection's statement_timeout of {limit} (SET statement_timeout changes it{})",
                match server {
                    Some(s) => format!("; the server's limit is {}", human(s)),
                    None => String::new(),
                }
            ),
        };
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            message,
        )))
    }
}

/// `300s` as `5min`, `1500ms` as `1500ms`: as a user would type it.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) {
        format!("{}min", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The deadline of the message a connection is running. Its result streams read it: they
/// outlive the handler call that made them (a portal's rows are drained by later Executes).
#[derive(Debug, Default)]
struct Clock {
    deadline: Mutex<Option<Deadline>>,
    /// Bumped by every new deadline, so that a stream checks one atomic per row, not the lock.
    generation: AtomicU64,
}

impl Clock {
    fn of<C: ClientInfo + ?Sized>(client: &C) -> Arc<Clock> {
        client
            .session_extensions()
            .get_or_insert_with(Clock::default)
    }

    fn set(&self, deadline: Option<Deadline>) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn current(&self) -> (u64, Option<Deadline>) {
        let generation = self.generation.load(Ordering::Acquire);
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        (generation, deadline)
    }
}

/// datafusion-postgres's handler, each query bounded in time (see the module doc).
pub struct TimeLimited {
    inner: Arc<DfSessionService>,
    /// `--query-timeout`; None when turned off (a connection's statement_timeout still applies).
    limit: Option<Duration>,
}

impl TimeLimited {
    pub fn new(inner: Arc<DfSessionService>, limit: Option<Duration>) -> TimeLimited {
        TimeLimited { inner, limit }
    }

    /// A Query or Execute message arrived: its deadline starts now.
    fn start<C: ClientInfo + ?Sized>(&self, client: &C) {
        let session = client
            .metadata()
            .get(STATEMENT_TIMEOUT_MS)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        Clock::of(client).set(Deadline::starting_now(self.limit, session));
    }
}

/// Runs `work` (planning; for a cursor, its fetch) under the connection's deadline.
async fn within<T>(clock: &Clock, work: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
    match clock.current().1 {
        None => work.await,
        Some(deadline) => tokio::time::timeout_at(deadline.at, work)
            .await
            .unwrap_or_else(|_| Err(deadline.error())),
    }
}

/// Bounds a response's rows by the connection's clock (nothing to do when no limit applies).
fn bound(response: Response, clock: &Arc<Clock>) -> Response {
    match response {
        Response::Query(mut query) if clock.current().1.is_some() => {
            let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
            query.data_rows = Box::pin(Bounded::new(rows, clock.clone()));
            Response::Query(query)
        }
        other => other,
    }
}

/// Rows a stream hands out between two readings of the clock while its rows keep coming.
const CHECK_EVERY: u32 = 256;

/// A stream of rows that ends with the query-canceled error once its connection's deadline
/// passes, dropping the rows' stream (and the DataFusion plan under it) at that moment.
struct Bounded {
    rows: Option<SendableRowStream>,
    clock: Arc<Clock>,
    /// The clock's generation and deadline when last read.
    seen: Option<(u64, Option<Deadline>)>,
    /// Armed only while the rows keep this task waiting.
    timer: Option<Pin<Box<Sleep>>>,
    rows_since_check: u32,
}

impl Bounded {
    fn new(rows: SendableRowStream, clock: Arc<Clock>) -> Bounded {
        Bounded {
            rows: Some(rows),
            clock,
            seen: None,
            timer: None,
            rows_since_check: 0,
        }
    }

    fn cancel(&mut self, deadline: Deadline) -> Poll<Option<PgWireResult<DataRow>>> {
        self.rows = None;
        self.timer = None;
        Poll::Ready(Some(Err(deadline.error())))
    }
}

impl Stream for Bounded {
    type Item = PgWireResult<DataRow>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(rows) = this.rows.as_mut() else {
            return Poll::Ready(None);
        };
        let generation = this.clock.generation.load(Ordering::Acquire);
        if this.seen.map(|(g, _)| g) != Some(generation) {
            let (generation, deadline) = this.clock.current();
            this.seen = Some((generation, deadline));
            match (deadline, this.timer.as_mut()) {
                (None, _) => this.timer = None,
                (Some(d), Some(timer)) => timer.as_mut().reset(d.at),
                (Some(_), None) => {}
            }
        }
        let Some((_, Some(deadline))) = this.seen else {
            return rows.as_mut().poll_next(cx);
        };
        // A timer polled per row costs tokio's cooperative budget and makes the task yield
        // every 128 rows; so rows that keep coming are checked against the clock now and then,
        // and the timer waits only while the plan is busy without a row.
        match rows.as_mut().poll_next(cx) {
            Poll::Ready(Some(row)) => {
                this.rows_since_check += 1;
                if this.rows_since_check >= CHECK_EVERY {
                    this.rows_since_check = 0;
                    if Instant::now() >= deadline.at {
                        return this.cancel(deadline);
                    }
                }
                Poll::Ready(Some(row))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.at)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => this.cancel(deadline),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for TimeLimited {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.start(client);
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let clock = Clock::of(client);
        let responses = within(
            &clock,
            SimpleQueryHandler::do_query(&*self.inner, client, query),
        )
        .await?;
        Ok(responses.into_iter().map(|r| bound(r, &clock)).collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for TimeLimited {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.inner.query_parser()
    }

    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.start(client);
        self._on_execute(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let clock = Clock::of(client);
        let inner = ExtendedQueryHandler::do_query(&*self.inner, client, portal, max_rows);
        Ok(bound(within(&clock, inner).await?, &clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn the_lower_of_the_server_limit_and_the_session_statement_timeout_applies() {
        let s = |n| Some(Duration::from_secs(n));
        let limit = |server, session| Deadline::starting_now(server, session).map(|d| d.limit);
        assert_eq!(limit(s(30), None), s(30));
        assert_eq!(limit(s(30), s(5)), s(5));
        assert_eq!(limit(s(30), s(60)), s(30));
        assert_eq!(limit(None, s(60)), s(60));
        assert_eq!(limit(None, None), None);
    }

    #[test]
    fn the_error_is_query_canceled_and_says_how_to_change_the_limit() {
        let d = Deadline::starting_now(Some(Duration::from_secs(30)), None).unwrap();
        let PgWireError::UserError(info) = d.error() else {
            panic!("not a user error")
        };
        assert_eq!(info.code, "57014");
        assert!(info.message.contains("30s"), "{}", info.message);
        assert!(info.message.contains("--query-timeout"), "{}", info.message);
        let d = Deadline::starting_now(DEFAULT.into(), Some(Duration::from_millis(1500))).unwrap();
        let PgWireError::UserError(info) = d.error() else {
            panic!("not a user error")
        };
        assert!(info.message.contains("1500ms"), "{}", info.message);
        assert!(
            info.message.contains("SET statement_timeout"),
            "{}",
            info.message
        );
        assert!(info.message.contains("5min"), "{}", info.message);
    }

    /// Never yields; `alive` counts whether the bounded stream still holds it.
    struct Endless {
        _alive: Arc<()>,
    }

    impl Stream for Endless {
        type Item = PgWireResult<DataRow>;
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_stream_past_its_deadline_errs_once_and_drops_the_work() {
        let clock = Arc::new(Clock::default());
        clock.set(Deadline::starting_now(
            Some(Duration::from_millis(100)),
            None,
        ));
        let alive = Arc::new(());
        let mut rows = Bounded::new(
            Box::pin(Endless {
                _alive: alive.clone(),
            }),
            clock.clone(),
        );
        let first = rows.next().await;
        assert!(matches!(first, Some(Err(PgWireError::UserError(ref e))) if e.code == "57014"));
        assert_eq!(
            Arc::strong_count(&alive),
            1,
            "the rows' stream was not dropped"
        );
        assert!(rows.next().await.is_none());
    }

    #[tokio::test]
    async fn rows_that_keep_coming_are_cut_off_at_the_deadline_too() {
        let clock = Arc::new(Clock::default());
        clock.set(Deadline::starting_now(
            Some(Duration::from_millis(50)),
            None,
        ));
        let row = || {
            Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".into(),
                "00000".into(),
                "a row".into(),
            ))))
        };
        let mut rows = Bounded::new(Box::pin(futures::stream::repeat_with(row)), clock.clone());
        let mut before = 0;
        while let Some(Err(PgWireError::UserError(e))) = rows.next().await {
            if e.code == "57014" {
                break;
            }
            before += 1;
            if before == 10 {
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        }
        assert!(
            (10..10 + CHECK_EVERY as usize).contains(&before),
            "{before} rows"
        );
        assert!(rows.next().await.is_none());
    }

    #[tokio::test]
    async fn a_new_message_restarts_the_deadline_of_a_suspended_portal() {
        let clock = Arc::new(Clock::default());
        let limit = Some(Duration::from_millis(300));
        clock.set(Deadline::starting_now(limit, None));
        let mut rows = Bounded::new(Box::pin(futures::stream::pending()), clock.clone());
        assert!(
            tokio::time::timeout(Duration::from_millis(100), rows.next())
                .await
                .is_err()
        );
        // The client pauses, then sends the next Execute.
        tokio::time::sleep(Duration::from_millis(400)).await;
        clock.set(Deadline::starting_now(limit, None));
        assert!(
            tokio::time::timeout(Duration::from_millis(150), rows.next())
                .await
                .is_err(),
            "the pause was counted"
        );
        assert!(matches!(rows.next().await, Some(Err(_))));
    }
}
