#!/usr/bin/env bats
# record-results: outcomes into the ledger; the target's backoff.

load helper

NOW=1800000000000

prep() {
	events "${1:-5}" | journal-append -q
	target_add prod "${@:2}"
	export SLUICE_NOW=$NOW SLUICE_JITTER=0
}

row() { # seq -> state|attempts|category|next_attempt_at
	sql "select state || '|' || attempts || '|' || coalesce(category, '') || '|' || coalesce(next_attempt_at - $NOW, '')
	     from deliveries where event_seq = $1"
}

@test "success and duplicate mark events delivered; the summary says so" {
	prep 3
	{ outcome 1 e-1 success "" 200; outcome 2 e-2 duplicate "" 200; } > in
	run -0 --separate-stderr record-results --target prod < in
	[ "$(echo "$output" | jq -c '{events, success, duplicate, rejected, failed_transient, failed_permanent, target_state}')" = \
	  '{"events":2,"success":1,"duplicate":1,"rejected":0,"failed_transient":0,"failed_permanent":0,"target_state":"ok"}' ]
	[ "$stderr" = "record-results: prod: 1 delivered, 1 duplicate, 0 rejected, 0 failed, 0 transient" ]
	[ "$(sql "select group_concat(event_seq || ':' || state || ':' || delivered_at) from deliveries")" = "1:delivered:$NOW,2:delivered:$NOW" ]
	# the cursor moved over the delivered events, not past the pending one
	[ "$(sql 'select cursor_seq from targets')" = 2 ]
	[ "$(sql 'select count(*) from events')" = 3 ]
}

@test "a rejection counts against the event: attempts 1, its own backoff, target untouched" {
	prep 3
	outcome 2 e-2 rejected validation 400 | record-results -t prod > out 2> err
	[ "$(row 2)" = "retrying|1|validation|1000" ]
	[ "$(sql 'select error from deliveries')" = "because validation" ]
	[ "$(sql 'select consecutive_failures || "|" || coalesce(next_attempt_at, "none") from targets')" = "0|none" ]
	# the second rejection doubles the event's delay
	outcome 2 e-2 rejected validation 400 | record-results -t prod > out 2> err
	[ "$(row 2)" = "retrying|2|validation|2000" ]
}

@test "after max_rejections the event has failed for good, and stays in the journal" {
	prep 1 --max-rejections 3
	for i in 1 2 3; do outcome 1 e-1 rejected validation 400 | record-results -t prod > /dev/null 2>&1; done
	[ "$(row 1)" = "failed|3|validation|" ]
	[ "$(sql 'select count(*) from events where payload is not null')" = 1 ]
}

@test "failed_permanent is terminal at once" {
	prep 2
	outcome 1 e-1 failed_permanent oversized 413 | record-results -t prod > /dev/null 2>&1
	[ "$(row 1)" = "failed|1|oversized|" ]
}

@test "a transient failure leaves events untouched and backs off the target: 1, 2, 4 ... 60 s" {
	prep 4
	expected=(1000 2000 4000 8000 16000 32000 60000 60000)
	for round in "${!expected[@]}"; do
		{ outcome 1 e-1 failed_transient auth_expired 401; outcome 2 e-2 failed_transient not_attempted; } > in
		run -75 --separate-stderr record-results -t prod < in
		[ "$(echo "$output" | jq -r .target_state)" = backing_off ]
		got=$(sql "select consecutive_failures || ':' || (next_attempt_at - $NOW) from targets")
		[ "$got" = "$((round + 1)):${expected[$round]}" ]
	done
	[ "$(sql 'select count(*) from deliveries')" = 0 ]
	[ "$(sql 'select last_category || "|" || last_http_status || "|" || last_error from targets')" = "auth_expired|401|because auth_expired" ]
	[ "$(sql 'select failing_since from targets')" = "$NOW" ]
	[[ "$stderr" == "record-results: prod: 0 delivered, 0 duplicate, 0 rejected, 0 failed, 2 transient (auth_expired: 1, not_attempted: 1); backing off until "* ]]
	[ "$(sql 'select last_categories from targets')" = '{"auth_expired":1,"not_attempted":1}' ]
}

@test "Retry-After wins when it is longer than the backoff" {
	prep 1
	outcome 1 e-1 failed_transient rate_limited 429 30000 | record-results -t prod > /dev/null 2>&1 || true
	[ "$(sql "select next_attempt_at - $NOW from targets")" = 30000 ]
}

@test "any success clears the target's failing state" {
	prep 3
	outcome 1 e-1 failed_transient server_error 500 | record-results -t prod > /dev/null 2>&1 || true
	outcome 1 e-1 failed_transient server_error 500 | record-results -t prod > /dev/null 2>&1 || true
	[ "$(sql 'select consecutive_failures from targets')" = 2 ]
	outcome 1 e-1 success "" 200 | record-results -t prod > /dev/null 2>&1
	[ "$(sql 'select consecutive_failures || "|" || coalesce(failing_since, "-") || "|" || coalesce(next_attempt_at, "-") || "|" || last_success_at from targets')" = "0|-|-|$NOW" ]
}

@test "a late rejection never un-delivers an event" {
	prep 1
	outcome 1 e-1 success "" 200 | record-results -t prod > /dev/null 2>&1
	outcome 1 e-1 rejected validation 400 | record-results -t prod > /dev/null 2>&1
	[ "$(row 1)" = "delivered|0||" ]
}

@test "bad and stale lines are reported with their line number and skipped; the rest is recorded" {
	prep 3
	{
		outcome 1 e-1 success "" 200
		echo 'not json'
		outcome 2 e-999 success "" 200      # no such event (seq 2 is e-2)
		echo '{"seq":3,"event_id":"e-3","status":"exploded"}'
		outcome 3 e-3 success "" 200
	} > in
	run -65 --separate-stderr record-results -t prod < in
	[[ "$stderr" == *"record-results: <stdin>:2: not an outcome record: not a JSON object; skipped"* ]]
	[[ "$stderr" == *"record-results: <stdin>:3: no event 2 with id e-999 in the journal; skipped"* ]]
	[[ "$stderr" == *"record-results: <stdin>:4: not an outcome record: status missing or unknown; skipped"* ]]
	[ "$(sql 'select group_concat(event_seq) from deliveries')" = "1,3" ]
	[ "$(echo "$output" | jq -c '{events, skipped}')" = '{"events":2,"skipped":1}' ]
}

@test "each run is written down" {
	prep 2
	{ outcome 1 e-1 success "" 200; outcome 2 e-2 rejected validation 400; } | record-results -t prod > /dev/null 2>&1
	[ "$(sql 'select counts from runs')" = '{"success":1,"duplicate":0,"rejected":1,"failed_transient":0,"failed_permanent":0,"categories":{"validation":1}}' ]
	# nothing to record, no run row
	record-results -t prod < /dev/null > out 2> err
	[ "$(sql 'select count(*) from runs')" = 1 ]
	[ "$(jq -r .events out)" = 0 ]
}

@test "outcomes are committed as they arrive, not only at the end" {
	prep 3
	mkfifo in
	record-results -t prod --batch 1 < in > out 2> err &
	pid=$!
	track "$pid"
	exec 5> in
	outcome 1 e-1 success "" 200 >&5
	wait_until '[ "$(sqlite3 "$SLUICE_DB" "select count(*) from deliveries" 2>/dev/null)" = 1 ]'
	exec 5>&-
	wait "$pid"
}

@test "errors: unknown target 69, no journal 66, usage 64" {
	run -66 --separate-stderr record-results -t prod < /dev/null
	events 1 | journal-append -q
	run -69 --separate-stderr record-results -t prod < /dev/null
	run -64 --separate-stderr record-results < /dev/null
}
