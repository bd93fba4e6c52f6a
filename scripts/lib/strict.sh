# Sourced by every script in scripts/: strict mode, and no silent exit.
# A command that fails under `set -e` prints the script, the line, the
# command and its status before the script ends (the ERR trap is inherited by
# functions and subshells through `set -E`). Only the main shell prints:
# inside a command substitution, where `set -e` does not apply, a failure
# that the script goes on from would be noise, and one that matters makes
# the command holding the substitution fail, which is printed.
set -Eeuo pipefail
# (One line: $LINENO counts the trap's own lines.)
trap 'sp_strict_status=$?; ((BASH_SUBSHELL)) || echo "${0##*/}: line $LINENO: \`$BASH_COMMAND\` failed with status $sp_strict_status" >&2' ERR
