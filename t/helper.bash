# helper.bash - loaded by every test file (load helper).
#
# Puts the programs under test first on PATH (SLUICE_BIN: bin/ by default,
# `make check` passes its -Werror and sanitizer builds), gives every test a
# fresh HOME and journal under $BATS_TEST_TMPDIR, and stops every server a
# test started, whatever happened.

bats_require_minimum_version 1.5.0

SLUICE_BIN=${SLUICE_BIN:-$(cd "$BATS_TEST_DIRNAME/../bin" && pwd)}
export SLUICE_BIN
export PATH="$SLUICE_BIN:$PATH"
export SLUICE_EXEC_PATH="$SLUICE_BIN"
FIXTURES="$BATS_TEST_DIRNAME/fixtures"

setup() {
	export HOME="$BATS_TEST_TMPDIR/home"
	mkdir -p "$HOME"
	unset XDG_STATE_HOME XDG_CONFIG_HOME SLUICE_CONFIG SLUICE_PRODUCER SLUICE_NOW \
		SLUICE_JITTER SLUICE_SYNC SLUICE_BUSY_TIMEOUT SLUICE_RETAIN \
		SLUICE_DISCARD_TYPES SLUICE_DRAIN_TIMEOUT SLUICE_VERBOSE
	export SLUICE_DB="$BATS_TEST_TMPDIR/journal.db"
	# Fast enough for tests, and fsync is not what they check.
	export SLUICE_SYNC=normal
	cd "$BATS_TEST_TMPDIR" || return 1
}

teardown() {
	local pid
	if [ -f "$BATS_TEST_TMPDIR/pids" ]; then
		while read -r pid; do
			kill -TERM "$pid" 2>/dev/null || true
		done < "$BATS_TEST_TMPDIR/pids"
		while read -r pid; do
			wait_gone "$pid"
		done < "$BATS_TEST_TMPDIR/pids"
	fi
}

# Remember a background process so teardown stops it.
track() {
	echo "$1" >> "$BATS_TEST_TMPDIR/pids"
}

# Wait (up to 10 s) until a process has exited; SIGKILL it after that.
wait_gone() {
	local i
	for i in $(seq 1 200); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.05
	done
	kill -KILL "$1" 2>/dev/null || true
}

# wait_for CMD... : poll (up to 10 s) until CMD succeeds; fail otherwise.
# This is how tests synchronize with processes: on a condition, not a delay.
wait_for() {
	local i
	for i in $(seq 1 400); do
		"$@" && return 0
		sleep 0.025
	done
	echo "timed out waiting for: $*" >&2
	return 1
}

# sql QUERY: run a query on the test journal (read only).
sql() {
	sqlite3 -batch -bail "file:$SLUICE_DB?mode=ro" "$1"
}

# events N [PREFIX]: N events with ids PREFIX-1..PREFIX-N.
events() {
	local prefix=${2:-e}
	seq 1 "$1" | awk -v p="$prefix" '{ printf "{\"event_id\":\"%s-%d\",\"event_type\":\"test.event\",\"data\":{\"n\":%d,\"text\":\"hello world\"}}\n", p, $1, $1 }'
}

# wait_until 'shell condition': like wait_for, but the condition is evaluated
# afresh each time (for conditions with $(...) in them).
wait_until() {
	local i
	for i in $(seq 1 400); do
		eval "$1" && return 0
		sleep 0.025
	done
	echo "timed out waiting until: $1" >&2
	return 1
}

# target_add NAME [ARGS...]: register a target at a URL nobody listens on,
# unless ARGS name one.
target_add() {
	local name=$1
	shift
	if [ $# -gt 0 ] && [[ $1 == http* ]]; then
		sluice target add "$name" "$@"
	else
		sluice target add "$name" http://127.0.0.1:9/none "$@"
	fi
}

# outcome SEQ EVENT_ID STATUS [CATEGORY] [HTTP] [RETRY_AFTER_MS]: one outcome record.
outcome() {
	jq -cn --argjson seq "$1" --arg id "$2" --arg status "$3" --arg cat "${4:-}" \
		--arg http "${5:-}" --arg ra "${6:-}" \
		'{seq:$seq, event_id:$id, target:"prod", status:$status,
		  category:(if $cat == "" then null else $cat end),
		  http_status:(if $http == "" then null else ($http|tonumber) end),
		  error:(if $cat == "" then null else "because \($cat)" end),
		  retry_after_ms:(if $ra == "" then null else ($ra|tonumber) end)}'
}
