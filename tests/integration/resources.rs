//! Per-slice resource use read from a real systemd (the testbed's, over its
//! bus from the host): CPU from the slice, memory from its processes since
//! the memory controller is not delegated here.

use crate::testbed::{Setup, Testbed};
use selfprivacy_api::domain::services::resources::ResourceSampler;
use selfprivacy_api::os::systemd::SystemdLink;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn slices_report_cpu_and_the_memory_of_their_processes() {
    let testbed = Testbed::up(Setup {
        modules: vec![],
        userdata: json!({}),
        volumes: vec![],
        config: "",
    });
    // A service that holds 64 MiB and burns CPU, in the slice of "busy".
    testbed.start_busy_worker("busy-worker", "busy.slice");
    let link = Arc::new(SystemdLink::new(Some(
        testbed.env["TESTBED_DBUS_ADDRESS"].clone(),
    )));
    let sampler = ResourceSampler::new(
        link,
        testbed.root().join("sys/fs/cgroup"),
        PathBuf::from("/proc"),
    );
    let services = vec!["busy".to_owned(), "absent".to_owned()];
    // Sampled until the worker holds its 64 MiB.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        sampler.sample(&services).await;
        if sampler
            .latest("busy")
            .is_some_and(|busy| busy.memory_bytes >= 64 * 1024 * 1024)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never held 64 MiB");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Not a wait for anything: the interval the CPU rate is measured over.
    tokio::time::sleep(Duration::from_millis(700)).await;
    sampler.sample(&services).await;
    let busy = sampler.latest("busy").expect("sampled");
    assert!(
        busy.memory_bytes >= 64 * 1024 * 1024,
        "memory {}",
        busy.memory_bytes
    );
    assert!(
        busy.memory_bytes < 512 * 1024 * 1024,
        "memory {}",
        busy.memory_bytes
    );
    assert!(busy.cpu_nanoseconds.unwrap() > 100_000_000, "{busy:?}");
    let percent = busy.cpu_percent.expect("two samples give a rate");
    assert!(
        percent > 30.0 && percent < 210.0,
        "a busy loop uses about one core: {percent}"
    );
    let absent = sampler
        .latest("absent")
        .expect("an empty slice is sampled too");
    assert_eq!(absent.memory_bytes, 0);
}
