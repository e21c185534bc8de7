//! Refuses every statement that could change something — the lake changes only through
//! pipeline runs, and the session is shared by every connection, so one client's
//! `CREATE TABLE` must not appear in another's catalog, nor its `SET datafusion.…` lift the
//! server's memory cap for everyone. Only reads, `SHOW`/`SET`, transactions and cursors pass;
//! the rest gets PostgreSQL's own SQLSTATE 25006 (42501 for engine settings). Savepoints,
//! which drivers send around statements, are answered here: with nothing written, there is
//! nothing to roll back to.

use async_trait::async_trait;
use std::sync::Arc;

use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::{hooks::HookClient, QueryHook};
use medallion_core::datafusion::common::ParamValues;
use medallion_core::datafusion::logical_expr::LogicalPlan;
use medallion_core::datafusion::prelude::SessionContext;
use medallion_core::datafusion::sql::sqlparser::ast::Statement;

pub struct ReadOnly;

/// Whether a statement only reads.
pub fn allowed(statement: &Statement) -> bool {
    use Statement as S;
    match statement {
        S::Explain { statement, .. } | S::Prepare { statement, .. } => allowed(statement),
        S::Query(_)
        | S::ExplainTable { .. }
        | S::Set(_)
        | S::Reset { .. }
        | S::ShowFunctions { .. }
        | S::ShowVariable { .. }
        | S::ShowVariables { .. }
        | S::ShowStatus { .. }
        | S::ShowCreate { .. }
        | S::ShowColumns { .. }
        | S::ShowCatalogs { .. }
        | S::ShowDatabases { .. }
        | S::ShowSchemas { .. }
        | S::ShowTables { .. }
        | S::ShowViews { .. }
        | S::ShowObjects { .. }
        | S::ShowCollation { .. }
        | S::ShowCharset { .. }
        | S::StartTransaction { .. }
        | S::Commit { .. }
        | S::Rollback { .. }
        | S::Savepoint { .. }
        | S::ReleaseSavepoint { .. }
        | S::Declare { .. }
        | S::Fetch { .. }
        | S::Close { .. }
        | S::Deallocate { .. }
        | S::Discard { .. }
        | S::Execute { .. } => true,
        _ => false,
    }
}

/// A `SET` of the engine's own settings, which every connection shares.
fn engine_setting(statement: &Statement) -> bool {
    matches!(statement, Statement::Set(_))
        && statement.to_string().to_lowercase().contains("datafusion.")
}

/// The answer to a savepoint statement, which changes nothing on a read-only server.
fn savepoint_tag(statement: &Statement) -> Option<&'static str> {
    match statement {
        Statement::Savepoint { .. } => Some("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Some("RELEASE"),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Some("ROLLBACK"),
        _ => None,
    }
}

fn check(statement: &Statement) -> Option<PgWireResult<Response>> {
    if let Some(tag) = savepoint_tag(statement) {
        return Some(Ok(Response::Execution(Tag::new(tag))));
    }
    if engine_setting(statement) {
        return Some(Err(PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "42501".into(),
            "the engine's settings (datafusion.*) are shared by every connection and set when the server starts (see medallion serve --help)".into(),
        )))));
    }
    (!allowed(statement)).then(|| Err(refuse(statement)))
}

fn refuse(statement: &Statement) -> PgWireError {
    let text = statement.to_string();
    // The statement's kind (`INSERT`, `CREATE TABLE`), not its names.
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("").to_uppercase();
    let verb = match (first.as_str(), words.next()) {
        ("CREATE" | "DROP" | "ALTER", Some(what)) => format!("{first} {}", what.to_uppercase()),
        _ => first,
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "25006".into(),
        format!(
            "cannot execute {verb}: medallion serve is read-only (the lake's tables change only through pipeline runs)"
        ),
    )))
}

#[async_trait]
impl QueryHook for ReadOnly {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        check(statement)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match check(statement)? {
            Err(e) => Some(Err(e)),
            // Answered at execution; the plan only has to exist.
            Ok(_) => Some(Ok(LogicalPlan::EmptyRelation(
                medallion_core::datafusion::logical_expr::EmptyRelation {
                    produce_one_row: false,
                    schema: Arc::new(medallion_core::datafusion::common::DFSchema::empty()),
                },
            ))),
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        check(statement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medallion_core::datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use medallion_core::datafusion::sql::sqlparser::parser::Parser;

    fn first(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn reads_pass_and_everything_that_writes_is_refused() {
        for sql in [
            "SELECT 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "EXPLAIN SELECT 1",
            "SHOW search_path",
            "SET application_name = 'x'",
            "BEGIN",
            "COMMIT",
            "DECLARE c CURSOR FOR SELECT 1",
        ] {
            assert!(allowed(&first(sql)), "{sql}");
        }
        for sql in [
            "INSERT INTO gold.t VALUES (1)",
            "UPDATE gold.t SET a = 1",
            "DELETE FROM gold.t",
            "CREATE TABLE x (a int)",
            "CREATE VIEW v AS SELECT 1",
            "DROP TABLE gold.t",
            "TRUNCATE gold.t",
            "ALTER TABLE gold.t ADD COLUMN b int",
            "COPY gold.t FROM '/etc/passwd'",
            "EXPLAIN ANALYZE DELETE FROM gold.t",
            "PREPARE p AS DELETE FROM gold.t",
            "GRANT SELECT ON gold.t TO x",
        ] {
            let s = first(sql);
            assert!(!allowed(&s), "{sql}");
            let PgWireError::UserError(info) = refuse(&s) else {
                panic!("not a user error")
            };
            assert_eq!(info.code, "25006", "{sql}");
        }
        for sql in [
            "SAVEPOINT s1",
            "RELEASE SAVEPOINT s1",
            "ROLLBACK TO SAVEPOINT s1",
        ] {
            assert!(matches!(check(&first(sql)), Some(Ok(_))), "{sql}");
        }
        for sql in [
            "SET datafusion.runtime.memory_limit = '1G'",
            "SET datafusion.catalog.default_schema = 'gold'",
        ] {
            assert!(matches!(check(&first(sql)), Some(Err(_))), "{sql}");
        }
        assert!(check(&first("SET application_name = 'bi'")).is_none());
    }
}
