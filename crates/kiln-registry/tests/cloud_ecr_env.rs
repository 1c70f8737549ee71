//! ECR built-in auth with AWS credentials from environment variables, against moto
//! (STS/ECR) and a real registry whose password is moto's token. One test per binary:
//! the AWS credential chain reads the process environment.

mod harness;

use harness::cloud::{
    capture_all_logs, ecr_round_trip, isolate_cloud_env, moto_ecr_password, Moto,
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
}
