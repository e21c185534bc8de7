//! How a silver or gold table takes in its inputs' new rows: what can be computed from the new
//! rows alone, and what needs the whole input again.
//!
//! A derived table records the versions of its inputs it was built from (table property
//! [`INPUTS_KEY`]) and a hash of its definition ([`DEFINITION_KEY`]). When exactly one input
//! moved since, only by appending files, and the table's SQL produces each output row from one
//! row of that input ([`per_row_over`]: projections, filters, inner/outer joins that keep that
//! input's side, unions whose every branch reads it), the new output rows are the SQL over the new files alone. Then:
//! - a table without `dedupe` or `apply_changes` appends them;
//! - a `dedupe` table merges them by key: only its files holding one of their keys are
//!   rewritten (deduplicated with them), the other files stay;
//! - anything else (aggregates, windows, DISTINCT, LIMIT, several moved inputs, an input
//!   compacted or rewritten, a changed definition, scd 2) is recomputed in full.
//!
//! The run report says which each table got, and why ([`crate::report::TableReport::refresh`]).

use std::collections::BTreeMap;

use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};

/// Table property: the versions of the inputs a derived table was last built from, as JSON.
pub const INPUTS_KEY: &str = "medallion.inputs";
/// Table property: a hash of the table's definition alone (its spec entry).
pub const DEFINITION_KEY: &str = "medallion.definition";

/// The input versions a table recorded, if it recorded them.
pub fn recorded_inputs(text: Option<&str>) -> Option<BTreeMap<String, u64>> {
    serde_json::from_str(text?).ok()
}

/// Whether every row `plan` produces comes from one row of `table` (with other tables only
/// looked up), so that the rows for new rows of `table` are the plan over the new rows alone.
/// Conservative: anything not known to be row by row is not.
pub fn per_row_over(plan: &LogicalPlan, table: &str) -> bool {
    if !mentions(plan, table) {
        return true;
    }
    if plan.expressions().iter().any(has_subquery) {
        return false;
    }
    match plan {
        LogicalPlan::TableScan(_) => true,
        LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
            plan.inputs().iter().all(|i| per_row_over(i, table))
        }
        LogicalPlan::Sort(s) => s.fetch.is_none() && per_row_over(&s.input, table),
        // Every branch must read the table: a branch that does not would give all of its
        // rows again with each batch.
        LogicalPlan::Union(u) => u
            .inputs
            .iter()
            .all(|i| mentions(i, table) && per_row_over(i, table)),
        LogicalPlan::Join(j) => {
            let (left, right) = (mentions(&j.left, table), mentions(&j.right, table));
            match (left, right) {
                (true, true) => false,
                (true, false) => {
                    matches!(
                        j.join_type,
                        JoinType::Inner | JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti
                    ) && per_row_over(&j.left, table)
                }
                (false, true) => {
                    matches!(
                        j.join_type,
                        JoinType::Inner
                            | JoinType::Right
                            | JoinType::RightSemi
                            | JoinType::RightAnti
                    ) && per_row_over(&j.right, table)
                }
                (false, false) => true,
            }
        }
        _ => false,
    }
}

/// Whether `plan` reads `table` (or may, through a subquery).
fn mentions(plan: &LogicalPlan, table: &str) -> bool {
    if let LogicalPlan::TableScan(s) = plan {
        if s.table_name.table() == table {
            return true;
        }
    }
    plan.expressions().iter().any(has_subquery) || plan.inputs().iter().any(|i| mentions(i, table))
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;
    use std::sync::Arc;

    async fn plan(sql: &str) -> LogicalPlan {
        let ctx = SessionContext::new();
        for t in ["raw", "dim"] {
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("v", DataType::Int64, true),
            ]));
            ctx.register_table(
                t,
                Arc::new(MemTable::try_new(schema, vec![vec![]]).unwrap()),
            )
            .unwrap();
        }
        ctx.state().create_logical_plan(sql).await.unwrap()
    }

    #[test]
    fn row_by_row_plans_are_told_apart() {
        futures::executor::block_on(async {
            for (sql, want) in [
                ("SELECT id, v * 2 AS w FROM raw WHERE v > 0", true),
                (
                    "SELECT r.id, d.v FROM raw r LEFT JOIN dim d ON r.id = d.id",
                    true,
                ),
                (
                    "SELECT r.id, d.v FROM dim d RIGHT JOIN raw r ON r.id = d.id",
                    true,
                ),
                (
                    "SELECT r.id FROM raw r JOIN dim d ON r.id = d.id ORDER BY r.id",
                    true,
                ),
                (
                    "SELECT id FROM raw UNION ALL SELECT id FROM raw WHERE v > 1",
                    true,
                ),
                ("SELECT id FROM raw UNION ALL SELECT id FROM dim", false),
                (
                    "SELECT r.id, d.v FROM dim d LEFT JOIN raw r ON r.id = d.id",
                    false,
                ),
                (
                    "SELECT r.id FROM raw r FULL JOIN dim d ON r.id = d.id",
                    false,
                ),
                ("SELECT id, count(*) FROM raw GROUP BY id", false),
                ("SELECT DISTINCT id FROM raw", false),
                ("SELECT id FROM raw LIMIT 3", false),
                ("SELECT id, row_number() OVER (ORDER BY v) FROM raw", false),
                ("SELECT a.id FROM raw a JOIN raw b ON a.id = b.id", false),
                (
                    "SELECT id FROM raw WHERE v > (SELECT avg(v) FROM raw)",
                    false,
                ),
                ("SELECT id FROM dim", true),
            ] {
                assert_eq!(per_row_over(&plan(sql).await, "raw"), want, "{sql}");
            }
        });
    }
}
