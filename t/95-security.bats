#!/usr/bin/env bats
# Security suite (SLUICE.md section 10): the token is never in argv (ps), in
# any stderr even with -v, or in the journal's bytes; TLS is verified unless
# the target says --insecure, which status shows; the journal is 0600 in a
# 0700 directory; a URL with credentials is refused; SQL and shell
# metacharacters in ids, payloads, names and settings are data.

load helper
load stub

TOKEN=tok-7c1f9a3e5b2d4f60-SECRET

invariants() {
	local out rc=0
	out=$("$BATS_TEST_DIRNAME/invariants" "$@" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] || { printf '%s\n' "$out" | head -40 >&2; return 1; }
}

# no_token FILE...: the token is in none of these files' bytes
no_token() {
	local f
	for f in "$@"; do
		[ -e "$f" ] || continue
		if grep -aqF "$TOKEN" "$f"; then
			echo "the token is in $f" >&2
			return 1
		fi
	done
}

@test "the token is never in ps output during a drain, in any stderr with -v, or in the journal's bytes" {
	export PROD_TOKEN=$TOKEN STUB_TOKEN=$TOKEN
	stub_start --token-env STUB_TOKEN --request-log "$BATS_TEST_TMPDIR/req.log"
	events 20000 > in.ndjson
	journal-append -q < in.ndjson
	target_add prod "$STUB_URL" --auth-env PROD_TOKEN --batch-events 20
	drain -v > drain.out 2> drain.err &
	pid=$!
	track "$pid"
	# every process's arguments, sampled as long as the drain runs
	samples=0
	while kill -0 "$pid" 2>/dev/null; do
		ps -eo args >> ps.out
		samples=$((samples + 1))
	done
	wait "$pid"
	echo "# figures: ps sampled $samples times during a drain of 1000 requests" >&2
	grep -q '[p]ost-batch' ps.out    # the samples did see the stages at work
	no_token ps.out drain.out drain.err
	# every request carried it, so it was in use
	[ "$(jq -r .authorization req.log | sort -u)" = present ]
	[ "$(jq -r 'select(.status == "success") | 1' "$STUB_LOG" | wc -l)" = 20000 ]
	# each stage alone, verbose
	events 5 late | tee -a in.ndjson | journal-append -v 2> append.err
	select-undelivered -t prod 2> select.err | post-batch -t prod -v 2> post.err |
		classify 2> classify.err | record-results -t prod > /dev/null 2> record.err
	grep -q 'POST ' post.err
	sluice target show prod > show.out 2>&1
	sluice target list --json > list.out 2>&1
	sluice status --json > status.out 2>&1
	sluice config > config.out 2>&1 || true
	no_token append.err select.err post.err classify.err record.err show.out list.out status.out config.out
	# nor in any file of the journal, the receiver's logs, or anything else here
	no_token "$SLUICE_DB" "$SLUICE_DB-wal" "$SLUICE_DB-shm" "$STUB_LOG" req.log "$STUB_STDERR"
	[ -z "$(grep -rlaF "$TOKEN" "$BATS_TEST_TMPDIR" --exclude-dir=home 2>/dev/null)" ]
	invariants -l "$STUB_LOG" -i in.ndjson --all-delivered
	stub_stop
}

@test "a token read from --auth-file is not stored or printed either" {
	printf '%s\n' "$TOKEN" > token
	chmod 600 token
	export STUB_TOKEN=$TOKEN
	stub_start --token-env STUB_TOKEN
	events 50 | journal-append -q
	target_add prod "$STUB_URL" --auth-file "$BATS_TEST_TMPDIR/token" --batch-events 10
	run -0 --separate-stderr drain -v
	no_token "$SLUICE_DB" "$SLUICE_DB-wal" "$STUB_LOG"
	[[ "$stderr$output" != *"$TOKEN"* ]]
	[ "$(sql 'select count(*) from deliveries')" = 50 ]
	stub_stop
}

# tls_setup: a self-signed certificate for 127.0.0.1, and a stub serving HTTPS with it
tls_setup() {
	command -v openssl > /dev/null || apt-get install -y -qq openssl > /dev/null 2>&1 ||
		skip "openssl is not installed (apt-get install openssl)"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 \
		-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 2> openssl.err
	stub_start --tls-cert "$BATS_TEST_TMPDIR/cert.pem" --tls-key "$BATS_TEST_TMPDIR/key.pem"
	HTTPS_URL="https://127.0.0.1:$STUB_PORT/ingest"
}

@test "TLS: a self-signed receiver fails with category tls, succeeds with --cacert, and with --insecure while status warns" {
	tls_setup
	export SLUICE_JITTER=0
	events 10 | journal-append -q
	# verified by default: the certificate is nobody's
	target_add strict "$HTTPS_URL"
	SLUICE_NOW=1800000000000 run -75 --separate-stderr drain -t strict
	[ "$(sql "select consecutive_failures || '|' || last_category from targets where name = 'strict'")" = "1|tls" ]
	[ "$(sql 'select count(*) from deliveries')" = 0 ]
	[ ! -s "$STUB_LOG" ]
	run -0 --separate-stderr sluice status --json
	[ "$(echo "$output" | jq -c '.targets[] | select(.name == "strict") | [.tls_verified, .last_category]')" = '[true,"tls"]' ]
	# trusting that certificate: delivered
	run -0 sluice target set strict --cacert "$BATS_TEST_TMPDIR/cert.pem"
	SLUICE_NOW=1800000060000 run -0 --separate-stderr drain -t strict
	[ "$(sql "select count(*) from deliveries d join targets t on t.id = d.target_id where t.name = 'strict' and state = 'delivered'")" = 10 ]
	# not verifying at all: delivered, and status says so
	target_add loose "$HTTPS_URL" --insecure
	run -0 --separate-stderr drain -t loose
	[ "$(sql "select count(*) from deliveries d join targets t on t.id = d.target_id where t.name = 'loose' and state = 'delivered'")" = 10 ]
	run -0 --separate-stderr sluice status
	[[ "$output" == *"TLS is not verified"* ]]
	run -0 --separate-stderr sluice status --json
	[ "$(echo "$output" | jq -c '[.targets[] | [.name, .tls_verified]]')" = '[["loose",false],["strict",true]]' ]
	invariants -l "$STUB_LOG" --all-delivered
	stub_stop
}

@test "the journal is 0600 and its directory 0700, even under umask 000; so are the WAL files" {
	unset SLUICE_DB
	umask 000
	echo '{"event_id":"a"}' | journal-append -q
	dir="$HOME/.local/state/sluice"
	[ "$(stat -c %a "$dir")" = 700 ]
	[ "$(stat -c %a "$dir/journal.db")" = 600 ]
	target_add prod
	# a reader keeps the WAL open while we look
	sqlite3 "$dir/journal.db" 'pragma journal_mode' > /dev/null
	run -75 --separate-stderr drain
	for f in "$dir"/journal.db*; do
		[ -d "$f" ] && { [ "$(stat -c %a "$f")" = 700 ]; continue; }
		[ "$(stat -c %a "$f")" = 600 ] || { echo "$f is $(stat -c %a "$f")" >&2; false; }
	done
	# an explicit path in a new directory, too
	echo '{"event_id":"b"}' | journal-append -q -d "$BATS_TEST_TMPDIR/new/dir/j.db"
	[ "$(stat -c %a "$BATS_TEST_TMPDIR/new/dir")" = 700 ]
	[ "$(stat -c %a "$BATS_TEST_TMPDIR/new/dir/j.db")" = 600 ]
}

@test "a URL carrying credentials is refused, when added and when found in the journal" {
	run -78 --separate-stderr sluice target add prod "http://user:pass@127.0.0.1:9/ingest"
	[[ "$stderr" == *"credentials"* ]]
	[[ "$stderr" != *"pass@"* ]] || [[ "$stderr" == *"refused"* ]]
	run -78 --separate-stderr sluice target add prod "https://:secret@127.0.0.1:9/ingest"
	run -78 --separate-stderr sluice target add prod "http://user@127.0.0.1:9/ingest"
	echo '{"event_id":"a"}' | journal-append -q
	target_add prod
	run -78 --separate-stderr sluice target set prod "http://user:pass@127.0.0.1:9/ingest"
	# written behind sluice's back: post-batch refuses it too, and sends nothing
	sqlite3 "$SLUICE_DB" "update targets set url = 'http://user:pass@127.0.0.1:9/ingest'"
	run -78 --separate-stderr bash -c 'select-undelivered -t prod | post-batch -t prod'
	[[ "$stderr" == *"credentials"* ]]
}

@test "SQL metacharacters in payloads, --source and --producer are stored and delivered as data" {
	stub_start
	sqlish="a'; DROP TABLE events; --"
	{
		jq -cn --arg s "$sqlish" '{event_id: "sql-1", data: {name: $s, q: "\" OR 1=1 --"}}'
		jq -cn --arg s "Robert'); DELETE FROM deliveries WHERE ('1'='1" '{event_id: "sql-2", data: {name: $s}}'
		jq -cn '{event_id: "sql-3", event_type: "x\u0027; DROP TABLE targets; --", coalesce_key: "k\u0027--"}'
		echo "not json ' ; DROP TABLE quarantine; --"
	} > in.ndjson
	run -65 --separate-stderr journal-append --source "$sqlish" --producer "p'); DROP TABLE runs; --" < in.ndjson
	[ "$(sql 'select count(*) from events')" = 3 ]
	[ "$(sql "select count(*) from events where producer = 'p''); DROP TABLE runs; --'")" = 3 ]
	[ "$(sql "select source from quarantine")" = "$sqlish" ]
	[ "$(sql "select event_type from events where event_id = 'sql-3'")" = "x'; DROP TABLE targets; --" ]
	[[ "$stderr" == *"journal-append: $sqlish:4: quarantined (invalid_json)"* ]]
	target_add prod "$STUB_URL"
	run -0 --separate-stderr drain
	run -0 --separate-stderr sluice quarantine list
	[[ "$output" == *"DROP TABLE quarantine"* ]] || [[ "$output" == *"$sqlish"* ]]
	# every table is there; the payloads arrived byte for byte
	for table in deliveries events quarantine runs targets; do
		[ "$(sql "select count(*) from sqlite_master where type = 'table' and name = '$table'")" = 1 ]
	done
	invariants -l "$STUB_LOG" -i in.ndjson --all-delivered
	stub_stop
}

@test "shell metacharacters in payloads, names, settings and URLs are data: nothing is run" {
	stub_start
	pwn="\$(touch $BATS_TEST_TMPDIR/pwned)"
	tick="\`touch $BATS_TEST_TMPDIR/pwned2\`"
	{
		jq -cn --arg a "$pwn" --arg b "$tick" '{event_id: "sh-1", data: {a: $a, b: $b, c: "; touch pwned3; ", d: "| touch pwned4", e: "&& touch pwned5"}}'
		echo "$pwn ; $tick"
	} > in.ndjson
	run -65 --separate-stderr journal-append --source "$pwn" --producer "$tick; touch pwned6" < in.ndjson
	# names: refused as names, whatever they hold
	for name in "$pwn" "$tick" "a;touch pwned7" "../../x" "a b" "x'--"; do
		run -64 --separate-stderr sluice target add "$name" "$STUB_URL"
		run --separate-stderr drain -t "$name"
		[ "$status" = 64 ] || [ "$status" = 69 ]
		run --separate-stderr sluice retry "$name"
		[ "$status" = 64 ] || [ "$status" = 69 ]
		run --separate-stderr sluice target show "$name"
		[ "$status" = 64 ] || [ "$status" = 69 ]
	done
	[ "$(sql 'select count(*) from targets')" = 0 ]
	# a URL and a header holding them are sent as they are
	target_add prod "$STUB_URL?q=\$(touch%20pwned8)&r=\`x\`" --header "X-Note: $pwn; $tick"
	SLUICE_PRODUCER="$pwn" run -0 --separate-stderr drain -v
	run -0 --separate-stderr sluice status
	run -0 --separate-stderr sluice target list
	run -0 --separate-stderr sluice quarantine list
	[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = 1 ]
	[ -z "$(find "$BATS_TEST_TMPDIR" /tmp -maxdepth 1 -name 'pwned*' 2>/dev/null)" ]
	invariants -l "$STUB_LOG" -i in.ndjson --all-delivered
	stub_stop
}
