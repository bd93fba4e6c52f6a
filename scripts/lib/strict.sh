# Sourced by every script in scripts/: strict mode, and no silent exit.
# A command that fails under `set -e` prints the script, the line, the
# command and its status before the script ends (the ERR trap is inherited by
# functions and subshells through `set -E`).
set -Eeuo pipefail
trap 'echo "${0##*/}: line $LINENO: \`$BASH_COMMAND\` failed with status $?" >&2' ERR
