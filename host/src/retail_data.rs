//! The retail demo's source data: the extracts a small web shop's OLTP database would hand
//! to a lakehouse, one batch per day starting 2026-01-01.
//!
//! The data is deliberately dirty, because a medallion pipeline fed clean data proves
//! nothing. Each kind of dirt is what a real extract job produces, and each exists to
//! exercise one part of the pipeline:
//!
//! - **Malformed records** — CSV rows with the wrong number of fields (an unquoted comma in a
//!   name, a row cut short) and NDJSON lines truncated mid-object (an extract re-sent a record
//!   and was cut off). Bronze must quarantine them instead of failing the load.
//! - **Duplicates** — exact duplicate order, order-item and click lines (at-least-once
//!   delivery), and customers exported twice with a later `updated_at` that changes the region
//!   or email. Silver must deduplicate, keeping the latest version.
//! - **Late updates** — the same `order_id` again with a later `updated_at` and a status
//!   further along its lifecycle, some in the same file and some in a *later* batch's file.
//!   Silver must keep the latest version even across incremental runs.
//! - **Broken references and impossible values** — orders with a null or unknown
//!   `customer_id`, items with an unknown `product_id` or a zero or negative quantity, empty
//!   emails, negative `on_hand`. These are what silver expectations (warn / drop / fail)
//!   are for.
//! - **Low stock** — about 8% of products sit below their reorder level in every inventory
//!   snapshot, so the gold `low_stock_alerts` table is never empty.
//!
//! Everything is derived from `seed` through independent ChaCha streams, one per
//! (file kind, batch), so a batch's files are byte-identical whether written by
//! [`RetailData::write_initial`] or later by [`RetailData::write_batch`], and a later batch
//! can recompute an earlier batch's orders (to update them) without reading any file.
//! The minimum counts of each kind of dirt are at least one, so even tiny scales are dirty.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use medallion_core::arrow::array::{ArrayRef, Date32Array, Int64Array, StringArray};
use medallion_core::arrow::datatypes::{DataType, Field, Schema};
use medallion_core::arrow::record_batch::RecordBatch;
use medallion_core::parquet::arrow::ArrowWriter;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Generator settings: `scale` multiplies every row count (1.0 ≈ 2000 customers, 300
/// products, 1500 orders and 5000 clicks per batch); `seed` fixes every byte.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetailData {
    pub scale: f64,
    pub seed: u64,
}

/// What a call wrote: every file, in write order, and their total size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generated {
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

impl Generated {
    fn write(&mut self, path: PathBuf, contents: &[u8]) -> io::Result<()> {
        fs::write(&path, contents)?;
        self.bytes += contents.len() as u64;
        self.files.push(path);
        Ok(())
    }

    fn extend(&mut self, other: Generated) {
        self.files.extend(other.files);
        self.bytes += other.bytes;
    }
}

const BASE_CUSTOMERS: f64 = 2000.0;
const BASE_PRODUCTS: f64 = 300.0;
const MIN_PRODUCTS: usize = 50;
const BASE_ORDERS: f64 = 1500.0;
const BASE_CLICKS: f64 = 5000.0;

const SECS_PER_DAY: i64 = 86_400;
/// 2026-01-01 as days since the Unix epoch (Arrow's Date32); batch n is this day + n.
const BASE_DAY: i64 = 20_454;

const REGIONS: [&str; 5] = ["North", "South", "East", "West", "Central"];
const WAREHOUSES: [&str; 3] = ["WH-1", "WH-2", "WH-3"];
const SEGMENTS: [(&str, u32); 3] = [("consumer", 70), ("small_business", 20), ("corporate", 10)];
const CHANNELS: [(&str, u32); 3] = [("web", 55), ("mobile", 35), ("store", 10)];
const EMAIL_DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];

const FIRST_NAMES: [&str; 20] = [
    "Alex", "Maria", "Sam", "Priya", "Chen", "Fatima", "Lukas", "Aisha", "John", "Elena", "Kenji",
    "Olivia", "Mateo", "Zoe", "Noah", "Ines", "Omar", "Hannah", "Diego", "Mei",
];
/// (display name, email form): real exports carry non-ASCII and apostrophes in names, while
/// email local parts stay plain.
const LAST_NAMES: [(&str, &str); 16] = [
    ("Smith", "smith"),
    ("Garcia", "garcia"),
    ("Müller", "mueller"),
    ("Nguyen", "nguyen"),
    ("O'Brien", "obrien"),
    ("Kowalski", "kowalski"),
    ("Núñez", "nunez"),
    ("Okafor", "okafor"),
    ("Tanaka", "tanaka"),
    ("Johansson", "johansson"),
    ("Patel", "patel"),
    ("Rossi", "rossi"),
    ("Dubois", "dubois"),
    ("Cohen", "cohen"),
    ("Silva", "silva"),
    ("Brown", "brown"),
];

/// (category, nouns, price range in cents).
const CATEGORIES: [(&str, [&str; 6], (i64, i64)); 7] = [
    (
        "Electronics",
        [
            "Headphones",
            "Charger",
            "Bluetooth Speaker",
            "Webcam",
            "Keyboard",
            "USB-C Hub",
        ],
        (999, 29_999),
    ),
    (
        "Home",
        [
            "Lamp",
            "Throw Pillow",
            "Storage Box",
            "Wall Clock",
            "Towel Set",
            "Candle",
        ],
        (499, 8_999),
    ),
    (
        "Garden",
        [
            "Hose",
            "Trowel",
            "Planter",
            "Seed Mix",
            "Pruning Shears",
            "Bird Feeder",
        ],
        (299, 6_999),
    ),
    (
        "Toys",
        [
            "Puzzle",
            "Building Blocks",
            "Plush Bear",
            "Board Game",
            "Kite",
            "Toy Car",
        ],
        (399, 5_999),
    ),
    (
        "Books",
        [
            "Cookbook",
            "Novel",
            "Travel Guide",
            "Atlas",
            "Notebook",
            "Comic",
        ],
        (499, 3_999),
    ),
    (
        "Apparel",
        ["T-Shirt", "Hoodie", "Rain Jacket", "Socks", "Cap", "Scarf"],
        (799, 12_999),
    ),
    (
        "Grocery",
        [
            "Coffee Beans",
            "Olive Oil",
            "Green Tea",
            "Granola",
            "Pasta",
            "Dark Chocolate",
        ],
        (149, 2_499),
    ),
];
const ADJECTIVES: [&str; 10] = [
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Essential",
    "Premium",
    "Everyday",
    "Pro",
    "Mini",
    "Organic",
];

/// One ChaCha stream per kind of output. Orders and their dirt are separate streams so a
/// later batch can regenerate an earlier batch's orders without replaying its dirt.
#[derive(Clone, Copy)]
enum Stream {
    Customers = 1,
    Products = 2,
    Orders = 3,
    OrderDirt = 4,
    OrderItems = 5,
    Clicks = 6,
    Inventory = 7,
}

impl RetailData {
    /// Writes the full initial extract (batch 0..batches) under `dir` (creating dirs); skips nothing, overwrites.
    pub fn write_initial(&self, dir: &Path, batches: usize) -> io::Result<Generated> {
        self.check()?;
        fs::create_dir_all(dir)?;
        let mut generated = Generated::default();
        generated.write(dir.join("customers.csv"), self.customers_csv().as_bytes())?;
        generated.write(
            dir.join("products.csv"),
            products_csv(&self.products()).as_bytes(),
        )?;
        for n in 0..batches {
            generated.extend(self.write_batch(dir, n)?);
        }
        Ok(generated)
    }

    /// Writes one more incremental batch `n` (new orders/order_items/clicks files + one inventory snapshot),
    /// including late-arriving updates to orders of earlier batches. Deterministic for (seed, n).
    pub fn write_batch(&self, dir: &Path, n: usize) -> io::Result<Generated> {
        self.check()?;
        let products = self.products();
        let orders = self.base_orders(n);
        let name = |table: &str, ext: &str| -> io::Result<PathBuf> {
            let sub = dir.join(table);
            fs::create_dir_all(&sub)?;
            Ok(sub.join(format!("{table}-{n:04}.{ext}")))
        };
        let mut generated = Generated::default();
        generated.write(
            name("orders", "ndjson")?,
            self.orders_ndjson(n, &orders).as_bytes(),
        )?;
        generated.write(
            name("order_items", "ndjson")?,
            self.order_items_ndjson(n, &orders, &products).as_bytes(),
        )?;
        generated.write(
            name("clicks", "ndjson")?,
            self.clicks_ndjson(n, &products).as_bytes(),
        )?;
        generated.write(
            name("inventory", "parquet")?,
            &self.inventory_parquet(n, &products)?,
        )?;
        Ok(generated)
    }

    fn check(&self) -> io::Result<()> {
        if self.scale.is_finite() && self.scale > 0.0 {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "retail data scale must be a positive number, got {}",
                    self.scale
                ),
            ))
        }
    }

    fn rng(&self, stream: Stream, n: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(((stream as u64) << 32) | n as u64);
        rng
    }

    fn customer_count(&self) -> usize {
        scaled(BASE_CUSTOMERS, self.scale, 1)
    }

    fn orders_per_batch(&self) -> usize {
        scaled(BASE_ORDERS, self.scale, 1)
    }

    fn customers_csv(&self) -> String {
        let mut rng = self.rng(Stream::Customers, 0);
        let count = self.customer_count();
        let first_signup = days_from_civil(2022, 1, 1);
        let last_update = days_from_civil(2025, 11, 30);
        let mut customers: Vec<Customer> = (1..=count as i64)
            .map(|id| {
                let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
                let (last, last_ascii) = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
                // A generational suffix is the classic source of a comma inside a CSV field.
                let name = if rng.random_bool(0.005) {
                    format!("{first} {last}, Jr.")
                } else {
                    format!("{first} {last}")
                };
                let signup_day = rng.random_range(first_signup..=last_update);
                let updated_at =
                    rng.random_range(signup_day * SECS_PER_DAY..(last_update + 1) * SECS_PER_DAY);
                Customer {
                    id,
                    name,
                    email: email(&mut rng, first, last_ascii),
                    region: REGIONS[rng.random_range(0..REGIONS.len())],
                    segment: pick(&mut rng, &SEGMENTS),
                    signup_day,
                    updated_at,
                    first,
                    last,
                    last_ascii,
                }
            })
            .collect();

        for i in sample(&mut rng, count, share(count, 0.01, 1)) {
            customers[i].email.clear();
        }

        // Re-exports after a profile change: taken before the malformed rows are chosen so
        // that a customer whose first row is broken can still be rescued by its update.
        let update_start = days_from_civil(2025, 12, 1) * SECS_PER_DAY;
        let update_end = days_from_civil(2026, 1, 1) * SECS_PER_DAY;
        let mut updates: Vec<Customer> = sample(&mut rng, count, share(count, 0.01, 1))
            .into_iter()
            .map(|i| {
                let mut c = customers[i].clone();
                c.updated_at = rng.random_range(update_start..update_end);
                if rng.random_bool(0.5) {
                    let others: Vec<&str> =
                        REGIONS.iter().copied().filter(|r| *r != c.region).collect();
                    c.region = others[rng.random_range(0..others.len())];
                } else {
                    c.email = email(&mut rng, c.first, c.last_ascii);
                }
                c
            })
            .collect();
        updates.sort_by_key(|c| c.updated_at);

        let mut malformed = vec![None; count];
        for (k, i) in sample(&mut rng, count, share(count, 0.0025, 3))
            .into_iter()
            .enumerate()
        {
            malformed[i] = Some(k % 2);
        }

        let mut out = String::with_capacity((count + 64) * 96);
        out.push_str("customer_id,name,email,region,segment_hint,signup_date,updated_at\n");
        for (i, c) in customers.iter().enumerate() {
            match malformed[i] {
                None => c.write_csv(&mut out),
                // A row cut short: three fields instead of seven.
                Some(0) => {
                    out.push_str(&format!("{},{},{}\n", c.id, csv_field(&c.name), c.email));
                }
                // The same name written "Last, First" without quoting: eight fields.
                Some(_) => out.push_str(&format!(
                    "{},{}, {},{},{},{},{},{}\n",
                    c.id,
                    c.last,
                    c.first,
                    c.email,
                    c.region,
                    c.segment,
                    date_str(c.signup_day),
                    ts_str(c.updated_at)
                )),
            }
        }
        for c in &updates {
            c.write_csv(&mut out);
        }
        out
    }

    fn products(&self) -> Vec<Product> {
        let mut rng = self.rng(Stream::Products, 0);
        (1..=scaled(BASE_PRODUCTS, self.scale, MIN_PRODUCTS) as i64)
            .map(|id| {
                let (category, nouns, (low, high)) =
                    CATEGORIES[rng.random_range(0..CATEGORIES.len())];
                let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
                let noun = nouns[rng.random_range(0..nouns.len())];
                // Shop prices end in .99 or .49 far more often than not.
                let cents = rng.random_range(low..=high) / 100 * 100
                    + if rng.random_bool(0.7) { 99 } else { 49 };
                Product {
                    id,
                    name: format!("{adjective} {noun}"),
                    category,
                    price_cents: cents,
                    reorder_level: rng.random_range(10..=60),
                }
            })
            .collect()
    }

    /// Batch `n`'s orders as first extracted, with their same-day status change if any.
    /// Null and unknown customers are decided here, not with the other dirt, because a
    /// later batch's update of an order must repeat its customer_id.
    fn base_orders(&self, n: usize) -> Vec<Order> {
        let mut rng = self.rng(Stream::Orders, n);
        let per_batch = self.orders_per_batch();
        let customers = self.customer_count() as i64;
        let day_start = (BASE_DAY + n as i64) * SECS_PER_DAY;
        let day_end = day_start + SECS_PER_DAY;
        // Orders stop at 20:00 so that a same-day update still fits in the day.
        let mut times: Vec<i64> = (0..per_batch)
            .map(|_| day_start + rng.random_range(0..72_000))
            .collect();
        times.sort_unstable();
        let first_id = (n * per_batch) as i64 + 1;
        let mut orders: Vec<Order> = times
            .into_iter()
            .enumerate()
            .map(|(i, order_ts)| {
                let channel = pick(&mut rng, &CHANNELS);
                let (status, updated_at) = if channel == "store" {
                    // A till sale is handed over on the spot.
                    (Status::Delivered, order_ts)
                } else {
                    let status = pick(
                        &mut rng,
                        &[
                            (Status::Placed, 40),
                            (Status::Paid, 45),
                            (Status::Shipped, 8),
                            (Status::Cancelled, 7),
                        ],
                    );
                    (status, order_ts + rng.random_range(0..=900))
                };
                Order {
                    id: first_id + i as i64,
                    customer_id: Some(rng.random_range(1..=customers)),
                    order_ts,
                    status,
                    channel,
                    updated_at,
                    same_day_update: None,
                }
            })
            .collect();

        for i in sample(&mut rng, per_batch, share(per_batch, 0.005, 1)) {
            orders[i].customer_id = None;
        }
        for i in sample(&mut rng, per_batch, share(per_batch, 0.005, 1)) {
            orders[i].customer_id = Some(customers + rng.random_range(1..=1000));
        }

        let open: Vec<usize> = (0..per_batch)
            .filter(|&i| !orders[i].status.is_final())
            .collect();
        for j in sample(&mut rng, open.len(), share(per_batch, 0.015, 1)) {
            let order = &mut orders[open[j]];
            let status = order.status.advance(&mut rng);
            let at = rng.random_range(order.updated_at + 60..day_end);
            order.same_day_update = Some((status, at));
        }
        orders
    }

    fn orders_ndjson(&self, n: usize, orders: &[Order]) -> String {
        let mut rng = self.rng(Stream::OrderDirt, n);
        let per_batch = self.orders_per_batch();
        let day_start = (BASE_DAY + n as i64) * SECS_PER_DAY;

        let mut versions: Vec<(i64, String)> = Vec::with_capacity(orders.len() * 11 / 10);
        for o in orders {
            versions.push((o.updated_at, o.json(o.status, o.updated_at)));
            if let Some((status, at)) = o.same_day_update {
                versions.push((at, o.json(status, at)));
            }
        }
        // Orders of the two previous days that moved on today: the late arrivals that an
        // incremental silver run has to merge into rows it wrote yesterday.
        for (back, fraction) in [(1, 0.01), (2, 0.005)] {
            if n < back {
                continue;
            }
            let earlier = self.base_orders(n - back);
            let open: Vec<&Order> = earlier
                .iter()
                .filter(|o| !o.current_status().is_final())
                .collect();
            for j in sample(&mut rng, open.len(), share(per_batch, fraction, 1)) {
                let o = open[j];
                let status = o.current_status().advance(&mut rng);
                let at = day_start + rng.random_range(0..SECS_PER_DAY);
                versions.push((at, o.json(status, at)));
            }
        }
        // The extract reads in change order; the sort is stable so ties keep id order.
        versions.sort_by_key(|(at, _)| *at);
        let lines: Vec<String> = versions.into_iter().map(|(_, line)| line).collect();
        add_line_dirt(&mut rng, lines, 0.02, share(per_batch, 0.003, 2))
    }

    fn order_items_ndjson(&self, n: usize, orders: &[Order], products: &[Product]) -> String {
        let mut rng = self.rng(Stream::OrderItems, n);
        let mut items: Vec<Item> = Vec::with_capacity(orders.len() * 3);
        for o in orders {
            let lines = pick(&mut rng, &[(1, 35), (2, 30), (3, 18), (4, 10), (5, 7)]);
            for line_no in 1..=lines {
                let product = &products[popular_index(&mut rng, products.len())];
                let quantity = pick(&mut rng, &[(1, 60), (2, 25), (3, 10), (4, 3), (6, 2)]);
                // Promotions: the order keeps the price paid, not today's catalogue price.
                let unit_price_cents = if rng.random_bool(0.08) {
                    product.price_cents * 9 / 10
                } else {
                    product.price_cents
                };
                items.push(Item {
                    order_id: o.id,
                    line_no,
                    product_id: product.id,
                    quantity,
                    unit_price_cents,
                });
            }
        }
        let total = items.len();
        for i in sample(&mut rng, total, share(total, 0.01, 1)) {
            items[i].quantity = -rng.random_range(0..=3);
        }
        for i in sample(&mut rng, total, share(total, 0.005, 1)) {
            items[i].product_id = products.len() as i64 + rng.random_range(1..=500);
        }
        let lines = items.iter().map(Item::json).collect();
        add_line_dirt(&mut rng, lines, 0.01, share(total, 0.001, 2))
    }

    fn clicks_ndjson(&self, n: usize, products: &[Product]) -> String {
        let mut rng = self.rng(Stream::Clicks, n);
        let target = scaled(BASE_CLICKS, self.scale, 1);
        let customers = self.customer_count() as i64;
        let day_start = (BASE_DAY + n as i64) * SECS_PER_DAY;
        let mut events: Vec<Click> = Vec::with_capacity(target + 8);
        while events.len() < target {
            let session_id = format!("sess-{:012x}", rng.random::<u64>() >> 16);
            // Most visitors browse without logging in.
            let customer_id = (!rng.random_bool(0.35)).then(|| rng.random_range(1..=customers));
            // Sessions start by 23:00 and last under 40 minutes, so they stay in their day.
            let mut ts = day_start + rng.random_range(0..SECS_PER_DAY - 3_600);
            let mut carted: Option<i64> = None;
            for _ in 0..rng.random_range(1..=8) {
                let (event_type, product_id) = match carted {
                    Some(product) if rng.random_bool(0.3) => ("checkout", product),
                    _ => {
                        let product = products[popular_index(&mut rng, products.len())].id;
                        if rng.random_bool(0.2) {
                            carted = Some(product);
                            ("add_to_cart", product)
                        } else {
                            ("view", product)
                        }
                    }
                };
                events.push(Click {
                    event_id: uuid_like(&mut rng),
                    session_id: session_id.clone(),
                    customer_id,
                    product_id,
                    event_type,
                    ts,
                });
                if event_type == "checkout" {
                    break;
                }
                ts += rng.random_range(5..=300);
            }
        }
        events.truncate(target);
        events.sort_by_key(|e| e.ts);
        let lines = events.iter().map(Click::json).collect();
        add_line_dirt(&mut rng, lines, 0.02, share(target, 0.001, 2))
    }

    fn inventory_parquet(&self, n: usize, products: &[Product]) -> io::Result<Vec<u8>> {
        let mut rng = self.rng(Stream::Inventory, n);
        let mut low = vec![false; products.len()];
        for i in sample(&mut rng, products.len(), share(products.len(), 0.08, 1)) {
            low[i] = true;
        }
        let rows = products.len() * WAREHOUSES.len();
        let mut product_ids = Vec::with_capacity(rows);
        let mut warehouses = Vec::with_capacity(rows);
        let mut on_hand = Vec::with_capacity(rows);
        for (p, is_low) in products.iter().zip(&low) {
            for warehouse in WAREHOUSES {
                product_ids.push(p.id);
                warehouses.push(warehouse);
                // Low stock is low in every warehouse, so the total is below the reorder
                // level too, whichever way gold aggregates.
                on_hand.push(if *is_low {
                    rng.random_range(0..=(p.reorder_level - 1) / 3)
                } else {
                    rng.random_range(p.reorder_level..=p.reorder_level * 5)
                });
            }
        }
        // Shrinkage booked before the goods were: the stock system lets on_hand go negative.
        for i in sample(&mut rng, rows, share(rows, 0.003, 3)) {
            on_hand[i] = -rng.random_range(1..=5);
        }

        let schema = Arc::new(Schema::new(vec![
            Field::new("snapshot_date", DataType::Date32, true),
            Field::new("product_id", DataType::Int64, true),
            Field::new("warehouse", DataType::Utf8, true),
            Field::new("on_hand", DataType::Int64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from(vec![(BASE_DAY + n as i64) as i32; rows])),
            Arc::new(Int64Array::from(product_ids)),
            Arc::new(StringArray::from(warehouses)),
            Arc::new(Int64Array::from(on_hand)),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).map_err(io::Error::other)?;
        let mut buffer = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut buffer, schema, None).map_err(io::Error::other)?;
        writer.write(&batch).map_err(io::Error::other)?;
        writer.close().map_err(io::Error::other)?;
        Ok(buffer)
    }
}

#[derive(Clone)]
struct Customer {
    id: i64,
    name: String,
    email: String,
    region: &'static str,
    segment: &'static str,
    signup_day: i64,
    updated_at: i64,
    first: &'static str,
    last: &'static str,
    last_ascii: &'static str,
}

impl Customer {
    fn write_csv(&self, out: &mut String) {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            self.id,
            csv_field(&self.name),
            self.email,
            self.region,
            self.segment,
            date_str(self.signup_day),
            ts_str(self.updated_at)
        ));
    }
}

struct Product {
    id: i64,
    name: String,
    category: &'static str,
    price_cents: i64,
    reorder_level: i64,
}

fn products_csv(products: &[Product]) -> String {
    let mut out = String::with_capacity((products.len() + 1) * 48);
    out.push_str("product_id,name,category,unit_price,reorder_level\n");
    for p in products {
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            p.id,
            csv_field(&p.name),
            p.category,
            money(p.price_cents),
            p.reorder_level
        ));
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Placed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Placed => "placed",
            Status::Paid => "paid",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
        }
    }

    fn is_final(self) -> bool {
        matches!(self, Status::Delivered | Status::Cancelled)
    }

    /// The next status in the lifecycle, so that an update never moves an order backwards
    /// and "latest updated_at wins" is also "furthest status wins".
    fn advance(self, rng: &mut ChaCha8Rng) -> Status {
        match self {
            Status::Placed if rng.random_bool(0.15) => Status::Cancelled,
            Status::Placed => Status::Paid,
            Status::Paid if rng.random_bool(0.05) => Status::Cancelled,
            Status::Paid => Status::Shipped,
            Status::Shipped | Status::Delivered => Status::Delivered,
            Status::Cancelled => Status::Cancelled,
        }
    }
}

struct Order {
    id: i64,
    customer_id: Option<i64>,
    order_ts: i64,
    status: Status,
    channel: &'static str,
    updated_at: i64,
    same_day_update: Option<(Status, i64)>,
}

impl Order {
    fn current_status(&self) -> Status {
        self.same_day_update
            .map_or(self.status, |(status, _)| status)
    }

    fn json(&self, status: Status, updated_at: i64) -> String {
        format!(
            r#"{{"order_id":{},"customer_id":{},"order_ts":"{}","status":"{}","channel":"{}","updated_at":"{}"}}"#,
            self.id,
            json_opt(self.customer_id),
            ts_str(self.order_ts),
            status.as_str(),
            self.channel,
            ts_str(updated_at)
        )
    }
}

struct Item {
    order_id: i64,
    line_no: i64,
    product_id: i64,
    quantity: i64,
    unit_price_cents: i64,
}

impl Item {
    fn json(&self) -> String {
        format!(
            r#"{{"order_id":{},"line_no":{},"product_id":{},"quantity":{},"unit_price":{}}}"#,
            self.order_id,
            self.line_no,
            self.product_id,
            self.quantity,
            money(self.unit_price_cents)
        )
    }
}

struct Click {
    event_id: String,
    session_id: String,
    customer_id: Option<i64>,
    product_id: i64,
    event_type: &'static str,
    ts: i64,
}

impl Click {
    fn json(&self) -> String {
        format!(
            r#"{{"event_id":"{}","session_id":"{}","customer_id":{},"product_id":{},"event_type":"{}","ts":"{}"}}"#,
            self.event_id,
            self.session_id,
            json_opt(self.customer_id),
            self.product_id,
            self.event_type,
            ts_str(self.ts)
        )
    }
}

/// Adds the two kinds of line-level dirt every NDJSON extract gets: re-sent lines a little
/// further down (at-least-once delivery) and re-sends that were cut off mid-object. The
/// intact original is always kept, so the malformed lines cost no data, only quarantine.
fn add_line_dirt(
    rng: &mut ChaCha8Rng,
    lines: Vec<String>,
    duplicate_fraction: f64,
    malformed: usize,
) -> String {
    let len = lines.len();
    let mut extra: Vec<(usize, String)> = Vec::new();
    for i in sample(rng, len, share(len, duplicate_fraction, 1)) {
        let at = (i + rng.random_range(0..30)).min(len - 1);
        extra.push((at, lines[i].clone()));
    }
    for i in sample(rng, len, malformed) {
        let line = &lines[i];
        // Cutting before the closing brace always leaves invalid JSON.
        let mut cut = rng.random_range(2..line.len().max(3) - 1);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        extra.push((i, line[..cut].to_string()));
    }
    extra.sort_by_key(|(at, _)| *at);

    let total: usize = lines.iter().map(|l| l.len() + 1).sum::<usize>()
        + extra.iter().map(|(_, l)| l.len() + 1).sum::<usize>();
    let mut out = String::with_capacity(total);
    let mut extra = extra.into_iter().peekable();
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push('\n');
        while let Some((_, dirt)) = extra.next_if(|(at, _)| *at == i) {
            out.push_str(&dirt);
            out.push('\n');
        }
    }
    out
}

fn scaled(base: f64, scale: f64, min: usize) -> usize {
    ((base * scale).round() as usize).max(min)
}

/// How many of `n` rows get a kind of dirt: at least `min` so small scales stay dirty,
/// never more than there are rows.
fn share(n: usize, fraction: f64, min: usize) -> usize {
    ((n as f64 * fraction).round() as usize).max(min).min(n)
}

/// Distinct indices below `len`, in increasing order so that dirt lands in file order.
fn sample(rng: &mut ChaCha8Rng, len: usize, amount: usize) -> Vec<usize> {
    let mut picked = index::sample(rng, len, amount.min(len)).into_vec();
    picked.sort_unstable();
    picked
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, weighted: &[(T, u32)]) -> T {
    let total: u32 = weighted.iter().map(|(_, w)| w).sum();
    let mut r = rng.random_range(0..total);
    for &(item, weight) in weighted {
        if r < weight {
            return item;
        }
        r -= weight;
    }
    weighted[weighted.len() - 1].0
}

/// A few best sellers get most of the traffic; squaring a uniform draw skews towards index 0.
fn popular_index(rng: &mut ChaCha8Rng, len: usize) -> usize {
    let u: f64 = rng.random();
    ((u * u * len as f64) as usize).min(len - 1)
}

fn email(rng: &mut ChaCha8Rng, first: &str, last_ascii: &str) -> String {
    let domain = EMAIL_DOMAINS[rng.random_range(0..EMAIL_DOMAINS.len())];
    let first = first.to_ascii_lowercase();
    if rng.random_bool(0.4) {
        format!("{first}.{last_ascii}{}@{domain}", rng.random_range(1..100))
    } else {
        format!("{first}.{last_ascii}@{domain}")
    }
}

fn uuid_like(rng: &mut ChaCha8Rng) -> String {
    let a: u64 = rng.random();
    let b: u64 = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn json_opt(v: Option<i64>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn date_str(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn ts_str(secs: i64) -> String {
    let days = secs.div_euclid(SECS_PER_DAY);
    let s = secs.rem_euclid(SECS_PER_DAY);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        date_str(days),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use medallion_core::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::collections::{HashMap, HashSet};

    const DATA: RetailData = RetailData {
        scale: 0.5,
        seed: 7,
    };

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    fn json_lines(path: &Path) -> (Vec<serde_json::Value>, usize) {
        let text = read(path);
        let mut good = Vec::new();
        let mut bad = 0;
        for line in text.lines() {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) if v.is_object() => good.push(v),
                _ => bad += 1,
            }
        }
        (good, bad)
    }

    fn duplicate_lines(path: &Path) -> usize {
        let text = read(path);
        let mut seen = HashSet::new();
        text.lines().filter(|l| !seen.insert(*l)).count()
    }

    /// Field count of one CSV row, honouring quotes.
    fn csv_fields(line: &str) -> usize {
        let mut fields = 1;
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => fields += 1,
                _ => {}
            }
        }
        fields
    }

    #[test]
    fn calendar_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 1, 1), BASE_DAY);
        assert_eq!(date_str(BASE_DAY + 59), "2026-03-01");
        assert_eq!(date_str(days_from_civil(2024, 2, 29)), "2024-02-29");
        assert_eq!(
            ts_str(BASE_DAY * SECS_PER_DAY + 3_661),
            "2026-01-01T01:01:01Z"
        );
    }

    #[test]
    fn same_seed_gives_identical_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ga = DATA.write_initial(a.path(), 2).unwrap();
        let gb = DATA.write_initial(b.path(), 2).unwrap();
        assert_eq!(ga.files.len(), 2 + 2 * 4);
        assert_eq!(ga.bytes, gb.bytes);
        let on_disk: u64 = ga
            .files
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum();
        assert_eq!(ga.bytes, on_disk);
        for (fa, fb) in ga.files.iter().zip(&gb.files) {
            assert_eq!(fa.strip_prefix(a.path()), fb.strip_prefix(b.path()));
            assert!(
                fs::read(fa).unwrap() == fs::read(fb).unwrap(),
                "{} differs",
                fa.display()
            );
        }

        // An incremental batch equals the one an initial extract would have written.
        let later = DATA.write_batch(a.path(), 1).unwrap();
        assert_eq!(later.files, ga.files[6..10].to_vec());
        assert!(later
            .files
            .iter()
            .zip(&gb.files[6..10])
            .all(|(x, y)| fs::read(x).unwrap() == fs::read(y).unwrap()));

        let other = RetailData { seed: 8, ..DATA };
        let c = tempfile::tempdir().unwrap();
        other.write_batch(c.path(), 0).unwrap();
        let orders = Path::new("orders/orders-0000.ndjson");
        assert_ne!(read(&a.path().join(orders)), read(&c.path().join(orders)));
    }

    #[test]
    fn extracts_carry_their_dirt() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        DATA.write_initial(d, 3).unwrap();

        let customers = read(&d.join("customers.csv"));
        let mut rows = customers.lines();
        assert_eq!(
            rows.next(),
            Some("customer_id,name,email,region,segment_hint,signup_date,updated_at")
        );
        let rows: Vec<&str> = rows.collect();
        assert!(
            rows.iter().any(|r| csv_fields(r) != 7),
            "no malformed customer rows"
        );
        assert!(rows.iter().any(|r| r.contains(",,")), "no empty emails");
        let mut ids = HashMap::new();
        for r in rows.iter().filter(|r| csv_fields(r) == 7) {
            *ids.entry(r.split(',').next().unwrap()).or_insert(0) += 1;
        }
        assert!(ids.values().any(|&c| c > 1), "no duplicate customer ids");

        let products = read(&d.join("products.csv"));
        let reorder_levels: Vec<i64> = products
            .lines()
            .skip(1)
            .map(|r| r.rsplit(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(reorder_levels.len(), 150);

        let mut ids_by_batch = Vec::new();
        for n in 0..3 {
            let path = d.join(format!("orders/orders-{n:04}.ndjson"));
            let (orders, bad) = json_lines(&path);
            assert!(bad > 0, "no malformed orders in batch {n}");
            assert!(
                duplicate_lines(&path) > 0,
                "no duplicate orders in batch {n}"
            );
            assert!(orders.iter().any(|o| o["customer_id"].is_null()));
            let ids: Vec<i64> = orders
                .iter()
                .map(|o| o["order_id"].as_i64().unwrap())
                .collect();
            ids_by_batch.push(ids);
        }
        // Late updates: batch 2 updates orders first written by batches 0 and 1.
        let last_of = |n: usize| ids_by_batch[n].iter().max().copied().unwrap();
        let (last_0, last_1) = (last_of(0), last_of(1));
        assert!(ids_by_batch[2].iter().any(|&id| id <= last_0));
        assert!(ids_by_batch[2]
            .iter()
            .any(|&id| id > last_0 && id <= last_1));

        let items_path = d.join("order_items/order_items-0001.ndjson");
        let (items, bad) = json_lines(&items_path);
        assert!(bad > 0, "no malformed order items");
        assert!(duplicate_lines(&items_path) > 0, "no duplicate order items");
        assert!(items.iter().any(|i| i["quantity"].as_i64().unwrap() <= 0));
        assert!(items
            .iter()
            .any(|i| i["product_id"].as_i64().unwrap() > 150));

        let clicks_path = d.join("clicks/clicks-0002.ndjson");
        let (clicks, bad) = json_lines(&clicks_path);
        assert!(bad > 0, "no malformed clicks");
        let mut events = HashSet::new();
        assert!(clicks
            .iter()
            .any(|c| !events.insert(c["event_id"].as_str().unwrap().to_string())));

        let file = fs::File::open(d.join("inventory/inventory-0001.parquet")).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut on_hand = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            assert_eq!(batch.num_columns(), 4);
            let col = batch
                .column(3)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            on_hand.extend(col.values().iter().copied());
        }
        assert_eq!(on_hand.len(), 150 * WAREHOUSES.len());
        assert!(on_hand.iter().any(|&q| q < 0), "no negative on_hand");
        let low = on_hand
            .chunks(WAREHOUSES.len())
            .zip(&reorder_levels)
            .filter(|(stock, level)| stock.iter().sum::<i64>() < **level)
            .count();
        assert!(low >= 150 * 8 / 100, "only {low} low-stock products");
    }

    #[test]
    fn rejects_a_nonsense_scale() {
        let dir = tempfile::tempdir().unwrap();
        let bad = RetailData {
            scale: f64::NAN,
            seed: 1,
        };
        assert_eq!(
            bad.write_initial(dir.path(), 1).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
