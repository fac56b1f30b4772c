#!/usr/bin/env bats
# drain, end to end: the four stages against a real stub-receiver; assertions
# on the ledger, the receiver's log and the summaries.

load helper
load stub

NOW=1800000000000

# ids the receiver accepted (success), sorted
accepted() { jq -r 'select(.status=="success") | .event.event_id' "$STUB_LOG" | sort; }
journaled() { sql 'select event_id from events' | sort; }
attempts_total() { sql 'select coalesce(sum(attempts), 0) from deliveries'; }
target_state() { sql "select consecutive_failures || '|' || coalesce(last_category, '') || '|' || coalesce(next_attempt_at - $NOW, '') from targets where name = '${1:-prod}'"; }

@test "10k events are delivered exactly once; the receiver's log equals the journal" {
	stub_start
	events 10000 | journal-append -q
	target_add prod "$STUB_URL"
	run -0 --separate-stderr drain
	[ "$(echo "$output" | jq -s 'map(.success) | add')" = 10000 ]
	[[ "$stderr" == *"record-results: prod: 10000 delivered, 0 duplicate, 0 rejected, 0 failed, 0 transient"* ]]
	[ "$(accepted | wc -l)" = 10000 ]
	[ "$(jq -r .status "$STUB_LOG" | sort -u)" = success ]
	diff <(accepted) <(journaled)
	[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = 10000 ]
	[ "$(sql 'select cursor_seq from targets')" = 10000 ]
	# nothing is left: a second drain starts no stage and sends nothing
	run -0 --separate-stderr drain
	[ -z "$output" ]
	[ "$(wc -l < "$STUB_LOG")" = 10000 ]
	# and nothing was deleted
	[ "$(sql 'select count(*) from events where payload is not null')" = 10000 ]
	stub_stop
}

@test "a drain runs in rounds of --limit" {
	stub_start
	events 250 | journal-append -q
	target_add prod "$STUB_URL"
	run -0 --separate-stderr drain --limit 100
	[ "$(echo "$output" | jq -s 'map(.events) | join(",")' -r)" = "100,100,50" ]
	[ "$(accepted | wc -l)" = 250 ]
	stub_stop
}

# batch-level failures: events untouched (no ledger rows, attempts 0), the target backs off
@test "401, 403, 403 private team, 404, 500 and 503 leave events untouched and back off the target" {
	export SLUICE_NOW=$NOW SLUICE_JITTER=0
	for step in 401:auth_expired 403:forbidden 403:private-team:missing_private_team 404:not_found 500:server_error 503:server_error; do
		rm -rf "$SLUICE_DB"* "$STUB_LOG"
		spec=${step%:*}
		category=${step##*:}
		stub_start --script "$spec"
		events 20 | journal-append -q
		target_add prod "$STUB_URL" --batch-events 5
		run -75 --separate-stderr drain
		[ "$(echo "$output" | jq -c '[.failed_transient, .success, .target_state]')" = '[20,0,"backing_off"]' ]
		[ "$(sql 'select count(*) from deliveries')" = 0 ]
		[ "$(attempts_total)" = 0 ]
		[ "$(target_state)" = "1|$category|1000" ]
		[ "$(echo "$output" | jq -cS .categories)" = "$(jq -cnS --arg c "$category" '{($c): 5, not_attempted: 15}')" ]
		stub_stop
	done
}

@test "a timeout and a refused connection back off the target too" {
	export SLUICE_NOW=$NOW SLUICE_JITTER=0
	stub_start --script hang
	events 3 | journal-append -q
	target_add slow "$STUB_URL" --timeout-ms 300
	target_add dead http://127.0.0.1:9/x
	run -75 --separate-stderr drain
	[ "$(target_state slow)" = "1|timeout|1000" ]
	[ "$(target_state dead)" = "1|connection|1000" ]
	[ "$(sql 'select count(*) from deliveries')" = 0 ]
	stub_stop
}

@test "a per-event rejection costs that event one attempt; the others are delivered" {
	export SLUICE_NOW=$NOW SLUICE_JITTER=0
	stub_start --reject-when data.n=3
	events 5 | journal-append -q
	target_add prod "$STUB_URL"
	run -0 --separate-stderr drain
	[ "$(sql "select event_seq || ':' || state || ':' || attempts || ':' || category || ':' || (next_attempt_at - $NOW) from deliveries where state != 'delivered'")" = "3:retrying:1:validation:1000" ]
	[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = 4 ]
	[ "$(target_state)" = "0||" ]
	stub_stop
}

@test "a 400 with details rejects the listed event; the rest are retried, not charged" {
	export SLUICE_NOW=$NOW SLUICE_JITTER=0
	stub_start --script 400:details
	events 4 | journal-append -q
	target_add prod "$STUB_URL"
	run -75 --separate-stderr drain
	[ "$(sql "select group_concat(event_seq || ':' || state || ':' || attempts) from deliveries")" = "1:retrying:1" ]
	[ "$(echo "$output" | jq -cS .categories)" = '{"not_processed":3,"validation":1}' ]
	# after the backoff (the target's and the event's own), all four are delivered
	SLUICE_NOW=$((NOW + 1000)) run -0 --separate-stderr drain
	[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = 4 ]
	stub_stop
}

@test "a batch of 100 refused whole for one bad event: only that event is rejected" {
	export SLUICE_NOW=$NOW SLUICE_JITTER=0
	stub_start --reject-when data.n=42 --reject-mode batch
	events 100 | journal-append -q
	target_add prod "$STUB_URL"
	run -0 --separate-stderr drain
	[ "$(sql "select group_concat(event_seq || ':' || state || ':' || attempts || ':' || category) from deliveries where state != 'delivered'")" = "42:retrying:1:bad_request" ]
	[ "$(accepted | wc -l)" = 99 ]
	stub_stop
}

@test "429 with Retry-After: the target waits at least that long" {
	export SLUICE_NOW=$NOW SLUICE_JITTER=0
	stub_start --script 429:retry-after=7
	events 3 | journal-append -q
	target_add prod "$STUB_URL"
	run -75 --separate-stderr drain
	[ "$(target_state)" = "1|rate_limited|7000" ]
	# not before its time
	SLUICE_NOW=$((NOW + 6999)) run -75 --separate-stderr drain
	[ "$(wc -l < "$STUB_LOG" 2>/dev/null || echo 0)" = 0 ]
	SLUICE_NOW=$((NOW + 7000)) run -0 --separate-stderr drain
	[ "$(accepted | wc -l)" = 3 ]
	stub_stop
}

@test "an oversized event is terminal and the drain goes on past it" {
	stub_start
	{ events 2; printf '{"event_id":"big","pad":"%s"}\n' "$(head -c 5000 /dev/zero | tr '\0' x)"; events 2 z; } | journal-append -q
	target_add prod "$STUB_URL" --max-event-bytes 1000
	run -0 --separate-stderr drain
	[ "$(sql "select event_seq || ':' || state || ':' || category from deliveries where state != 'delivered'")" = "3:failed:oversized" ]
	[ "$(accepted | paste -sd,)" = "e-1,e-2,z-1,z-2" ]
	[ "$(sql 'select cursor_seq from targets')" = 5 ]
	# kept, visible
	[ "$(sql "select count(*) from events where event_id = 'big' and payload is not null")" = 1 ]
	stub_stop
}

@test "413 splitting in a drain: the big event fails, its batch-mates are delivered" {
	stub_start --max-body 3000
	{ events 10; printf '{"event_id":"big","pad":"%s"}\n' "$(head -c 4000 /dev/zero | tr '\0' x)"; events 10 z; } | journal-append -q
	target_add prod "$STUB_URL"
	run -0 --separate-stderr drain
	[ "$(sql "select event_seq || ':' || state || ':' || category from deliveries where state != 'delivered'")" = "11:failed:oversized" ]
	[ "$(accepted | wc -l)" = 20 ]
	stub_stop
}

@test "after max_rejections an event fails for good; retry --failed re-queues it" {
	export SLUICE_JITTER=0
	stub_start --reject-when data.n=2
	events 3 | journal-append -q
	target_add prod "$STUB_URL" --max-rejections 3
	now=$NOW
	for round in 1 2 3; do
		SLUICE_NOW=$now run -0 --separate-stderr drain
		now=$((now + 60000))
	done
	[ "$(sql "select state || ':' || attempts from deliveries where event_seq = 2")" = "failed:3" ]
	# failed events are not selected any more
	SLUICE_NOW=$now run -0 select-undelivered -t prod
	[ -z "$output" ]
	SLUICE_NOW=$now run -0 --separate-stderr sluice retry --failed prod
	[ "$output" = 1 ]
	[ "$(sql "select state || ':' || attempts from deliveries where event_seq = 2")" = "retrying:0" ]
	SLUICE_NOW=$now run -0 select-undelivered -t prod
	[ "$(echo "$output" | jq -r .event_id)" = e-2 ]
	stub_stop
}

@test "the backoff grows 1, 2, 4 s ... and recovery clears the failing state" {
	export SLUICE_JITTER=0
	stub_start --script 500x4
	events 2 | journal-append -q
	target_add prod "$STUB_URL"
	now=$NOW
	for expected in 1000 2000 4000 8000; do
		SLUICE_NOW=$now run -75 --separate-stderr drain
		[ "$(sql "select next_attempt_at - $now from targets")" = "$expected" ]
		now=$((now + expected))
	done
	SLUICE_NOW=$now run -0 --separate-stderr drain
	[ "$(sql "select consecutive_failures || '|' || coalesce(failing_since, '-') || '|' || coalesce(next_attempt_at, '-') || '|' || last_success_at from targets")" = "0|-|-|$now" ]
	[ "$(accepted | wc -l)" = 2 ]
	stub_stop
}

@test "two targets are drained independently; a new target receives every retained event" {
	stub_start
	events 30 | journal-append -q
	target_add good "$STUB_URL"
	target_add bad http://127.0.0.1:9/x
	run -75 --separate-stderr drain
	[ "$(sql "select count(*) from deliveries d join targets t on t.id = d.target_id where t.name = 'good'")" = 30 ]
	[ "$(sql "select count(*) from deliveries d join targets t on t.id = d.target_id where t.name = 'bad'")" = 0 ]
	events 5 late | journal-append -q
	target_add newer "$STUB_URL/new"
	run -0 --separate-stderr drain --target newer --target good
	[ "$(sql "select count(*) from deliveries d join targets t on t.id = d.target_id where t.name = 'newer' and state = 'delivered'")" = 35 ]
	[ "$(sql "select count(*) from deliveries d join targets t on t.id = d.target_id where t.name = 'good' and state = 'delivered'")" = 35 ]
	# one receiver behind both: what the second target sent came back duplicate
	[ "$(jq -r 'select(.status=="duplicate") | .event.event_id' "$STUB_LOG" | wc -l)" = 35 ]
	stub_stop
}

@test "two drains of one target at once: one holds the lock, no event is sent twice" {
	stub_start
	events 20000 | journal-append -q
	target_add prod "$STUB_URL" --batch-events 100
	drain > out1 2> err1 &
	p1=$!
	drain > out2 2> err2 &
	p2=$!
	s1=0; s2=0
	wait "$p1" || s1=$?
	wait "$p2" || s2=$?
	# unless one finished before the other began, one of them was turned away
	[ "$((s1 + s2))" -le 75 ]
	[ "$(jq -r .status "$STUB_LOG" | sort | uniq -c | awk '{print $2 ":" $1}' | paste -sd,)" = "success:20000" ]
	[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = 20000 ]
	stub_stop
}

@test "kill -9 of post-batch or record-results mid-drain loses nothing" {
	for stage in post-batch record-results; do
		rm -rf "$SLUICE_DB"* "$STUB_LOG"
		stub_start
		events 30000 | journal-append -q
		target_add prod "$STUB_URL" --batch-events 200
		# its own session, so only this drain's stage is killed
		setsid drain > out 2> err &
		pid=$!
		wait_until "[ \$(wc -l < '$STUB_LOG' 2>/dev/null || echo 0) -ge 3000 ]"
		pkill -KILL -s "$pid" -x "$stage" || true
		wait "$pid" || true
		drain > out2 2> err2 || true
		drain > out3 2> err3
		[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = 30000 ]
		# every event reached the receiver; resends came back as duplicates
		[ "$(accepted | wc -l)" = 30000 ]
		diff <(accepted) <(journaled)
		stub_stop
	done
}

@test "a stage that fails is named and the drain exits non-zero" {
	stub_start
	events 3 | journal-append -q
	target_add prod "$STUB_URL" --auth-env NOT_SET_ANYWHERE
	run -78 --separate-stderr drain
	[[ "$stderr" == *"drain: prod: post-batch exited with status 78"* ]]
	[ "$(sql 'select count(*) from deliveries')" = 0 ]
	stub_stop
}

@test "no targets: the events stay; unknown target 69; no journal 66" {
	run -66 --separate-stderr drain
	events 3 | journal-append -q
	run -0 --separate-stderr drain
	[[ "$stderr" == *"no enabled targets"* ]]
	run -69 --separate-stderr drain --target nope
	run -64 --separate-stderr drain --limit 0
}

@test "drain --follow delivers what arrives and stops on SIGTERM" {
	stub_start
	target_add prod "$STUB_URL"
	events 5 | journal-append -q
	drain --follow --interval 1 > out 2> err &
	pid=$!
	track "$pid"
	wait_until '[ "$(jq -r "select(.status==\"success\")" "$STUB_LOG" 2>/dev/null | grep -c event_id)" -ge 5 ]'
	events 3 late | journal-append -q
	wait_until '[ "$(jq -r "select(.status==\"success\")" "$STUB_LOG" 2>/dev/null | grep -c event_id)" -ge 8 ]'
	kill -TERM "$pid"
	wait "$pid"
	grep -q 'drain: stopped' err
	stub_stop
}
