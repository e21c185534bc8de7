//! Table dependencies, read from each table's SQL rather than from the order of the spec, and
//! the order to build tables in.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::spec::{Layer, PipelineSpec};

/// The tables of a spec in an order where every table comes after the ones it reads.
#[derive(Debug, Clone)]
pub struct Dag {
    /// Tables in build order.
    pub order: Vec<String>,
    /// What each table reads.
    pub inputs: BTreeMap<String, BTreeSet<String>>,
}

impl Dag {
    /// Tables grouped by depth: every table of a group reads only tables of earlier groups,
    /// so tables within a group can be built independently.
    pub fn levels(&self) -> Vec<Vec<String>> {
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &self.order {
            let d = self.inputs[t]
                .iter()
                .map(|i| depth[i.as_str()] + 1)
                .max()
                .unwrap_or(0);
            depth.insert(t, d);
        }
        let mut levels: Vec<Vec<String>> = Vec::new();
        for t in &self.order {
            let d = depth[t.as_str()];
            if levels.len() <= d {
                levels.resize(d + 1, Vec::new());
            }
            levels[d].push(t.clone());
        }
        levels
    }
}

/// The tables a SQL query reads, by bare name (CTEs excluded).
pub fn referenced_tables(ctx: &SessionContext, table: &str, sql: &str) -> Result<Vec<String>> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state
        .sql_to_statement(sql, &dialect)
        .map_err(|e| Error::Table {
            table: table.to_string(),
            message: format!("its SQL does not parse: {e}"),
        })?;
    let refs = state
        .resolve_table_references(&statement)
        .map_err(|e| Error::Table {
            table: table.to_string(),
            message: format!("cannot resolve its table references: {e}"),
        })?;
    Ok(refs.iter().map(|r| r.table().to_string()).collect())
}

/// Orders the tables of a spec. Errors name an unknown table and who reads it, a table that
/// reads from a later layer, or the tables of a cycle.
pub fn plan(spec: &PipelineSpec) -> Result<Dag> {
    let ctx = SessionContext::new();
    let mut inputs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in spec.bronze.keys() {
        inputs.insert(name.clone(), BTreeSet::new());
    }
    let sql_tables = spec
        .silver
        .iter()
        .map(|(n, t)| (n, Layer::Silver, &t.sql))
        .chain(spec.gold.iter().map(|(n, t)| (n, Layer::Gold, &t.sql)));
    for (name, layer, sql) in sql_tables {
        let mut reads = BTreeSet::new();
        for r in referenced_tables(&ctx, name, sql)? {
            let Some(their_layer) = spec.layer_of(&r) else {
                let known: Vec<&str> = spec.tables().map(|(t, _)| t).collect();
                return Err(Error::Table {
                    table: name.clone(),
                    message: format!(
                        "reads unknown table `{r}`; the spec defines: {}",
                        known.join(", ")
                    ),
                });
            };
            if their_layer > layer {
                return Err(Error::Table {
                    table: name.clone(),
                    message: format!(
                        "{layer} table reads {their_layer} table `{r}`; a layer reads only from its own or earlier layers"
                    ),
                });
            }
            reads.insert(r);
        }
        inputs.insert(name.clone(), reads);
    }
    let order = topological_order(&inputs)?;
    Ok(Dag { order, inputs })
}

fn topological_order(inputs: &BTreeMap<String, BTreeSet<String>>) -> Result<Vec<String>> {
    let mut order = Vec::with_capacity(inputs.len());
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while order.len() < inputs.len() {
        let ready: Vec<&String> = inputs
            .iter()
            .filter(|(t, reads)| {
                !done.contains(t.as_str()) && reads.iter().all(|r| done.contains(r.as_str()))
            })
            .map(|(t, _)| t)
            .collect();
        if ready.is_empty() {
            return Err(Error::Spec(format!(
                "tables depend on each other in a cycle: {}",
                find_cycle(inputs, &done).join(" → ")
            )));
        }
        for t in ready {
            done.insert(t);
            order.push(t.clone());
        }
    }
    Ok(order)
}

/// Follows unbuilt inputs from some unbuilt table until a table repeats.
fn find_cycle(inputs: &BTreeMap<String, BTreeSet<String>>, done: &BTreeSet<&str>) -> Vec<String> {
    let Some(start) = inputs.keys().find(|t| !done.contains(t.as_str())) else {
        return Vec::new();
    };
    let mut path = vec![start.clone()];
    loop {
        let last = &path[path.len() - 1];
        let Some(next) = inputs[last].iter().find(|r| !done.contains(r.as_str())) else {
            return path;
        };
        if let Some(pos) = path.iter().position(|p| p == next) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(next.clone());
            return cycle;
        }
        path.push(next.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> PipelineSpec {
        PipelineSpec::from_toml(text).unwrap()
    }

    #[test]
    fn order_follows_sql_not_file_order() {
        let dag = plan(&spec(
            r#"
            [gold.g]
            sql = "SELECT count(*) FROM s2"
            [silver.s2]
            sql = "WITH x AS (SELECT * FROM s1) SELECT * FROM x"
            [silver.s1]
            sql = "SELECT * FROM raw"
            [bronze.raw]
            path = "a.csv"
            "#,
        ))
        .unwrap();
        assert_eq!(dag.order, vec!["raw", "s1", "s2", "g"]);
        assert_eq!(dag.levels().len(), 4);
    }

    #[test]
    fn a_cycle_is_named() {
        let err = plan(&spec(
            r#"
            [silver.a]
            sql = "SELECT * FROM b"
            [silver.b]
            sql = "SELECT * FROM a"
            "#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("a → b → a"), "{err}");
    }

    #[test]
    fn an_unknown_table_is_named() {
        let err = plan(&spec(
            r#"
            [silver.a]
            sql = "SELECT * FROM nope"
            "#,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("table `a`") && err.contains("unknown table `nope`"),
            "{err}"
        );
    }

    #[test]
    fn silver_may_not_read_gold() {
        let err = plan(&spec(
            r#"
            [silver.a]
            sql = "SELECT * FROM g"
            [gold.g]
            sql = "SELECT 1 AS one"
            "#,
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("silver table reads gold table `g`"), "{err}");
    }
}
