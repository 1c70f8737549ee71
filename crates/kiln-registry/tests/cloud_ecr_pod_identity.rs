//! ECR built-in auth with EKS Pod Identity / ECS container credentials: the chain reads
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` and sends the token from
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`; a small credentials endpoint in this test
//! checks that token and hands out keys, which then call ECR on moto. One test per
//! binary: the chain reads the process environment.

// Tests panic on a failed step: that is the failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::cloud::{
    capture_all_logs, ecr_round_trip, isolate_cloud_env, moto_ecr_password, MiniServer, Moto,
    SeenRequest,
};

#[test]
fn ecr_push_and_pull_with_pod_identity_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    isolate_cloud_env(tmp.path());
    let agent_token = "kiln-Pod-Identity-Agent-Token-44c1";
    let secret_key = "kiln-Pod-Secret-Access-Key-0e9d";
    let session_token = "kiln-Pod-Session-Token-a71f";
    let expiration = "2099-01-01T00:00:00Z";
    let creds = serde_json::json!({
        "AccessKeyId": "ASIAKILNPODIDENTITY1",
        "SecretAccessKey": secret_key,
        "Token": session_token,
        "AccountId": "123456789012",
        "Expiration": expiration,
    })
    .to_string();
    let agent = MiniServer::start(move |r: &SeenRequest| {
        if r.method == "GET"
            && r.target == "/v1/credentials"
            && r.header("Authorization") == Some(agent_token)
        {
            (200, creds.clone())
        } else {
            (401, "{}".into())
        }
    });
    let token_file = tmp.path().join("eks-pod-identity-token");
    std::fs::write(&token_file, agent_token).unwrap();
    std::env::set_var(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("http://{}/v1/credentials", agent.addr),
    );
    std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file);
    std::env::set_var("AWS_ENDPOINT_URL", &moto.endpoint);
    let logs = capture_all_logs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let password = moto_ecr_password(&rt);
    assert_eq!(password, "123456789012-auth-token");
    let asked_by_test = agent.seen.lock().unwrap().len();
    assert_eq!(asked_by_test, 1);
    logs.0.lock().unwrap().clear(); // only kiln's own output is checked
    ecr_round_trip(
        &rt,
        &logs,
        &password,
        &[agent_token.into(), secret_key.into(), session_token.into()],
    );
    // kiln asked the credentials endpoint itself, once, with the agent token.
    let seen = agent.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("Authorization"), Some(agent_token));
}
