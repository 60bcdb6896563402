//! URL-list sources (issue 14) end to end: `ferry run` of a `urlList` job against a real HTTP
//! server the test starts (`url_list/server.rs`, with injected faults) into a real S3 server.
//! Every test checks bytes (the destination equals what was served), and the failure report
//! for the classes the faults must end as. `url_list/cluster.rs`: the same sources run by the
//! operator. `url_list/collect.rs`: lists collected from a paginated JSON API.

mod cluster;
mod collect;
mod report;
mod server;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use ferry_tests::reports::{self, Kind};
use ferry_tests::{bytes, shared_server, Job, Run, Side, Workdir, MI, S3};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use server::{Fault, File, FileServer};

/// A server, a bucket and a working directory for one test.
struct Setup {
    name: String,
    http: FileServer,
    wd: Workdir,
    s3: S3,
    bucket: String,
}

impl Setup {
    async fn new(name: &str) -> Setup {
        let s3 = S3::for_server(shared_server());
        let bucket = s3.create_bucket(name).await;
        Setup {
            name: name.into(),
            http: FileServer::start().await,
            wd: Workdir::new(name),
            s3,
            bucket,
        }
    }

    /// Writes `list` next to the job and returns the job copying it into the bucket, with
    /// `url_list` fields added to `urlList` (null removes one; loopback needs
    /// `allowPrivateNetworks`).
    fn job(&self, list: &str, url_list: Value) -> Job {
        std::fs::write(self.wd.path().join("urls.txt"), list).unwrap();
        let mut source = json!({ "path": "urls.txt", "allowPrivateNetworks": true });
        for (k, v) in url_list.as_object().unwrap() {
            match v {
                Value::Null => {
                    source.as_object_mut().unwrap().remove(k);
                }
                v => source[k] = v.clone(),
            }
        }
        Job::new(
            &self.name,
            Side::fs(self.wd.path()),
            Side::s3(shared_server(), &self.bucket),
        )
        .with("source", json!({ "urlList": source }))
    }

    async fn run(&self, job: &Job) -> Run {
        self.wd.run(job, &[]).await
    }

    async fn failures(&self) -> BTreeMap<String, (String, String)> {
        let lines = reports::s3_report_lines(
            &self.s3,
            &self.bucket,
            "default",
            &self.name,
            Kind::Failures,
        )
        .await;
        lines
            .iter()
            .map(|l| {
                let s = |f: &str| l[f].as_str().unwrap_or_default().to_string();
                (s("key"), (s("class"), s("message")))
            })
            .collect()
    }

    async fn contents(&self) -> BTreeMap<String, Vec<u8>> {
        self.s3.contents(&self.bucket).await
    }
}

fn tsv_line(url: &str, body: &[u8]) -> String {
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body));
    format!("{url}\t{}\t{md5}\n", body.len())
}

/// Lines and TSV lists, percent-encoded and unicode paths, the kept headers, and a large file
/// copied in parts from ranged GETs with `If-Match`; a re-run with IfDifferent reads nothing.
#[tokio::test(flavor = "multi_thread")]
async fn lines_and_tsv_lists_copy_every_file_byte_identical() {
    let s = Setup::new("url-copy").await;
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("/img/a b.jpg", bytes(1, 3000)),
        ("/img/été/ü.png", bytes(2, 10)),
        ("/img/100%.txt", bytes(3, 0)),
        ("/docs/日本.txt", bytes(4, 70_000)),
    ];
    for (path, body) in &files {
        s.http.put(path, File::new(body.clone()));
    }
    let big = bytes(5, 11 * MI + 17);
    s.http.put(
        "/big.bin",
        File::new(big.clone())
            .header("Content-Type", "application/x-test")
            .header("Cache-Control", "max-age=60")
            .header("Content-Disposition", "attachment; filename=\"big.bin\"")
            .header("Content-Encoding", "identity"),
    );
    s.http.put(
        "/kept.css",
        File::new(bytes(6, 500))
            .header("Content-Type", "text/css")
            .header("Cache-Control", "no-cache")
            .header("Content-Encoding", "gzip")
            .header("Content-Disposition", "inline"),
    );
    // Lines: paths written percent-encoded and raw unicode, a query string dropped.
    let lines = format!(
        "# a comment\n{}\n{}\n{}\n{}?sig=secret\n{}\n",
        s.http.url("/img/a%20b.jpg"),
        s.http.url("/img/été/ü.png"),
        s.http.url("/img/100%25.txt"),
        s.http.url("/docs/%E6%97%A5%E6%9C%AC.txt"),
        s.http.url("/kept.css"),
    );
    let job = s.job(&lines, json!({})).with(
        "multipart",
        json!({ "threshold": "5Mi", "partSize": "5Mi" }),
    );
    let run = s.run(&job).await;
    run.assert_exit(0).assert_counter("objectsCopied", 5);
    let got = s.contents().await;
    for (path, body) in &files {
        assert_eq!(got.get(&path[1..]), Some(body), "{path}");
    }
    let meta = s.s3.meta(&s.bucket, "kept.css").await;
    assert_eq!(meta.content_type.as_deref(), Some("text/css"));
    assert_eq!(meta.cache_control.as_deref(), Some("no-cache"));
    assert_eq!(meta.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(meta.content_disposition.as_deref(), Some("inline"));

    // TSV with sizes and MD5s: the big file in parts, each a ranged GET guarded by If-Match.
    let tsv = format!(
        "TsvHttpData-1.0\n{}{}",
        tsv_line(&s.http.url("/big.bin"), &big),
        tsv_line(&s.http.url("/kept.css"), &bytes(6, 500)),
    );
    let s2 = Setup::new("url-copy-tsv").await;
    s2.http.put(
        "/big.bin",
        File::new(big.clone())
            .header("Content-Type", "application/x-test")
            .header("Cache-Control", "max-age=60")
            .header("Content-Disposition", "attachment; filename=\"big.bin\""),
    );
    s2.http.put("/kept.css", File::new(bytes(6, 500)));
    let tsv = tsv.replace(
        &format!(":{}/", s.http.port),
        &format!(":{}/", s2.http.port),
    );
    let job2 = s2
        .job(&tsv, json!({ "format": "Tsv" }))
        .with(
            "multipart",
            json!({ "threshold": "5Mi", "partSize": "5Mi" }),
        )
        .with("overwrite", json!("IfDifferent"));
    s2.run(&job2)
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", 2);
    assert!(
        s2.s3.get(&s2.bucket, "big.bin").await == big,
        "big.bin differs"
    );
    let meta = s2.s3.meta(&s2.bucket, "big.bin").await;
    assert_eq!(meta.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(meta.cache_control.as_deref(), Some("max-age=60"));
    let ranged: Vec<_> = s2
        .http
        .gets("/big.bin")
        .into_iter()
        .filter(|l| l.headers.contains_key("range"))
        .collect();
    assert_eq!(ranged.len(), 3, "three parts of 5 MiB: {ranged:?}");
    assert!(
        ranged.iter().all(|l| l.headers.contains_key("if-match")),
        "every ranged GET carries If-Match: {ranged:?}"
    );

    // A fresh IfDifferent run compares the list's sizes and MD5s with the bucket: no GET.
    std::fs::remove_dir_all(s2.wd.state_dir()).unwrap();
    s2.http.clear_log();
    let again = s2.run(&job2).await;
    again.assert_exit(0).assert_counter("objectsSkipped", 2);
    assert!(s2.http.log().is_empty(), "{:?}", s2.http.log());
}

/// Each fault ends as its class in the failure report, or is retried into a copy.
#[tokio::test(flavor = "multi_thread")]
async fn faults_end_as_their_classes() {
    let s = Setup::new("url-faults").await;
    let body = |seed| bytes(seed, 20_000);
    let fine = |path: &str, seed, fault| s.http.put(path, File::new(body(seed)).fault(fault));
    fine("/gone", 1, Fault::Status(404));
    fine("/removed", 2, Fault::Status(410));
    fine("/denied", 3, Fault::Status(403));
    fine("/auth", 4, Fault::Status(401));
    fine(
        "/busy",
        5,
        Fault::StatusFirst {
            status: 429,
            times: 2,
            retry_after: Some(1),
        },
    );
    fine(
        "/unavailable",
        6,
        Fault::StatusFirst {
            status: 503,
            times: 1,
            retry_after: None,
        },
    );
    fine(
        "/error",
        7,
        Fault::StatusFirst {
            status: 500,
            times: 2,
            retry_after: None,
        },
    );
    fine("/cut", 8, Fault::CutShort { times: 2 });
    fine("/slow", 9, Fault::Slow(Duration::from_millis(100)));
    fine("/lying", 10, Fault::ContentLength(25_000));
    fine("/r1", 11, Fault::Redirect("/r2".into()));
    fine("/r2", 11, Fault::Redirect("/r3".into()));
    fine("/r3", 11, Fault::Redirect("/target".into()));
    fine("/target", 11, Fault::None);
    for i in 0..7 {
        fine(
            &format!("/loop{i}"),
            12,
            Fault::Redirect(format!("/loop{}", i + 1)),
        );
    }
    fine("/loop7", 12, Fault::None);
    fine("/wrong-md5", 13, Fault::None);
    fine("/wrong-size", 14, Fault::None);
    fine("/dup/a", 15, Fault::None);
    let u = |p: &str| s.http.url(p);
    let mut tsv = String::from("TsvHttpData-1.0\n");
    for p in [
        "/gone",
        "/removed",
        "/denied",
        "/auth",
        "/busy",
        "/unavailable",
        "/error",
        "/cut",
        "/slow",
        "/r1",
        "/loop0",
    ] {
        tsv.push_str(&format!("{}\n", u(p)));
    }
    tsv.push_str(&tsv_line(&u("/lying"), &body(10)));
    tsv.push_str(&tsv_line(&u("/wrong-md5"), &body(99)).replace("\t20000\t", "\t\t"));
    tsv.push_str(&format!("{}\t1234\n", u("/wrong-size")));
    tsv.push_str(&format!("{}\n{}?again=1\n", u("/dup/a"), u("/dup/a")));
    let started = Instant::now();
    let run = s.run(&s.job(&tsv, json!({ "keys": "Path" }))).await;
    run.assert_exit(2);
    let failed = s.failures().await;
    let class = |k: &str| failed.get(k).map(|(c, _)| c.as_str()).unwrap_or("(copied)");
    let expect = [
        ("gone", "SourceVanished"),
        ("removed", "SourceVanished"),
        ("denied", "AccessDenied"),
        ("auth", "AccessDenied"),
        ("busy", "(copied)"),
        ("unavailable", "(copied)"),
        ("error", "(copied)"),
        ("cut", "(copied)"),
        ("slow", "(copied)"),
        ("r1", "(copied)"),
        ("loop0", "InvalidRequest"),
        ("lying", "ChecksumMismatch"),
        ("wrong-md5", "ChecksumMismatch"),
        ("wrong-size", "ChecksumMismatch"),
        ("dup/a", "DuplicateKey"),
    ];
    let got: Vec<(&str, &str)> = expect.iter().map(|(k, _)| (*k, class(k))).collect();
    assert_eq!(got, expect, "failures: {failed:#?}\n{}", run.describe());
    assert!(
        failed["loop0"].1.contains("more than 5 redirects"),
        "{:?}",
        failed["loop0"]
    );
    assert!(
        failed["dup/a"].1.contains("line 16"),
        "{:?}",
        failed["dup/a"]
    );
    // The copies are the bytes served; the duplicate's first line was copied.
    let got = s.contents().await;
    for (key, seed) in [
        ("busy", 5),
        ("unavailable", 6),
        ("error", 7),
        ("cut", 8),
        ("slow", 9),
        ("r1", 11),
        ("dup/a", 15),
    ] {
        assert!(got.get(key) == Some(&body(seed)), "{key}");
    }
    for key in [
        "gone",
        "denied",
        "lying",
        "wrong-md5",
        "wrong-size",
        "loop0",
    ] {
        assert!(!got.contains_key(key), "{key} was written");
    }
    // 429 with Retry-After: 1 was retried no sooner than a second later, twice.
    let busy = s.http.gets("/busy");
    assert_eq!(busy.len(), 3, "{busy:?}");
    for w in busy.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    }
    // Not-found and denied URLs are not retried.
    assert_eq!(s.http.gets("/gone").len(), 1);
    assert_eq!(s.http.gets("/denied").len(), 1);
    assert!(started.elapsed() < Duration::from_secs(120));
    // No request carried the query string into a log line or a message.
    assert!(!run.stderr.contains("again=1") && !run.stdout.contains("again=1"));
}

/// Without `allowPrivateNetworks`, URLs that reach loopback are refused (a literal address,
/// and a name that resolves to one), never requested; headers from the Secret are sent and
/// never logged.
#[tokio::test(flavor = "multi_thread")]
async fn private_addresses_are_refused_and_header_values_stay_secret() {
    let s = Setup::new("url-private").await;
    s.http.put("/a", File::new(bytes(1, 100)));
    s.http.put("/b", File::new(bytes(2, 100)));
    let list = format!("{}\nhttp://localhost:{}/b\n", s.http.url("/a"), s.http.port);
    let job = s.job(&list, json!({ "allowPrivateNetworks": false }));
    let run = s.run(&job).await;
    run.assert_exit(2);
    let failed = s.failures().await;
    for key in ["a", "b"] {
        let (class, message) = &failed[key];
        assert_eq!(class, "InvalidRequest", "{key}: {message}");
        assert!(message.contains("allowPrivateNetworks"), "{key}: {message}");
    }
    assert!(
        s.http.log().is_empty(),
        "refused URLs were requested: {:?}",
        s.http.log()
    );

    // Allowed, with a header from a Secret: sent, and its value in no output.
    let secret = "Bearer s3cr3t-t0ken-value";
    let yaml_secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cdn-auth, namespace: default}}\nstringData: {{Authorization: '{secret}'}}\n"
    );
    std::fs::write(s.wd.path().join("secret.yaml"), yaml_secret).unwrap();
    let job = s.job(&list, json!({ "headersSecretRef": { "name": "cdn-auth" } }));
    let file = job.write(s.wd.path());
    let run = ferry_tests::ferry::run_ferry(
        &[&file, &s.wd.path().join("secret.yaml")],
        &s.wd.state_dir(),
        &[],
        Duration::from_secs(120),
    )
    .await;
    run.assert_exit(0);
    let log = s.http.gets("/a");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        log[0].headers.get("authorization").map(String::as_str),
        Some(secret)
    );
    assert!(!run.stdout.contains("s3cr3t") && !run.stderr.contains("s3cr3t"));
}

/// Filters select by key and listed size; Skip leaves what the bucket has.
#[tokio::test(flavor = "multi_thread")]
async fn filters_and_overwrite_policies() {
    let s = Setup::new("url-filters").await;
    for (p, seed, len) in [
        ("/p/a.jpg", 1, 100),
        ("/p/b.jpg", 2, 5000),
        ("/p/c.txt", 3, 100),
    ] {
        s.http.put(p, File::new(bytes(seed, len)));
    }
    s.s3.put(&s.bucket, "a.jpg", b"old".to_vec()).await;
    let tsv = format!(
        "TsvHttpData-1.0\n{}{}{}",
        tsv_line(&s.http.url("/p/a.jpg"), &bytes(1, 100)),
        tsv_line(&s.http.url("/p/b.jpg"), &bytes(2, 5000)),
        tsv_line(&s.http.url("/p/c.txt"), &bytes(3, 100)),
    );
    let job = s
        .job(&tsv, json!({ "stripPrefix": "/p/" }))
        .with("filters", json!({ "include": ["*.jpg"], "maxSize": "1Ki" }))
        .with("overwrite", json!("Skip"));
    let run = s.run(&job).await;
    run.assert_exit(0);
    let got = s.contents().await;
    assert_eq!(
        got.keys()
            .filter(|k| !k.starts_with(".ferry"))
            .collect::<Vec<_>>(),
        ["a.jpg"]
    );
    assert_eq!(got["a.jpg"], b"old", "Skip kept the existing object");
    assert!(
        s.http.log().is_empty(),
        "nothing was read: {:?}",
        s.http.log()
    );

    // IfDifferent: the list's MD5 differs from the bucket's ETag, so a.jpg is copied.
    std::fs::remove_dir_all(s.wd.state_dir()).unwrap();
    let run = s.run(&job.with("overwrite", json!("IfDifferent"))).await;
    run.assert_exit(0).assert_counter("objectsCopied", 1);
    assert_eq!(s.s3.get(&s.bucket, "a.jpg").await, bytes(1, 100));
}

/// A run killed with SIGKILL resumes from its checkpoint: every file is in the bucket once,
/// byte-identical, and files done before the checkpoint are not read again.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_resumes_and_copies_each_file_once() {
    let s = Setup::new("url-resume").await;
    const N: usize = 200;
    let mut list = String::new();
    for i in 0..N {
        let path = format!("/f/{i:04}.bin");
        s.http.put(&path, File::new(bytes(i as u64, 1000 + i)));
        list.push_str(&format!("{}\n", s.http.url(&path)));
    }
    let job = s
        .job(&list, json!({ "requestsPerSecondPerHost": 40 }))
        .with("parallelism", json!({ "shards": 1, "concurrency": 4 }));
    let mut child = s.wd.spawn(&job, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let watermark = loop {
        let w =
            s.wd.shard_state(0)
                .and_then(|st| st["checkpoint"]["watermark"].as_str().map(String::from));
        if let Some(w) = w.filter(|w| w.as_str() >= "f/0040.bin") {
            break w;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ferry ended before the kill"
        );
        assert!(
            Instant::now() < deadline,
            "no checkpoint past f/0040.bin in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let before: BTreeMap<String, usize> = (0..N)
        .map(|i| {
            let p = format!("/f/{i:04}.bin");
            let n = s.http.gets(&p).len();
            (p, n)
        })
        .collect();

    let run =
        s.wd.run(
            &job.with("parallelism", json!({ "shards": 1, "concurrency": 16 })),
            &[],
        )
        .await;
    run.assert_exit(0).assert_phase("Completed");
    let got = s.contents().await;
    for i in 0..N {
        let key = format!("f/{i:04}.bin");
        assert!(got.get(&key) == Some(&bytes(i as u64, 1000 + i)), "{key}");
        // Done before the checkpoint: not read again.
        if key <= watermark {
            assert_eq!(
                s.http.gets(&format!("/{key}")).len(),
                before[&format!("/{key}")],
                "{key} read again"
            );
        }
    }
    let manifest =
        reports::s3_report_lines(&s.s3, &s.bucket, "default", &s.name, Kind::Manifest).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for k in reports::keys(&manifest) {
        *counts.entry(k).or_default() += 1;
    }
    assert_eq!(counts.len(), N, "every key in the manifests");
    assert!(
        counts.values().all(|&n| n == 1),
        "a key listed twice: {counts:?}"
    );
}

/// A server that ignores `Range` (answers 200 with the whole body) still gives the right bytes
/// for each part of a large file.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_ranges_still_gives_each_part() {
    let s = Setup::new("url-noranges").await;
    let big = bytes(21, 11 * MI + 5);
    s.http.put(
        "/big.bin",
        File {
            no_ranges: true,
            ..File::new(big.clone())
        },
    );
    let tsv = format!(
        "TsvHttpData-1.0\n{}",
        tsv_line(&s.http.url("/big.bin"), &big)
    );
    let job = s.job(&tsv, json!({})).with(
        "multipart",
        json!({ "threshold": "5Mi", "partSize": "5Mi" }),
    );
    s.run(&job)
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", 1);
    assert!(
        s.s3.get(&s.bucket, "big.bin").await == big,
        "big.bin differs"
    );
    let gets = s.http.gets("/big.bin");
    assert_eq!(gets.len(), 3, "one GET per part: {gets:?}");
    assert!(gets.iter().all(|g| g.headers.contains_key("range")));
}

/// A CSV list (`URL,KEY`) kept as an object in a bucket, read with the Secret's credentials,
/// in chunks of one version: each URL lands under its explicit key.
#[tokio::test(flavor = "multi_thread")]
async fn a_csv_list_in_a_bucket_gives_explicit_keys() {
    let s = Setup::new("url-csv-s3").await;
    let mut csv = String::new();
    let mut expected = BTreeMap::new();
    for i in 0..50u64 {
        let body = bytes(100 + i, 300 + i as usize);
        s.http.put(&format!("/raw/{i}"), File::new(body.clone()));
        let key = format!("photos/{i:03}, \"n\".jpg");
        csv.push_str(&format!(
            "{},\"{}\"\n",
            s.http.url(&format!("/raw/{i}")),
            key.replace('"', "\"\"")
        ));
        expected.insert(key, body);
    }
    let lists = s.s3.create_bucket("url-lists").await;
    s.s3.put(&lists, "cdn/urls.csv", csv.into_bytes()).await;
    let server = shared_server();
    let job = s.job(
        "",
        json!({
            "path": null,
            "s3": {
                "endpoint": server.endpoint, "bucket": lists, "key": "cdn/urls.csv",
                "forcePathStyle": true, "credentialsSecretRef": { "name": "creds" }
            },
        }),
    );
    let run = s.run(&job).await;
    run.assert_exit(0).assert_counter("objectsCopied", 50);
    let got: BTreeMap<String, Vec<u8>> = s
        .contents()
        .await
        .into_iter()
        .filter(|(k, _)| !k.starts_with(".ferry/"))
        .collect();
    assert_eq!(got, expected);
}

/// Three shards split the list's keys (the planner samples the sorted list, sending no request
/// to the server); every file is copied once and the server sees one GET per file.
#[tokio::test(flavor = "multi_thread")]
async fn shards_split_the_list_and_copy_each_file_once() {
    let s = Setup::new("url-shards").await;
    let mut tsv = String::from("TsvHttpData-1.0\n");
    let mut expected = BTreeMap::new();
    for i in 0..90u64 {
        let body = bytes(200 + i, 100 + i as usize);
        let path = format!("/s/{}/{i:03}.bin", ["a", "m", "z"][i as usize % 3]);
        s.http.put(&path, File::new(body.clone()));
        tsv.push_str(&tsv_line(&s.http.url(&path), &body));
        expected.insert(path[1..].to_string(), body);
    }
    let job = s
        .job(&tsv, json!({}))
        .with("parallelism", json!({ "shards": 3, "concurrency": 8 }));
    let run = s.run(&job).await;
    run.assert_exit(0).assert_counter("objectsCopied", 90);
    let got: BTreeMap<String, Vec<u8>> = s
        .contents()
        .await
        .into_iter()
        .filter(|(k, _)| !k.starts_with(".ferry/"))
        .collect();
    assert_eq!(got, expected);
    let log = s.http.log();
    assert_eq!(log.len(), 90, "one GET per file, no HEAD: {log:?}");
    let per_shard: Vec<usize> = (0..3)
        .map(|i| {
            s.wd.shard_state(i)
                .and_then(|st| st["counters"]["objectsCopied"].as_u64())
                .unwrap_or(0) as usize
        })
        .collect();
    assert!(
        per_shard.iter().filter(|&&n| n > 0).count() >= 2,
        "the work was split: {per_shard:?}"
    );
}

/// `requestsPerSecondPerHost` paces the requests to one host: 30 GETs at 10 per second (a
/// burst of 10, then 10 a second) take at least two seconds.
#[tokio::test(flavor = "multi_thread")]
async fn requests_to_one_host_are_paced() {
    let s = Setup::new("url-paced").await;
    let mut tsv = String::from("TsvHttpData-1.0\n");
    for i in 0..30u64 {
        let body = bytes(300 + i, 64);
        let path = format!("/p/{i:02}");
        s.http.put(&path, File::new(body.clone()));
        tsv.push_str(&tsv_line(&s.http.url(&path), &body));
    }
    let job = s.job(&tsv, json!({ "requestsPerSecondPerHost": 10 }));
    s.run(&job)
        .await
        .assert_exit(0)
        .assert_counter("objectsCopied", 30);
    let log = s.http.log();
    assert_eq!(log.len(), 30);
    let span = log.last().unwrap().at - log[0].at;
    assert!(
        span >= Duration::from_millis(1800),
        "30 requests in {span:?}"
    );
    for w in log.windows(21) {
        let t = w[20].at - w[0].at;
        assert!(t >= Duration::from_millis(900), "21 requests within {t:?}");
    }
}
