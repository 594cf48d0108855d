//! What the mutation needs to know about the webhook's own configuration.

use thiserror::Error;

/// Everything the mutation reads besides the pod and its ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutationConfig {
    /// Tenant used when neither the ServiceAccount nor an AgentPool names one.
    pub tenant_id: String,
    /// `AZURE_AUTHORITY_HOST`, trailing slash included.
    pub authority_host: String,
    /// Audience of the projected service-account token.
    pub audience: String,
    pub volume_name: String,
    pub mount_path: String,
    /// The token's file name inside the volume.
    pub token_path: String,
    /// This project's layout or upstream's (`for_pod` gives a pod's effective one).
    pub layout: crate::layout::TokenLayout,
    pub proxy_init_image: String,
    pub proxy_image: String,
    /// `--log-level` passed to the proxy sidecar.
    pub proxy_log_level: String,
    /// Inject the proxy as a native sidecar (init container with restartPolicy Always).
    pub native_sidecar: bool,
}

pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";
pub const DEFAULT_VOLUME_NAME: &str = "azure-identity-token";
pub const DEFAULT_MOUNT_PATH: &str = "/var/run/secrets/azure/tokens";
pub const DEFAULT_PROXY_INIT_IMAGE: &str =
    "mcr.microsoft.com/oss/azure/workload-identity/proxy-init:v1.6.0";
pub const DEFAULT_PROXY_IMAGE: &str = "mcr.microsoft.com/oss/azure/workload-identity/proxy:v1.6.0";

impl MutationConfig {
    /// The defaults of the seed's layout, for a given tenant.
    pub fn new(tenant_id: impl Into<String>) -> Self {
        MutationConfig {
            tenant_id: tenant_id.into(),
            authority_host: authority_host_for("").expect("the default cloud is known"),
            audience: DEFAULT_AUDIENCE.into(),
            volume_name: DEFAULT_VOLUME_NAME.into(),
            mount_path: DEFAULT_MOUNT_PATH.into(),
            token_path: crate::keys::TOKEN_PATH.into(),
            layout: crate::layout::TokenLayout::Default,
            proxy_init_image: DEFAULT_PROXY_INIT_IMAGE.into(),
            proxy_image: DEFAULT_PROXY_IMAGE.into(),
            proxy_log_level: "info".into(),
            native_sidecar: true,
        }
    }

    /// `AZURE_FEDERATED_TOKEN_FILE`: the mount path joined with the token's file name.
    pub fn token_file(&self) -> String {
        format!(
            "{}/{}",
            self.mount_path.trim_end_matches('/'),
            self.token_path
        )
    }

    /// Start-up checks: refuse a configuration that would produce broken pods.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tenant_id.trim().is_empty() {
            return Err(ConfigError::MissingTenant);
        }
        if !self.mount_path.starts_with('/') || self.mount_path.contains(':') {
            return Err(ConfigError::BadMountPath(self.mount_path.clone()));
        }
        if !is_dns_label(&self.volume_name) {
            return Err(ConfigError::BadVolumeName(self.volume_name.clone()));
        }
        Ok(())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "no tenant id: set --tenant-id or AZURE_TENANT_ID (used when neither the ServiceAccount nor an AgentPool names a tenant)"
    )]
    MissingTenant,
    #[error(
        "unknown Azure environment {0:?}: use AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud or AzureGermanCloud, or set --authority-host for other clouds"
    )]
    UnknownCloud(String),
    #[error("--token-mount-path {0:?} must be an absolute path without ':'")]
    BadMountPath(String),
    #[error("--token-volume-name {0:?} must be a DNS label (lowercase letters, digits, '-')")]
    BadVolumeName(String),
}

/// Maps an Azure cloud name (case-insensitive, empty = public) to its authority host.
pub fn authority_host_for(cloud: &str) -> Result<String, ConfigError> {
    let host = match cloud.trim().to_ascii_lowercase().as_str() {
        "" | "azurepubliccloud" | "azurecloud" => "https://login.microsoftonline.com/",
        "azureusgovernmentcloud" | "azureusgovernment" => "https://login.microsoftonline.us/",
        "azurechinacloud" => "https://login.chinacloudapi.cn/",
        "azuregermancloud" => "https://login.microsoftonline.de/",
        _ => return Err(ConfigError::UnknownCloud(cloud.to_string())),
    };
    Ok(host.to_string())
}

/// RFC 1123 label: what Kubernetes accepts as a volume name.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cloud_name_maps_to_its_authority_host() {
        for (name, host) in [
            ("", "https://login.microsoftonline.com/"),
            ("AzurePublicCloud", "https://login.microsoftonline.com/"),
            ("azurecloud", "https://login.microsoftonline.com/"),
            (
                "AZUREUSGOVERNMENTCLOUD",
                "https://login.microsoftonline.us/",
            ),
            ("AzureUSGovernment", "https://login.microsoftonline.us/"),
            ("AzureChinaCloud", "https://login.chinacloudapi.cn/"),
            ("AzureGermanCloud", "https://login.microsoftonline.de/"),
        ] {
            assert_eq!(authority_host_for(name).unwrap(), host, "{name}");
        }
    }

    #[test]
    fn unknown_cloud_is_a_clear_error() {
        let err = authority_host_for("AzureMoonCloud").unwrap_err();
        assert_eq!(err, ConfigError::UnknownCloud("AzureMoonCloud".into()));
        assert!(err.to_string().contains("--authority-host"));
    }

    #[test]
    fn missing_tenant_is_refused() {
        assert_eq!(
            MutationConfig::new(" ").validate(),
            Err(ConfigError::MissingTenant)
        );
        assert!(MutationConfig::new("t").validate().is_ok());
    }

    #[test]
    fn token_file_follows_the_mount_path() {
        let mut c = MutationConfig::new("t");
        assert_eq!(
            c.token_file(),
            "/var/run/secrets/azure/tokens/azure-identity-token"
        );
        c.mount_path = "/token/".into();
        assert_eq!(c.token_file(), "/token/azure-identity-token");
    }
}
