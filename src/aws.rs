//! The AWS SDK edge: one shared SDK configuration from `[aws]` and the standard credential chain.
//!
//! Credentials come from the SDK's default chain (environment, shared profile, web identity/IRSA, ECS, IMDS); the
//! `AWS_*` variables work as everywhere. trailwatch never reads or logs a credential itself.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::error::DisplayErrorContext;

/// What an AWS call that found no credentials reports, in the CLI, the logs and `/readyz`.
pub const NO_CREDENTIALS: &str =
    "no AWS credentials found: environment, profile, web identity, container or instance metadata";

/// `[aws]` settings, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsSettings {
    /// Region; when absent, the SDK's chain (`AWS_REGION`, profile, IMDS) decides.
    pub region: Option<String>,
    /// A custom endpoint (an emulator, a VPC endpoint); when absent, AWS's.
    pub endpoint_url: Option<String>,
    /// Path-style S3 addressing (`host/bucket/key`), which emulators need.
    pub s3_force_path_style: bool,
    /// GetObject requests in flight at once.
    pub max_concurrent_fetches: usize,
}

/// Loads the shared SDK configuration. Transient errors (throttling, 5xx, timeouts) are retried with backoff by
/// the SDK's standard retry mode, up to 5 attempts.
pub async fn sdk_config(settings: &AwsSettings) -> aws_config::SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::standard().with_max_attempts(5));
    if let Some(region) = &settings.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

pub fn s3_client(sdk: &aws_config::SdkConfig, settings: &AwsSettings) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk).force_path_style(settings.s3_force_path_style).build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An SDK error as one line: [`NO_CREDENTIALS`] when no provider in the credential chain had credentials (the SDK's
/// own report lists each provider's attempt over many lines, with debug dumps), else the error and its causes.
pub fn describe<E: std::error::Error + 'static>(err: &E) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = cause {
        if let Some(CredentialsError::CredentialsNotLoaded(_)) = err.downcast_ref::<CredentialsError>() {
            return NO_CREDENTIALS.to_owned();
        }
        cause = err.source();
    }
    DisplayErrorContext(err).to_string()
}
