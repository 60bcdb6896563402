//! Turns a side's `credentialsSecretRef` into credentials, from Secrets loaded with the job.

use ferry_api::{Endpoint, MigrationJobSpec};
use ferry_engine::store::S3Credentials;
use ferry_engine::JobCredentials;

use crate::manifests::SecretData;

pub const ACCESS_KEY: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_KEY: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN: &str = "AWS_SESSION_TOKEN";

/// A problem with a referenced Secret. Never carries a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("{side}: Secret {namespace}/{name} was not found (a job may only use Secrets of its own namespace)")]
    Missing {
        side: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{side}: Secret {namespace}/{name} has no key {key}")]
    MissingKey {
        side: &'static str,
        namespace: String,
        name: String,
        key: &'static str,
    },
}

/// Resolves one side. `lookup` finds a Secret by name in the job's namespace.
pub fn side_credentials<'a>(
    side: &'static str,
    ep: &Endpoint,
    namespace: &str,
    lookup: &dyn Fn(&str) -> Option<&'a SecretData>,
) -> Result<S3Credentials, CredentialsError> {
    let Some(s3) = &ep.s3 else {
        return Ok(S3Credentials::DefaultChain);
    };
    if s3.anonymous {
        return Ok(S3Credentials::Anonymous);
    }
    let Some(r) = &s3.credentials_secret_ref else {
        return Ok(S3Credentials::DefaultChain);
    };
    let data = lookup(&r.name).ok_or_else(|| CredentialsError::Missing {
        side,
        namespace: namespace.into(),
        name: r.name.clone(),
    })?;
    let get = |key: &'static str| {
        data.0
            .get(key)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| CredentialsError::MissingKey {
                side,
                namespace: namespace.into(),
                name: r.name.clone(),
                key,
            })
    };
    Ok(S3Credentials::Static {
        access_key_id: get(ACCESS_KEY)?,
        secret_access_key: get(SECRET_KEY)?,
        session_token: data.0.get(SESSION_TOKEN).filter(|v| !v.is_empty()).cloned(),
    })
}

/// Resolves every side of a job.
pub fn job_credentials<'a>(
    spec: &MigrationJobSpec,
    namespace: &str,
    lookup: &dyn Fn(&str) -> Option<&'a SecretData>,
) -> Result<JobCredentials, CredentialsError> {
    Ok(JobCredentials {
        source: side_credentials(
            "spec.source.s3.credentialsSecretRef",
            &spec.source,
            namespace,
            lookup,
        )?,
        destination: side_credentials(
            "spec.destination.s3.credentialsSecretRef",
            &spec.destination,
            namespace,
            lookup,
        )?,
        report: match &spec.report {
            Some(r) => {
                side_credentials("spec.report.s3.credentialsSecretRef", r, namespace, lookup)?
            }
            None => S3Credentials::DefaultChain,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spec() -> MigrationJobSpec {
        serde_yaml::from_str("source: {s3: {bucket: abc, credentialsSecretRef: {name: src}}}\ndestination: {s3: {bucket: def}}").unwrap()
    }

    #[test]
    fn resolves_static_and_default_chain() {
        let secret = SecretData(BTreeMap::from([
            (ACCESS_KEY.to_string(), "AK".to_string()),
            (SECRET_KEY.to_string(), "SK".to_string()),
        ]));
        let c = job_credentials(&spec(), "ns", &|n| (n == "src").then_some(&secret)).unwrap();
        assert!(
            matches!(c.source, S3Credentials::Static { ref access_key_id, session_token: None, .. } if access_key_id == "AK")
        );
        assert!(matches!(c.destination, S3Credentials::DefaultChain));
    }

    #[test]
    fn missing_secret_or_key_is_named_without_values() {
        let e = job_credentials(&spec(), "ns", &|_| None).unwrap_err();
        assert_eq!(e.to_string(), "spec.source.s3.credentialsSecretRef: Secret ns/src was not found (a job may only use Secrets of its own namespace)");
        let secret = SecretData(BTreeMap::from([(
            ACCESS_KEY.to_string(),
            "AKVALUE".to_string(),
        )]));
        let e = job_credentials(&spec(), "ns", &|_| Some(&secret)).unwrap_err();
        assert!(
            e.to_string().contains("has no key AWS_SECRET_ACCESS_KEY")
                && !e.to_string().contains("AKVALUE")
        );
    }
}
