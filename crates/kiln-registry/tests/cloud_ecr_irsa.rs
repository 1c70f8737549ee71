//! ECR built-in auth with IRSA: a web identity token file and a role ARN, exchanged at
//! STS (`AssumeRoleWithWebIdentity`, served by moto) for the credentials that call
//! `GetAuthorizationToken`. One test per binary: the chain reads the environment.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::cloud::{
    capture_all_logs, ecr_round_trip, isolate_cloud_env, moto_assumed_roles, moto_ecr_password,
    Moto,
};

#[test]
fn ecr_push_and_pull_with_irsa_web_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    isolate_cloud_env(tmp.path());
    let web_token = "eyJraWQiOiJraWxuIn0.kiln-Irsa-Web-Identity-Token-5d2e.sig";
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, web_token).unwrap();
    std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file);
    std::env::set_var(
        "AWS_ROLE_ARN",
        "arn:aws:iam::123456789012:role/kiln-builder",
    );
    std::env::set_var("AWS_ROLE_SESSION_NAME", "kiln-test");
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
    let everything = ecr_round_trip(&rt, &logs, &password, &[web_token.to_string()]);
    // STS issued role credentials twice: once for the test's own question above, once
    // for kiln (whose chain had nothing but the web identity token to go on).
    let roles = moto_assumed_roles(&rt, &moto);
    assert_eq!(roles.len(), 2, "{roles:?}");
    for (session, key_id, secret, session_token) in &roles {
        assert_eq!(session, "kiln-test");
        assert!(key_id.starts_with("ASIA"), "{key_id}");
        assert!(!secret.is_empty() && !session_token.is_empty());
        assert!(
            !everything.contains(secret.as_str()),
            "role secret key leaked"
        );
        assert!(
            !everything.contains(session_token.as_str()),
            "session token leaked"
        );
    }
}
