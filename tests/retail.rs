//! The retail demo end to end: the generated dirt is caught where it should be, the three
//! gold tables are built, one partition (what browsers and wasm guests use) gives the same
//! answers as several, and a new day of data flows through incrementally.

use std::path::Path;

use medallion_host::retail_data::RetailData;
use medallion_tests::{rows, run_spec};

const SPEC: &str = include_str!("../examples/retail/pipeline.toml");
const GOLD: [&str; 3] = [
    "sales_by_region_day",
    "customer_segments",
    "low_stock_alerts",
];

async fn gold(lake: &Path) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for t in GOLD {
        out.push(rows(&lake.join("gold").join(t), "SELECT * FROM t").await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retail_demo_builds_gold_identically_with_one_or_many_partitions() {
    let dir = tempfile::tempdir().unwrap();
    RetailData {
        scale: 0.2,
        seed: 7,
    }
    .write_initial(&dir.path().join("data"), 2)
    .unwrap();

    let one = dir.path().join("lake1");
    let report = run_spec(SPEC, dir.path(), &one, 1).await.unwrap();
    let t = |name: &str| {
        report
            .tables
            .iter()
            .find(|t| t.table == name)
            .unwrap()
            .clone()
    };

    // Dirt in the generated data is caught where the spec says.
    assert!(
        t("orders_raw").quarantined > 0,
        "malformed order lines are rescued"
    );
    assert!(
        t("customers_raw").quarantined > 0,
        "short CSV rows are rescued"
    );
    assert!(
        t("orders").deduplicated > 0,
        "late updates collapse to one order"
    );
    assert!(
        t("orders").dropped > 0,
        "orders of unknown customers are dropped"
    );
    assert!(
        t("order_lines").dropped > 0,
        "non-positive quantities are dropped"
    );
    assert!(t("clicks").deduplicated > 0, "duplicate events collapse");
    for g in GOLD {
        assert!(t(g).rows_out > 0, "{g} is empty");
    }

    // Gold agrees with silver: revenue per region equals the sum over order lines.
    let by_region = rows(
        &one.join("gold/sales_by_region_day"),
        "SELECT region, round(sum(revenue), 0) FROM t GROUP BY region",
    )
    .await;
    let lines = rows(
        &one.join("silver/order_lines"),
        "SELECT region, round(sum(amount), 0) FROM t WHERE status <> 'cancelled' GROUP BY region",
    )
    .await;
    assert_eq!(by_region, lines);
    // No silver order line has a non-positive quantity; every alert is really below its level.
    assert_eq!(
        rows(
            &one.join("silver/order_lines"),
            "SELECT count(*) FROM t WHERE quantity <= 0"
        )
        .await,
        vec!["0"]
    );
    assert_eq!(
        rows(
            &one.join("gold/low_stock_alerts"),
            "SELECT count(*) FROM t WHERE on_hand >= reorder_level"
        )
        .await,
        vec!["0"]
    );

    let many = dir.path().join("lake4");
    run_spec(SPEC, dir.path(), &many, 4).await.unwrap();
    assert_eq!(
        gold(&one).await,
        gold(&many).await,
        "1 partition and 4 partitions agree"
    );

    // A new day arrives: only its files are ingested, and gold moves.
    let before = gold(&one).await;
    RetailData {
        scale: 0.2,
        seed: 7,
    }
    .write_batch(&dir.path().join("data"), 2)
    .unwrap();
    let next = run_spec(SPEC, dir.path(), &one, 1).await.unwrap();
    let orders = next
        .tables
        .iter()
        .find(|t| t.table == "orders_raw")
        .unwrap();
    assert_eq!((orders.files_ingested, orders.files_skipped), (1, 2));
    assert_ne!(gold(&one).await[0], before[0], "sales include the new day");
}
