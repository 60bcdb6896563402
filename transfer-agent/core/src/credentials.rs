//! Credentials that stopped working while a job ran (issue 13, failure mode 11).

use crate::progress::{ErrorSample, FailureClass};

/// Whether an error says the credentials a process started with no longer work: a session
/// token past its expiry (`ExpiredToken`...), or an access key that no longer exists (rotated
/// away). A shard stopped on it is paused, not failed: run again (an agent's pod started again
/// reads the Secret's values as they are then), it goes on from its checkpoint.
pub fn went_stale(class: FailureClass, code: Option<&str>) -> bool {
    class == FailureClass::AuthExpired || code == Some("InvalidAccessKeyId")
}

impl ErrorSample {
    /// The error is [`went_stale`]: the credentials must be rotated, the job is not over.
    pub fn credentials_went_stale(&self) -> bool {
        went_stale(self.class, self.code.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_tokens_and_keys_rotated_away_are_stale_credentials() {
        assert!(went_stale(FailureClass::AuthExpired, Some("ExpiredToken")));
        assert!(went_stale(
            FailureClass::AccessDenied,
            Some("InvalidAccessKeyId")
        ));
        // A policy that denies is not a rotation.
        assert!(!went_stale(
            FailureClass::AccessDenied,
            Some("AccessDenied")
        ));
        assert!(!went_stale(FailureClass::NoSuchBucket, None));
    }
}
