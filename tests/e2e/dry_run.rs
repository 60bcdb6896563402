//! `dryRun: true` lists, compares and reports, and writes nothing: the destination stays as it
//! was, without even a `.ferry/` report.

use ferry_tests::data::all_paths;
use ferry_tests::ferry::run_ferry;
use ferry_tests::fixtures::tree;
use ferry_tests::*;
use serde_json::json;

fn source() -> Tree {
    tree([
        ("identical", bytes(1, 100)),
        ("changed", bytes(2, 100)),
        ("new-1", bytes(3, 100)),
        ("new-2", bytes(4, 6 * MI)),
        ("new-3", Vec::new()),
    ])
}

fn seeded() -> Tree {
    tree([("identical", bytes(1, 100)), ("changed", bytes(20, 50))])
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_to_s3_writes_nothing_and_counts_would_copy() {
    let sc = Scenario::one_server("dry-s3")
        .source_tree(&source())
        .destination_tree(&seeded())
        .one_proxy(FaultSchedule::none())
        .with("dryRun", json!(true))
        .multipart()
        .build()
        .await;
    let (s3, dst) = (sc.dst_s3(), sc.dst_bucket());

    let run = sc.run().await;
    run.assert_exit(0).assert_phase("Completed");
    assert!(
        run.status().dry_run(),
        "the status should say dryRun: true\n{}",
        run.describe()
    );
    run.assert_counter("objectsWouldCopy", 4)
        .assert_counter("objectsCopied", 0)
        .assert_counter("objectsSkipped", 1);

    let all_keys: Vec<String> = s3
        .list_all(dst, "")
        .await
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        all_keys,
        vec!["changed".to_string(), "identical".to_string()],
        "a dry run must not write to the destination"
    );
    sc.assert_destination_eq(&seeded(), "destination after a dry run")
        .await;
    let writes: Vec<_> = sc
        .proxy()
        .records()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "DELETE"))
        .collect();
    assert!(
        writes.is_empty(),
        "a dry run sent write requests:\n{}",
        writes
            .iter()
            .map(|r| format!("  {} {}\n", r.method, r.target))
            .collect::<String>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_to_fs_writes_nothing() {
    let sc = Scenario::s3_to_fs("dry-fs")
        .source_tree(&source())
        .destination_tree(&seeded())
        .with("dryRun", json!(true))
        .build()
        .await;
    let dst = sc.dst_dir();
    let before = all_paths(dst);

    let run = sc.run().await;
    run.assert_exit(0)
        .assert_phase("Completed")
        .assert_counter("objectsWouldCopy", 4)
        .assert_counter("objectsCopied", 0);
    assert_eq!(
        all_paths(dst),
        before,
        "a dry run must not create anything in the destination directory"
    );
    sc.assert_destination_eq(&seeded(), "destination directory after a dry run")
        .await;
}

/// Price tables for the estimate test, steep enough that every line shows in cents.
const STEEP: &str = "steep:\n  description: test prices\n  effectiveDate: '2026-12-03'\n  \
    storagePerGBMonth: '100'\n  classAPerMillion: '10000'\n  classBPerMillion: '5000'\n  \
    egressPerGB: [{price: '1000'}]\n";

/// The estimate of a dry run, for a bucket counted by hand (`source()` against `seeded()`,
/// streamed between two servers): 4 objects to copy (100 + 100 + 6 MiB + 0 bytes), 1 up to
/// date; one LIST page on each side, a GET and a PUT per object. Priced with the `steep`
/// table of a ConfigMap given to `ferry run` beside the job, to the cent. A real run then
/// makes exactly the GETs and PUTs the estimate counted.
#[tokio::test(flavor = "multi_thread")]
async fn dry_run_estimates_requests_bytes_and_cost() {
    let sc = Scenario::two_servers("dry-estimate")
        .source_tree(&source())
        .destination_tree(&seeded())
        .source_proxy(FaultSchedule::none())
        .destination_proxy(FaultSchedule::none())
        .with("dryRun", json!(true))
        .with(
            "pricing",
            json!({"source": "steep", "destination": "steep", "configMapRef": {"name": "prices"}}),
        )
        .build()
        .await;
    let job_file = sc.job.write(sc.wd.path());
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "prices", "namespace": sc.job.namespace},
        "data": {"prices.yaml": STEEP},
    });
    let cm_file = sc.wd.path().join("prices.yaml");
    std::fs::write(&cm_file, serde_yaml::to_string(&cm).unwrap()).unwrap();

    let run = run_ferry(
        &[&job_file, &cm_file],
        &sc.wd.state_dir(),
        &[],
        std::time::Duration::from_secs(240),
    )
    .await;
    run.assert_exit(0).assert_phase("Completed");
    let e = &run.status().0["estimate"];
    let n = |path: &str| {
        e.pointer(path)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("estimate{path} missing\n{}", run.describe()))
    };
    let to_copy = 100 + 100 + 6 * MI as u64;
    assert_eq!((n("/objectsToCopy"), n("/bytesToCopy")), (4, to_copy));
    assert_eq!((n("/objectsToSkip"), n("/bytesToSkip")), (1, 100));
    assert_eq!(
        (n("/objectsToDelete"), n("/objectsInParts"), n("/parts")),
        (0, 0, 0)
    );
    assert_eq!(e["transport"], "Streamed", "{}", run.describe());
    let src = &e["sourceRequests"];
    let dst = &e["destinationRequests"];
    assert_eq!(
        src,
        &json!({"list": 1, "head": 0, "get": 4, "put": 0, "createMultipart": 0, "uploadPart": 0,
                "completeMultipart": 0, "copyObject": 0, "delete": 0})
    );
    assert_eq!(
        dst,
        &json!({"list": 1, "head": 0, "get": 0, "put": 4, "createMultipart": 0, "uploadPart": 0,
                "completeMultipart": 0, "copyObject": 0, "delete": 0})
    );
    assert_eq!(n("/egressBytes"), to_copy);
    assert!(
        e.get("notes")
            .is_none_or(|n| !n.to_string().contains("parts")),
        "{e}"
    );

    // By hand: egress 6,291,656 B = 0.0058596 GB × 1000 = 5.86; source 1 LIST × 0.01 + 4 GET
    // × 0.005 = 0.03; destination 5 Class A × 0.01 = 0.05; storage 6,291,756 B × 100 = 0.59.
    let cost = &e["cost"];
    let usd = |item: &str| {
        cost["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["item"] == item)
            .unwrap_or_else(|| panic!("no cost line {item}: {cost}"))["usd"]
            .clone()
    };
    assert_eq!(usd("source egress"), "5.86");
    assert_eq!(usd("source requests"), "0.03");
    assert_eq!(usd("destination requests"), "0.05");
    assert_eq!(cost["total"], "5.94", "{cost}");
    assert_eq!(cost["storagePerMonth"], "0.59");
    assert_eq!(cost["tables"][0], "source: steep (2026-12-03)");
    assert!(
        run.stderr.contains("estimate of a real run") && run.stderr.contains("5.94"),
        "the summary shows the estimate\n{}",
        run.describe()
    );

    // The same dry run again: it has ended, and shows its estimate again.
    let again = run_ferry(
        &[&job_file, &cm_file],
        &sc.wd.state_dir(),
        &[],
        std::time::Duration::from_secs(240),
    )
    .await;
    again.assert_exit(0);
    assert_eq!(
        again.status().0["estimate"]["cost"],
        *cost,
        "{}",
        again.describe()
    );

    // A real run of the same job: exactly the GETs and PUTs of objects counted, and what it
    // did costs what the estimate said (status.cost, from the same ConfigMap's tables).
    sc.src_proxy().clear();
    sc.dst_proxy().clear();
    let real = sc.job.clone().with("dryRun", json!(false));
    let real_file = real.write(sc.wd.path());
    let done = run_ferry(
        &[&real_file, &cm_file],
        &sc.wd.path().join("state-real"),
        &[],
        std::time::Duration::from_secs(240),
    )
    .await;
    done.assert_exit(0).assert_counter("objectsCopied", 4);
    let spent = &done.status().0["cost"];
    assert_eq!(spent["lines"], cost["lines"], "{}", done.describe());
    assert_eq!(spent["total"], "5.94", "{spent}");
    assert!(
        done.stderr.contains("what the run cost") && done.stderr.contains("5.94"),
        "the summary shows the cost\n{}",
        done.describe()
    );
    // The 4 copies, and the preflight's one-byte read of one object.
    assert_eq!(sc.src_proxy().object_gets().len(), 5, "GETs of objects");
    assert_eq!(sc.dst_proxy().data_puts().len(), 4, "PUTs of objects");
}

/// `spec.inventory` (issue 16): a dry run with `checksums: Sha256` lists every selected source
/// object (key, size, ETag, time, class) with what a real run would do, and a destination key
/// absent at the source as `delete`; `ferry report --show inventory` joins the shards' files
/// into one list in key order, as JSON Lines and as CSV. The sizes and ETags are the source's
/// as the test's own client lists them, the SHA-256s those `sha256sum` prints.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_inventory_lists_every_object_with_its_action_and_sha256() {
    let mut dst = seeded();
    dst.insert("extra".into(), bytes(9, 10));
    let sc = Scenario::one_server("inventory")
        .source_tree(&source())
        .destination_tree(&dst)
        .with("dryRun", json!(true))
        .with("inventory", json!({"checksums": "Sha256"}))
        .with("deletes", json!({"policy": "Propagate"}))
        .with("parallelism", json!({"shards": 2}))
        .build()
        .await;
    sc.run().await.assert_exit(0).assert_phase("Completed");

    let jsonl = sc
        .wd
        .report(&sc.job, &["--show", "inventory", "--format", "jsonl"]);
    jsonl.assert_exit(0);
    let lines: Vec<serde_json::Value> = jsonl
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let keys: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(
        keys,
        ["changed", "extra", "identical", "new-1", "new-2", "new-3"],
        "{}",
        jsonl.stdout
    );
    let action = |k: &str| lines.iter().find(|l| l["key"] == k).unwrap()["action"].clone();
    assert_eq!(action("identical"), "skip");
    assert_eq!(action("extra"), "delete");
    for k in ["changed", "new-1", "new-2", "new-3"] {
        assert_eq!(action(k), "copy", "{k}");
    }
    let listed = sc.src_s3().list_all(sc.src_bucket(), "").await;
    let src = source();
    for o in &listed {
        let line = lines.iter().find(|l| l["key"] == o.key.as_str()).unwrap();
        assert_eq!(line["size"], o.size, "{}", o.key);
        assert_eq!(line["etag"], o.etag.trim_matches('"'), "{}", o.key);
        assert_eq!(line["storageClass"], "standard", "{}", o.key);
        let file = sc.wd.path().join("object");
        std::fs::write(&file, &src[&o.key]).unwrap();
        let out = std::process::Command::new("sha256sum")
            .arg(&file)
            .output()
            .unwrap();
        let sum = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            line["sha256"],
            sum.split_whitespace().next().unwrap(),
            "{}",
            o.key
        );
    }
    assert!(
        lines
            .iter()
            .find(|l| l["key"] == "extra")
            .unwrap()
            .get("sha256")
            .is_none(),
        "a delete line has no SHA-256"
    );

    let csv = sc.wd.report(
        &sc.job,
        &["--show", "inventory", "--format", "csv", "--class", "copy"],
    );
    csv.assert_exit(0);
    let rows: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(rows[0], "key,size,etag,modified,storageClass,action,sha256");
    assert_eq!(
        rows.len(),
        5,
        "the header and the four to copy: {}",
        csv.stdout
    );
    assert!(rows[1].starts_with("changed,100,"), "{}", rows[1]);
}
