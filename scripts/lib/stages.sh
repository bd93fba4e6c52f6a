# Sourced by scripts/test: stages, each under a time limit of its own, timed.
#
# sp_stage LIMIT_SECONDS NAME CMD... runs CMD under `timeout`: at the limit
# SIGTERM goes to CMD's whole process group (cargo and the test binary it
# started, say), SIGKILL $SP_STAGE_KILL_AFTER seconds later. It prints
# "== NAME (time limit ...)" before and "== NAME: passed in 1m23s" (or
# FAILED / TIMED OUT) after, adds that line to sp_stage_summary, and returns
# CMD's status. `timeout --foreground` is not used: it would signal CMD
# alone and leave its children running. Instead `timeout` runs in the
# background, so that a signal reaching the script can be passed on to the
# stage (sp_stage_interrupted, set up as the INT and TERM trap).

SP_STAGE_KILL_AFTER=${SP_STAGE_KILL_AFTER:-30}
sp_stage_pid=
sp_stage_name=
sp_stage_t0=
sp_stage_summary=()

sp_duration() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

sp_stage() {
  local limit=$1 name=$2 t0=$SECONDS status=0 took result
  shift 2
  echo
  echo "== $name (time limit $(sp_duration "$limit"))"
  sp_stage_name=$name sp_stage_t0=$t0
  timeout --kill-after="$SP_STAGE_KILL_AFTER" "$limit" "$@" </dev/null &
  sp_stage_pid=$!
  wait "$sp_stage_pid" || status=$?
  sp_stage_pid=
  took=$(sp_duration $((SECONDS - t0)))
  case $status in
    0) result="passed in $took" ;;
    124 | 137) result="TIMED OUT after $took (limit $(sp_duration "$limit"))" ;;
    *) result="FAILED (status $status) after $took" ;;
  esac
  sp_stage_summary+=("$(printf '%-24s %s' "$name" "$result")")
  echo "== $name: $result"
  return "$status"
}

# The INT/TERM trap: SIGTERM to the running stage (timeout passes it to the
# stage's process group), wait for it (bounded by the SIGKILL that follows),
# exit 130. The script's EXIT trap then runs.
sp_stage_interrupted() {
  echo "${0##*/}: interrupted" >&2
  if [[ -n $sp_stage_pid ]]; then
    kill -TERM "$sp_stage_pid" 2>/dev/null || true
    wait "$sp_stage_pid" 2>/dev/null || true
    sp_stage_pid=
    sp_stage_summary+=("$(printf '%-24s %s' "$sp_stage_name" \
      "INTERRUPTED after $(sp_duration $((SECONDS - sp_stage_t0)))")")
  fi
  exit 130
}
