//! Amazon ECR: registry host parsing, AWS credentials through the standard chain
//! (`aws-config`: environment, shared config/profile, IRSA web identity via STS
//! `AssumeRoleWithWebIdentity`, EKS Pod Identity / ECS container credentials, instance
//! metadata), ECR `GetAuthorizationToken` for the registry's region (`aws-sdk-ecr`), and
//! decoding its `AWS:<password>` token into Basic credentials.
//!
//! Endpoints follow aws-config's rules, so `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_ECR`
//! and `AWS_ENDPOINT_URL_STS` redirect the calls (tests point them at a local server).
//! The SDK's credential types redact themselves in `Debug`, but at TRACE level the SDK
//! logs whole HTTP responses and operation outputs — the ECR token and STS credentials
//! among them — so every SDK call here runs with logging switched off
//! ([`quiet`]); kiln logs the outcome itself. The token is wrapped in a [`Secret`] as
//! soon as it is decoded.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecr::error::DisplayErrorContext;
use base64::Engine as _;
use tracing::instrument::WithSubscriber as _;

use super::{renew_at, CloudError, Issued};
use crate::credentials::Credential;
use crate::secret::Secret;

/// Parses `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]` or the dual-stack
/// `<account>.dkr-ecr[-fips].<region>.on.aws` (lower-case, no port) into
/// (account, region, fips).
pub(crate) fn parse_host(host: &str) -> Option<(String, String, bool)> {
    let labels: Vec<&str> = host.split('.').collect();
    let (account, service, region) = match labels.as_slice() {
        [account, "dkr", ecr, region, "amazonaws", "com"]
        | [account, "dkr", ecr, region, "amazonaws", "com", "cn"] => {
            let fips = match *ecr {
                "ecr" => false,
                "ecr-fips" => true,
                _ => return None,
            };
            (*account, fips, *region)
        }
        [account, dkr_ecr, region, "on", "aws"] => {
            let fips = match *dkr_ecr {
                "dkr-ecr" => false,
                "dkr-ecr-fips" => true,
                _ => return None,
            };
            (*account, fips, *region)
        }
        _ => return None,
    };
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && region.contains('-');
    (account_ok && region_ok).then(|| (account.to_string(), region.to_string(), service))
}

/// Why an ECR authorization token does not decode. Never carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("the authorization token ECR returned is not base64")]
    NotBase64,
    #[error("the authorization token ECR returned is not UTF-8")]
    NotUtf8,
    #[error("the authorization token ECR returned is not user:password")]
    NotUserPassword,
}

/// Decodes an ECR authorization token (base64 of `user:password`, the user being `AWS`)
/// into Basic credentials. Errors never include the token.
pub(crate) fn decode_token(token: &str) -> Result<Credential, TokenError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .map_err(|_| TokenError::NotBase64)?;
    let raw = String::from_utf8(raw).map_err(|_| TokenError::NotUtf8)?;
    match raw.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
            Ok(Credential::Basic {
                username: user.to_string(),
                password: Secret::new(password),
            })
        }
        _ => Err(TokenError::NotUserPassword),
    }
}

/// Runs `fut` (an AWS SDK call) with no tracing subscriber, so the SDK's TRACE logging
/// of request and response bodies — which carry tokens and credentials — goes nowhere.
async fn quiet<F: std::future::Future>(fut: F) -> F::Output {
    fut.with_subscriber(tracing::subscriber::NoSubscriber::default())
        .await
}

/// The SDK's multi-line error reports (e.g. every provider of the chain tried) as one
/// line, so kiln's errors stay one line.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The AWS side of ECR auth: one shared AWS configuration (and so one cached set of AWS
/// credentials) per region.
#[derive(Default)]
pub(crate) struct Ecr {
    configs: tokio::sync::Mutex<HashMap<String, SdkConfig>>,
}

impl Ecr {
    async fn config(&self, region: &str) -> SdkConfig {
        let mut configs = self.configs.lock().await;
        if let Some(c) = configs.get(region) {
            return c.clone();
        }
        // The registry's region is used for STS too, so no region lookup (which may
        // wait on instance metadata) is needed.
        let c = quiet(
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(region.to_string()))
                .load(),
        )
        .await;
        configs.insert(region.to_string(), c.clone());
        c
    }

    /// Registry credentials for ECR registry `account` in `region`.
    pub(crate) async fn credential(
        &self,
        account: &str,
        region: &str,
        fips: bool,
    ) -> Result<Issued, CloudError> {
        let sdk = self.config(region).await;
        let mut conf = aws_sdk_ecr::config::Builder::from(&sdk);
        if fips {
            conf = conf.use_fips(true);
        }
        let client = aws_sdk_ecr::Client::from_conf(conf.build());
        // `registryIds` is deprecated: the token is valid for every registry the
        // caller may access.
        let out = quiet(client.get_authorization_token().send())
            .await
            .map_err(|e| CloudError::GetAuthorizationToken {
                region: region.to_string(),
                detail: one_line(&DisplayErrorContext(&e).to_string()),
            })?;
        let data = out
            .authorization_data()
            .first()
            .ok_or(CloudError::NoAuthorizationData)?;
        let token = data
            .authorization_token()
            .ok_or(CloudError::NoAuthorizationToken)?;
        let credential = decode_token(token)?;
        let now = SystemTime::now();
        let expires = data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok())
            // ECR tokens last 12 hours.
            .unwrap_or(now + std::time::Duration::from_secs(12 * 3600));
        tracing::debug!(account, region, "ECR authorization token obtained");
        Ok(Issued {
            credential,
            renew_at: renew_at(expires, now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse() {
        assert_eq!(
            parse_host("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            Some(("123456789012".into(), "us-east-1".into(), false))
        );
        assert_eq!(
            parse_host("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"),
            Some(("123456789012".into(), "us-east-1".into(), true))
        );
        assert_eq!(
            parse_host("123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn"),
            Some(("123456789012".into(), "cn-northwest-1".into(), false))
        );
        assert_eq!(
            parse_host("123456789012.dkr-ecr-fips.us-west-2.on.aws"),
            Some(("123456789012".into(), "us-west-2".into(), true))
        );
        for bad in [
            "12345678901a.dkr.ecr.us-east-1.amazonaws.com",
            "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr2.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.useast1.amazonaws.com",
            "123456789012.dkr.ecr..amazonaws.com",
            "123456789012.dkr.ecr.us_east-1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.org",
            "x.123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.ecr.us-east-1.on.aws",
        ] {
            assert_eq!(parse_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn sdk_errors_become_one_line() {
        assert_eq!(
            one_line("no credentials. Attempted:\n  Environment: not set\n\n  Profile: none\n"),
            "no credentials. Attempted:; Environment: not set; Profile: none"
        );
    }

    #[test]
    fn tokens_decode() {
        let t = base64::engine::general_purpose::STANDARD.encode("AWS:eyJwYXlsb2FkIjo:x=");
        assert_eq!(
            decode_token(&t).unwrap(),
            Credential::Basic {
                username: "AWS".into(),
                password: Secret::new("eyJwYXlsb2FkIjo:x=")
            }
        );
        let secret_ish = "AWS-no-colon-Secret-9";
        let e = decode_token(&base64::engine::general_purpose::STANDARD.encode(secret_ish))
            .unwrap_err();
        assert_eq!(e, TokenError::NotUserPassword);
        assert_eq!(
            e.to_string(),
            "the authorization token ECR returned is not user:password"
        );
        assert_eq!(
            decode_token("not base64!").unwrap_err().to_string(),
            "the authorization token ECR returned is not base64"
        );
        assert!(decode_token(&base64::engine::general_purpose::STANDARD.encode("AWS:")).is_err());
    }
}
