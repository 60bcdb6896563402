//! Check mode in the status (`spec.mode: Check`, `docs/check.md`): what the shards counted,
//! and the phase it makes. Pure.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use ferry_core::plan::Transfer;

use crate::status::{Counters, Phase};

/// What a Check found, summed over the shards. Every key counted here but `identical` is
/// listed, with the difference, in the check report (`check-NNNNNN.jsonl` in each shard's
/// folder under `status.report`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// Selected source keys the destination holds with the same content (as far as the check
    /// compares: size; the ETag where both sides' are MD5s; the bytes with `verify: ReRead`).
    pub identical: u64,
    /// Selected source keys absent at the destination.
    pub missing: u64,
    /// Selected source keys the destination holds with other content (size, ETag or bytes).
    pub different: u64,
    /// Selected destination keys absent at the source.
    pub extra: u64,
    /// Keys that could not be compared (a read failed; an archived object with `verify:
    /// ReRead`): see the failure report.
    pub failed: u64,
}

impl CheckStatus {
    pub fn of(c: &Counters) -> CheckStatus {
        CheckStatus {
            identical: c.objects_identical,
            missing: c.objects_missing,
            different: c.objects_different,
            extra: c.objects_extra,
            failed: c.objects_failed + c.objects_archived,
        }
    }

    /// Keys that are not identical on both sides.
    pub fn differences(&self) -> u64 {
        self.missing + self.different + self.extra
    }

    /// One line: `3 identical, 1 missing, 1 different, 1 extra`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} identical, {} missing, {} different, {} extra",
            self.identical, self.missing, self.different, self.extra
        );
        if self.failed > 0 {
            s.push_str(&format!(", {} not compared", self.failed));
        }
        s
    }
}

/// The phase of a Check whose shards all completed with counters `total`: `Completed` when
/// every key is identical, `PartiallyCompleted` when differences were found or keys could not
/// be compared, `Failed` when those exceed `maxFailures`.
pub fn outcome(transfer: &Transfer, total: &Counters) -> (Phase, String) {
    let check = CheckStatus::of(total);
    let msg = format!("check: {}", check.summary());
    if let Some(b) = transfer.max_failures {
        if b.exceeded(check.failed, total.objects_total) {
            return (Phase::Failed, format!("{msg} (more than maxFailures {b})"));
        }
    }
    if check.differences() == 0 && check.failed == 0 {
        (Phase::Completed, msg)
    } else {
        (Phase::PartiallyCompleted, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(extra: &str) -> Transfer {
        let spec: crate::MigrationJobSpec = serde_yaml::from_str(&format!(
            "source: {{s3: {{bucket: abc}}}}\ndestination: {{filesystem: {{path: /b}}}}\nmode: Check\n{extra}"
        ))
        .unwrap();
        crate::validate(&spec).unwrap().transfer
    }

    #[test]
    fn identical_completes_and_any_difference_is_partial() {
        let t = transfer("");
        let mut c = Counters {
            objects_total: 5,
            objects_identical: 5,
            ..Default::default()
        };
        assert_eq!(outcome(&t, &c).0, Phase::Completed);
        assert_eq!(
            outcome(&t, &c).1,
            "check: 5 identical, 0 missing, 0 different, 0 extra"
        );
        for field in [0, 1, 2] {
            let mut d = c.clone();
            match field {
                0 => d.objects_missing = 1,
                1 => d.objects_different = 1,
                _ => d.objects_extra = 1,
            }
            assert_eq!(outcome(&t, &d).0, Phase::PartiallyCompleted);
        }
        c.objects_failed = 1;
        assert_eq!(outcome(&t, &c).0, Phase::PartiallyCompleted);
        assert!(outcome(&t, &c).1.ends_with("1 not compared"));
        assert_eq!(
            outcome(&transfer("maxFailures: \"0\""), &c).0,
            Phase::Failed
        );
    }

    #[test]
    fn a_check_refuses_a_dry_run_and_delete_propagation() {
        let parse = |extra: &str| -> crate::MigrationJobSpec {
            serde_yaml::from_str(&format!(
                "source: {{s3: {{bucket: abc}}}}\ndestination: {{filesystem: {{path: /b}}}}\n{extra}"
            ))
            .unwrap()
        };
        let fields = |extra: &str| -> Vec<String> {
            crate::validate(&parse(extra))
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.field)
                .collect()
        };
        assert_eq!(fields("mode: Check\ndryRun: true"), ["spec.dryRun"]);
        assert_eq!(
            fields("mode: Check\ndeletes: {policy: Propagate}"),
            ["spec.deletes.policy"]
        );
        assert_eq!(fields("inventory: {checksums: Sha256}"), ["spec.inventory"]);
        assert!(fields("inventory: {}\ndryRun: true").is_empty());
        assert!(fields("mode: Check\nverify: ReRead").is_empty());
        let t = crate::validate(&parse("mode: Check")).unwrap().transfer;
        assert_eq!(t.mode, ferry_core::Mode::Check);
        let t = crate::validate(&parse("inventory: {checksums: Sha256}\ndryRun: true"))
            .unwrap()
            .transfer;
        assert_eq!(
            t.inventory.map(|i| i.checksums),
            Some(ferry_core::InventoryChecksums::Sha256)
        );
    }
}
