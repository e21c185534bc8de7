//! Properties over generated inputs (proptest): file statistics bound every value exactly,
//! range coalescing covers exactly what was asked within the gap, and dedupe keeps, per key,
//! the row a plain reference implementation picks (greatest order value, ties broken by the
//! other columns ascending, NULLs last).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use medallion_core::arrow::array::{Array, Decimal128Array, Int64Array, RecordBatch, StringArray};
use medallion_core::arrow::datatypes::{DataType, Field, Schema};
use medallion_core::bridge::parquet_reader::coalesce_ranges;
use medallion_core::delta::file_stats;
use medallion_core::query::{new_context, EngineOptions};
use medallion_core::spec::PipelineSpec;
use proptest::prelude::*;

/// A decimal JSON number (`-12.5`) as a scaled integer at `scale`.
fn scaled(text: &str, scale: u32) -> i128 {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut frac = frac.to_string();
    while frac.len() < scale as usize {
        frac.push('0');
    }
    let v: i128 = format!("{int}{frac}").parse().unwrap();
    if neg {
        -v
    } else {
        v
    }
}

/// The raw text of `minValues`/`maxValues` entry `col` in a stats string.
fn raw_bound<'a>(stats: &'a str, which: &str, col: &str) -> Option<&'a str> {
    let section = &stats[stats.find(&format!("\"{which}\":"))?..];
    // Generated strings hold no braces, so the section ends at the first `}`.
    let section = &section[..section.find('}')?];
    let at = section.find(&format!("\"{col}\":"))? + col.len() + 3;
    let rest = &section[at..];
    let end = rest.find(',').unwrap_or(rest.len());
    Some(&rest[..end])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn statistics_bound_every_value_exactly(
        chunks in prop::collection::vec(
            prop::collection::vec((any::<Option<i64>>(), any::<Option<i64>>(), "[a-z]{0,6}"), 1..20),
            1..4,
        )
    ) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("d", DataType::Decimal128(38, 4), true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batches: Vec<RecordBatch> = chunks.iter().map(|rows| {
            RecordBatch::try_new(schema.clone(), vec![
                Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Decimal128Array::from(rows.iter().map(|r| r.1.map(|v| v as i128 * 1000 + 7)).collect::<Vec<_>>())
                    .with_precision_and_scale(38, 4).unwrap()),
                Arc::new(StringArray::from(rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>())),
            ]).unwrap()
        }).collect();
        let stats = file_stats(&batches);
        let all: Vec<&(Option<i64>, Option<i64>, String)> = chunks.iter().flatten().collect();
        let ints: Vec<i64> = all.iter().filter_map(|r| r.0).collect();
        match (ints.iter().min(), ints.iter().max()) {
            (Some(lo), Some(hi)) => {
                let (lo, hi) = (lo.to_string(), hi.to_string());
                prop_assert_eq!(raw_bound(&stats, "minValues", "i"), Some(lo.as_str()));
                prop_assert_eq!(raw_bound(&stats, "maxValues", "i"), Some(hi.as_str()));
            }
            _ => prop_assert!(raw_bound(&stats, "minValues", "i").is_none(), "{}", stats),
        }
        let decs: Vec<i128> = all.iter().filter_map(|r| r.1.map(|v| v as i128 * 1000 + 7)).collect();
        if let (Some(lo), Some(hi)) = (decs.iter().min(), decs.iter().max()) {
            let got_lo = scaled(raw_bound(&stats, "minValues", "d").unwrap(), 4);
            let got_hi = scaled(raw_bound(&stats, "maxValues", "d").unwrap(), 4);
            prop_assert_eq!((got_lo, got_hi), (*lo, *hi), "{}", stats);
        }
        let nulls = all.iter().filter(|r| r.0.is_none()).count();
        let nulls = nulls.to_string();
        prop_assert_eq!(raw_bound(&stats, "nullCount", "i"), Some(nulls.as_str()));
        let strings: Vec<&str> = all.iter().map(|r| r.2.as_str()).collect();
        let lo = strings.iter().min().unwrap();
        let lo = format!("\"{lo}\"");
        prop_assert_eq!(raw_bound(&stats, "minValues", "s"), Some(lo.as_str()));
    }

    #[test]
    fn coalescing_covers_exactly_the_ranges_within_the_gap(
        ranges in prop::collection::vec((0u64..10_000, 0u64..500), 0..30),
        gap in 0u64..2_000,
    ) {
        let ranges: Vec<Range<u64>> = ranges.into_iter().map(|(s, l)| s..s + l).collect();
        let merged = coalesce_ranges(&ranges, gap);
        // Sorted, disjoint, separated by more than the gap.
        for w in merged.windows(2) {
            prop_assert!(w[0].end + gap < w[1].start, "{:?}", merged);
        }
        // Every non-empty range asked for is inside one merged range.
        for r in ranges.iter().filter(|r| r.start < r.end) {
            prop_assert!(merged.iter().any(|m| m.start <= r.start && r.end <= m.end), "{:?} not in {:?}", r, merged);
        }
        // Every merged range starts and ends at an asked-for boundary (nothing invented).
        for m in &merged {
            prop_assert!(ranges.iter().any(|r| r.start == m.start));
            prop_assert!(ranges.iter().any(|r| r.end == m.end));
        }
    }

    #[test]
    fn dedupe_keeps_the_reference_row_per_key(
        rows in prop::collection::vec((0i64..5, prop::option::of(0i64..4), prop::option::of("[ab]{1,2}")), 1..40),
    ) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("ord", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(schema.clone(), vec![
            Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>())),
        ]).unwrap();
        let spec = PipelineSpec::from_toml(
            "[bronze.x]\npath = \"x.csv\"\n[silver.t]\nsql = \"SELECT * FROM x\"\ndedupe = { key = [\"k\"], order_by = \"ord\" }\n",
        ).unwrap();
        let ctx = new_context(EngineOptions::default());
        let cleaned = futures::executor::block_on(
            medallion_core::quality::clean(&ctx, "t", &spec.silver["t"], schema, vec![batch]),
        ).unwrap();
        let mut got: Vec<(i64, Option<i64>, Option<String>)> = Vec::new();
        for b in &cleaned.batches {
            let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let o = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            let v = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                got.push((k.value(i), o.is_valid(i).then(|| o.value(i)), v.is_valid(i).then(|| v.value(i).to_string())));
            }
        }
        got.sort();
        // Reference: greatest `ord` (NULL lowest), then smallest `v` (NULL last).
        let mut best: BTreeMap<i64, (Option<i64>, Option<String>)> = BTreeMap::new();
        let better = |a: &(Option<i64>, Option<String>), b: &(Option<i64>, Option<String>)| {
            let ord_a = a.0.map(|x| x + 1).unwrap_or(0);
            let ord_b = b.0.map(|x| x + 1).unwrap_or(0);
            if ord_a != ord_b {
                return ord_a > ord_b;
            }
            match (&a.1, &b.1) {
                (Some(x), Some(y)) => x < y,
                (Some(_), None) => true,
                _ => false,
            }
        };
        for r in &rows {
            let cand = (r.1, r.2.clone());
            match best.get(&r.0) {
                Some(cur) if !better(&cand, cur) => {}
                _ => { best.insert(r.0, cand); }
            }
        }
        let expected: Vec<(i64, Option<i64>, Option<String>)> =
            best.into_iter().map(|(k, (o, v))| (k, o, v)).collect();
        prop_assert_eq!(got, expected);
    }
}
