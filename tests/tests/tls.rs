//! TLS on the engine's TCP listener with client certificates required
//! (mutual TLS), against a real engine, the real CLI and a real worker:
//! a client with a certificate of the configured CA gets in; one without a
//! certificate, with one of another CA, without the engine's CA, or
//! speaking plain HTTP/2 does not. The Unix socket stays plain. A
//! certificate whose Common Name a `[[tls.client]]` entry names is an
//! identity of its own, with that entry's roles, for the CLI and a worker
//! alike; one no entry names gets none.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use opsdeck_proto::endpoint::EngineAddr;
use opsdeck_proto::tls::ClientTls;
use opsdeck_tests::pb::{self, console_client::ConsoleClient};
use opsdeck_tests::{
    Bearer, Clients, DEADLINE, Engine, EngineOpts, TOKEN_IDENTITY, TcpService, Worker,
    assert_status, opsdeck, sh,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tonic::service::interceptor::InterceptedService;

/// The files of a test PKI: a CA, the engine's certificate (for 127.0.0.1
/// and localhost), a client of that CA no `[[tls.client]]` entry names, a
/// client of another CA, and two clients the config names: an operator
/// and a worker.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    stranger_cert: PathBuf,
    stranger_key: PathBuf,
    operator: (PathBuf, PathBuf),
    agent: (PathBuf, PathBuf),
}

/// The Common Names of the certificates `[[tls.client]]` names.
const OPERATOR_CN: &str = "deploy-bot";
const AGENT_CN: &str = "worker-7";

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Writes a certificate signed by `issuer` and its key; gives their paths.
fn leaf(
    dir: &Path,
    name: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let ours = ca("opsdeck test CA");
    let theirs = ca("another CA");
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ours.pem()).unwrap();
    let (server_cert, server_key) = leaf(
        dir,
        "engine",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &ours,
    );
    let (client_cert, client_key) = leaf(
        dir,
        "ops-client",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        &ours,
    );
    let (stranger_cert, stranger_key) = leaf(
        dir,
        "stranger",
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        &theirs,
    );
    let operator = leaf(
        dir,
        OPERATOR_CN,
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        &ours,
    );
    let agent = leaf(
        dir,
        AGENT_CN,
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        &ours,
    );
    Pki {
        ca: ca_path,
        operator,
        agent,
        server_cert,
        server_key,
        client_cert,
        client_key,
        stranger_cert,
        stranger_key,
    }
}

/// The worker's token (agent role), next to the harness's admin token.
const AGENT_TOKEN: &str = "tok_tls_worker_agent_0123456789";

/// An engine whose TCP listener requires client certificates of `pki`'s CA.
async fn mtls_engine(dir: &Path) -> (Engine, Pki) {
    let pki = pki(dir);
    let config = format!(
        "{}[tls]\ncert = {}\nkey = {}\nclient_ca = {}\n\n\
         [[tls.client]]\nname = \"{OPERATOR_CN}\"\nroles = [\"operator\"]\ngroups = [\"deployers\"]\n\n\
         [[tls.client]]\nname = \"{AGENT_CN}\"\nroles = [\"agent\"]\n",
        opsdeck_tests::token_entry(AGENT_TOKEN, "tls-worker", &["agent"], &[]),
        sh(&pki.server_cert.display().to_string()),
        sh(&pki.server_key.display().to_string()),
        sh(&pki.ca.display().to_string()),
    );
    let engine = Engine::start(EngineOpts {
        config,
        ..EngineOpts::default()
    })
    .await;
    (engine, pki)
}

fn https(engine: &Engine) -> String {
    format!("https://{}", engine.tcp_addr())
}

/// Whoami over TLS with these files and the admin token: the identity
/// and transport, or what went wrong (connecting or calling).
async fn whoami(engine: &Engine, url: &str, tls: ClientTls) -> Result<(String, String), String> {
    let config = tls.load().map_err(|e| e.to_string())?;
    let addr: EngineAddr = url.parse().map_err(|e| format!("{e}"))?;
    let channel = addr
        .connect_with(Some(&config))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client = ConsoleClient::new(InterceptedService::new(
        channel,
        Bearer::new(Some(engine.token())),
    ));
    let who = client
        .whoami(pb::WhoamiRequest {})
        .await
        .map_err(|s| format!("call: {s:?}"))?
        .into_inner();
    Ok((who.identity, who.transport))
}

/// The engine ended the handshake: with the TLS alert `alert`, or (when
/// the close wins the race with the alert) by closing the connection.
fn refused_by_engine(error: &str, alert: &str) -> bool {
    error.contains(alert) || error.contains("connection closed") || error.contains("broken pipe")
}

#[tokio::test]
async fn mutual_tls_admits_a_certificate_of_the_ca_and_refuses_every_other_client() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, pki) = mtls_engine(dir.path()).await;
    let url = https(&engine);
    let valid = ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
    };

    let (identity, transport) = whoami(&engine, &url, valid.clone()).await.unwrap();
    assert_eq!(identity, TOKEN_IDENTITY);
    assert_eq!(transport, "tls");

    let no_cert = ClientTls {
        ca: Some(pki.ca.clone()),
        ..ClientTls::default()
    };
    let err = whoami(&engine, &url, no_cert).await.unwrap_err();
    assert!(refused_by_engine(&err, "CertificateRequired"), "{err}");

    let stranger = ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(pki.stranger_cert.clone()),
        key: Some(pki.stranger_key.clone()),
    };
    let e = whoami(&engine, &url, stranger)
        .await
        .expect_err("a certificate of another CA is refused");
    assert!(refused_by_engine(&e, "UnknownCA"), "{e}");

    // The system's roots do not know the test CA: the engine is not trusted.
    let no_ca = ClientTls {
        ca: None,
        ..valid.clone()
    };
    let e = whoami(&engine, &url, no_ca)
        .await
        .expect_err("an engine certificate of an unknown CA is refused by the client");
    assert!(e.contains("UnknownIssuer"), "{e}");

    // Plain HTTP/2 to the TLS listener gets nowhere.
    let plain = format!("http://{}", engine.tcp_addr());
    let plain_result = match plain.parse::<EngineAddr>().unwrap().connect().await {
        Ok(channel) => ConsoleClient::new(channel)
            .whoami(pb::WhoamiRequest {})
            .await
            .map(|_| ())
            .map_err(|s| s.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(plain_result.is_err(), "plain HTTP/2 was answered");

    // The Unix socket stays plain: the kernel names its callers.
    engine
        .api()
        .await
        .console
        .whoami(pb::WhoamiRequest {})
        .await
        .unwrap();

    // A client that still works after all the refusals: the engine is fine.
    whoami(&engine, &url, valid).await.unwrap();
}

fn cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(opsdeck());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OPSDECK_") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run opsdeck")
}

#[tokio::test]
async fn the_cli_and_a_worker_run_a_step_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, pki) = mtls_engine(dir.path()).await;
    let url = https(&engine);
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );

    let _worker = Worker::spawn(
        &engine,
        "tls-w1",
        &["build"],
        1,
        &[
            "--engine",
            &url,
            "--token",
            AGENT_TOKEN,
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ],
    );
    engine
        .wait_worker(
            "tls-w1",
            |w| w.state == pb::WorkerState::Online as i32 && w.connected,
            DEADLINE,
        )
        .await;

    let marker = engine.path("ran-over-tls");
    let spec = engine.work_dir().join("tls.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"over-tls\"\n[[step]]\nqueue = \"build\"\nrun = {}\n",
            sh(&format!("echo done > {}", marker.display()))
        ),
    )
    .unwrap();
    let spec = spec.display().to_string();
    let out = cli(&[
        "--engine",
        &url,
        "--token",
        engine.token(),
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "submit",
        &spec,
        "--wait",
        "--output",
        "json",
        "--reason",
        "tls e2e",
    ]);
    assert!(
        out.status.success(),
        "opsdeck submit over mTLS failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        engine.logs()
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["run"]["state"], "succeeded", "{doc}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "done",
        "the worker ran the step"
    );
    let run_id = doc["run"]["id"].as_str().unwrap();
    let events = engine.events(run_id).await;
    let submitted = events.iter().find(|e| e.kind == "run.submitted").unwrap();
    assert_eq!(
        (submitted.actor.as_str(), submitted.transport.as_str()),
        (TOKEN_IDENTITY, "tls")
    );

    // The same CLI without a client certificate is refused: exit 1.
    let refused = cli(&[
        "--engine",
        &url,
        "--token",
        engine.token(),
        "--ca",
        &ca,
        "runs",
        "--output",
        "json",
    ]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A certificate without its key is a mistake named before connecting.
    let half = cli(&["--engine", &url, "--ca", &ca, "--cert", &cert, "runs"]);
    assert_ne!(half.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&half.stderr).contains("--key"),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );
}

/// Every client over TLS with these files, sending `token` or none.
async fn tls_api(url: &str, tls: ClientTls, token: Option<&str>) -> Clients<TcpService> {
    let config = tls.load().unwrap();
    let addr: EngineAddr = url.parse().unwrap();
    let channel = addr.connect_with(Some(&config)).await.unwrap();
    Clients::with_token(channel, token)
}

#[tokio::test]
async fn a_certificate_named_in_tls_client_is_an_identity_with_its_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, pki) = mtls_engine(dir.path()).await;
    let url = https(&engine);
    let (cert, key) = pki.operator.clone();
    let operator = ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(cert),
        key: Some(key),
    };
    let mut api = tls_api(&url, operator.clone(), None).await;

    let who = api
        .console
        .whoami(pb::WhoamiRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (who.identity.as_str(), who.transport.as_str()),
        (OPERATOR_CN, "tls")
    );

    let run = api
        .runs
        .submit_run(pb::SubmitRunRequest {
            spec: "name = \"by-certificate\"\n[[step]]\nqueue = \"nowhere\"\nrun = \"true\"\n"
                .into(),
            reason: "submitted with a client certificate".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let events = engine.events(&run.id).await;
    let submitted = events.iter().find(|e| e.kind == "run.submitted").unwrap();
    assert_eq!(
        (submitted.actor.as_str(), submitted.transport.as_str()),
        (OPERATOR_CN, "tls")
    );

    // Its roles are the entry's: operator, not admin.
    let refused = api
        .leases
        .force_release(pb::ForceReleaseRequest {
            id: "no-such-lease".into(),
            reason: "not mine to release".into(),
            ..Default::default()
        })
        .await;
    assert_status(
        refused,
        tonic::Code::PermissionDenied,
        &["admin role", "deploy-bot (tls)", "[[tls.client]]"],
    );

    // A bearer token sent as well wins; an unknown one is refused, not
    // passed over for the certificate.
    let mut with_token = tls_api(&url, operator.clone(), Some(engine.token())).await;
    let who = with_token
        .console
        .whoami(pb::WhoamiRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (who.identity.as_str(), who.transport.as_str()),
        (TOKEN_IDENTITY, "tls")
    );
    let mut wrong_token = tls_api(&url, operator, Some("tok_nobody_knows")).await;
    assert_status(
        wrong_token.console.whoami(pb::WhoamiRequest {}).await,
        tonic::Code::Unauthenticated,
        &["bearer token is not known"],
    );

    // A certificate of the CA that no entry names, and no token: no
    // identity, and the message names the certificate.
    let unlisted = ClientTls {
        ca: Some(pki.ca.clone()),
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
    };
    let mut api = tls_api(&url, unlisted, None).await;
    assert_status(
        api.runs.list_runs(pb::ListRunsRequest::default()).await,
        tonic::Code::Unauthenticated,
        &["\"ops-client\"", "[[tls.client]]", "bearer"],
    );
}

#[tokio::test]
async fn a_worker_and_the_cli_with_only_certificates_run_a_step() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, pki) = mtls_engine(dir.path()).await;
    let url = https(&engine);
    let ca = pki.ca.display().to_string();
    let (agent_cert, agent_key) = (
        pki.agent.0.display().to_string(),
        pki.agent.1.display().to_string(),
    );
    let _worker = Worker::spawn(
        &engine,
        "tls-w7",
        &["build"],
        1,
        &[
            "--engine",
            &url,
            "--ca",
            &ca,
            "--cert",
            &agent_cert,
            "--key",
            &agent_key,
        ],
    );
    engine
        .wait_worker(
            "tls-w7",
            |w| w.state == pb::WorkerState::Online as i32 && w.connected,
            DEADLINE,
        )
        .await;

    let marker = engine.path("ran-with-certificates");
    let spec = engine.work_dir().join("certs.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"with-certificates\"\n[[step]]\nqueue = \"build\"\nrun = {}\n",
            sh(&format!("echo done > {}", marker.display()))
        ),
    )
    .unwrap();
    let (cert, key) = (
        pki.operator.0.display().to_string(),
        pki.operator.1.display().to_string(),
    );
    let out = cli(&[
        "--engine",
        &url,
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "submit",
        &spec.display().to_string(),
        "--wait",
        "--output",
        "json",
        "--reason",
        "certificates only",
    ]);
    assert!(
        out.status.success(),
        "opsdeck submit with a client certificate and no token failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        engine.logs()
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["run"]["state"], "succeeded", "{doc}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "done",
        "the worker ran the step"
    );
    let events = engine.events(doc["run"]["id"].as_str().unwrap()).await;
    let submitted = events.iter().find(|e| e.kind == "run.submitted").unwrap();
    assert_eq!(
        (submitted.actor.as_str(), submitted.transport.as_str()),
        (OPERATOR_CN, "tls")
    );
}
