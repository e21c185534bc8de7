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
//! - a gold table whose SQL is a `GROUP BY` of such rows with only `sum`, `count`, `min` and
//!   `max` in its output ([`aggregate_merge`]) aggregates the new rows alone and merges them
//!   into its rows by group key: only its files holding one of those keys are rewritten, each
//!   group re-aggregated from its old row and its new one (counts and sums add up);
//! - anything else (other aggregates, windows, DISTINCT, LIMIT, HAVING, several moved inputs,
//!   an input compacted or rewritten, a changed definition, apply_changes) is recomputed in
//!   full.
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

/// How an aggregate table's columns combine an old row of a group with a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateMerge {
    /// The output columns that hold the group keys (every key is one).
    pub keys: Vec<String>,
    /// The other output columns, each with the aggregate that re-combines two partial
    /// results: `sum` for sums and counts, `min`, `max`.
    pub combine: Vec<(String, &'static str)>,
}

/// What an output column of an aggregate plan is.
#[derive(Debug, Clone)]
enum Role {
    Key(usize),
    Combine(&'static str),
    /// Not mergeable, and why.
    Other(String),
}

/// Whether `plan` is a `GROUP BY` over rows that come one by one from `table`, whose output
/// columns are the group keys and sums, counts, minimums and maximums only: then the result
/// for old plus new rows is, per group, those partial results re-aggregated. Otherwise why not.
pub fn aggregate_merge(plan: &LogicalPlan, table: &str) -> Result<AggregateMerge, String> {
    let (roles, groups) = roles(plan, table)?;
    let mut merge = AggregateMerge {
        keys: Vec::new(),
        combine: Vec::new(),
    };
    let mut seen = vec![false; groups];
    for (field, role) in plan.schema().fields().iter().zip(roles) {
        match role {
            Role::Key(i) => {
                seen[i] = true;
                merge.keys.push(field.name().clone());
            }
            Role::Combine(f) => merge.combine.push((field.name().clone(), f)),
            Role::Other(why) => return Err(format!("its column `{}` {why}", field.name())),
        }
    }
    if groups == 0 {
        return Err("it aggregates without GROUP BY".into());
    }
    if seen.iter().any(|s| !s) {
        return Err("a GROUP BY key is not among its columns".into());
    }
    Ok(merge)
}

/// The role of each output column of `plan`, and how many group keys its aggregate has.
fn roles(plan: &LogicalPlan, table: &str) -> Result<(Vec<Role>, usize), String> {
    match plan {
        LogicalPlan::Sort(s) if s.fetch.is_none() => roles(&s.input, table),
        LogicalPlan::SubqueryAlias(a) => roles(&a.input, table),
        LogicalPlan::Projection(p) => {
            let (below, groups) = roles(&p.input, table)?;
            let out = p
                .expr
                .iter()
                .map(|e| match e.clone().unalias_nested().data {
                    Expr::Column(c) => match p.input.schema().index_of_column(&c) {
                        Ok(i) => below[i].clone(),
                        Err(_) => Role::Other("is not a column of the aggregate".into()),
                    },
                    // The SQL planner repeats an aggregate's expression above it; it is that
                    // aggregate's output column, found by its name.
                    other => match p
                        .input
                        .schema()
                        .fields()
                        .iter()
                        .position(|f| *f.name() == other.schema_name().to_string())
                    {
                        Some(i) => below[i].clone(),
                        None => Role::Other(format!(
                        "is computed from aggregates ({}), which cannot be merged by key; keep the aggregates as columns and compute it in a view or a later table",
                        other
                    )),
                    },
                })
                .collect();
            Ok((out, groups))
        }
        LogicalPlan::Aggregate(a) => {
            if !per_row_over(&a.input, table) {
                return Err(format!("what it aggregates is not row by row over {table}"));
            }
            if a.group_expr
                .iter()
                .any(|g| matches!(g, Expr::GroupingSet(_)))
            {
                return Err("it groups by GROUPING SETS, CUBE or ROLLUP".into());
            }
            let mut out: Vec<Role> = (0..a.group_expr.len()).map(Role::Key).collect();
            out.extend(a.aggr_expr.iter().map(|e| match e.clone().unalias() {
                Expr::AggregateFunction(f) => {
                    let name = f.func.name().to_ascii_lowercase();
                    match (name.as_str(), f.params.distinct) {
                        ("sum" | "count", false) => Role::Combine("sum"),
                        ("min", _) => Role::Combine("min"),
                        ("max", _) => Role::Combine("max"),
                        (_, true) => Role::Other(format!(
                            "is {name}(DISTINCT …), which cannot be merged from partial results"
                        )),
                        _ => Role::Other(format!(
                            "is {name}(…), which cannot be merged from partial results (sum, count, min and max can)"
                        )),
                    }
                }
                other => Role::Other(format!("is not an aggregate ({})", other)),
            }));
            Ok((out, a.group_expr.len()))
        }
        LogicalPlan::Filter(_) => Err("it filters after aggregating (HAVING)".into()),
        other => Err(format!(
            "it is not a GROUP BY (found {})",
            other.display().to_string().split(':').next().unwrap_or("?")
        )),
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

    #[test]
    fn aggregates_that_merge_by_group_key_are_told_apart() {
        futures::executor::block_on(async {
            let merge = aggregate_merge(
                &plan("SELECT r.id AS k, count(*) AS n, sum(r.v) AS s, min(d.v) lo, max(r.v) FROM raw r JOIN dim d ON r.id = d.id GROUP BY r.id ORDER BY k").await,
                "raw",
            )
            .unwrap();
            assert_eq!(merge.keys, ["k"]);
            let fs: Vec<&str> = merge.combine.iter().map(|(_, f)| *f).collect();
            assert_eq!(fs, ["sum", "sum", "min", "max"]);
            for (sql, why) in [
                ("SELECT id, avg(v) FROM raw GROUP BY id", "avg"),
                (
                    "SELECT id, count(DISTINCT v) FROM raw GROUP BY id",
                    "DISTINCT",
                ),
                (
                    "SELECT id, sum(v) / count(*) AS m FROM raw GROUP BY id",
                    "computed",
                ),
                ("SELECT sum(v) FROM raw GROUP BY id", "GROUP BY key"),
                ("SELECT count(*) FROM raw", "without GROUP BY"),
                (
                    "SELECT id, sum(v) FROM raw GROUP BY id HAVING sum(v) > 1",
                    "HAVING",
                ),
                (
                    "SELECT id, sum(v) FROM raw GROUP BY id LIMIT 3",
                    "not a GROUP BY",
                ),
                (
                    "SELECT d.id, count(*) FROM dim d LEFT JOIN raw r ON r.id = d.id GROUP BY d.id",
                    "row by row",
                ),
                ("SELECT id, v FROM raw ORDER BY v", "not a GROUP BY"),
            ] {
                let err = aggregate_merge(&plan(sql).await, "raw").unwrap_err();
                assert!(err.contains(why), "{sql}: {err}");
            }
        });
    }
}
