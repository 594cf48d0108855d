//! The label and annotation keys the webhook reads, spelled exactly as upstream.

/// Pod label that the webhook configuration's objectSelector selects on.
pub const USE_LABEL: &str = "azure.workload.identity/use";
/// The value of [`USE_LABEL`] the objectSelector selects (exactly; `True` is not selected).
pub const USE_VALUE: &str = "true";
/// ServiceAccount annotation: the managed identity's client id.
pub const CLIENT_ID: &str = "azure.workload.identity/client-id";
/// ServiceAccount annotation: the managed identity's tenant id.
pub const TENANT_ID: &str = "azure.workload.identity/tenant-id";
/// ServiceAccount or Pod annotation (Pod wins): projected token lifetime in seconds.
pub const TOKEN_EXPIRATION: &str = "azure.workload.identity/service-account-token-expiration";
/// Pod annotation: `;`-separated container names that get no env vars or mount.
pub const SKIP_CONTAINERS: &str = "azure.workload.identity/skip-containers";
/// Pod annotation: inject the IMDS proxy when the value is `true` (any case).
pub const INJECT_PROXY: &str = "azure.workload.identity/inject-proxy-sidecar";
/// Pod annotation: the proxy's port, 1..65535.
pub const PROXY_PORT: &str = "azure.workload.identity/proxy-sidecar-port";

/// The environment variables the webhook injects, in injection order.
pub const ENV_CLIENT_ID: &str = "AZURE_CLIENT_ID";
pub const ENV_TENANT_ID: &str = "AZURE_TENANT_ID";
pub const ENV_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
pub const ENV_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";

/// Names of the containers the webhook injects for the proxy.
pub const PROXY_INIT_CONTAINER: &str = "azwi-proxy-init";
pub const PROXY_CONTAINER: &str = "azwi-proxy";

/// File name of the token inside the projected volume (fixed upstream).
pub const TOKEN_PATH: &str = "azure-identity-token";

pub const DEFAULT_PROXY_PORT: u16 = 8000;
pub const DEFAULT_TOKEN_EXPIRATION: i64 = 3600;
pub const MIN_TOKEN_EXPIRATION: i64 = 3600;
pub const MAX_TOKEN_EXPIRATION: i64 = 86400;
