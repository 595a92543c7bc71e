//! `GET /members/{member_id}`: the axum router over a real RocksDB store
//! filled by the engine, with every log line of the process captured.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use churnwatch::engine::{Engine, EngineConfig};
use churnwatch::members::api;
use churnwatch::members::live::Live;
use churnwatch::state::{Batch, RocksStore, RocksTuning, Store};
use churnwatch::telemetry::Metrics;

const TOKEN: &str = "s3cret-token-for-tests";
const MEMBER: &str = "member-7f3a9c";

/// Every log line of this test binary, at every level.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);
impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn event(i: usize, member: &str, kind: &str, day: i64) -> Vec<u8> {
    let amount = if kind == "purchase" {
        ",\"amount\":25.0"
    } else {
        ""
    };
    format!(
        r#"{{"event_id":"e{i}","member_id":"{member}","type":"{kind}","ts":{}{amount}}}"#,
        1_700_000_000_000 + day * 86_400_000
    )
    .into_bytes()
}

/// A store with one regular buyer on partition 2, the engine's clock 100
/// days after their last purchase, and the member API over it.
fn app(dir: &std::path::Path, restoring: &[u32]) -> axum::Router {
    app_with(dir, restoring, true)
}

fn app_with(dir: &std::path::Path, restoring: &[u32], processing: bool) -> axum::Router {
    logs();
    let store = Arc::new(RocksStore::open(dir, &RocksTuning::default()).unwrap());
    let mut engine = Engine::new(
        store.clone(),
        EngineConfig::default(),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    for i in 0..8 {
        engine
            .process(2, &event(i, MEMBER, "purchase", i as i64 * 7), i64::MAX)
            .unwrap();
    }
    engine
        .process(2, &event(99, "someone-else", "visit", 150), i64::MAX)
        .unwrap();
    engine.take_alerts();
    engine.commit(Batch::default()).unwrap();
    let live = Arc::new(Live::default());
    live.set_store(store.clone() as Arc<dyn Store>);
    let clocks: Vec<_> = engine.clocks().filter(|_| processing).collect();
    live.publish(clocks, restoring.iter().copied());
    api::router(live, EngineConfig::default(), TOKEN.to_string())
}

async fn get(
    app: &axum::Router,
    member: &str,
    auth: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::get(format!("/members/{member}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn answers_401_without_or_with_a_wrong_token_and_200_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    assert_eq!(get(&app, MEMBER, None).await.0, StatusCode::UNAUTHORIZED);
    let wrong = get(&app, MEMBER, Some("Bearer s3cret-token-for-tesTS")).await;
    assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
    assert!(wrong.1.get("stage").is_none(), "nothing leaks: {}", wrong.1);
    assert_eq!(
        get(&app, MEMBER, Some(&format!("Basic {TOKEN}"))).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, v) = get(&app, MEMBER, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
    assert_eq!(v["member_id"], MEMBER);
    assert_eq!(v["partition"], 2);
    // The clock is 150 days in; the last purchase was on day 49: silent.
    assert_eq!(v["stage"], "silent");
    assert_eq!(v["baselines"]["typical_gap_days"], 7.0);
    assert!(v["risk_score"].as_f64().unwrap() >= 60.0);
    assert!(v["open_episodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["signal"] == "stage_change" && e["alert_id"].as_str().unwrap().len() == 32));
    assert!(v["next_timer"]["checks"]
        .as_array()
        .unwrap()
        .contains(&"stage_change".into()));
    assert!(v["holdout"].is_boolean());
    assert!(v["last_event"]["purchase"]
        .as_str()
        .unwrap()
        .starts_with("2024-01-02"));
}

#[tokio::test]
async fn answers_404_for_an_unknown_member() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    let (status, v) = get(&app, "nobody-here", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["partitions_here"], serde_json::json!([2]));
}

#[tokio::test]
async fn answers_503_naming_the_partition_while_one_restores() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[5]);
    let (status, v) = get(&app, "on-partition-5", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["restoring_partitions"], serde_json::json!([5]));
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("partition(s) 5 restoring"));
    // A member on a partition processed here is served meanwhile.
    assert_eq!(
        get(&app, MEMBER, Some(&format!("Bearer {TOKEN}"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn answers_503_naming_the_partition_when_another_instance_owns_it() {
    let dir = tempfile::tempdir().unwrap();
    // Partition 2 was revoked: its state is still in the store, unprocessed.
    let app = app_with(dir.path(), &[], false);
    let (status, v) = get(&app, MEMBER, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["partition"], 2);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("owned by another instance"));
}

#[tokio::test]
async fn no_member_id_reaches_the_logs_of_a_run_that_served_requests() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), &[]);
    let bearer = format!("Bearer {TOKEN}");
    for (member, auth) in [
        (MEMBER, Some(bearer.as_str())),
        (MEMBER, None),
        ("nobody-here-either", Some(bearer.as_str())),
    ] {
        get(&app, member, auth).await;
    }
    let logs = String::from_utf8(logs().lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("member api: request served"),
        "the requests were logged:\n{logs}"
    );
    for id in [MEMBER, "nobody-here-either", "someone-else", TOKEN] {
        assert!(!logs.contains(id), "{id} in the logs:\n{logs}");
    }
}
