//! Which source objects a job selects (`docs/contract.md` §1, "Filters").

use chrono::{DateTime, Utc};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// A job's filters with quantities resolved to bytes: what the plan carries.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// Glob patterns on the key relative to the source prefix; empty selects every key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Glob patterns; a key matching one is not selected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub case_insensitive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_after: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_before: Option<DateTime<Utc>>,
}

/// The compiled filters of a job: glob patterns on the key relative to the source prefix,
/// size bounds and modification-time bounds.
#[derive(Clone, Debug)]
pub struct Selector {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    modified_after: Option<DateTime<Utc>>,
    modified_before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filters.{field}[{index}]: {pattern:?} is not a valid glob: {reason}")]
pub struct PatternError {
    pub field: &'static str,
    pub index: usize,
    pub pattern: String,
    pub reason: String,
}

fn compile(
    field: &'static str,
    patterns: &[String],
    case_insensitive: bool,
) -> Result<Option<GlobSet>, PatternError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for (index, p) in patterns.iter().enumerate() {
        let glob = GlobBuilder::new(p)
            .literal_separator(true)
            .case_insensitive(case_insensitive)
            .backslash_escape(true)
            .build()
            .map_err(|e| PatternError {
                field,
                index,
                pattern: p.clone(),
                reason: e.kind().to_string(),
            })?;
        set.add(glob);
    }
    set.build().map(Some).map_err(|e| PatternError {
        field,
        index: 0,
        pattern: String::new(),
        reason: e.to_string(),
    })
}

impl Selector {
    pub fn new(f: &Selection) -> Result<Self, PatternError> {
        Ok(Selector {
            include: compile("include", &f.include, f.case_insensitive)?,
            exclude: compile("exclude", &f.exclude, f.case_insensitive)?,
            min_size: f.min_size,
            max_size: f.max_size,
            modified_after: f.modified_after,
            modified_before: f.modified_before,
        })
    }

    /// Selects everything.
    pub fn all() -> Self {
        Selector::new(&Selection::default()).expect("empty filters compile")
    }

    /// Whether the object at `rel_key` (relative to the source prefix) is selected.
    pub fn selects(&self, rel_key: &str, size: u64, modified: Option<DateTime<Utc>>) -> bool {
        if let Some(inc) = &self.include {
            if !inc.is_match(rel_key) {
                return false;
            }
        }
        if let Some(exc) = &self.exclude {
            if exc.is_match(rel_key) {
                return false;
            }
        }
        if self.min_size.is_some_and(|m| size < m) || self.max_size.is_some_and(|m| size > m) {
            return false;
        }
        if self.modified_after.is_some() || self.modified_before.is_some() {
            let Some(t) = modified else { return false };
            if self.modified_after.is_some_and(|a| t < a)
                || self.modified_before.is_some_and(|b| t >= b)
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(yaml: &str) -> Selector {
        Selector::new(&serde_yaml::from_str::<Selection>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn star_does_not_cross_slash_but_double_star_does() {
        let s = sel("include: ['*.jpg']");
        assert!(s.selects("a.jpg", 1, None));
        assert!(!s.selects("dir/a.jpg", 1, None));
        let s = sel("include: ['**/*.jpg']");
        assert!(s.selects("dir/sub/a.jpg", 1, None));
        assert!(s.selects("a.jpg", 1, None));
        assert!(!s.selects("a.png", 1, None));
    }

    #[test]
    fn exclude_wins_and_case_matters_unless_told() {
        let s = sel("include: ['**']\nexclude: ['tmp/**']");
        assert!(s.selects("x/y", 1, None));
        assert!(!s.selects("tmp/y", 1, None));
        let s = sel("include: ['*.JPG']");
        assert!(!s.selects("a.jpg", 1, None));
        let s = sel("include: ['*.JPG']\ncaseInsensitive: true");
        assert!(s.selects("a.jpg", 1, None));
    }

    #[test]
    fn size_bounds_are_inclusive() {
        let f = Selection {
            min_size: Some(1024),
            max_size: Some(2048),
            ..Default::default()
        };
        let s = Selector::new(&f).unwrap();
        assert!(!s.selects("a", 1023, None));
        assert!(s.selects("a", 1024, None));
        assert!(s.selects("a", 2048, None));
        assert!(!s.selects("a", 2049, None));
    }

    #[test]
    fn time_bounds_after_inclusive_before_exclusive() {
        let s =
            sel("modifiedAfter: '2024-01-01T00:00:00Z'\nmodifiedBefore: '2024-02-01T00:00:00Z'");
        let t = |x: &str| Some(x.parse::<DateTime<Utc>>().unwrap());
        assert!(!s.selects("a", 1, t("2023-12-31T23:59:59Z")));
        assert!(s.selects("a", 1, t("2024-01-01T00:00:00Z")));
        assert!(!s.selects("a", 1, t("2024-02-01T00:00:00Z")));
        assert!(!s.selects("a", 1, None));
    }

    #[test]
    fn bad_glob_is_reported_with_its_place() {
        let f: Selection = serde_yaml::from_str("exclude: ['ok', 'a[']").unwrap();
        let e = Selector::new(&f).unwrap_err();
        assert_eq!((e.field, e.index), ("exclude", 1));
    }
}
