# Sourced by scripts/test and scripts/testbed/selftest: what testbeds and
# sandboxes whose names start with a prefix left on the host, found by the
# testbed's own names and paths (never by broad patterns), and their removal.
# Needs $STATE_ROOT (the testbed's, /run/sp-testbed by default) and
# $TESTBED (the path of scripts/testbed/testbed).

# sp_leftovers PREFIX: a line per thing left (nothing when clean).
sp_leftovers() {
  local prefix=$1 path name pid arg
  for path in "$STATE_ROOT/$prefix"* /run/"$prefix"sp-sandbox-*; do
    if [[ -e $path ]]; then echo "state: $path"; fi
  done
  while read -r name; do
    if [[ $name == "$prefix"* ]]; then echo "testbed up: $name"; fi
  done < <("$TESTBED" list 2>/dev/null || true)
  # Mount points (field 5 of mountinfo) under those state dirs.
  while read -r path; do
    if [[ $path == "$STATE_ROOT/$prefix"* ]]; then echo "mount: $path"; fi
  done < <(awk '{ print $5 }' /proc/self/mountinfo)
  # Loop devices whose backing file is in those state dirs.
  while read -r name path; do
    if [[ $path == "$STATE_ROOT/$prefix"* ]]; then echo "loop device: $name ($path)"; fi
  done < <(losetup -l -n -O NAME,BACK-FILE 2>/dev/null || true)
  # systemd-nspawn of those machines (--machine=sp-tb-NAME).
  for path in /proc/[0-9]*; do
    pid=${path#/proc/}
    while IFS= read -r -d '' arg; do
      if [[ $arg == "--machine=sp-tb-$prefix"* ]]; then
        echo "process: $pid (${arg#--machine=})"
        break
      fi
    done 2>/dev/null <"$path/cmdline" || true # (it may be gone)
  done
  for path in /sys/fs/cgroup/{,unified/,systemd/}sp-testbed/"$prefix"*; do
    if [[ -e $path ]]; then echo "cgroup: $path"; fi
  done
  for path in /run/systemd/nspawn/propagate/sp-tb-"$prefix"*; do
    if [[ -e $path ]]; then echo "nspawn dir: $path"; fi
  done
}

# sp_remove_leftovers PREFIX: `down` of each such sandbox and testbed,
# retried as `scripts/sandbox down` retries it.
sp_remove_leftovers() {
  local prefix=$1 dir i
  for dir in /run/"$prefix"sp-sandbox-*; do
    [[ -e $dir ]] || continue
    SP_SANDBOX_NAME=${dir#/run/} "${TESTBED%/testbed/testbed}/sandbox" down || true
  done
  for dir in "$STATE_ROOT/$prefix"*; do
    [[ -e $dir ]] || continue
    for i in 1 2 3 4 5; do
      "$TESTBED" down --name "${dir##*/}" && break
      ((i < 5)) || echo "could not remove the testbed ${dir##*/}" >&2
      sleep 2
    done
  done
}
