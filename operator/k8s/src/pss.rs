//! The restricted Pod Security Standard as a check of a pod spec, for the tests of every pod
//! Ferry makes (the planner and agents the operator creates, the chart's operator Deployment).

use k8s_openapi::api::core::v1::PodSpec;

/// What the restricted Pod Security Standard (v1.32) refuses in `pod`, one line each
/// (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>), plus the
/// read-only root filesystem Ferry asks of itself.
pub fn restricted_violations(pod: &PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    let psc = pod.security_context.clone().unwrap_or_default();
    if pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true) {
        out.push("host namespaces".to_string());
    }
    for v in pod.volumes.iter().flatten() {
        let allowed = v.config_map.is_some()
            || v.persistent_volume_claim.is_some()
            || v.secret.is_some()
            || v.projected.is_some()
            || v.empty_dir.is_some()
            || v.downward_api.is_some()
            || v.csi.is_some()
            || v.ephemeral.is_some();
        if !allowed {
            out.push(format!(
                "volume {} of a kind restricted pods may not use",
                v.name
            ));
        }
    }
    let pod_seccomp = psc.seccomp_profile.as_ref().map(|p| p.type_.clone());
    for c in &pod.containers {
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            out.push(format!("{}: privileged", c.name));
        }
        if sc.allow_privilege_escalation != Some(false) {
            out.push(format!("{}: allowPrivilegeEscalation is not false", c.name));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            out.push(format!("{}: capabilities do not drop ALL", c.name));
        }
        if caps.add.iter().flatten().any(|a| a != "NET_BIND_SERVICE") {
            out.push(format!("{}: adds capabilities", c.name));
        }
        if sc.run_as_non_root.or(psc.run_as_non_root) != Some(true) {
            out.push(format!("{}: runAsNonRoot is not true", c.name));
        }
        if sc.run_as_user.or(psc.run_as_user) == Some(0) {
            out.push(format!("{}: runs as user 0", c.name));
        }
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.clone())
            .or(pod_seccomp.clone());
        if !matches!(seccomp.as_deref(), Some("RuntimeDefault" | "Localhost")) {
            out.push(format!("{}: no RuntimeDefault seccomp profile", c.name));
        }
        if sc.read_only_root_filesystem != Some(true) {
            out.push(format!("{}: the root filesystem is writable", c.name));
        }
        if c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_none()
        {
            out.push(format!("{}: no resource limits", c.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod that says nothing about its security is refused on each count.
    #[test]
    fn an_unhardened_pod_is_refused() {
        let pod: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}]
        }))
        .unwrap();
        let v = restricted_violations(&pod);
        for want in [
            "volume h",
            "allowPrivilegeEscalation",
            "drop ALL",
            "runAsNonRoot",
            "seccomp",
            "root filesystem",
            "resource limits",
        ] {
            assert!(
                v.iter().any(|l| l.contains(want)),
                "{want} missing in {v:?}"
            );
        }
    }
}
