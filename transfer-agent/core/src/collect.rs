//! The URL-list collector's settings and progress, as the plan and the planner's answer
//! carry them: a paginated JSON API turned into a list of URLs before the copy
//! (`source.urlList.collect`).

use serde::{Deserialize, Serialize};

use crate::plan::{report_prefix, JobPlan, Transfer};
use crate::stores::{
    JobCredentials, SideSecrets, StoreConfig, UrlListConfig, UrlListFormat, UrlListLocation,
    URL_LIST_HEADER_PREFIX,
};

/// The folder, below the job's report folder (of its first attempt), the collector writes
/// its list, chunks and checkpoint to.
pub const COLLECT_FOLDER: &str = "collect/";
/// The collected list's name in [`COLLECT_FOLDER`].
pub const COLLECTED_LIST: &str = "urls.list";

/// How to page through the API and read each page.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CollectConfig {
    /// The first page.
    pub url: String,
    /// JSON pointer to the array of items in a page ("" is the page itself).
    pub items: String,
    pub fields: CollectFields,
    pub pagination: Pagination,
    /// Pages requested per second at most; 0: no limit.
    #[serde(default)]
    pub requests_per_second: u32,
    /// Pages read at most; 0: no limit.
    #[serde(default)]
    pub max_pages: u64,
}

/// JSON pointers within one item.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CollectFields {
    /// The file's URL (absolute, or relative to the page's URL). Required.
    pub url: String,
    /// Its size in bytes (a number, or a string of digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    /// The MD5 of its bytes (base64 of the 16 bytes, or 32 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// An explicit key for the file (else the key comes from the URL, as `keys` says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// How the next page is found.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Pagination {
    /// The page names a cursor, sent back as a query parameter.
    Cursor(CursorPagination),
    /// Numbered pages: a query parameter counts up from `start`.
    Page(PagePagination),
    /// A query parameter that is the number of items read so far.
    Offset(OffsetPagination),
    /// The response's `Link` header with `rel="next"` (RFC 8288).
    LinkHeader,
    /// JSON pointer to the next page's URL in the page.
    NextUrl(String),
}

/// `cursor: {from, param}`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CursorPagination {
    /// JSON pointer to the next cursor in a page; absent, null or empty: the last page.
    pub from: String,
    /// The query parameter the cursor is sent in.
    pub param: String,
}

/// `page: {param, start}`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PagePagination {
    /// The query parameter holding the page number.
    pub param: String,
    /// The number of the first page (default 1).
    #[serde(default = "one")]
    pub start: u64,
}

fn one() -> u64 {
    1
}

/// `offset: {param}`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OffsetPagination {
    /// The query parameter holding the number of items before the page (0 first).
    pub param: String,
}

/// What the collector has done: in the planner's answer and a job's `status.collect`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectProgress {
    /// Pages of the API read.
    pub pages: u64,
    /// URLs written to the list.
    pub urls: u64,
    /// The list is complete (the copy reads it).
    #[serde(default)]
    pub done: bool,
    /// Why the collector stopped before the end of the pages (`maxPages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Where the collected list is (`s3://bucket/.ferry/reports/.../collect/urls.list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
}

/// The collector of `t`'s source, if it has one still to run.
pub fn collect_of(t: &Transfer) -> Option<&CollectConfig> {
    match &t.source {
        StoreConfig::UrlList(u) => match &u.list {
            UrlListLocation::Collect { collect } => Some(collect),
            _ => None,
        },
        _ => None,
    }
}

/// The format of the list `cfg` writes: `Csv` when items name keys, else `Tsv`.
pub fn format_of(cfg: &CollectConfig) -> UrlListFormat {
    if cfg.fields.key.is_some() {
        UrlListFormat::Csv
    } else {
        UrlListFormat::Tsv
    }
}

/// The key of the list the collector writes for a job: [`COLLECTED_LIST`] in
/// [`COLLECT_FOLDER`] of the job's report folder (of its first attempt, so a retry finds it).
pub fn collected_list_key(plan: &JobPlan) -> String {
    format!(
        "{}{COLLECT_FOLDER}{COLLECTED_LIST}",
        report_prefix(&plan.namespace, &plan.name, &plan.uid)
    )
}

/// The source the planner puts in the plan in place of `plan`'s collect source, once it has
/// collected the list: that list ([`collected_list_key`]) in the report location, in the
/// format the collector writes; None when the source collects nothing. The operator accepts
/// a plan with this source (and no other) as the one it asked for.
pub fn collected_source(plan: &JobPlan) -> Option<StoreConfig> {
    let t = &plan.transfer;
    let (StoreConfig::UrlList(list), Some(cfg)) = (&t.source, collect_of(t)) else {
        return None;
    };
    Some(StoreConfig::UrlList(UrlListConfig {
        list: UrlListLocation::Collected {
            at: Box::new(t.report_store().clone()),
            key: collected_list_key(plan),
        },
        format: format_of(cfg),
        ..list.clone()
    }))
}

/// The secrets the source of `t` is opened with: its own, and for a list the collector
/// wrote to the report location ([`UrlListLocation::Collected`]) also the report location's
/// (its credentials read the list; a collect source has no list Secret of its own).
pub fn source_secrets(t: &Transfer, credentials: &JobCredentials) -> SideSecrets {
    let StoreConfig::UrlList(u) = &t.source else {
        return credentials.source.clone();
    };
    if !matches!(u.list, UrlListLocation::Collected { .. }) {
        return credentials.source.clone();
    }
    let report = if t.report.is_some() {
        &credentials.report
    } else {
        &credentials.destination
    };
    let mut all: std::collections::BTreeMap<String, String> = report
        .with_prefix("")
        .filter(|(k, _)| !k.starts_with(URL_LIST_HEADER_PREFIX))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.extend(
        credentials
            .source
            .with_prefix("")
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    SideSecrets::new(all)
}
