//! One reading of the whole machine, turned into sample points: rates
//! (CPU share, network bytes per second) need the reading before.

use super::{CPU, DISK, MEMORY, NETWORK, SWAP};
use crate::os::host::{self, CpuTimes, MemoryInfo};
use crate::os::network::{self, InterfaceCounters};
use crate::state::SamplePoint;
use std::path::Path;

/// What /proc and statvfs say at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostReadings {
    pub cpu: Option<CpuTimes>,
    pub memory: Option<MemoryInfo>,
    /// Device name and used share in percent.
    pub disks: Vec<(String, f64)>,
    pub interfaces: Vec<InterfaceCounters>,
}

impl HostReadings {
    pub fn read(proc_dir: &Path) -> HostReadings {
        let text = |name: &str| host::read_proc(proc_dir, name).unwrap_or_default();
        HostReadings {
            cpu: host::parse_cpu_times(&text("stat")),
            memory: host::parse_meminfo(&text("meminfo")),
            disks: host::parse_block_mounts(&text("self/mounts"))
                .into_iter()
                .filter_map(|(device, mount)| Some((device, host::used_percent_of(&mount)?)))
                .collect(),
            interfaces: network::parse_net_dev(&text("net/dev")),
        }
    }
}

/// The previous reading, for rates.
#[derive(Debug, Default)]
pub struct HostSampler {
    previous: Option<(i64, HostReadings)>,
}

impl HostSampler {
    /// Points at `at` from `readings`; rates start with the second reading.
    pub fn points(&mut self, at: i64, readings: HostReadings) -> Vec<SamplePoint> {
        let mut points = Vec::new();
        let mut push = |series: String, value: f64| {
            if value.is_finite() {
                points.push(SamplePoint { series, at, value });
            }
        };
        if let Some(memory) = readings.memory {
            if let Some(used) = memory.used_percent() {
                push(MEMORY.to_owned(), used);
            }
            push(SWAP.to_owned(), memory.swap_used_percent());
        }
        for (device, used) in &readings.disks {
            push(format!("{DISK}{device}"), *used);
        }
        if let Some((before_at, before)) = &self.previous {
            if let (Some(now), Some(then)) = (readings.cpu, before.cpu)
                && let Some(busy) = now.busy_percent_since(&then)
            {
                push(CPU.to_owned(), busy);
            }
            let seconds = (at - before_at) as f64;
            if seconds > 0.0 {
                let (mut received, mut transmitted) = (0.0, 0.0);
                for interface in &readings.interfaces {
                    let Some(old) = before
                        .interfaces
                        .iter()
                        .find(|i| i.interface == interface.interface)
                    else {
                        continue;
                    };
                    // A counter that went back (interface recreated) gives no rate.
                    let (Some(rx), Some(tx)) = (
                        interface.received.checked_sub(old.received),
                        interface.transmitted.checked_sub(old.transmitted),
                    ) else {
                        continue;
                    };
                    let (rx, tx) = (rx as f64 / seconds, tx as f64 / seconds);
                    received += rx;
                    transmitted += tx;
                    push(format!("{NETWORK}{}:receive", interface.interface), rx);
                    push(format!("{NETWORK}{}:transmit", interface.interface), tx);
                }
                push(format!("{NETWORK}receive"), received);
                push(format!("{NETWORK}transmit"), transmitted);
            }
        }
        self.previous = Some((at, readings));
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(busy: u64, idle: u64, rx: u64, tx: u64) -> HostReadings {
        HostReadings {
            cpu: Some(CpuTimes { busy, idle }),
            memory: Some(MemoryInfo {
                total: 1000,
                available: 250,
                swap_total: 0,
                swap_free: 0,
            }),
            disks: vec![("sda1".into(), 40.0)],
            interfaces: vec![InterfaceCounters {
                interface: "eth0".into(),
                received: rx,
                transmitted: tx,
            }],
        }
    }

    #[test]
    fn rates_come_from_two_readings() {
        let mut sampler = HostSampler::default();
        let first: Vec<_> = sampler
            .points(100, readings(0, 0, 1000, 0))
            .into_iter()
            .map(|p| (p.series, p.value))
            .collect();
        assert_eq!(
            first,
            vec![
                ("memory".into(), 75.0),
                ("swap".into(), 0.0),
                ("disk:sda1".into(), 40.0)
            ]
        );
        let second: Vec<_> = sampler
            .points(110, readings(30, 70, 6000, 100))
            .into_iter()
            .map(|p| (p.series, p.value))
            .collect();
        assert_eq!(
            second[3..],
            [
                ("cpu".into(), 30.0),
                ("network:eth0:receive".into(), 500.0),
                ("network:eth0:transmit".into(), 10.0),
                ("network:receive".into(), 500.0),
                ("network:transmit".into(), 10.0),
            ]
        );
    }

    #[test]
    fn the_running_machine_is_readable() {
        let now = HostReadings::read(Path::new("/proc"));
        assert!(now.cpu.is_some() && now.memory.is_some(), "{now:?}");
        assert!(!now.disks.is_empty(), "{now:?}");
    }
}
