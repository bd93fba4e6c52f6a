//! cgroup v2 facts the systemd properties do not give on every host: the
//! memory of a slice's processes when its memory controller is not
//! delegated (as in containers).

use std::path::Path;

/// The resident memory (RSS) of every process in the cgroup at
/// `cgroup_dir` and its descendants. Processes that exit while being read
/// are skipped.
pub fn memory_of_processes(cgroup_dir: &Path, proc_dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![cgroup_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter(|l| !l.is_empty()) {
                total += rss_of(&proc_dir.join(pid).join("status")).unwrap_or(0);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
    total
}

/// `VmRSS` of /proc/<pid>/status, in bytes (kernel threads have none).
fn rss_of(status: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(status).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_rss_of_processes_in_nested_groups() {
        let cg = tempfile::tempdir().unwrap();
        let proc_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(cg.path().join("child")).unwrap();
        std::fs::write(cg.path().join("cgroup.procs"), "10\n").unwrap();
        std::fs::write(cg.path().join("child/cgroup.procs"), "11\n12\n").unwrap();
        for (pid, kib) in [("10", 100), ("11", 20)] {
            std::fs::create_dir(proc_dir.path().join(pid)).unwrap();
            std::fs::write(
                proc_dir.path().join(pid).join("status"),
                format!("Name:\tx\nVmRSS:\t  {kib} kB\n"),
            )
            .unwrap();
        }
        // pid 12 exited meanwhile: skipped
        assert_eq!(memory_of_processes(cg.path(), proc_dir.path()), 120 * 1024);
    }
}
