//! What a dry run's estimate would cost: price tables as data (built in, `prices.yaml`, or from
//! a ConfigMap), chosen from each side's endpoint or named in `spec.pricing`, and the cost lines
//! computed from an [`Estimate`] in exact integer arithmetic, rounded to the cent per line
//! (`docs/estimates.md`).

use std::collections::BTreeMap;

use ferry_core::plan::Transfer;
use ferry_core::stores::StoreConfig;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::estimate::{Estimate, Requests};
use crate::quantity::human_bytes;

/// The built-in tables.
pub const BUILT_IN: &str = include_str!("prices.yaml");
/// The key of a ConfigMap's tables when `configMapRef.key` is not given.
pub const DEFAULT_KEY: &str = "prices.yaml";

/// Bytes per billed GB (the providers bill GB of 2^30 bytes).
const GB: u128 = 1 << 30;
/// Pico-dollars per dollar: prices are held as whole pico-dollars.
const PICO: u128 = 1_000_000_000_000;
/// Pico-dollars per cent.
const CENT: u128 = PICO / 100;

/// `spec.pricing`: the price tables the cost estimate of a dry run uses.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// The source's price table: `aws-s3`, `cloudflare-r2`, `google-cloud-storage`, `free`,
    /// or one the ConfigMap adds. Default: from the source's endpoint (no endpoint or
    /// `*.amazonaws.com`: `aws-s3`; `*.r2.cloudflarestorage.com`: `cloudflare-r2`;
    /// `storage.googleapis.com`: `google-cloud-storage`; anything else: `free`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub source: Option<String>,
    /// The destination's price table, as `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub destination: Option<String>,
    /// A ConfigMap in the job's namespace whose key holds price tables of the built-in form
    /// (`docs/estimates.md`); each replaces the built-in table of its name or adds one. Read
    /// by the operator in the job's namespace, and by `ferry run` from the YAML files given
    /// (like Secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<PriceTablesRef>,
}

/// The ConfigMap key that holds price tables.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PriceTablesRef {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::validate::DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// The key holding the tables (YAML). Default `prices.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: Option<String>,
}

/// An amount in whole pico-dollars, written as a decimal string (`"0.09"`, `"4.50"`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(try_from = "String", into = "String")]
pub struct Price(u128);

impl TryFrom<String> for Price {
    type Error = String;
    fn try_from(s: String) -> Result<Price, String> {
        let bad =
            || format!("{s:?} is not a price: digits with at most 12 decimals, like \"0.09\"");
        let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || int.len() > 12 || frac.len() > 12 || !digits(int) || !digits(frac) {
            return Err(bad());
        }
        let whole: u128 = int.parse().map_err(|_| bad())?;
        let frac_pico: u128 = format!("{frac:0<12}").parse().map_err(|_| bad())?;
        Ok(Price(whole * PICO + frac_pico))
    }
}

impl From<Price> for String {
    fn from(p: Price) -> String {
        let s = format!("{}.{:012}", p.0 / PICO, p.0 % PICO);
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// One egress tier: up to `upToGB` GB in all (no end when absent), at `price` per GB.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tier {
    #[serde(default, rename = "upToGB")]
    pub up_to_gb: Option<u64>,
    pub price: Price,
}

/// A provider's prices.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceTable {
    pub description: String,
    /// When the prices were read from the provider's public pages.
    pub effective_date: String,
    /// Where they were read.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(rename = "storagePerGBMonth")]
    pub storage_per_gb_month: Price,
    #[serde(rename = "classAPerMillion")]
    pub class_a_per_million: Price,
    #[serde(rename = "classBPerMillion")]
    pub class_b_per_million: Price,
    #[serde(default)]
    pub delete_per_million: Price,
    /// Internet egress, in order; the last tier has no `upToGB`.
    #[serde(rename = "egressPerGB")]
    pub egress_per_gb: Vec<Tier>,
}

/// Price tables by name.
pub type PriceTables = BTreeMap<String, PriceTable>;

/// Reads tables in the built-in form, checking each egress ladder.
pub fn parse_tables(yaml: &str) -> Result<PriceTables, String> {
    let tables: PriceTables =
        serde_yaml::from_str(yaml).map_err(|e| format!("price tables: {e}"))?;
    for (name, t) in &tables {
        let ends: Vec<Option<u64>> = t.egress_per_gb.iter().map(|t| t.up_to_gb).collect();
        let open_last = matches!(ends.last(), Some(None));
        let rising = ends
            .windows(2)
            .all(|w| matches!(w, [Some(a), Some(b)] if a < b) || matches!(w, [Some(_), None]));
        if !open_last || !rising {
            return Err(format!(
                "price table {name}: egressPerGB needs tiers of rising upToGB and a last tier without one"
            ));
        }
    }
    Ok(tables)
}

/// The built-in tables, with `overrides` (a ConfigMap's) replacing or adding tables by name.
pub fn tables(overrides: Option<&str>) -> Result<PriceTables, String> {
    let mut t = parse_tables(BUILT_IN).expect("the built-in tables are valid");
    if let Some(o) = overrides {
        t.extend(parse_tables(o)?);
    }
    Ok(t)
}

/// The table a side is priced with when `spec.pricing` names none, and why when it is a guess.
pub fn table_for(side: &StoreConfig) -> (&'static str, Option<String>) {
    match side {
        StoreConfig::S3(s3) => {
            let Some(endpoint) = s3.endpoint.as_deref() else {
                return ("aws-s3", None);
            };
            let host = host_of(endpoint);
            if host == "amazonaws.com" || host.ends_with(".amazonaws.com") {
                ("aws-s3", None)
            } else if host.ends_with(".r2.cloudflarestorage.com") {
                ("cloudflare-r2", None)
            } else if host == "storage.googleapis.com" {
                ("google-cloud-storage", None)
            } else {
                (
                    "free",
                    Some(format!(
                        "{host} is no provider Ferry knows: priced as free (name a table in spec.pricing)"
                    )),
                )
            }
        }
        StoreConfig::UrlList(_) => (
            "free",
            Some("a URL list's servers are priced as free (name a table in spec.pricing)".into()),
        ),
        // A filesystem, a database.
        _ => ("free", None),
    }
}

/// The lower-case host of an endpoint URL (`https://a.b:9000/x` → `a.b`).
fn host_of(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        host.split_inclusive(']').next().unwrap_or(host)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    host.to_ascii_lowercase()
}

/// `status.estimate.cost`: what a real run would cost, in USD.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    /// `USD`.
    pub currency: String,
    /// The one-time cost of the run: egress and requests (the lines, each rounded to the cent,
    /// added up). Storage is apart: it is paid every month.
    pub total: String,
    /// What the destination charges each month to store the job's objects.
    pub storage_per_month: String,
    /// The cost lines.
    pub lines: Vec<CostLine>,
    /// The price tables used: `source: aws-s3 (2026-06-04)`.
    pub tables: Vec<String>,
    /// What the prices leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One line of a cost estimate.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CostLine {
    /// `source egress`, `source requests`, `destination requests`, `destination egress`,
    /// `destination storage per month`.
    pub item: String,
    /// What is priced (`2.0 TiB`, `1000 Class A + 2000 Class B`).
    pub quantity: String,
    /// The price table.
    pub table: String,
    /// USD, rounded to the cent.
    pub usd: String,
}

/// An exact amount: `num / den` pico-dollars.
struct Amount {
    num: u128,
    den: u128,
}

impl Amount {
    /// Rounded to whole cents, halves up.
    fn cents(&self) -> u128 {
        let d = self.den * CENT;
        (self.num + d / 2) / d
    }
}

/// `bytes` through an egress ladder (marginal tiers).
fn egress(bytes: u64, tiers: &[Tier]) -> Amount {
    let mut left = u128::from(bytes);
    let mut num = 0;
    let mut start = 0u128;
    for t in tiers {
        let size = t
            .up_to_gb
            .map_or(u128::MAX, |up| (u128::from(up) * GB).saturating_sub(start));
        let here = left.min(size);
        num += here * t.price.0;
        left -= here;
        start = start.saturating_add(size);
        if left == 0 {
            break;
        }
    }
    Amount { num, den: GB }
}

/// Requests at a table's prices per million.
fn requests(r: &Requests, t: &PriceTable) -> Amount {
    let num = u128::from(r.class_a()) * t.class_a_per_million.0
        + u128::from(r.class_b()) * t.class_b_per_million.0
        + u128::from(r.delete) * t.delete_per_million.0;
    Amount {
        num,
        den: 1_000_000,
    }
}

/// `12345` cents as `123.45`.
fn dollars(cents: u128) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn request_quantity(r: &Requests) -> String {
    let mut q = format!("{} Class A + {} Class B", r.class_a(), r.class_b());
    if r.delete > 0 {
        q.push_str(&format!(" + {} DELETE", r.delete));
    }
    q
}

/// The cost of `e`: each side priced with the table `pricing` names, else the one its
/// endpoint gives, from the built-in tables and `overrides`. An unknown table is an error.
pub fn cost(
    e: &Estimate,
    transfer: &Transfer,
    pricing: Option<&Pricing>,
    overrides: Option<&str>,
) -> Result<Cost, String> {
    let all = tables(overrides)?;
    let mut notes = vec![
        "egress priced as internet egress from the first byte: free tiers and what the account \
         already used this month are not counted"
            .to_string(),
    ];
    let mut pick = |side: &str, named: Option<&String>, config: &StoreConfig| {
        let name = match named {
            Some(n) => n.clone(),
            None => {
                let (n, why) = table_for(config);
                notes.extend(why.map(|w| format!("{side}: {w}")));
                n.to_string()
            }
        };
        match all.get(&name) {
            Some(t) => Ok((name, t)),
            None => Err(format!(
                "no price table {name:?} for the {side} (known: {})",
                all.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    };
    let (src_name, src) = pick(
        "source",
        pricing.and_then(|p| p.source.as_ref()),
        &transfer.source,
    )?;
    let (dst_name, dst) = pick(
        "destination",
        pricing.and_then(|p| p.destination.as_ref()),
        &transfer.destination,
    )?;
    let stored = e.bytes_to_copy + e.bytes_to_skip;
    let mut lines = vec![
        (
            "source egress",
            human_bytes(e.egress_bytes),
            &src_name,
            egress(e.egress_bytes, &src.egress_per_gb),
        ),
        (
            "source requests",
            request_quantity(&e.source_requests),
            &src_name,
            requests(&e.source_requests, src),
        ),
        (
            "destination requests",
            request_quantity(&e.destination_requests),
            &dst_name,
            requests(&e.destination_requests, dst),
        ),
    ];
    if e.destination_egress_bytes > 0 {
        lines.push((
            "destination egress",
            human_bytes(e.destination_egress_bytes),
            &dst_name,
            egress(e.destination_egress_bytes, &dst.egress_per_gb),
        ));
    }
    let total: u128 = lines.iter().map(|l| l.3.cents()).sum();
    let storage = Amount {
        num: u128::from(stored) * dst.storage_per_gb_month.0,
        den: GB,
    };
    lines.push((
        "destination storage per month",
        human_bytes(stored),
        &dst_name,
        storage,
    ));
    let storage_cents = lines.last().map_or(0, |l| l.3.cents());
    Ok(Cost {
        currency: "USD".into(),
        total: dollars(total),
        storage_per_month: dollars(storage_cents),
        lines: lines
            .into_iter()
            .map(|(item, quantity, table, a)| CostLine {
                item: item.into(),
                quantity,
                table: table.clone(),
                usd: dollars(a.cents()),
            })
            .collect(),
        tables: vec![
            format!("source: {src_name} ({})", src.effective_date),
            format!("destination: {dst_name} ({})", dst.effective_date),
        ],
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn transfer(src: &str, dst: &str) -> Transfer {
        let spec: crate::MigrationJobSpec =
            serde_yaml::from_str(&format!("source: {src}\ndestination: {dst}\n")).unwrap();
        crate::validate(&spec).unwrap().transfer
    }

    fn aws_to_r2() -> Transfer {
        transfer(
            "{s3: {bucket: src}}",
            "{s3: {endpoint: 'https://acct.r2.cloudflarestorage.com', bucket: dst}}",
        )
    }

    fn tiers(name: &str) -> Vec<Tier> {
        tables(None).unwrap()[name].egress_per_gb.clone()
    }

    fn usd(a: Amount) -> String {
        dollars(a.cents())
    }

    #[test]
    fn prices_read_and_write_as_decimals() {
        let p = Price::try_from("4.50".to_string()).unwrap();
        assert_eq!(p.0, 4_500_000_000_000);
        assert_eq!(String::from(p), "4.5");
        assert_eq!(
            Price::try_from("0.0004".to_string()).unwrap().0,
            400_000_000
        );
        for bad in ["", "-1", "1.2.3", "0.0000000000001", "1e3", ".5"] {
            assert!(Price::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn aws_egress_tiers_are_marginal() {
        let aws = tiers("aws-s3");
        // 9.9 TB (10137.6 GB) all at 0.09: 912.384 → 912.38.
        assert_eq!(usd(egress(10137 * GIB + 6 * GIB / 10, &aws)), "912.38");
        // 10 TB: 10240 × 0.09 = 921.60.
        assert_eq!(usd(egress(10240 * GIB, &aws)), "921.60");
        // 10.1 TB: 921.60 + 102.4 × 0.085 = 921.60 + 8.704 = 930.304 → 930.30.
        assert_eq!(usd(egress(10342 * GIB + 4 * GIB / 10, &aws)), "930.30");
        // 60 TB (61440 GB): 921.60 + 40960 × 0.085 + 10240 × 0.07 = 921.60 + 3481.60 + 716.80.
        assert_eq!(usd(egress(61440 * GIB, &aws)), "5120.00");
        // 200 TB (204800 GB): 921.60 + 3481.60 + 102400 × 0.07 (7168) + 51200 × 0.05 (2560).
        assert_eq!(usd(egress(204800 * GIB, &aws)), "14131.20");
        assert_eq!(usd(egress(0, &aws)), "0.00");
        // R2 egress is free.
        assert_eq!(usd(egress(204800 * GIB, &tiers("cloudflare-r2"))), "0.00");
        // GCS: 1024 × 0.12 + 9216 × 0.11 + 1024 × 0.08 = 122.88 + 1013.76 + 81.92.
        assert_eq!(
            usd(egress(11264 * GIB, &tiers("google-cloud-storage"))),
            "1218.56"
        );
    }

    #[test]
    fn tables_are_chosen_from_the_endpoint() {
        let t = aws_to_r2();
        assert_eq!(table_for(&t.source).0, "aws-s3");
        assert_eq!(table_for(&t.destination).0, "cloudflare-r2");
        let t = transfer(
            "{s3: {endpoint: 'https://s3.eu-west-1.amazonaws.com', bucket: a-b}}",
            "{s3: {endpoint: 'https://storage.googleapis.com', bucket: c-d}}",
        );
        assert_eq!(table_for(&t.source).0, "aws-s3");
        assert_eq!(table_for(&t.destination).0, "google-cloud-storage");
        let t = transfer(
            "{s3: {endpoint: 'http://127.0.0.1:9000', bucket: a-b, forcePathStyle: true}}",
            "{filesystem: {path: /d}}",
        );
        let (name, why) = table_for(&t.source);
        assert_eq!(name, "free");
        assert!(why.unwrap().contains("127.0.0.1"));
        assert_eq!(table_for(&t.destination), ("free", None));
    }

    /// The figures of the `estimate-example` block of `docs/estimates.md`.
    fn worked_example_in_the_docs() -> Vec<(String, String)> {
        let doc = include_str!("../../../docs/estimates.md");
        let block = doc
            .split("```estimate-example\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("docs/estimates.md has an estimate-example block");
        block
            .lines()
            .map(|l| {
                let (item, usd) = l.split_once(": ").expect("`item: usd`");
                (item.to_string(), usd.to_string())
            })
            .collect()
    }

    #[test]
    fn the_worked_example_of_the_docs() {
        // 1,000,000 objects, 2 MiB each (1953.125 GiB), streamed, one shard.
        let e = Estimate {
            objects_to_copy: 1_000_000,
            bytes_to_copy: 2_000_000 * (1 << 20),
            egress_bytes: 2_000_000 * (1 << 20),
            source_requests: Requests {
                list: 1000,
                get: 1_000_000,
                ..Default::default()
            },
            destination_requests: Requests {
                list: 1,
                put: 1_000_000,
                ..Default::default()
            },
            ..Default::default()
        };
        let c = cost(&e, &aws_to_r2(), None, None).unwrap();
        let line = |item: &str| c.lines.iter().find(|l| l.item == item).unwrap().usd.clone();
        // 1953.125 GB × 0.09 = 175.78125 → 175.78.
        assert_eq!(line("source egress"), "175.78");
        // 1000 LIST × 5.00/M = 0.005, 1,000,000 GET × 0.40/M = 0.40: 0.405 → 0.41.
        assert_eq!(line("source requests"), "0.41");
        // 1,000,001 Class A × 4.50/M = 4.5000045 → 4.50.
        assert_eq!(line("destination requests"), "4.50");
        assert_eq!(c.total, "180.69");
        // 1953.125 GB × 0.015 = 29.296875 → 29.30 a month.
        assert_eq!(line("destination storage per month"), "29.30");
        assert_eq!(c.storage_per_month, "29.30");
        assert_eq!(
            c.tables,
            [
                "source: aws-s3 (2026-06-04)",
                "destination: cloudflare-r2 (2026-08-03)"
            ]
        );
        // The docs show the same figures.
        let shown = worked_example_in_the_docs();
        assert_eq!(shown.len(), 5, "{shown:?}");
        for (item, usd) in shown {
            let got = if item == "total" {
                c.total.clone()
            } else {
                line(&item)
            };
            assert_eq!(got, usd, "docs/estimates.md: {item}");
        }
    }

    #[test]
    fn spec_pricing_and_a_config_map_replace_the_choice() {
        let e = Estimate {
            bytes_to_copy: 10 * GIB,
            egress_bytes: 10 * GIB,
            ..Default::default()
        };
        let pricing = Pricing {
            source: Some("google-cloud-storage".into()),
            destination: Some("free".into()),
            config_map_ref: None,
        };
        let c = cost(&e, &aws_to_r2(), Some(&pricing), None).unwrap();
        assert_eq!(c.lines[0].usd, "1.20", "10 GB × 0.12");
        assert_eq!(c.storage_per_month, "0.00");
        // A ConfigMap's table replaces the built-in one of its name.
        let cm = "aws-s3:\n  description: negotiated\n  effectiveDate: '2026-11-01'\n  \
                  storagePerGBMonth: '0.02'\n  classAPerMillion: '5'\n  classBPerMillion: '0.4'\n  \
                  egressPerGB: [{price: '0.05'}]\n";
        let c = cost(&e, &aws_to_r2(), None, Some(cm)).unwrap();
        assert_eq!(c.lines[0].usd, "0.50");
        assert_eq!(c.tables[0], "source: aws-s3 (2026-11-01)");
        // Unknown tables and malformed ladders are said.
        let unknown = Pricing {
            source: Some("azure".into()),
            ..Default::default()
        };
        let err = cost(&e, &aws_to_r2(), Some(&unknown), None).unwrap_err();
        assert!(
            err.contains("azure") && err.contains("cloudflare-r2"),
            "{err}"
        );
        let bad = cm.replace("[{price: '0.05'}]", "[{upToGB: 5, price: '0.05'}]");
        let err = cost(&e, &aws_to_r2(), None, Some(&bad)).unwrap_err();
        assert!(err.contains("egressPerGB"), "{err}");
    }

    #[test]
    fn total_is_the_sum_of_the_one_time_lines() {
        let e = Estimate {
            bytes_to_copy: 3 * GIB,
            bytes_to_skip: GIB,
            egress_bytes: 3 * GIB,
            destination_egress_bytes: 3 * GIB,
            source_requests: Requests {
                get: 3333,
                ..Default::default()
            },
            destination_requests: Requests {
                put: 3333,
                delete: 5,
                ..Default::default()
            },
            ..Default::default()
        };
        let t = transfer(
            "{s3: {bucket: src}}",
            "{s3: {endpoint: 'https://s3.us-west-2.amazonaws.com', bucket: dst}}",
        );
        let c = cost(&e, &t, None, None).unwrap();
        let cents = |s: &str| {
            let (d, c) = s.split_once('.').unwrap();
            d.parse::<u64>().unwrap() * 100 + c.parse::<u64>().unwrap()
        };
        let one_time: u64 = c
            .lines
            .iter()
            .filter(|l| !l.item.contains("per month"))
            .map(|l| cents(&l.usd))
            .sum();
        assert_eq!(cents(&c.total), one_time);
        // 3 GB × 0.09 = 0.27 at each side; 4 GB × 0.023 = 0.092 → 0.09 a month.
        assert_eq!(c.lines[0].usd, "0.27");
        assert_eq!(c.lines[3].item, "destination egress");
        assert_eq!(c.lines[3].usd, "0.27");
        assert_eq!(c.storage_per_month, "0.09");
        assert!(c.lines[2].quantity.ends_with("+ 5 DELETE"));
    }
}
