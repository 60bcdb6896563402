//! The `urlList` source: files on http(s) servers (a CDN, a web server), named by a list of
//! URLs. Its spec types, their checks and their translation into the plan's
//! [`UrlListConfig`], as one [`Location`].

use ferry_core::collect::{
    CollectConfig, CollectFields, CursorPagination, OffsetPagination, PagePagination, Pagination,
};
use ferry_core::stores::{
    S3Config, S3WriteOptions, StoreConfig, UrlKeyMode, UrlKeys, UrlListConfig, UrlListFormat,
    UrlListLocation, S3_SECRET_KEYS,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::endpoint::{region_or_default, s3_auth, Location, Scope, SecretUse, Side, VolumeUse};
use crate::spec::SecretRef;
use crate::validate::{
    bucket_name_problem, dns_subdomain_problem, err, is_loopback_http, SpecError,
};

/// A list of http(s) URLs to copy (sources only): each line names one file; its key is the
/// URL's path (see `keys`). Set exactly one of `path`, `s3`, `configMapRef` and `collect`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::cel::url_list)]
pub struct UrlListSource {
    /// The list as a file on the machine of `ferry run` (relative to the YAML file). Refused
    /// in a cluster, where no volume is mounted for it: use `configMapRef` or `s3` there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub path: Option<String>,
    /// The list as an object in an S3-compatible bucket (large lists; the list is read in
    /// chunks of 4 MiB, all of one version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<UrlListObject>,
    /// The list as a key of a ConfigMap in the job's namespace (lists up to 1 MiB), mounted
    /// read-only into the planner and the agents. Clusters only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
    /// The list collected first from a paginated JSON API, by the planner (in `ferry run`,
    /// in process), into the job's report folder (`collect/urls.list`; the report location
    /// must be a bucket or, with `ferry run`, a directory); the copy then reads it. The
    /// collector resumes at its last page when killed. `format` is then ignored (the
    /// collector writes Tsv, or Csv when `fields.key` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect: Option<CollectSpec>,
    /// The layout of the list: `Tsv` (Google Storage Transfer's `TsvHttpData-1.0`: that
    /// header line, then URL, optional size in bytes and optional base64 MD5, tab-separated),
    /// `Lines` (one URL per line; `#` comments), `Csv` (`URL,KEY`: an explicit key per URL),
    /// or `Auto` (default: from the first line).
    #[serde(default)]
    pub format: UrlListFormat,
    /// How a URL becomes a key: `Path` (default; the URL's path without the leading `/`,
    /// percent-decoded, query dropped) or `HostAndPath` (`host/path`). An explicit `Csv` key
    /// wins.
    #[serde(default)]
    pub keys: UrlKeyMode,
    /// Removed from the start of each URL's (decoded) path before its key is made, for
    /// example `/images/`. A URL whose path does not start with it is reported, not copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub strip_prefix: Option<String>,
    /// A Secret in the same namespace whose every key is a request header sent with each
    /// request to the list's URLs (for example `Authorization`). Header values never appear
    /// in logs, status, Events or reports; they are not sent to another origin a redirect
    /// leads to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers_secret_ref: Option<SecretRef>,
    /// At most this many requests per second to any one host (per shard); 0 or absent: no
    /// limit beyond `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = 100000))]
    pub requests_per_second_per_host: u32,
    /// Allow URLs (and redirects) that lead to loopback, link-local (the cloud metadata
    /// service at 169.254.169.254) or private addresses. Default false: such URLs are
    /// refused after DNS resolution and on every redirect.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_private_networks: bool,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// A paginated JSON API that names the files: each page holds an array of items, each
/// item a file's URL (and optionally its size, MD5 and key).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectSpec {
    /// The first page, an http(s) URL (query parameters of the pagination are added or
    /// replaced on it). Requests send the headers of `headersSecretRef` and are refused to
    /// private addresses unless `allowPrivateNetworks`, like the files' requests.
    #[schemars(length(min = 1, max = 4096), transform = crate::cel::http_url)]
    pub url: String,
    /// JSON pointer (RFC 6901) to the array of items in a page, for example `/data`; `""`
    /// when the page is the array itself.
    #[serde(default)]
    #[schemars(length(max = 1024), regex(pattern = r"^(/.*)?$"))]
    pub items: String,
    /// JSON pointers within an item to its fields.
    pub fields: CollectFieldsSpec,
    /// How the next page is found: exactly one of `cursor`, `page`, `offset`, `linkHeader`
    /// and `nextUrl`. An empty page always ends the collection.
    pub pagination: PaginationSpec,
    /// Pages requested per second at most; 0 or absent: no limit. A 429 or 503 answer is
    /// retried after its `Retry-After` in any case.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = 10000))]
    pub requests_per_second: u32,
    /// Read at most this many pages (the list then holds what they named); 0 or absent:
    /// no limit.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub max_pages: u64,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

/// JSON pointers (RFC 6901) within one item.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectFieldsSpec {
    /// The file's URL: absolute, or relative to the page's URL. Required; an item without
    /// one stops the collection with its page and position.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/.*$"))]
    pub url: String,
    /// The file's size in bytes (a number or a string of digits), checked against what the
    /// server sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/.*$"))]
    pub size: Option<String>,
    /// The MD5 of the file's bytes, base64 or 32 hex digits, checked against the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/.*$"))]
    pub md5: Option<String>,
    /// An explicit key for the file (else it comes from the URL as `keys` says). The list
    /// is then written as `Csv` (`URL,KEY`), which has no size or MD5 column: `size` and
    /// `md5` are not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/.*$"))]
    pub key: Option<String>,
}

/// How the next page is found. Set exactly one field.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = pagination_rules)]
pub struct PaginationSpec {
    /// The page names a cursor (at `from`) that the next request sends in the query
    /// parameter `param`; absent, null or empty: the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<CursorSpec>,
    /// Numbered pages: the query parameter `param` counts up from `start` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<PageSpec>,
    /// The query parameter `param` is the number of items before the page: 0 first, then
    /// advanced by the number of items each page held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<OffsetSpec>,
    /// `true`: the next page is the response's `Link` header with `rel="next"`
    /// (RFC 8288, as GitHub's API); none: the last page.
    #[serde(default, skip_serializing_if = "is_false")]
    pub link_header: bool,
    /// JSON pointer to the next page's URL (absolute or relative) in the page; absent,
    /// null or empty: the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/.*$"))]
    pub next_url: Option<String>,
}

fn pagination_rules(schema: &mut schemars::Schema) {
    crate::cel::add(
        schema,
        &[(
            "(has(self.cursor) ? 1 : 0) + (has(self.page) ? 1 : 0) + (has(self.offset) ? 1 : 0) + (has(self.linkHeader) && self.linkHeader ? 1 : 0) + (has(self.nextUrl) ? 1 : 0) == 1",
            "set exactly one of cursor, page, offset, linkHeader or nextUrl",
        )],
    );
}

/// Cursor pagination.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CursorSpec {
    /// JSON pointer to the next cursor in a page, for example `/meta/next_cursor`.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/.*$"))]
    pub from: String,
    /// The query parameter the cursor is sent in, for example `cursor`.
    #[schemars(length(min = 1, max = 256))]
    pub param: String,
}

/// Page-number pagination.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageSpec {
    /// The query parameter holding the page number, for example `page`.
    #[schemars(length(min = 1, max = 256))]
    pub param: String,
    /// The number of the first page (used when the first URL does not name one).
    #[serde(default = "first_page")]
    pub start: u64,
}

fn first_page() -> u64 {
    1
}

/// Offset pagination.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffsetSpec {
    /// The query parameter holding the offset, for example `offset`.
    #[schemars(length(min = 1, max = 256))]
    pub param: String,
}

impl CollectSpec {
    /// The collector's settings in the plan.
    pub fn config(&self) -> CollectConfig {
        let p = &self.pagination;
        let pagination = if let Some(c) = &p.cursor {
            Pagination::Cursor(CursorPagination {
                from: c.from.clone(),
                param: c.param.clone(),
            })
        } else if let Some(pg) = &p.page {
            Pagination::Page(PagePagination {
                param: pg.param.clone(),
                start: pg.start,
            })
        } else if let Some(o) = &p.offset {
            Pagination::Offset(OffsetPagination {
                param: o.param.clone(),
            })
        } else if let Some(n) = &p.next_url {
            Pagination::NextUrl(n.clone())
        } else {
            Pagination::LinkHeader
        };
        CollectConfig {
            url: self.url.clone(),
            items: self.items.clone(),
            fields: CollectFields {
                url: self.fields.url.clone(),
                size: self.fields.size.clone(),
                md5: self.fields.md5.clone(),
                key: self.fields.key.clone(),
            },
            pagination,
            requests_per_second: self.requests_per_second,
            max_pages: self.max_pages,
        }
    }

    fn check(&self, p: &str, errors: &mut Vec<SpecError>) {
        let url = &self.url;
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('@') {
            errors.push(err(
                format!("{p}.url"),
                "must be an http(s) URL without credentials",
            ));
        }
        let pointer = |field: String, v: &str, errors: &mut Vec<SpecError>| {
            if !v.starts_with('/') {
                errors.push(err(field, "must be a JSON pointer starting with '/'"));
            }
        };
        if !self.items.is_empty() {
            pointer(format!("{p}.items"), &self.items, errors);
        }
        let f = &self.fields;
        pointer(format!("{p}.fields.url"), &f.url, errors);
        for (name, v) in [("size", &f.size), ("md5", &f.md5), ("key", &f.key)] {
            if let Some(v) = v {
                pointer(format!("{p}.fields.{name}"), v, errors);
            }
        }
        let pg = &self.pagination;
        let set = [
            pg.cursor.is_some(),
            pg.page.is_some(),
            pg.offset.is_some(),
            pg.link_header,
            pg.next_url.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            errors.push(err(
                format!("{p}.pagination"),
                "set exactly one of cursor, page, offset, linkHeader or nextUrl",
            ));
        }
        if let Some(c) = &pg.cursor {
            pointer(format!("{p}.pagination.cursor.from"), &c.from, errors);
        }
        if let Some(n) = &pg.next_url {
            pointer(format!("{p}.pagination.nextUrl"), n, errors);
        }
        for (name, param) in [
            ("cursor", pg.cursor.as_ref().map(|c| &c.param)),
            ("page", pg.page.as_ref().map(|c| &c.param)),
            ("offset", pg.offset.as_ref().map(|c| &c.param)),
        ] {
            if param.is_some_and(|v| v.is_empty()) {
                errors.push(err(
                    format!("{p}.pagination.{name}.param"),
                    "must not be empty",
                ));
            }
        }
    }
}

/// A URL list kept as an object in a bucket.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlListObject {
    /// The service URL (`https://...`); omit for AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), transform = crate::cel::http_url)]
    pub endpoint: Option<String>,
    /// The region to sign requests for; defaults to `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// The bucket name.
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// The list's key in the bucket.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// Address the bucket as `endpoint/bucket` (MinIO, Garage...).
    #[serde(default)]
    pub force_path_style: bool,
    /// A Secret with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally
    /// `AWS_SESSION_TOKEN`; absent: the default AWS provider chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Read the list with unsigned requests (a public bucket).
    #[serde(default)]
    pub anonymous: bool,
}

/// A key of a ConfigMap in the resource's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ConfigMapKeyRef {
    /// The ConfigMap's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = crate::validate::DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// The key holding the list.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

impl UrlListSource {
    fn where_(&self) -> Vec<&'static str> {
        [
            (self.path.is_some(), "path"),
            (self.s3.is_some(), "s3"),
            (self.config_map_ref.is_some(), "configMapRef"),
            (self.collect.is_some(), "collect"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
    }
}

impl Location for UrlListSource {
    fn kind(&self) -> &'static str {
        "urlList"
    }

    fn check(&self, path: &str, side: Side, errors: &mut Vec<SpecError>) {
        let p = format!("{path}.urlList");
        if side != Side::Source {
            errors.push(err(&p, "a URL list can only be a source"));
        }
        if self.where_().len() != 1 {
            errors.push(err(
                &p,
                "set exactly one of path, s3, configMapRef or collect",
            ));
        }
        if let Some(c) = &self.collect {
            c.check(&format!("{p}.collect"), errors);
        }
        if self.path.as_deref() == Some("") {
            errors.push(err(format!("{p}.path"), "must not be empty"));
        }
        if let Some(s3) = &self.s3 {
            if let Some(bad) = bucket_name_problem(&s3.bucket) {
                errors.push(err(
                    format!("{p}.s3.bucket"),
                    format!("{:?} is not a valid bucket name: {bad}", s3.bucket),
                ));
            }
            if s3.key.is_empty() {
                errors.push(err(format!("{p}.s3.key"), "must not be empty"));
            }
            if let Some(e) = &s3.endpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) || e.contains('@') {
                    errors.push(err(
                        format!("{p}.s3.endpoint"),
                        "must be an http(s) URL without credentials",
                    ));
                } else if e.starts_with("http://") && !s3.anonymous && !is_loopback_http(e) {
                    errors.push(err(
                        format!("{p}.s3.endpoint"),
                        crate::cel::INSECURE_HTTP_MESSAGE,
                    ));
                }
            }
            if s3.anonymous && s3.credentials_secret_ref.is_some() {
                errors.push(err(
                    format!("{p}.s3.anonymous"),
                    "set either anonymous or credentialsSecretRef, not both",
                ));
            }
        }
        if let Some(prefix) = &self.strip_prefix {
            if !prefix.starts_with('/') {
                errors.push(err(format!("{p}.stripPrefix"), "must start with '/'"));
            }
        }
        for (name, field) in [
            (
                self.s3
                    .as_ref()
                    .and_then(|s| s.credentials_secret_ref.as_ref()),
                "s3.credentialsSecretRef.name",
            ),
            (self.headers_secret_ref.as_ref(), "headersSecretRef.name"),
        ] {
            if let Some(why) = name.and_then(|r| dns_subdomain_problem(&r.name)) {
                errors.push(err(
                    format!("{p}.{field}"),
                    format!("not a valid Secret name: {why}"),
                ));
            }
        }
    }

    fn store_config(&self) -> StoreConfig {
        let list = match (&self.path, &self.s3, &self.config_map_ref) {
            _ if self.collect.is_some() => UrlListLocation::Collect {
                collect: self.collect.as_ref().expect("matched").config(),
            },
            (_, Some(s3), _) => UrlListLocation::S3 {
                s3: S3Config {
                    endpoint: s3.endpoint.clone(),
                    region: region_or_default(&s3.region),
                    bucket: s3.bucket.clone(),
                    prefix: String::new(),
                    force_path_style: s3.force_path_style,
                    auth: s3_auth(s3.credentials_secret_ref.as_ref(), s3.anonymous),
                    write: S3WriteOptions::default(),
                },
                key: s3.key.clone(),
            },
            (_, None, Some(cm)) => UrlListLocation::ConfigMap {
                name: cm.name.clone(),
                key: cm.key.clone(),
            },
            (path, None, None) => UrlListLocation::Path {
                path: path.clone().unwrap_or_default(),
            },
        };
        StoreConfig::UrlList(UrlListConfig {
            list,
            format: self.format,
            keys: UrlKeys {
                mode: self.keys,
                strip_prefix: self.strip_prefix.clone(),
            },
            requests_per_second_per_host: self.requests_per_second_per_host,
            allow_private_networks: self.allow_private_networks,
        })
    }

    fn secret(&self) -> Option<SecretUse<'_>> {
        let s3 = self.s3.as_ref().filter(|s| !s.anonymous)?;
        s3.credentials_secret_ref.as_ref().map(|r| SecretUse {
            name: &r.name,
            keys: S3_SECRET_KEYS,
            field: "s3.credentialsSecretRef",
        })
    }

    fn volume(&self) -> Option<VolumeUse<'_>> {
        None
    }

    fn checked_by_operator(&self) -> bool {
        // The list is read by the planner and the agents (a ConfigMap mounted, a file).
        false
    }

    fn whole_secret(&self) -> Option<&str> {
        self.headers_secret_ref.as_ref().map(|r| r.name.as_str())
    }

    fn scope(&self) -> Scope {
        Scope {
            space: "urlList".into(),
            prefix: String::new(),
            field: "urlList",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(yaml: &str) -> UrlListSource {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn problems(u: &UrlListSource, side: Side) -> Vec<String> {
        let mut errors = Vec::new();
        u.check("spec.source", side, &mut errors);
        errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_list_in_a_file_translates_with_its_defaults() {
        let u = source("{path: /lists/urls.tsv, stripPrefix: /images/}");
        assert!(problems(&u, Side::Source).is_empty());
        let StoreConfig::UrlList(c) = u.store_config() else {
            panic!()
        };
        assert_eq!(
            c.list,
            UrlListLocation::Path {
                path: "/lists/urls.tsv".into()
            }
        );
        assert_eq!(c.format, UrlListFormat::Auto);
        assert_eq!(c.keys.mode, UrlKeyMode::Path);
        assert_eq!(c.keys.strip_prefix.as_deref(), Some("/images/"));
        assert!(!c.allow_private_networks);
    }

    #[test]
    fn bad_lists_are_refused() {
        let two = source("{path: /a, configMapRef: {name: m, key: k}}");
        assert!(problems(&two, Side::Source)
            .iter()
            .any(|p| p.contains("exactly one")));
        let none = source("{format: Tsv}");
        assert!(!problems(&none, Side::Source).is_empty());
        let dst = source("{path: /a}");
        assert!(problems(&dst, Side::Destination)
            .iter()
            .any(|p| p.contains("only be a source")));
        let strip = source("{path: /a, stripPrefix: images/}");
        assert!(problems(&strip, Side::Source)
            .iter()
            .any(|p| p.contains("stripPrefix")));
        let insecure = source("{s3: {endpoint: 'http://s3.example.com', bucket: lists, key: a, credentialsSecretRef: {name: c}}}");
        assert!(!problems(&insecure, Side::Source).is_empty());
    }

    #[test]
    fn a_collect_source_translates_and_bad_ones_are_refused() {
        let u = source(
            "{collect: {url: 'https://api.example.com/v1?per_page=2', items: /data, \
             fields: {url: /url, size: /bytes}, pagination: {page: {param: page}}, maxPages: 9}}",
        );
        assert!(problems(&u, Side::Source).is_empty());
        let StoreConfig::UrlList(c) = u.store_config() else {
            panic!()
        };
        let UrlListLocation::Collect { collect } = c.list else {
            panic!("{:?}", c.list)
        };
        assert_eq!(
            collect.pagination,
            Pagination::Page(PagePagination {
                param: "page".into(),
                start: 1
            })
        );
        assert_eq!(
            (collect.max_pages, collect.fields.size.as_deref()),
            (9, Some("/bytes"))
        );
        for bad in [
            // Two places for the list.
            "{path: /a, collect: {url: 'https://h/', fields: {url: /u}, pagination: {linkHeader: true}}}",
            // No pagination, and two.
            "{collect: {url: 'https://h/', fields: {url: /u}, pagination: {}}}",
            "{collect: {url: 'https://h/', fields: {url: /u}, pagination: {linkHeader: true, nextUrl: /n}}}",
            // Not pointers, not a URL.
            "{collect: {url: 'https://h/', items: data, fields: {url: /u}, pagination: {linkHeader: true}}}",
            "{collect: {url: 'https://h/', fields: {url: u}, pagination: {linkHeader: true}}}",
            "{collect: {url: 'ftp://h/', fields: {url: /u}, pagination: {linkHeader: true}}}",
            "{collect: {url: 'https://h/', fields: {url: /u}, pagination: {cursor: {from: /c, param: ''}}}}",
        ] {
            assert!(!problems(&source(bad), Side::Source).is_empty(), "{bad}");
        }
    }
}
