#!/usr/bin/env bats
# Bad input: every file of t/corpus/bad/ (hostile lines, each file named for
# what it is) is fed, between two valid lines, to every stage that reads
# standard input: journal-append, post-batch, classify, record-results. Each
# exits 65 (bad lines skipped or quarantined, the rest processed), names the
# program and the line in one message, does not crash (the ASan build of
# `make check` catches memory errors), and processes both valid neighbours.

load helper
load stub

CORPUS="$BATS_TEST_DIRNAME/corpus/bad"

# the selection, response and outcome records of the valid neighbours
selection() { printf '{"seq":%d,"event_id":"v-%d","target":"prod","attempt":0,"event":{"event_id":"v-%d","n":%d}}\n' "$1" "$1" "$1" "$1"; }
response() { printf '{"target":"prod","format":"batch","request":%d,"http_status":200,"transport_error":null,"elapsed_ms":1,"retry_after_ms":null,"events":[{"seq":%d,"event_id":"v-%d"}],"response":{"results":[{"event_id":"v-%d","status":"success"}]},"note":null}\n' "$1" "$1" "$1" "$1"; }
outcome_ok() { printf '{"seq":%d,"event_id":"v-%d","target":"prod","status":"success","category":null,"http_status":200,"error":null,"retry_after_ms":null}\n' "$1" "$1"; }

# sandwich VALID1 FILE VALID2: the hostile file between two valid lines
sandwich() { printf '%s\n' "$1"; cat "$2"; printf '%s\n' "$3"; }

# one_message PROG STDERR_FILE FILE: exactly one message names line 2, as
# "PROG: stdin:2: ..." or "PROG: <stdin>:2: ...", and nothing names another line.
one_message() {
	local prog=$1 err=$2 f=$3
	[ "$(grep -ac "^$prog: <\{0,1\}stdin>\{0,1\}:2: " "$err")" = 1 ] ||
		{ echo "$(basename "$f"): $prog said:" >&2; cat -v "$err" >&2; return 1; }
	! grep -aq "^$prog: <\{0,1\}stdin>\{0,1\}:[13]: " "$err" ||
		{ echo "$(basename "$f"): $prog named a valid line:" >&2; cat -v "$err" >&2; return 1; }
}

nfiles() { find "$CORPUS" -type f | wc -l; }

@test "the corpus: hostile inputs, one line each, named for what they are" {
	[ "$(nfiles)" -ge 80 ]
	for f in "$CORPUS"/*; do
		[ "$(wc -l < "$f")" = 1 ]
		[[ "$(basename "$f")" =~ ^[a-z0-9-]+$ ]]
	done
}

@test "journal-append: each hostile line quarantined with its bytes, exit 65, one message, neighbours appended" {
	for f in "$CORPUS"/*; do
		rm -f "$SLUICE_DB" "$SLUICE_DB"-*
		sandwich '{"event_id":"v-1"}' "$f" '{"event_id":"v-2"}' > in.ndjson
		rc=0
		journal-append --report < in.ndjson > report 2> err || rc=$?
		[ "$rc" = 65 ] || { echo "$(basename "$f"): exit $rc" >&2; cat -v err >&2; false; }
		one_message journal-append err "$f"
		[ "$(sql 'select group_concat(event_id) from (select event_id from events order by seq)')" = "v-1,v-2" ]
		[ "$(jq -r 'select(.line == 2) | .status' report)" = quarantined ]
		# the raw bytes are kept exactly
		[ "$(sql 'select hex(raw) from quarantine')" = "$(head -c -1 "$f" | od -An -v -tx1 | tr -d ' \n' | tr a-f A-F)" ]
	done
	# (t/invariants checks the accounting of all of them at once, below)
	# a shell substitution in the input was never run
	[ ! -e pwned-by-corpus ]
}

@test "post-batch: each hostile line skipped with exit 65 and one message; both neighbours are sent" {
	stub_start
	echo '{"event_id":"seed"}' | journal-append -q
	target_add prod "$STUB_URL"
	for f in "$CORPUS"/*; do
		rc=0
		sandwich "$(selection 1)" "$f" "$(selection 2)" | post-batch -t prod > out 2> err || rc=$?
		[ "$rc" = 65 ] || { echo "$(basename "$f"): exit $rc" >&2; cat -v err >&2; false; }
		one_message post-batch err "$f"
		[ "$(jq -c '[.http_status, [.events[].event_id]]' out)" = '[200,["v-1","v-2"]]' ]
	done
	# the receiver was sent exactly the valid events, once per file
	[ "$(jq -r .event.event_id "$STUB_LOG" | sort -u | paste -sd,)" = "v-1,v-2" ]
	[ "$(wc -l < "$STUB_LOG")" = $((2 * $(nfiles))) ]
	[ ! -e pwned-by-corpus ]
	stub_stop
}

@test "classify: each hostile line skipped with exit 65 and one message; both neighbours are classified" {
	for f in "$CORPUS"/*; do
		rc=0
		sandwich "$(response 1)" "$f" "$(response 2)" | classify > out 2> err || rc=$?
		[ "$rc" = 65 ] || { echo "$(basename "$f"): exit $rc" >&2; cat -v err >&2; false; }
		one_message classify err "$f"
		[ "$(jq -r '"\(.event_id):\(.status)"' out | paste -sd,)" = "v-1:success,v-2:success" ]
	done
}

@test "record-results: each hostile line skipped with exit 65 and one message; both neighbours are recorded" {
	for f in "$CORPUS"/*; do
		rm -f "$SLUICE_DB" "$SLUICE_DB"-*
		printf '{"event_id":"v-1"}\n{"event_id":"v-2"}\n' | journal-append -q
		target_add prod
		rc=0
		sandwich "$(outcome_ok 1)" "$f" "$(outcome_ok 2)" | record-results -t prod > out 2> err || rc=$?
		[ "$rc" = 65 ] || { echo "$(basename "$f"): exit $rc" >&2; cat -v err >&2; false; }
		one_message record-results err "$f"
		[ "$(sql "select group_concat(event_seq || ':' || state) from deliveries")" = "1:delivered,2:delivered" ]
		[ "$(jq -c .success out)" = 2 ]
	done
}

@test "every hostile line at once, between valid ones: every stage processes every valid line" {
	stub_start
	n=$(nfiles)
	i=0
	: > events.ndjson; : > selections.ndjson; : > responses.ndjson; : > outcomes.ndjson
	for f in "$CORPUS"/*; do
		i=$((i + 1))
		{ echo "{\"event_id\":\"v-$i\",\"n\":$i}"; cat "$f"; } >> events.ndjson
		{ selection "$i"; cat "$f"; } >> selections.ndjson
		{ response "$i"; cat "$f"; } >> responses.ndjson
		{ outcome_ok "$i"; cat "$f"; } >> outcomes.ndjson
	done
	run -65 --separate-stderr journal-append < events.ndjson
	[ "$(sql 'select count(*) from events')" = "$n" ]
	[ "$(sql 'select count(*) from quarantine')" = "$n" ]
	[ "$(echo "$stderr" | grep -ac '^journal-append: stdin:[0-9]*: quarantined')" = "$n" ]
	"$BATS_TEST_DIRNAME/invariants" -i events.ndjson
	target_add prod "$STUB_URL" --batch-events 7
	run -65 --separate-stderr post-batch -t prod < selections.ndjson
	[ "$(echo "$output" | jq -r '.events[].event_id' | sort -u | wc -l)" = "$n" ]
	[ "$(echo "$stderr" | grep -ac '^post-batch: <stdin>:[0-9]*: ')" = "$n" ]
	run -65 --separate-stderr classify < responses.ndjson
	[ "$(echo "$output" | jq -r 'select(.status == "success") | .event_id' | wc -l)" = "$n" ]
	[ "$(echo "$stderr" | grep -ac '^classify: <stdin>:[0-9]*: ')" = "$n" ]
	run -65 --separate-stderr record-results -t prod < outcomes.ndjson
	[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = "$n" ]
	[ "$(echo "$stderr" | grep -ac '^record-results: <stdin>:[0-9]*: ')" = "$n" ]
	echo "# figures: bad input: $n hostile lines x 4 stages, lost valid lines: 0" >&2
	stub_stop
}

@test "a receiver's answer nested deeper than the span scanner's limit still gets its events classified" {
	# Legal JSON (jansson reads up to 2048 levels, so post-batch passes it on);
	# skipping the record would leave its events unrecorded and resent for ever.
	deep=$(printf '%0.s[' $(seq 1 200))$(printf '%0.s]' $(seq 1 200))
	echo "{\"target\":\"prod\",\"format\":\"batch\",\"request\":1,\"http_status\":200,\"transport_error\":null,\"elapsed_ms\":1,\"retry_after_ms\":null,\"events\":[{\"seq\":1,\"event_id\":\"v-1\"}],\"response\":{\"results\":[{\"event_id\":\"v-1\",\"status\":\"success\",\"extra\":$deep}]},\"note\":null}" > deep.ndjson
	run -0 --separate-stderr classify < deep.ndjson
	[ "$(echo "$output" | jq -r '"\(.event_id):\(.status)"')" = "v-1:success" ]
}

@test "recording the same outcome twice is harmless: the event is not reported missing" {
	printf '{"event_id":"v-1"}\n' | journal-append -q
	target_add prod
	{ outcome_ok 1; outcome_ok 1; } > outcomes.ndjson
	run -0 --separate-stderr record-results -t prod < outcomes.ndjson
	[[ "$stderr" != *"no event 1 with id v-1 in the journal"* ]]
	[ "$(sql "select group_concat(event_seq || ':' || state) from deliveries")" = "1:delivered" ]
	# and again, from the saved file
	run -0 --separate-stderr record-results -t prod < outcomes.ndjson
}
