# stub.bash - start and stop a stub-receiver from any test file:
#
#   load helper
#   load stub
#
#   stub_start --script 500,ok       # exports STUB_PORT STUB_URL STUB_LOG STUB_PID
#   curl -s "$STUB_URL" ...
#   stub_stop                        # fails the test unless the stub exits 0
#
# The stub listens on a free loopback port, logs every event it processed to
# $STUB_LOG and its diagnostics to $STUB_STDERR, and stops by itself after
# 300 s whatever happens (later ARGS win, so `stub_start --exit-after 1` works).
# teardown (t/helper.bash) kills it if the test did not stop it.

# stub_start [ARGS...]: start a stub-receiver in the background and wait
# until it listens.
stub_start() {
	local portfile="$BATS_TEST_TMPDIR/stub.port" _
	rm -f "$portfile"
	export STUB_LOG="$BATS_TEST_TMPDIR/stub.log"
	export STUB_STDERR="$BATS_TEST_TMPDIR/stub.stderr"
	# 3>&- : a background process must not hold bats' output descriptor open.
	stub-receiver --port 0 --port-file "$portfile" --log "$STUB_LOG" --exit-after 300 "$@" \
		>/dev/null 2>>"$STUB_STDERR" 3>&- &
	STUB_PID=$!
	export STUB_PID
	track "$STUB_PID"
	# Wait for the port file; give up at once if the stub died.
	for _ in $(seq 1 400); do
		[ -s "$portfile" ] && break
		if ! kill -0 "$STUB_PID" 2>/dev/null; then
			echo "stub-receiver did not start:" >&2
			cat "$STUB_STDERR" >&2
			return 1
		fi
		sleep 0.025
	done
	if [ ! -s "$portfile" ]; then
		echo "stub-receiver wrote no port file within 10 s" >&2
		return 1
	fi
	STUB_PORT=$(cat "$portfile")
	export STUB_PORT
	export STUB_URL="http://127.0.0.1:$STUB_PORT/ingest"
}

# stub_stop: SIGTERM the stub, wait for it (10 s at most) and return its exit
# status, so a leak report or a crash on shutdown fails the test.
stub_stop() {
	local rc=0 _
	[ -n "${STUB_PID:-}" ] || return 0
	kill -TERM "$STUB_PID" 2>/dev/null || true
	for _ in $(seq 1 400); do
		kill -0 "$STUB_PID" 2>/dev/null || break
		sleep 0.025
	done
	if kill -0 "$STUB_PID" 2>/dev/null; then
		echo "stub-receiver did not stop within 10 s of SIGTERM" >&2
		kill -KILL "$STUB_PID" 2>/dev/null || true
		wait "$STUB_PID" 2>/dev/null || true
		rc=1
	else
		wait "$STUB_PID" || rc=$?
	fi
	if [ "$rc" -ne 0 ]; then
		echo "stub-receiver exited $rc; its stderr:" >&2
		cat "$STUB_STDERR" >&2
	fi
	unset STUB_PID
	return "$rc"
}
