//! ECR built-in auth with AWS credentials from environment variables, against moto
//! (STS/ECR) and a real registry whose password is moto's token. One test per binary:
//! the AWS credential chain reads the process environment.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Mode, Registry};
use kiln_image::{BlobStore, Platform};
use kiln_registry::{CloudRegistry, RegistryClient, RegistryOptions};

use std::collections::HashMap;

use harness::cloud::{
    capture_all_logs, ecr_round_trip, isolate_cloud_env, moto_ecr_password, Moto, ECR_ACCOUNT,
    ECR_REGION,
};

#[test]
fn ecr_push_and_pull_with_env_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    let secret_key = "kiln-Env-Secret-Key-7f3a9c";
    isolate_cloud_env(tmp.path());
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIAKILNTESTENV00001");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", secret_key);
    std::env::set_var("AWS_ENDPOINT_URL", &moto.endpoint);
    let logs = capture_all_logs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let password = moto_ecr_password(&rt);
    assert_eq!(password, "123456789012-auth-token");
    logs.0.lock().unwrap().clear(); // only kiln's own output is checked
    ecr_round_trip(&rt, &logs, &password, &[secret_key.to_string()]);

    // No AWS credentials anywhere: kiln goes on anonymously and the registry's refusal
    // says why built-in ECR auth had nothing.
    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    let reg = Registry::start(Mode::BasicAs {
        user: "AWS".into(),
        password: password.clone(),
    });
    let client = RegistryClient::new(RegistryOptions {
        docker_config: Some(tmp.path().join("no-config.json")),
        cloud_registries: HashMap::from([(
            reg.host.clone(),
            CloudRegistry::Ecr {
                account: ECR_ACCOUNT.into(),
                region: ECR_REGION.into(),
                fips: false,
            },
        )]),
        ..RegistryOptions::default()
    })
    .unwrap();
    let store = BlobStore::open(&tmp.path().join("none")).unwrap();
    let e = rt
        .block_on(client.pull(
            &store,
            &format!("{}/team/app:v1", reg.host).parse().unwrap(),
            &Platform::new("linux", "amd64", None),
            &kiln_registry::NoProgress,
        ))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "registry {}: authentication failed: the registry requires credentials and none are configured for it (built-in ECR auth got no credentials: GetAuthorizationToken in us-east-1 failed: ",
            reg.host
        )),
        "{e}"
    );
    assert!(!e.contains('\n') && !e.contains(&password), "{e}");
}
