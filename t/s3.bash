# s3.bash - a real S3-compatible server for tests: s3rver, from the npm
# registry, installed once into t/.node (git-ignored) and started on a free
# loopback port with a bucket "snaps".
#
#   load helper
#   load s3
#   s3_start            # exports S3_PORT S3_URL S3_DATA S3_LOG; access key and
#                       # secret are in $S3_ACCESS and $S3_SECRET
#   s3_stop

S3RVER="$BATS_TEST_DIRNAME/.node/node_modules/.bin/s3rver"

s3_install() {
	[ -x "$S3RVER" ] && return 0
	if ! command -v npm > /dev/null; then
		echo "npm is needed for the S3 tests (apt-get install nodejs npm)" >&2
		return 1
	fi
	# One install at a time, however many test files start at once.
	(
		flock 9
		[ -x "$S3RVER" ] || npm install --prefix "$BATS_TEST_DIRNAME/.node" --no-audit \
			--no-fund --silent s3rver@3.7.1 >&2
	) 9> "$BATS_TEST_DIRNAME/.node.lock"
	[ -x "$S3RVER" ]
}

# s3_start [PORT]: start s3rver (on PORT, to restart one that was stopped).
s3_start() {
	s3_install || return 1
	export S3_ACCESS=S3RVER S3_SECRET=S3RVER
	export S3_DATA="$BATS_TEST_TMPDIR/s3data"
	export S3_LOG="$BATS_TEST_TMPDIR/s3.log"
	mkdir -p "$S3_DATA"
	: > "$S3_LOG"
	"$S3RVER" -d "$S3_DATA" -a 127.0.0.1 -p "${1:-0}" --configure-bucket snaps \
		> "$S3_LOG" 2>&1 3>&- &
	S3_PID=$!
	track "$S3_PID"
	wait_until 'grep -q "listening on" "$S3_LOG" || ! kill -0 "$S3_PID" 2>/dev/null'
	if ! kill -0 "$S3_PID" 2>/dev/null; then
		cat "$S3_LOG" >&2
		return 1
	fi
	S3_PORT=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$S3_LOG" | head -1)
	export S3_PORT S3_PID
	export S3_URL="http://127.0.0.1:$S3_PORT/snaps/backups"
}

s3_stop() {
	[ -n "${S3_PID:-}" ] || return 0
	kill -TERM "$S3_PID" 2>/dev/null || true
	wait_gone "$S3_PID"
	wait "$S3_PID" 2>/dev/null || true
	unset S3_PID
}

# How many requests s3rver has answered (it logs "info: /key 200 3ms 0b").
s3_requests() {
	grep -cE 'info.*: /[^ ]* [0-9]{3} [0-9]+ms' "$S3_LOG" || true
}

# The objects s3rver holds under backups/, by key.
s3_objects() {
	find "$S3_DATA/snaps/backups" -name '*._S3rver_object' 2>/dev/null |
		sed 's|.*/||; s|\._S3rver_object$||' | sort
}
