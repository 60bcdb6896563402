//! Turns each side's Secret into its secret values, from Secrets loaded with the job: the
//! Secret and the keys it must hold come from the side's kind of location.

use ferry_api::{Endpoint, MigrationJobSpec, Side};
use ferry_core::stores::{SideSecrets, URL_LIST_HEADER_PREFIX};
use ferry_core::JobCredentials;

use crate::manifests::SecretData;

/// A problem with a referenced Secret. Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("{side}: Secret {namespace}/{name} was not found (a job may only use Secrets of its own namespace)")]
    Missing {
        side: String,
        namespace: String,
        name: String,
    },
    #[error("{side}: Secret {namespace}/{name} has no key {key}")]
    MissingKey {
        side: String,
        namespace: String,
        name: String,
        key: String,
    },
}

/// Resolves one side. `lookup` finds a Secret by name in the job's namespace.
pub fn side_credentials<'a>(
    side: Side,
    ep: &Endpoint,
    namespace: &str,
    lookup: &dyn Fn(&str) -> Option<&'a SecretData>,
) -> Result<SideSecrets, CredentialsError> {
    let Ok(location) = ep.location() else {
        return Ok(SideSecrets::default());
    };
    let mut values = std::collections::BTreeMap::new();
    if let Some(name) = location.whole_secret() {
        let data = lookup(name).ok_or_else(|| CredentialsError::Missing {
            side: format!("spec.{}.{}", side.field(), location.kind()),
            namespace: namespace.into(),
            name: name.to_string(),
        })?;
        for (k, v) in &data.0 {
            values.insert(format!("{URL_LIST_HEADER_PREFIX}{k}"), v.clone());
        }
    }
    if let Some(v) = location.secret_value() {
        let side = format!("spec.{}.{}.{}", side.field(), location.kind(), v.field);
        let data = lookup(v.name).ok_or_else(|| CredentialsError::Missing {
            side: side.clone(),
            namespace: namespace.into(),
            name: v.name.to_string(),
        })?;
        let value = data.0.get(v.key).filter(|x| !x.is_empty()).ok_or_else(|| {
            CredentialsError::MissingKey {
                side,
                namespace: namespace.into(),
                name: v.name.to_string(),
                key: v.key.to_string(),
            }
        })?;
        values.insert(v.as_key.to_string(), value.clone());
    }
    let Some(secret) = location.secret() else {
        return Ok(SideSecrets::new(values));
    };
    let field = format!("spec.{}.{}.{}", side.field(), location.kind(), secret.field);
    let data = lookup(secret.name).ok_or_else(|| CredentialsError::Missing {
        side: field.clone(),
        namespace: namespace.into(),
        name: secret.name.to_string(),
    })?;
    for key in secret.keys {
        match data.0.get(key.name).filter(|v| !v.is_empty()) {
            Some(v) => {
                values.insert(key.name.to_string(), v.clone());
            }
            None if key.required => {
                return Err(CredentialsError::MissingKey {
                    side: field,
                    namespace: namespace.into(),
                    name: secret.name.to_string(),
                    key: key.name.to_string(),
                })
            }
            None => {}
        }
    }
    Ok(SideSecrets::new(values))
}

/// Resolves every side of a job.
pub fn job_credentials<'a>(
    spec: &MigrationJobSpec,
    namespace: &str,
    lookup: &dyn Fn(&str) -> Option<&'a SecretData>,
) -> Result<JobCredentials, CredentialsError> {
    Ok(JobCredentials {
        source: side_credentials(Side::Source, &spec.source, namespace, lookup)?,
        destination: side_credentials(Side::Destination, &spec.destination, namespace, lookup)?,
        report: match &spec.report {
            Some(r) => side_credentials(Side::Report, r, namespace, lookup)?,
            None => SideSecrets::default(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::stores::{S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY};
    use std::collections::BTreeMap;

    fn spec() -> MigrationJobSpec {
        serde_yaml::from_str("source: {s3: {bucket: abc, credentialsSecretRef: {name: src}}}\ndestination: {s3: {bucket: def}}").unwrap()
    }

    #[test]
    fn resolves_secret_values_and_the_default_chain() {
        let secret = SecretData(BTreeMap::from([
            (S3_ACCESS_KEY_ID.to_string(), "AK".to_string()),
            (S3_SECRET_ACCESS_KEY.to_string(), "SK".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ]));
        let c = job_credentials(&spec(), "ns", &|n| (n == "src").then_some(&secret)).unwrap();
        assert_eq!(c.source.get(S3_ACCESS_KEY_ID), Some("AK"));
        assert_eq!(
            c.source.get("UNRELATED"),
            None,
            "only the keys the kind reads"
        );
        assert!(c.destination.is_empty());
    }

    #[test]
    fn missing_secret_or_key_is_named_without_values() {
        let e = job_credentials(&spec(), "ns", &|_| None).unwrap_err();
        assert_eq!(e.to_string(), "spec.source.s3.credentialsSecretRef: Secret ns/src was not found (a job may only use Secrets of its own namespace)");
        let secret = SecretData(BTreeMap::from([(
            S3_ACCESS_KEY_ID.to_string(),
            "AKVALUE".to_string(),
        )]));
        let e = job_credentials(&spec(), "ns", &|_| Some(&secret)).unwrap_err();
        assert!(
            e.to_string().contains("has no key AWS_SECRET_ACCESS_KEY")
                && !e.to_string().contains("AKVALUE")
        );
    }

    /// A database's URL is read from the key the spec names and handed on as DATABASE_URL.
    #[test]
    fn a_database_url_comes_from_its_key() {
        let spec: MigrationJobSpec = serde_yaml::from_str(
            "source: {database: {connectionSecretRef: {name: db, key: URL}, table: t, idColumn: id, dataColumn: d, key: '{id}'}}\ndestination: {s3: {bucket: def}}",
        )
        .unwrap();
        let secret = SecretData(BTreeMap::from([(
            "URL".to_string(),
            "postgres://u:pw@h/db".to_string(),
        )]));
        let c = job_credentials(&spec, "ns", &|n| (n == "db").then_some(&secret)).unwrap();
        assert_eq!(
            c.source.get(ferry_core::database::DATABASE_URL),
            Some("postgres://u:pw@h/db")
        );
        let other = SecretData(BTreeMap::from([(
            "DATABASE_URL".to_string(),
            "postgres://u:pw@h/db".to_string(),
        )]));
        let e = job_credentials(&spec, "ns", &|_| Some(&other)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.source.database.connectionSecretRef: Secret ns/db has no key URL"
        );
    }
}
