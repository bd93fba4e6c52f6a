//! The daemon's own memory.

use std::path::Path;

/// Gives back the pages of this program's code and read-only data that are
/// mapped now: most were touched once, by start-up (building the schema,
/// opening the state, parsing the configuration), and would otherwise stay
/// in the resident set for the daemon's whole life. Pages requests need are
/// read back on their first use. Best effort: nothing fails if the kernel
/// refuses (MADV_PAGEOUT needs Linux 5.4).
pub fn release_startup_pages() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for (start, end) in read_only_mappings_of(&maps, &exe) {
        // SAFETY: the range is one of this process's own read-only file
        // mappings; MADV_PAGEOUT only drops clean pages, which the kernel
        // reads back from the file on their next use.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT);
        }
    }
}

/// `(start, end)` of each read-only mapping of `file` in a maps listing.
fn read_only_mappings_of(maps: &str, file: &Path) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let permissions = fields.next()?;
            let path = fields.nth(3)?;
            if Path::new(path) != file || permissions.contains('w') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_files_read_only_mappings() {
        let maps = "\
5600-5700 r--p 00000000 fe:00 1 /nix/store/x-api/bin/selfprivacy-api
5700-5900 r-xp 00100000 fe:00 1 /nix/store/x-api/bin/selfprivacy-api
5900-5a00 rw-p 00300000 fe:00 1 /nix/store/x-api/bin/selfprivacy-api
7f00-7f10 r-xp 00000000 fe:00 2 /usr/lib/libc.so.6
7f20-7f30 rw-p 00000000 00:00 0
";
        assert_eq!(
            read_only_mappings_of(maps, Path::new("/nix/store/x-api/bin/selfprivacy-api")),
            vec![(0x5600, 0x5700), (0x5700, 0x5900)]
        );
    }
}
