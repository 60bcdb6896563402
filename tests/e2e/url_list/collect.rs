//! The URL-list collector (`source.urlList.collect`) end to end: `ferry run` pages through a
//! JSON API the test server serves (each pagination style, a 429 with `Retry-After`), writes
//! the list into the report folder, then copies every file it names once, byte-identical.
//! A collector killed mid-way (SIGKILL) goes on at its checkpoint without a duplicate or a
//! missing line; `maxPages` stops it; a page URL on a private address is refused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_tests::{bytes, Job};
use md5::{Digest, Md5};
use serde_json::{json, Value};

use super::server::{Fault, File};
use super::Setup;

/// How the test API pages.
#[derive(Clone, Copy, Debug)]
pub(super) enum Style {
    Cursor,
    Page,
    Offset,
    LinkHeader,
    NextUrl,
}

/// `n` files served at `/f/NNNN.bin`, and an API at `/api` that names them `per_page` a page
/// in `style`; `page_fault(i)` is the fault of page `i` (0-based). Returns the files and
/// the targets of the pages in order (the last one empty where the style ends so).
pub(super) fn serve(
    s: &Setup,
    style: Style,
    n: usize,
    per_page: usize,
    page_fault: impl Fn(usize) -> Fault,
) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut files = BTreeMap::new();
    for i in 0..n {
        let body = bytes(100 + i as u64, 500 + 37 * i);
        s.http
            .put(&format!("/f/{i:04}.bin"), File::new(body.clone()));
        files.insert(format!("f/{i:04}.bin"), body);
    }
    let item = |i: usize| {
        let body = &files[&format!("f/{i:04}.bin")];
        json!({
            "url": s.http.url(&format!("/f/{i:04}.bin")),
            "bytes": body.len(),
            "checksum": hex::encode(Md5::digest(body)),
        })
    };
    let pages = n.div_ceil(per_page);
    // Page and Offset end at an empty page; the others say there is no next one.
    let served = match style {
        Style::Page | Style::Offset => pages + 1,
        _ => pages,
    };
    let target = |i: usize| {
        match style {
            Style::Cursor if i == 0 => "/api/cursor?per_page=P".to_string(),
            Style::Cursor => format!("/api/cursor?per_page=P&cursor=c{i}"),
            Style::Page if i == 0 => "/api/page?per_page=P".to_string(),
            Style::Page => format!("/api/page?per_page=P&page={}", i + 1),
            Style::Offset if i == 0 => "/api/offset?limit=P".to_string(),
            // Advanced by the items of each page: the empty page is at offset n.
            Style::Offset => format!("/api/offset?limit=P&offset={}", (i * per_page).min(n)),
            Style::LinkHeader => format!("/api/link?p={i}"),
            Style::NextUrl => format!("/api/next?after={i}"),
        }
        .replace('P', &per_page.to_string())
    };
    let mut targets = Vec::new();
    for i in 0..served {
        let items: Vec<Value> = (i * per_page..((i + 1) * per_page).min(n))
            .map(item)
            .collect();
        let last = i + 1 == served;
        let mut body = json!({ "data": items });
        let mut file_headers = vec![("Content-Type", "application/json".to_string())];
        match style {
            Style::Cursor => {
                body["meta"] = json!({ "next_cursor": (!last).then(|| format!("c{}", i + 1)) })
            }
            Style::LinkHeader if !last => file_headers.push((
                "Link",
                format!(
                    "<{}>; rel=\"next\", <{}>; rel=\"first\"",
                    s.http.url(&target(i + 1)),
                    s.http.url(&target(0))
                ),
            )),
            Style::NextUrl => {
                body["links"] = json!({ "next": (!last).then(|| target(i + 1)) });
            }
            _ => {}
        }
        let mut f = File::new(body.to_string().into_bytes()).fault(page_fault(i));
        for (k, v) in file_headers {
            f = f.header(k, &v);
        }
        s.http.put_page(&target(i), f);
        targets.push(target(i));
    }
    (files, targets)
}

/// The `collect` block for `style` from the first page.
pub(super) fn collect(s: &Setup, style: Style, first: &str) -> Value {
    let pagination = match style {
        Style::Cursor => json!({ "cursor": { "from": "/meta/next_cursor", "param": "cursor" } }),
        Style::Page => json!({ "page": { "param": "page", "start": 1 } }),
        Style::Offset => json!({ "offset": { "param": "offset" } }),
        Style::LinkHeader => json!({ "linkHeader": true }),
        Style::NextUrl => json!({ "nextUrl": "/links/next" }),
    };
    json!({
        "url": s.http.url(first),
        "items": "/data",
        "fields": { "url": "/url", "size": "/bytes", "md5": "/checksum" },
        "pagination": pagination,
    })
}

/// The job collecting `collect` into the bucket (its report location).
fn job(s: &Setup, collect: Value) -> Job {
    s.job("", json!({ "path": null, "collect": collect }))
}

/// The report folder of a `ferry run` job (uid `local`).
fn collect_folder(s: &Setup) -> String {
    format!(".ferry/reports/default/{}/local/collect/", s.name)
}

/// The collected list's lines (header dropped).
async fn list_lines(s: &Setup) -> Vec<String> {
    let key = format!("{}urls.list", collect_folder(s));
    let text = String::from_utf8(s.s3.get(&s.bucket, &key).await).unwrap();
    text.lines()
        .filter(|l| *l != "TsvHttpData-1.0")
        .map(String::from)
        .collect()
}

/// Each file copied byte-identical, and read once.
pub(super) async fn assert_copied_once(s: &Setup, files: &BTreeMap<String, Vec<u8>>) {
    let got = s.contents().await;
    for (key, body) in files {
        assert!(got.get(key) == Some(body), "{key} differs or is missing");
        assert_eq!(s.http.gets(&format!("/{key}")).len(), 1, "{key} read again");
    }
    assert_eq!(
        got.keys().filter(|k| !k.starts_with(".ferry/")).count(),
        files.len(),
        "{:?}",
        got.keys().collect::<Vec<_>>()
    );
}

/// Every pagination style collects the whole list and copies it; a 429 with `Retry-After`
/// on one page is waited out.
#[tokio::test(flavor = "multi_thread")]
async fn each_pagination_style_collects_and_copies_every_file_once() {
    for (style, first) in [
        (Style::Cursor, "/api/cursor?per_page=4"),
        (Style::Page, "/api/page?per_page=4"),
        (Style::Offset, "/api/offset?limit=4"),
        (Style::LinkHeader, "/api/link?p=0"),
        (Style::NextUrl, "/api/next?after=0"),
    ] {
        let name = format!("url-collect-{}", format!("{style:?}").to_lowercase());
        let s = Setup::new(&name).await;
        // Page 2 answers 429 with Retry-After: 1 once.
        let (files, targets) = serve(&s, style, 13, 4, |i| match i {
            2 => Fault::StatusFirst {
                status: 429,
                times: 1,
                retry_after: Some(1),
            },
            _ => Fault::None,
        });
        let run = s.run(&job(&s, collect(&s, style, first))).await;
        run.assert_exit(0).assert_counter("objectsCopied", 13);
        assert!(
            run.stderr.contains("collected the URL list"),
            "{style:?}: {}",
            run.stderr
        );
        assert_copied_once(&s, &files).await;
        let mut lines = list_lines(&s).await;
        assert_eq!(lines.len(), 13, "{style:?}: {lines:?}");
        lines.sort();
        lines.dedup();
        assert_eq!(lines.len(), 13, "{style:?}: a duplicate line");
        for (i, t) in targets.iter().enumerate() {
            let asked = s.http.requests_of(t);
            let want = if i == 2 { 2 } else { 1 };
            assert_eq!(asked.len(), want, "{style:?}: page {t} asked {asked:?}");
        }
        let retried = s.http.requests_of(&targets[2]);
        let waited = retried[1].at.duration_since(retried[0].at);
        assert!(
            waited >= Duration::from_millis(900),
            "{style:?}: Retry-After: 1 not honoured ({waited:?})"
        );
        let status = run.status();
        let collect = &status.0["collect"];
        assert_eq!(collect["urls"], 13, "{style:?}: {collect}");
    }
}

/// Keys from the items (`fields.key`): the list is written as Csv and the keys are used.
#[tokio::test(flavor = "multi_thread")]
async fn items_with_keys_give_the_keys() {
    let s = Setup::new("url-collect-keys").await;
    let (files, _) = serve(&s, Style::NextUrl, 5, 2, |_| Fault::None);
    // The same API with a key per item: rewrite its pages with a "path" field.
    for i in 0..3 {
        let target = format!("/api/next?after={i}");
        let items: Vec<Value> = (i * 2..(i * 2 + 2).min(5))
            .map(|j| {
                json!({
                    "url": s.http.url(&format!("/f/{j:04}.bin")),
                    "path": format!("by-id/{j}, é.bin"),
                })
            })
            .collect();
        let next = (i < 2).then(|| format!("/api/next?after={}", i + 1));
        let body = json!({ "data": items, "links": { "next": next } });
        s.http
            .put_page(&target, File::new(body.to_string().into_bytes()));
    }
    let mut c = collect(&s, Style::NextUrl, "/api/next?after=0");
    c["fields"] = json!({ "url": "/url", "key": "/path" });
    let run = s.run(&job(&s, c)).await;
    run.assert_exit(0).assert_counter("objectsCopied", 5);
    let got = s.contents().await;
    for j in 0..5 {
        let key = format!("by-id/{j}, é.bin");
        assert!(
            got.get(&key) == Some(&files[&format!("f/{j:04}.bin")]),
            "{key}"
        );
    }
}

/// A collector killed (SIGKILL) mid-way goes on at the page of its checkpoint: the pages
/// before it are not asked again, and the list has every line once.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_collector_resumes_without_duplicates_or_gaps() {
    let s = Setup::new("url-collect-kill").await;
    // 40 pages of 5, each 150 ms slow: about 6 s of collecting.
    let (files, targets) = serve(&s, Style::Cursor, 200, 5, |_| {
        Fault::Slow(Duration::from_millis(150))
    });
    let job = job(&s, collect(&s, Style::Cursor, "/api/cursor?per_page=5"));
    let mut child = s.wd.spawn(&job, &[]);
    let state_key = format!("{}state.json", collect_folder(&s));
    let deadline = Instant::now() + Duration::from_secs(60);
    let saved_pages = loop {
        if let Some(b) = s.s3.try_get(&s.bucket, &state_key).await {
            let st: Value = serde_json::from_slice(&b).unwrap();
            let pages = st["pages"].as_u64().unwrap();
            if pages >= 10 {
                assert!(!st["done"].as_bool().unwrap(), "collected before the kill");
                break pages;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ferry ended before the kill"
        );
        assert!(
            Instant::now() < deadline,
            "no checkpoint of 10 pages in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(
        s.s3.try_get(&s.bucket, &format!("{}urls.list", collect_folder(&s)))
            .await
            .is_none(),
        "the list was complete before the kill"
    );
    let asked_before: Vec<usize> = targets
        .iter()
        .map(|t| s.http.requests_of(t).len())
        .collect();

    let run = s.run(&job).await;
    run.assert_exit(0).assert_counter("objectsCopied", 200);
    assert!(run.stderr.contains("200 URLs"), "{}", run.stderr);
    let lines = list_lines(&s).await;
    let want: Vec<String> = (0..200)
        .map(|i| s.http.url(&format!("/f/{i:04}.bin")))
        .collect();
    let got: Vec<String> = lines
        .iter()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(got, want, "every line once, in page order");
    assert_copied_once(&s, &files).await;
    // The pages the checkpoint covered were asked once, before the kill only.
    for (i, t) in targets.iter().enumerate().take(saved_pages as usize) {
        assert_eq!(
            s.http.requests_of(t).len(),
            asked_before[i],
            "page {i} asked again after the resume"
        );
    }
}

/// `maxPages` stops the collector: the list holds what those pages named.
#[tokio::test(flavor = "multi_thread")]
async fn max_pages_stops_the_collector() {
    let s = Setup::new("url-collect-max").await;
    let (files, targets) = serve(&s, Style::Page, 20, 3, |_| Fault::None);
    let mut c = collect(&s, Style::Page, "/api/page?per_page=3");
    c["maxPages"] = json!(2);
    let run = s.run(&job(&s, c)).await;
    run.assert_exit(0).assert_counter("objectsCopied", 6);
    assert!(run.stderr.contains("maxPages"), "{}", run.stderr);
    let got = s.contents().await;
    let copied: Vec<&String> = got.keys().filter(|k| !k.starts_with(".ferry/")).collect();
    let want: Vec<&String> = files.keys().take(6).collect();
    assert_eq!(copied, want);
    assert!(s.http.requests_of(&targets[2]).is_empty(), "page 3 asked");
}

/// A page URL on a private address is refused (nothing asked) unless allowed.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_on_a_private_address_is_refused() {
    let s = Setup::new("url-collect-private").await;
    serve(&s, Style::Cursor, 3, 2, |_| Fault::None);
    let job = s.job(
        "",
        json!({
            "path": null,
            "allowPrivateNetworks": false,
            "collect": collect(&s, Style::Cursor, "/api/cursor?per_page=2"),
        }),
    );
    let run = s.run(&job).await;
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    let message = run.status().0["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("allowPrivateNetworks") && message.contains("collecting"),
        "{message}\n{}",
        run.stderr
    );
    assert!(s.http.log().is_empty(), "{:?}", s.http.log());
    assert!(s.contents().await.keys().all(|k| k.starts_with(".ferry/")));
}
