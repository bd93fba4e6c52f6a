//! Whole-machine figures from /proc and statvfs: CPU time, memory, swap
//! and mounted block filesystems. Parsers take the files' text, so tests
//! feed them real-format samples.

use std::path::{Path, PathBuf};

/// Jiffies since boot over all CPUs (`cpu` line of /proc/stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy: u64,
    /// idle + iowait.
    pub idle: u64,
}

impl CpuTimes {
    /// Share of the time spent busy since `before`, in percent.
    pub fn busy_percent_since(&self, before: &CpuTimes) -> Option<f64> {
        let busy = self.busy.checked_sub(before.busy)?;
        let idle = self.idle.checked_sub(before.idle)?;
        let total = busy + idle;
        (total > 0).then(|| busy as f64 * 100.0 / total as f64)
    }
}

pub fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // already counted in user and nice).
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    let busy = fields.iter().take(8).sum::<u64>() - idle;
    Some(CpuTimes { busy, idle })
}

/// From /proc/meminfo, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryInfo {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

impl MemoryInfo {
    pub fn used_percent(&self) -> Option<f64> {
        (self.total > 0)
            .then(|| self.total.saturating_sub(self.available) as f64 * 100.0 / self.total as f64)
    }

    /// 0 on a machine without swap.
    pub fn swap_used_percent(&self) -> f64 {
        if self.swap_total == 0 {
            return 0.0;
        }
        self.swap_total.saturating_sub(self.swap_free) as f64 * 100.0 / self.swap_total as f64
    }
}

pub fn parse_meminfo(meminfo: &str) -> Option<MemoryInfo> {
    let field = |name: &str| -> Option<u64> {
        let line = meminfo
            .lines()
            .find(|l| l.split(':').next() == Some(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some(MemoryInfo {
        total: field("MemTotal")?,
        available: field("MemAvailable")?,
        swap_total: field("SwapTotal").unwrap_or(0),
        swap_free: field("SwapFree").unwrap_or(0),
    })
}

/// A mounted filesystem on a block device: its device name (`sda1`,
/// `loop3`) and mount point. Each device once (bind mounts repeat it).
pub fn parse_block_mounts(mounts: &str) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(device) = source.strip_prefix("/dev/") else {
            continue;
        };
        if found.iter().any(|(d, _)| d == device) {
            continue;
        }
        // /proc/mounts escapes spaces and the like as octal.
        found.push((device.to_owned(), PathBuf::from(unescape_octal(target))));
    }
    found
}

fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(digits) = std::str::from_utf8(&bytes[i + 1..i + 4])
            && let Ok(value) = u8::from_str_radix(digits, 8)
        {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Used share of the filesystem mounted at `path`, in percent (space
/// reserved for root counts as unavailable, as `df` shows it).
pub fn used_percent_of(path: &Path) -> Option<f64> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    let fragment = stats.fragment_size() as u64;
    let total = stats.blocks() as u64 * fragment;
    let available = stats.blocks_available() as u64 * fragment;
    let free = stats.blocks_free() as u64 * fragment;
    let used = total.saturating_sub(free);
    let usable = used + available;
    (usable > 0).then(|| used as f64 * 100.0 / usable as f64)
}

/// Reads a /proc file (under `proc_dir`) as text.
pub fn read_proc(proc_dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(proc_dir.join(name)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_busy_share_between_two_readings() {
        let before = parse_cpu_times("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        assert_eq!(
            before,
            CpuTimes {
                busy: 150,
                idle: 850
            }
        );
        let after = parse_cpu_times("cpu  200 0 100 850 50 0 0 0 0 0\n").unwrap();
        assert_eq!(after.busy_percent_since(&before), Some(75.0));
        assert_eq!(after.busy_percent_since(&after), None);
        assert!(parse_cpu_times("intr 1 2\n").is_none());
    }

    #[test]
    fn memory_and_swap_use() {
        let info = parse_meminfo(
            "MemTotal:        4000 kB\nMemFree:  100 kB\nMemAvailable:    1000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        )
        .unwrap();
        assert_eq!(info.used_percent(), Some(75.0));
        assert_eq!(info.swap_used_percent(), 0.0);
        let swap = MemoryInfo {
            swap_total: 400,
            swap_free: 100,
            ..info
        };
        assert_eq!(swap.swap_used_percent(), 75.0);
    }

    #[test]
    fn block_mounts_once_each_with_escapes() {
        assert_eq!(unescape_octal("\\xxé\\1"), "\\xxé\\1");
        let mounts = "proc /proc proc rw 0 0\n/dev/sda1 / ext4 rw 0 0\n/dev/loop3 /volumes/my\\040vol ext4 rw 0 0\n/dev/sda1 /nix/store ext4 ro 0 0\ntmpfs /run tmpfs rw 0 0\n";
        assert_eq!(
            parse_block_mounts(mounts),
            vec![
                ("sda1".to_owned(), PathBuf::from("/")),
                ("loop3".to_owned(), PathBuf::from("/volumes/my vol")),
            ]
        );
    }

    #[test]
    fn the_root_filesystem_has_a_use() {
        let used = used_percent_of(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&used), "{used}");
    }
}
