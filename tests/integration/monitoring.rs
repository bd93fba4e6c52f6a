//! The app's monitoring operations against the daemon in the testbed: real
//! /proc figures, a busy service's memory from its slice, history that
//! survives a restart, and refusals as `MonitoringQueryError`.

use crate::app_operations::operation;
use crate::support::Client;
use crate::testbed::{Setup, Testbed, module};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CONFIG: &str = "monitoring_sample_secs = 1\nmonitoring_flush_secs = 2\n";
const MIB: f64 = 1024.0 * 1024.0;

/// As the app sends it: local time without an offset (UTC here).
fn naive(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

async fn monitoring(client: &Client, name: &str, variables: Value) -> Value {
    let response = client.query(&operation(name), variables).await;
    assert!(response.get("errors").is_none(), "{response}");
    response["data"]["monitoring"].clone()
}

/// `(timestamp, value)` of a `MonitoringValues`; panics on an error member.
fn values(result: &Value) -> Vec<(String, f64)> {
    assert_eq!(result["__typename"], "MonitoringValues", "{result}");
    result["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["timestamp"].as_str().unwrap().to_owned(),
                v["value"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn metric(result: &Value, id: &str) -> Option<Vec<f64>> {
    assert_eq!(result["__typename"], "MonitoringMetrics", "{result}");
    let found = result["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metricId"] == id)?;
    Some(
        found["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["value"].as_str().unwrap().parse().unwrap())
            .collect(),
    )
}

/// Rows the daemon has written to its database so far, read inside the
/// testbed (SQLite resolves the /proc/PID/root link, so not from the host).
fn stored_rows(testbed: &Testbed, series: &str) -> i64 {
    assert!(
        series
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    );
    let count = testbed.run(&[
        "sqlite3",
        "-readonly",
        "-cmd",
        ".timeout 5000",
        "/var/lib/selfprivacy-api/state.db",
        &format!(
            "SELECT count(*) FROM monitoring_samples JOIN monitoring_series ON id = series WHERE name = '{series}'"
        ),
    ]);
    count
        .parse()
        .unwrap_or_else(|_| panic!("sqlite3 said {count}"))
}

#[tokio::test]
async fn the_apps_monitoring_queries_show_real_figures_that_survive_a_restart() {
    let testbed = Testbed::up(Setup {
        modules: vec![("busy", module("busy", &["busy-worker.service"], json!({})))],
        userdata: json!({}),
        volumes: vec!["data:64"],
        config: CONFIG,
    });
    testbed.start_busy_worker("busy-worker", "busy.slice");
    let client = testbed.start_daemon().await;
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    let window = |step: i32| json!({"start": naive(since), "step": step});

    // Sampled every second: wait until the busy service shows 64 MiB and
    // CPU use has a figure.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (memory, cpu) = loop {
        let memory = monitoring(&client, "GetMemoryMetrics", window(1)).await;
        let cpu = monitoring(&client, "GetOverallCpuAndNetworkMetrics", window(1)).await;
        let busy = metric(&memory["memoryUsage"]["maxUsageByService"], "busy");
        if busy.is_some_and(|v| v[0] >= 64.0 * MIB)
            && !values(&cpu["cpuUsage"]["overallUsage"]).is_empty()
        {
            break (memory, cpu);
        }
        assert!(
            Instant::now() < deadline,
            "no figures within 60 s: {memory} {cpu}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let usage = &memory["memoryUsage"];
    let average = metric(&usage["averageUsageByService"], "busy").unwrap();
    assert_eq!(average.len(), 1);
    assert!(average[0] > 0.0 && average[0] < 512.0 * MIB, "{average:?}");
    let overall = values(&usage["overallUsage"]);
    assert!(
        overall.iter().all(|(_, v)| *v > 0.0 && *v <= 100.0),
        "{overall:?}"
    );
    assert!(
        overall.iter().all(|(t, _)| t.ends_with("+00:00")),
        "{overall:?}"
    );
    let swap = values(&usage["swapUsageOverall"]);
    assert!(
        swap.iter().all(|(_, v)| (0.0..=100.0).contains(v)),
        "{swap:?}"
    );
    let cpu_values = values(&cpu["cpuUsage"]["overallUsage"]);
    // A core of the machine's cores is busy in the worker alone.
    assert!(cpu_values.iter().any(|(_, v)| *v >= 20.0), "{cpu_values:?}");
    assert!(
        cpu_values.iter().all(|(_, v)| (0.0..=100.0).contains(v)),
        "{cpu_values:?}"
    );
    let network = &cpu["networkUsage"]["overallUsage"];
    for direction in ["receive", "transmit"] {
        let rates = metric(network, direction).unwrap_or_else(|| panic!("{direction}: {network}"));
        assert!(rates.iter().all(|v| *v >= 0.0), "{rates:?}");
    }
    let disks = monitoring(&client, "GetDiskMetrics", window(1)).await;
    let disks = &disks["diskUsage"]["overallUsage"];
    let loop_device = testbed.run(&["findmnt", "-n", "-o", "SOURCE", "/volumes/data"]);
    let device = loop_device.trim_start_matches("/dev/");
    let used = metric(disks, device).unwrap_or_else(|| panic!("{device}: {disks}"));
    assert!(used.iter().all(|v| *v > 0.0 && *v < 100.0), "{used:?}");

    // Steps bucket the samples: a 1-minute step gives one or two points.
    let coarse = monitoring(&client, "GetOverallCpuAndNetworkMetrics", window(60)).await;
    let coarse = values(&coarse["cpuUsage"]["overallUsage"]);
    assert!((1..=2).contains(&coarse.len()), "{coarse:?}");

    // Written to SQLite in batches; once written, a killed daemon keeps them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_rows(&testbed, "service_memory:busy") < 2 || stored_rows(&testbed, "cpu") < 2 {
        assert!(
            Instant::now() < deadline,
            "no samples written within 30 s; journal:\n{}",
            testbed.run(&[
                "journalctl",
                "-u",
                "selfprivacy-api",
                "--no-pager",
                "-n",
                "20"
            ])
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let written_until = chrono::Utc::now();
    let stored_cpu = stored_rows(&testbed, "cpu");
    testbed.restart_daemon(&client).await;
    let before = json!({"start": naive(since), "end": naive(written_until), "step": 1});
    let memory = monitoring(&client, "GetMemoryMetrics", before.clone()).await;
    let busy = metric(&memory["memoryUsage"]["maxUsageByService"], "busy")
        .expect("the busy service's history survives the restart");
    assert!(busy[0] >= 64.0 * MIB, "{busy:?}");
    let cpu = monitoring(&client, "GetOverallCpuAndNetworkMetrics", before).await;
    let cpu = values(&cpu["cpuUsage"]["overallUsage"]);
    assert!(cpu.len() as i64 >= stored_cpu.min(2), "{cpu:?}");
}

#[tokio::test]
async fn bad_ranges_answer_monitoring_query_errors_not_graphql_errors() {
    let testbed = Testbed::up(Setup {
        modules: vec![],
        userdata: json!({}),
        volumes: vec![],
        config: CONFIG,
    });
    let client = testbed.start_daemon().await;
    let now = chrono::Utc::now();
    for (variables, reason) in [
        (json!({"step": 0}), "step"),
        (json!({"step": -60}), "step"),
        (
            json!({"start": naive(now), "end": naive(now - chrono::Duration::hours(1)), "step": 60}),
            "start",
        ),
        (
            json!({"start": naive(now - chrono::Duration::days(30)), "step": 1}),
            "points",
        ),
    ] {
        for name in [
            "GetOverallCpuAndNetworkMetrics",
            "GetMemoryMetrics",
            "GetDiskMetrics",
        ] {
            let answer = monitoring(&client, name, variables.clone()).await;
            let results: Vec<&Value> = answer
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "__typename")
                .flat_map(|(_, usage)| {
                    usage
                        .as_object()
                        .unwrap()
                        .iter()
                        .filter(|(k, _)| *k != "__typename")
                        .map(|(_, v)| v)
                })
                .collect();
            assert!(!results.is_empty());
            for result in results {
                assert_eq!(
                    result["__typename"], "MonitoringQueryError",
                    "{variables}: {result}"
                );
                let error = result["error"].as_str().unwrap();
                assert!(error.contains(reason), "{variables}: {error}");
            }
        }
    }
    // An offset is accepted as well as local time without one.
    let with_offset =
        json!({"start": (now - chrono::Duration::minutes(5)).to_rfc3339(), "step": 60});
    let cpu = monitoring(&client, "GetOverallCpuAndNetworkMetrics", with_offset).await;
    values(&cpu["cpuUsage"]["overallUsage"]);
}

#[tokio::test]
async fn samples_not_yet_written_are_written_when_the_daemon_stops() {
    let testbed = Testbed::up(Setup {
        modules: vec![],
        userdata: json!({}),
        volumes: vec![],
        // Batches far apart: only stopping writes them.
        config: "monitoring_sample_secs = 1\nmonitoring_flush_secs = 3600\n",
    });
    let client = testbed.start_daemon().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cpu = monitoring(
            &client,
            "GetOverallCpuAndNetworkMetrics",
            json!({"step": 1}),
        )
        .await;
        if values(&cpu["cpuUsage"]["overallUsage"]).len() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no CPU figures within 30 s: {cpu}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        stored_rows(&testbed, "cpu"),
        0,
        "written before the batch was due"
    );
    testbed.run(&["systemctl", "stop", "selfprivacy-api"]);
    assert!(stored_rows(&testbed, "cpu") >= 2);
}
