#!/usr/bin/env bats
# select-undelivered: what is due for a target, in seq order, read only.

load helper

@test "prints pending events as selection records, in seq order, payload as journaled" {
	printf '{"event_id":"a","x": 1.50}\n{"event_id":"b"}\n{"event_id":"c","n":[1, 2]}\n' | journal-append -q
	target_add prod
	run -0 --separate-stderr select-undelivered --target prod
	[ "$(echo "$output" | wc -l)" = 3 ]
	[ "$(echo "$output" | jq -r '"\(.seq) \(.event_id) \(.target) \(.attempt)"' | paste -sd,)" = \
	  "1 a prod 0,2 b prod 0,3 c prod 0" ]
	# the event is spliced in byte for byte, never re-encoded
	[ "$(echo "$output" | sed -n 1p)" = '{"seq":1,"event_id":"a","target":"prod","attempt":0,"event":{"event_id":"a","x": 1.50}}' ]
}

@test "--limit caps the selection" {
	events 50 | journal-append -q
	target_add prod
	run -0 select-undelivered -t prod --limit 7
	[ "$(echo "$output" | jq -s 'map(.seq) | join(",")' -r)" = "1,2,3,4,5,6,7" ]
}

@test "delivered, failed and superseded events are never selected; due retries are" {
	events 6 | journal-append -q
	target_add prod
	id=$(sql "select id from targets where name='prod'")
	now=1800000000000
	sqlite3 "$SLUICE_DB" "
		insert into deliveries(target_id, event_seq, state, attempts) values ($id, 1, 'delivered', 0);
		insert into deliveries(target_id, event_seq, state, attempts) values ($id, 2, 'failed', 3);
		insert into deliveries(target_id, event_seq, state, attempts, next_attempt_at) values ($id, 3, 'retrying', 2, $((now - 1)));
		insert into deliveries(target_id, event_seq, state, attempts, next_attempt_at) values ($id, 4, 'retrying', 1, $((now + 1000)));
		update events set superseded_by = 6 where seq = 5;"
	SLUICE_NOW=$now run -0 select-undelivered -t prod
	[ "$(echo "$output" | jq -r '"\(.seq):\(.attempt)"' | paste -sd,)" = "3:2,6:0" ]
	# once event 4's time has come, it is selected too
	SLUICE_NOW=$((now + 1000)) run -0 select-undelivered -t prod
	[ "$(echo "$output" | jq -r '.seq' | paste -sd,)" = "3,4,6" ]
}


@test "due retries, waiting retries and untried events mixed: the first --limit due ones, in seq order" {
	events 12 | journal-append -q
	target_add prod
	id=$(sql "select id from targets where name='prod'")
	now=1800000000000
	# ledger rows out of order above the cursor: 2 and 9 delivered, retries
	# due at 4, 7 and 11, waiting at 3 and 8; the rest were never tried
	sqlite3 "$SLUICE_DB" "
		insert into deliveries(target_id, event_seq, state, attempts) values ($id, 9, 'delivered', 0), ($id, 2, 'delivered', 0);
		insert into deliveries(target_id, event_seq, state, attempts, next_attempt_at) values
		  ($id, 4, 'retrying', 1, $((now - 5))), ($id, 7, 'retrying', 3, $now), ($id, 11, 'retrying', 2, 1),
		  ($id, 3, 'retrying', 1, $((now + 1))), ($id, 8, 'retrying', 1, $((now + 60000)));"
	SLUICE_NOW=$now run -0 select-undelivered -t prod
	[ "$(echo "$output" | jq -r '"\(.seq):\(.attempt)"' | paste -sd,)" = "1:0,4:1,5:0,6:0,7:3,10:0,11:2,12:0" ]
	SLUICE_NOW=$now run -0 select-undelivered -t prod --limit 4
	[ "$(echo "$output" | jq -r '.seq' | paste -sd,)" = "1,4,5,6" ]
	# a ledger row for the newest event leaves the ones below it pending
	sqlite3 "$SLUICE_DB" "insert into deliveries(target_id, event_seq, state, attempts) values ($id, 12, 'delivered', 0)"
	SLUICE_NOW=$((now + 60000)) run -0 select-undelivered -t prod
	[ "$(echo "$output" | jq -r '.seq' | paste -sd,)" = "1,3,4,5,6,7,8,10,11" ]
}
@test "prints nothing while the target backs off, unless --ignore-backoff" {
	events 3 | journal-append -q
	target_add prod
	sqlite3 "$SLUICE_DB" "update targets set consecutive_failures = 2, next_attempt_at = 1800000005000, last_category = 'auth_expired'"
	SLUICE_NOW=1800000000000 run -0 --separate-stderr select-undelivered -t prod
	[ -z "$output" ]
	[[ "$stderr" == *"prod is backing off until 2027-01-15T08:00:05.000Z after 2 failures (auth_expired)"* ]]
	SLUICE_NOW=1800000000000 run -0 --separate-stderr select-undelivered -t prod --ignore-backoff
	[ "$(echo "$output" | wc -l)" = 3 ]
	SLUICE_NOW=1800000005000 run -0 --separate-stderr select-undelivered -t prod
	[ "$(echo "$output" | wc -l)" = 3 ]
}

@test "a disabled target gets nothing" {
	events 3 | journal-append -q
	target_add prod
	sluice target disable prod
	run -0 --separate-stderr select-undelivered -t prod
	[ -z "$output" ]
	[[ "$stderr" == *"prod is disabled"* ]]
}

@test "--next-due says when something is due" {
	events 1 | journal-append -q
	target_add prod
	run -0 select-undelivered -t prod --next-due
	[ "$output" = 0 ]
	id=$(sql "select id from targets where name='prod'")
	sqlite3 "$SLUICE_DB" "insert into deliveries(target_id, event_seq, state, attempts, next_attempt_at) values ($id, 1, 'retrying', 1, 1800000009000)"
	SLUICE_NOW=1800000000000 run -0 select-undelivered -t prod --next-due
	[ "$output" = 1800000009000 ]
	sqlite3 "$SLUICE_DB" "update deliveries set state = 'delivered'; update targets set cursor_seq = 1"
	run -0 select-undelivered -t prod --next-due
	[ -z "$output" ]
}

@test "selection starts at the target's cursor" {
	events 10 | journal-append -q
	target_add prod
	sqlite3 "$SLUICE_DB" "update targets set cursor_seq = 8"
	run -0 select-undelivered -t prod
	[ "$(echo "$output" | jq -r '.seq' | paste -sd,)" = "9,10" ]
}

@test "it only reads: the journal's bytes are unchanged" {
	events 20 | journal-append -q
	target_add prod
	sqlite3 "$SLUICE_DB" 'pragma wal_checkpoint(truncate)' > /dev/null
	before=$(cat "$SLUICE_DB" "$SLUICE_DB-wal" 2>/dev/null | sha256sum)
	run -0 select-undelivered -t prod
	[ "$(echo "$output" | wc -l)" = 20 ]
	[ "$(cat "$SLUICE_DB" "$SLUICE_DB-wal" 2>/dev/null | sha256sum)" = "$before" ]
}

@test "errors: unknown target 69, no journal 66, bad name and usage 64" {
	run -66 --separate-stderr select-undelivered -t prod
	[[ "$stderr" == "select-undelivered: fatal: no journal at $SLUICE_DB"* ]]
	events 1 | journal-append -q
	run -69 --separate-stderr select-undelivered -t nope
	[[ "$stderr" == *"no target named 'nope'"* ]]
	run -64 --separate-stderr select-undelivered -t 'Bad Name'
	run -64 --separate-stderr select-undelivered
	run -64 --separate-stderr select-undelivered -t prod --limit 0
}
