//! The job registry over HTTP: listing, removal, restarts.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

const JOB_FIELDS: &str = "uid typeId name description status statusText progress createdAt updatedAt finishedAt error result";

pub async fn start_test_job(daemon: &Daemon) {
    let r = daemon
        .query(
            "mutation { testMutation { success message code } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["testMutation"]["code"], 200, "{r}");
}

async fn jobs(daemon: &Daemon, language: &str) -> Vec<Value> {
    let r = post(
        &daemon.url,
        Some(&format!("Bearer {}", daemon.token)),
        &[("Accept-Language", language)],
        &format!("{{ jobs {{ getJobs {{ {JOB_FIELDS} }} }} }}"),
        json!({}),
    )
    .await;
    assert_no_errors(&r);
    r["data"]["jobs"]["getJobs"].as_array().unwrap().clone()
}

async fn wait_for_status(daemon: &Daemon, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = jobs(daemon, "en").await;
        if let Some(job) = list.iter().find(|j| j["status"] == status) {
            return job.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job reached {status}: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_job_runs_to_the_end_can_be_read_in_two_languages_and_removed() {
    let daemon = Daemon::start().await;
    assert!(jobs(&daemon, "en").await.is_empty());
    start_test_job(&daemon).await;
    let running = wait_for_status(&daemon, "RUNNING").await;
    assert_eq!(running["typeId"], "test.job");
    // A running job cannot be removed.
    let remove =
        "mutation($id: String!) { jobs { removeJob(jobId: $id) { success message code } } }";
    let r = daemon.query(remove, json!({"id": running["uid"]})).await;
    assert_eq!(r["data"]["jobs"]["removeJob"]["code"], 409, "{r}");

    let done = wait_for_status(&daemon, "FINISHED").await;
    assert_eq!(done["progress"], 100);
    assert_eq!(done["name"], "Test job");
    assert!(done["finishedAt"].is_string() && done["error"].is_null());
    let russian = jobs(&daemon, "ru-RU,ru;q=0.9,en;q=0.8").await;
    assert_eq!(russian[0]["name"], "Тестовая задача");

    let one = daemon
        .query(
            &format!("query($id: String!) {{ jobs {{ getJob(jobId: $id) {{ {JOB_FIELDS} }} }} }}"),
            json!({"id": done["uid"]}),
        )
        .await;
    assert_eq!(one["data"]["jobs"]["getJob"]["uid"], done["uid"]);
    let none = daemon
        .query("{ jobs { getJob(jobId: \"nope\") { uid } } }", json!({}))
        .await;
    assert!(none["data"]["jobs"]["getJob"].is_null());

    let r = daemon.query(remove, json!({"id": done["uid"]})).await;
    assert_eq!(r["data"]["jobs"]["removeJob"]["code"], 200);
    let r = post(
        &daemon.url,
        Some(&format!("Bearer {}", daemon.token)),
        &[("Accept-Language", "ru")],
        remove,
        json!({"id": done["uid"]}),
    )
    .await;
    assert_eq!(r["data"]["jobs"]["removeJob"]["code"], 404);
    assert_eq!(
        r["data"]["jobs"]["removeJob"]["message"],
        "Задача не найдена"
    );
    // The deprecated flat twin.
    let r = daemon
        .query(
            "mutation { removeJob(jobId: \"nope\") { code message } }",
            json!({}),
        )
        .await;
    assert_eq!(r["data"]["removeJob"]["code"], 404);
    assert!(jobs(&daemon, "en").await.is_empty());
}

#[tokio::test]
async fn a_job_running_when_the_daemon_dies_is_marked_interrupted() {
    let mut daemon = Daemon::start().await;
    start_test_job(&daemon).await;
    wait_for_status(&daemon, "RUNNING").await;
    daemon.kill(); // SIGKILL: no chance to clean up
    daemon.launch().await;
    let list = jobs(&daemon, "en").await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "ERROR");
    assert!(
        list[0]["error"].as_str().unwrap().contains("Interrupted"),
        "{}",
        list[0]
    );
    assert!(list[0]["finishedAt"].is_string());
}

#[tokio::test]
async fn sigterm_stops_the_daemon_cleanly() {
    let mut daemon = Daemon::start().await;
    let mut child = daemon.child.take().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for _ in 0..200 {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "exit status {exit}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    panic!("the daemon did not stop within 10 s of SIGTERM");
}
