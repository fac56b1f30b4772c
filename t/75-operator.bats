#!/usr/bin/env bats
# The operator's verbs: status, retry, gc, vacuum, emit, config, quarantine.
# Journals in known states are built by real drains against stub-receiver.

load helper
load stub

NOW=1800000000000

# A journal with four targets in four states:
#   ok       everything delivered but one rejected (retrying) and one oversized (failed)
#   backoff  one batch-level failure (backing off)
#   failing  three failures in a row (FAILING)
#   off      disabled
known_state() {
	export SLUICE_NOW=$NOW SLUICE_JITTER=0
	stub_start --reject-when data.n=3
	{ events 5; printf '{"event_id":"big","pad":"%s"}\n' "$(head -c 3000 /dev/zero | tr '\0' x)"; } | journal-append -q
	target_add ok "$STUB_URL" --max-event-bytes 2000
	target_add backoff http://127.0.0.1:9/x
	target_add failing http://127.0.0.1:9/y
	target_add off http://127.0.0.1:9/z
	sluice target disable off
	drain --target ok > /dev/null 2>&1
	drain --target backoff > /dev/null 2>&1 || true
	for t in 0 1000 3000; do SLUICE_NOW=$((NOW + t)) drain --target failing > /dev/null 2>&1 || true; done
}

@test "status --json reports each target's counts and state" {
	known_state
	SLUICE_NOW=$((NOW + 3500)) run -0 --separate-stderr sluice status --json
	echo "$output" | jq . > status.json
	[ "$(jq -c '.journal | {events, retained, quarantined}' status.json)" = '{"events":6,"retained":6,"quarantined":0}' ]
	[ "$(jq -c '.targets[] | select(.name=="ok") | {state, delivered, pending, retrying, failed, failed_categories}' status.json)" = \
	  '{"state":"ok","delivered":4,"pending":0,"retrying":1,"failed":1,"failed_categories":{"oversized":1}}' ]
	[ "$(jq -c '.targets[] | select(.name=="backoff") | {state, pending, consecutive_failures, last_category, last_categories}' status.json)" = \
	  '{"state":"backing_off","pending":6,"consecutive_failures":1,"last_category":"connection","last_categories":{"connection":6}}' ]
	[ "$(jq -r '.targets[] | select(.name=="failing") | "\(.state) \(.consecutive_failures) \(.next_attempt_at)"' status.json)" = \
	  "failing 3 2027-01-15T08:00:07.000Z" ]
	[ "$(jq -r '.targets[] | select(.name=="off") | "\(.state) \(.enabled) \(.pending)"' status.json)" = "disabled false 6" ]
	[ "$(jq -r '.targets[] | select(.name=="backoff") | .oldest_pending_seconds' status.json)" = 3 ]
	stub_stop
}

@test "status counts gc'd, superseded and routed events, and failures by category, unknown included" {
	events 8 | journal-append -q
	target_add prod
	id=$(sql "select id from targets where name='prod'")
	sqlite3 "$SLUICE_DB" "
		update events set payload = null where seq in (1, 2);
		update events set superseded_by = 8 where seq = 7;
		update events set route = '?' where seq = 6;
		insert into deliveries(target_id, event_seq, state, attempts, category) values
		  ($id, 1, 'delivered', 0, null), ($id, 2, 'delivered', 0, null),
		  ($id, 3, 'failed', 10, 'validation'), ($id, 4, 'failed', 1, null),
		  ($id, 5, 'retrying', 1, 'validation');"
	run -0 sluice status --json
	[ "$(echo "$output" | jq -c '.journal | {events, retained, superseded, unknown_target}')" = \
	  '{"events":8,"retained":6,"superseded":1,"unknown_target":1}' ]
	[ "$(echo "$output" | jq -c '.targets[0] | {delivered, pending, retrying, failed, failed_categories}')" = \
	  '{"delivered":2,"pending":1,"retrying":1,"failed":2,"failed_categories":{"unknown":1,"validation":1}}' ]
}

@test "status for people: one row per target, the failing one explained, no colour when piped" {
	known_state
	SLUICE_NOW=$((NOW + 3500)) run -0 --separate-stderr sluice status
	[[ "$output" == *"6 events (0 superseded)"* ]]
	echo "$output" | grep -E '^ok +ok +4 +0 +1 +1 '
	echo "$output" | grep -E '^failing +FAILING +0 +6 +0 +0 '
	echo "$output" | grep -E '^backoff +backing off '
	echo "$output" | grep -E '^off +disabled '
	[[ "$output" == *"3 failures since 2027-01-15T08:00:00Z; last run: connection: 6"* ]]
	[[ "$output" == *"now: sluice retry failing"* ]]
	[[ "$output" == *"failed for good: oversized: 1 (sluice retry --failed ok)"* ]]
	[[ "$output" != *$'\033'* ]]
	# every line fits 80 columns
	echo "$output" | awk 'length($0) > 80 { print "too wide: " $0; n++ } END { exit n > 0 }' >&2
	stub_stop
}

@test "status --check: healthy is 0; each kind of problem is 1 with a line on stderr" {
	stub_start
	events 3 | journal-append -q
	target_add prod "$STUB_URL"
	drain > /dev/null 2>&1
	run -0 --separate-stderr sluice status --check --max-age 1h
	[ -z "$stderr" ]
	# an undelivered event older than --max-age
	target_add late "$STUB_URL/late"
	SLUICE_NOW=$(( $(date +%s%3N) + 7200000 )) run -1 --separate-stderr sluice status --check --max-age 1h
	[[ "$stderr" == "sluice-status: late has an undelivered event 2h 0m old (limit 1h 0m)" ]]
	sluice target rm late 2> /dev/null
	# a failing target
	target_add dead http://127.0.0.1:9/x
	for t in 0 1 2; do SLUICE_JITTER=0 SLUICE_NOW=$((NOW + t * 100000)) drain --target dead > /dev/null 2>&1 || true; done
	run -1 --separate-stderr sluice status --check
	[[ "$stderr" == *"dead is failing: 3 failures in a row (connection)"* ]]
	sluice target rm dead 2> /dev/null
	# terminal failures over the limit
	stub_stop
	stub_start --permanent-when data.n=1
	target_add perm "$STUB_URL"
	drain --target perm > /dev/null 2>&1
	run -1 --separate-stderr sluice status --check
	[[ "$stderr" == *"perm has 1 event failed for good (limit 0)"* ]]
	run -0 --separate-stderr sluice status --check --max-failed 1
	stub_stop
}

@test "status --prometheus parses back, and --output writes it atomically" {
	known_state
	SLUICE_NOW=$((NOW + 3500)) run -0 sluice status --prometheus --output "$BATS_TEST_TMPDIR/sluice.prom"
	[ -z "$output" ]
	[ ! -e "$BATS_TEST_TMPDIR/sluice.prom.tmp" ]
	prom=$BATS_TEST_TMPDIR/sluice.prom
	# every sample line is: name{labels} value
	[ "$(grep -v '^#' "$prom" | grep -cvE '^[a-z_]+(\{target="[a-z0-9_-]+"\})? [0-9]+$')" = 0 ]
	grep -qx 'sluice_events_total 6' "$prom"
	grep -qx 'sluice_pending{target="backoff"} 6' "$prom"
	grep -qx 'sluice_failed{target="ok"} 1' "$prom"
	grep -qx 'sluice_target_failing{target="failing"} 1' "$prom"
	grep -qx 'sluice_target_failing{target="ok"} 0' "$prom"
	grep -qx 'sluice_oldest_pending_seconds{target="backoff"} 3' "$prom"
	grep -qx "sluice_last_success_timestamp_seconds{target=\"ok\"} $((NOW / 1000))" "$prom"
	# each metric has HELP and TYPE
	for m in $(grep -v '^#' "$prom" | sed 's/[{ ].*//' | sort -u); do
		grep -q "^# TYPE $m " "$prom"
		grep -q "^# HELP $m " "$prom"
	done
	stub_stop
}

@test "retry TARGET clears the backoff, makes retries due, and drains now" {
	export SLUICE_JITTER=0
	stub_start --script 500
	events 4 | journal-append -q
	target_add prod "$STUB_URL"
	run -75 --separate-stderr drain
	[ "$(sql 'select consecutive_failures from targets')" = 1 ]
	# still backing off for a second, but the operator says now
	run -0 --separate-stderr sluice retry prod
	[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = 4 ]
	[ "$(sql 'select consecutive_failures || ":" || coalesce(next_attempt_at, "-") from targets')" = "0:-" ]
	stub_stop
}

@test "retry --failed re-queues by event and by category" {
	export SLUICE_JITTER=0
	stub_start --permanent-when data.n=1 --permanent-when data.n=2
	{ events 2; printf '{"event_id":"big","pad":"%s"}\n' "$(head -c 3000 /dev/zero | tr '\0' x)"; } | journal-append -q
	target_add prod "$STUB_URL" --max-event-bytes 2000
	drain > /dev/null 2>&1
	[ "$(sql "select count(*) from deliveries where state = 'failed'")" = 3 ]
	run -0 --separate-stderr sluice retry --failed prod --event e-2
	[ "$output" = 1 ]
	run -0 --separate-stderr sluice retry --failed prod --category oversized
	[ "$output" = 1 ]
	[ "$(sql "select group_concat(event_seq || ':' || state) from deliveries")" = "1:failed,2:retrying,3:retrying" ]
	run -0 --separate-stderr sluice retry --failed prod
	[ "$output" = 1 ]
	run -64 --separate-stderr sluice retry --event e-1 prod
	run -69 --separate-stderr sluice retry nope
	stub_stop
}

@test "gc removes only payloads delivered to every enabled target; the archive holds exactly them" {
	stub_start --reject-when data.n=4
	events 6 | journal-append -q
	target_add a "$STUB_URL/a"
	target_add b http://127.0.0.1:9/down
	drain > /dev/null 2>&1 || true
	# b has nothing: nothing may go
	run -0 --separate-stderr sluice gc --older-than 0s --archive "$BATS_TEST_TMPDIR/arch.ndjson"
	[ "$output" = 0 ]
	[ "$(sql 'select count(*) from events where payload is not null')" = 6 ]
	# now b has them too (but e-4 is rejected, so retrying, at both)
	sluice target set b "$STUB_URL/b"
	sluice retry b > /dev/null 2>&1
	run -0 --separate-stderr sluice gc --older-than 1h --dry-run
	[ "$output" = 0 ]
	run -0 --separate-stderr sluice gc --older-than 0s --dry-run
	[ "$output" = 5 ]
	[ "$(sql 'select count(*) from events where payload is not null')" = 6 ]
	run -0 --separate-stderr sluice gc --older-than 0s --archive "$BATS_TEST_TMPDIR/arch.ndjson.gz"
	[ "$output" = 5 ]
	[ "$(sql 'select group_concat(event_id) from events where payload is not null')" = e-4 ]
	# the archive holds exactly what was removed, bytes intact
	[ "$(zcat arch.ndjson.gz | jq -r .event_id | paste -sd,)" = "e-1,e-2,e-3,e-5,e-6" ]
	[ "$(zcat arch.ndjson.gz | jq -c 'select(.seq==2) | .event')" = "$(events 2 | sed -n 2p | jq -c .)" ]
	# ids and ledger stay; a resend is still a duplicate
	[ "$(sql 'select count(*) from events')" = 6 ]
	[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = 10 ]
	run -0 --separate-stderr journal-append --report <<< "$(events 1)"
	[ "$(echo "$output" | jq -r .status)" = duplicate ]
	stub_stop
}

@test "a gc'd journal still drains everything retained to a new target" {
	stub_start
	events 10 | journal-append -q
	target_add a "$STUB_URL/a"
	drain > /dev/null 2>&1
	sluice gc --older-than 0s > /dev/null 2>&1
	events 3 new | journal-append -q
	target_add fresh "$STUB_URL/fresh"
	run -0 --separate-stderr drain --target fresh
	[ "$(echo "$output" | jq .events)" = 3 ]
	[ "$(sql "select count(*) from deliveries d join targets t on t.id = d.target_id where t.name = 'fresh'")" = 3 ]
	stub_stop
}

@test "gc follows the configured retention; forever removes nothing" {
	events 2 | journal-append -q
	run -0 --separate-stderr sluice gc
	[[ "$stderr" == *"retention is forever"* ]]
	SLUICE_RETAIN=0s run -0 --separate-stderr sluice gc
	[ "$output" = 2 ]
	SLUICE_RETAIN=soon run -78 --separate-stderr sluice gc
}

@test "vacuum reclaims space" {
	seq 1 20000 | awk '{ printf "{\"event_id\":\"v-%d\",\"pad\":\"%0200d\"}\n", $1, $1 }' | journal-append -q
	sluice gc --older-than 0s > /dev/null 2>&1
	before=$(stat -c %s "$SLUICE_DB")
	run -0 --separate-stderr sluice vacuum
	[ "$(stat -c %s "$SLUICE_DB")" -lt "$((before / 2))" ]
	[ "$(sql 'pragma integrity_check')" = ok ]
}

@test "emit with a dead target: exit 0, the events are safe, one warning" {
	# a generous --drain-timeout: these are about what emit does, not how fast
	# (under valgrind a drain takes seconds); the timeout has its own test
	target_add prod http://127.0.0.1:9/x
	run -0 --separate-stderr sluice emit --drain-timeout 60s <<< "$(events 3)"
	[ "$(sql 'select count(*) from events')" = 3 ]
	[[ "$stderr" =~ "sluice: prod is failing since "[0-9][0-9]:[0-9][0-9]" UTC (connection); run 'sluice retry prod'" ]]
	[ "$(echo "$stderr" | wc -l)" = 1 ]
}

@test "emit with a healthy target sends just the new events; nothing due, no request" {
	stub_start --request-log "$BATS_TEST_TMPDIR/req.log"
	target_add prod "$STUB_URL"
	run -0 --separate-stderr sluice emit --drain-timeout 60s <<< "$(events 3)"
	[ -z "$stderr" ]
	[ "$(jq -r 'select(.status=="success") | .event.event_id' "$STUB_LOG" | paste -sd,)" = "e-1,e-2,e-3" ]
	run -0 --separate-stderr sluice emit --drain-timeout 60s <<< "$(events 2 more)"
	[ "$(jq -r 'select(.status=="success") | .event.event_id' "$STUB_LOG" | paste -sd,)" = "e-1,e-2,e-3,more-1,more-2" ]
	requests=$(wc -l < req.log)
	# nothing new (a duplicate line appends nothing): no request at all
	run -0 --separate-stderr sluice emit --drain-timeout 60s <<< "$(events 1 more)"
	[ "$(wc -l < req.log)" = "$requests" ]
	# quarantined input: the exit status says so
	run -65 --separate-stderr sluice emit --drain-timeout 60s <<< 'not json'
	[[ "$stderr" == *"quarantined (invalid_json)"* ]]
	stub_stop
}

@test "emit never waits on a hanging receiver past --drain-timeout" {
	stub_start --script hang
	target_add prod "$STUB_URL" --timeout-ms 30000
	start=$(date +%s%3N)
	run -0 --separate-stderr sluice emit --drain-timeout 500ms <<< "$(events 1)"
	[ $(( $(date +%s%3N) - start )) -lt 5000 ]
	[ "$(sql 'select count(*) from events')" = 1 ]
	stub_stop
}

@test "config: every setting with its source; disagreements are named" {
	mkdir -p "$HOME/.config/sluice"
	printf '# mine\ndb = /srv/journal.db\nproducer = cron\n' > "$HOME/.config/sluice/config"
	run -0 sluice config --json
	echo "$output" > cfg.json
	[ "$(jq -r '.db.value + " " + .db.source' cfg.json)" = "$SLUICE_DB env SLUICE_DB" ]
	[ "$(jq -r '.db.overrides.value' cfg.json)" = /srv/journal.db ]
	[ "$(jq -r '.producer.source' cfg.json)" = "file $HOME/.config/sluice/config:3" ]
	[ "$(jq -r '.sync.value + " " + .sync.source' cfg.json)" = "normal env SLUICE_SYNC" ]
	[ "$(jq -r '.retain.value + " " + .retain.source' cfg.json)" = "forever default" ]
	run -0 sluice config
	[[ "$output" == *"note: overrides /srv/journal.db from file"* ]]
	run -0 sluice -d /x/y.db config --get db
	[ "$output" = /x/y.db ]
	unset SLUICE_DB
	run -0 sluice config --get db
	[ "$output" = /srv/journal.db ]
	# the producer from the config file is used by journal-append
	export SLUICE_DB=$BATS_TEST_TMPDIR/j.db
	events 1 | journal-append -q
	[ "$(sql 'select producer from events')" = cron ]
	printf 'bogus = 1\n' > "$HOME/.config/sluice/config"
	run -78 --separate-stderr sluice config
	[[ "$stderr" == *"config:1: unknown setting 'bogus'"* ]]
}

@test "quarantine: list, show, export, fix and re-feed, rm" {
	printf '{"event_id":"ok","data":{"id":1}}\n{"event_id":"q1","data":{}}\nbroken\n' | journal-append -q --require data.id || true
	run -0 sluice quarantine list
	[ "$(echo "$output" | cut -f4 | paste -sd,)" = "missing_key,invalid_json" ]
	run -0 sluice quarantine show 1
	[[ "$output" == *"reason:   missing_key"* ]]
	[ "$(echo "$output" | tail -1)" = '{"event_id":"q1","data":{}}' ]
	run -0 sluice quarantine export --reason missing_key
	[ "$output" = '{"event_id":"q1","data":{}}' ]
	run -0 sluice quarantine export --json
	[ "$(echo "$output" | jq -r '"\(.id):\(.line):\(.reason):\(.raw)"' | paste -sd' ')" = '1:2:missing_key:{"event_id":"q1","data":{}} 2:3:invalid_json:broken' ]
	sluice quarantine export --reason missing_key | sed 's/{}/{"id":7}/' | journal-append -q --require data.id
	[ "$(sql "select count(*) from events where event_id = 'q1'")" = 1 ]
	run -0 sluice quarantine rm 1
	run -65 --separate-stderr sluice quarantine rm 1
	run -0 sluice quarantine list
	[ "$(echo "$output" | wc -l)" = 1 ]
}

@test "gc keeps what any target still needs: retrying at a disabled target, or pending" {
	stub_start --reject-when data.n=2
	events 3 | journal-append -q
	target_add a "$STUB_URL/a"
	drain > /dev/null 2>&1
	sluice target disable a
	# e-2 is retrying at a (disabled): kept; the others go
	run -0 --separate-stderr sluice gc --older-than 0s
	[ "$output" = 2 ]
	[ "$(sql 'select group_concat(event_id) from events where payload is not null')" = e-2 ]
	stub_stop
}

@test "gc collects events older than where a --no-backfill target started" {
	stub_start
	events 3 | journal-append -q
	target_add a "$STUB_URL/a"
	drain > /dev/null 2>&1
	target_add late "$STUB_URL/late" --no-backfill
	events 1 new | journal-append -q
	run -0 --separate-stderr sluice gc --older-than 0s
	# e-1..e-3 were never wanted by late; new-1 is pending there
	[ "$output" = 3 ]
	stub_stop
}

@test "emit with no targets says nothing; a journal it cannot read never changes its status" {
	run -0 --separate-stderr sluice emit <<< "$(events 2)"
	[ -z "$stderr" ]
	[ "$(sql 'select count(*) from events')" = 2 ]
}

@test "bad settings from the environment are configuration errors (78), from flags usage errors (64)" {
	SLUICE_SYNC=sometimes run -78 --separate-stderr journal-append <<< "$(events 1)"
	[[ "$stderr" == *"sync must be 'full' or 'normal', not 'sometimes' (env SLUICE_SYNC)"* ]]
	run -64 --separate-stderr journal-append --sync sometimes <<< "$(events 1)"
	SLUICE_BUSY_TIMEOUT=forever run -78 --separate-stderr journal-append <<< "$(events 1)"
}
