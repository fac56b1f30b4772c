#!/usr/bin/env bats
# sluice import: legacy offline queues, read only, idempotent, conflicts held.

load helper
load stub

# legacy_queue FILE [with_key]: a queue database of the common shape
legacy_queue() {
	local key=
	[ "${2:-}" = with_key ] && key=", coalesce_key TEXT"
	mkdir -p "$(dirname "$1")"
	sqlite3 "$1" "CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE NOT NULL,
		event_type TEXT NOT NULL, data TEXT NOT NULL, timestamp INTEGER NOT NULL,
		retry_count INTEGER DEFAULT 0$key)"
}

# row FILE ID TYPE DATA [TS] [RETRIES]
row() {
	sqlite3 "$1" "INSERT INTO queue(event_id, event_type, data, timestamp, retry_count)
		VALUES ('$2', '$3', '$4', ${5:-1700000000}, ${6:-0})"
}

setup_sources() {
	legacy_queue q/queue.db with_key
	legacy_queue q/queues/queue-0123456789abcdef.db          # an older file: no coalesce_key
	sqlite3 q/queues/queue-fedcba9876543210.db 'CREATE TABLE events(id, body)'   # not ours
	row q/queue.db a1 build.done '{"event_id":"a1","event_type":"build.done","payload":{"ok":true}}' 1700000001 3
	row q/queue.db bad build.done 'this is not json'
	row q/queue.db same x '{"event_id":"same","payload":{"v":1,"w":2}}'
	row q/queue.db div x '{"event_id":"div","payload":{"v":1}}'
	row q/queues/queue-0123456789abcdef.db b1 deploy '{"payload":{"env":"prod"}}'
	row q/queues/queue-0123456789abcdef.db same x '{"payload":{"w":2,"v":1},"event_id":"same"}'
	row q/queues/queue-0123456789abcdef.db div x '{"event_id":"div","payload":{"v":2}}'
	sqlite3 q/queue.db "UPDATE queue SET coalesce_key = 'ck' WHERE event_id = 'a1'"
	find q -name '*.db' -exec sha256sum {} + | sort > sums.before
}

@test "import discovers every queue file, imports, quarantines, holds conflicts, touches no source" {
	setup_sources
	target_add prod http://127.0.0.1:9/x
	run -65 --separate-stderr sluice import --dir q --target prod
	echo "$output" | jq -c . >&2
	[ "$(echo "$output" | jq -r '"\(.source | sub(".*/q/"; "")) \(.imported) \(.present) \(.conflicts) \(.quarantined) \(.skipped // "-" | .[0:21])"' | paste -sd'|')" = \
	  "queue.db 2 0 1 1 -|queues/queue-0123456789abcdef.db 1 1 1 0 -|queues/queue-fedcba9876543210.db 0 0 0 0 schema not recognized" ]
	# original ids, never rewritten; the id is added to a payload lacking it, first
	[ "$(sql "select group_concat(event_id) from (select event_id from events order by seq)")" = "a1,same,b1" ]
	[ "$(sql "select payload from events where event_id = 'b1'")" = '{"event_id":"b1","payload":{"env":"prod"}}' ]
	[ "$(sql "select coalesce_key from events where event_id = 'a1'")" = ck ]
	# provenance: every source of 'same'; timestamps and retries kept
	[ "$(sql "select count(*) from import_provenance p join events e on e.seq = p.event_seq where e.event_id = 'same'")" = 2 ]
	[ "$(sql "select original_timestamp || ':' || retry_count from import_provenance p join events e on e.seq = p.event_seq where e.event_id = 'a1'")" = "1700000001:3" ]
	# the divergent one: neither imported, a conflict row per source
	[ "$(sql "select count(*) from events where event_id = 'div'")" = 0 ]
	[ "$(sql "select count(*) from import_conflicts where event_id = 'div' and resolved_at is null")" = 2 ]
	# the bad row is quarantined with its source
	[ "$(sql "select reason || ':' || line_no || ':' || (source like '%/q/queue.db') from quarantine")" = "invalid_json:2:1" ]
	[[ "$stderr" == *"queue-fedcba9876543210.db: skipped: schema not recognized"* ]]
	find q -name '*.db' -exec sha256sum {} + | sort | diff sums.before -
}

@test "running the import again adds nothing" {
	setup_sources
	target_add prod http://127.0.0.1:9/x
	sluice import --dir q --target prod > /dev/null 2>&1 || true
	snapshot=$(sql 'select count(*) from events; select count(*) from quarantine; select count(*) from import_provenance; select count(*) from import_conflicts')
	run -65 --separate-stderr sluice import --dir q --target prod
	[ "$(echo "$output" | jq -s 'map(.imported) | add')" = 0 ]
	[ "$(sql 'select count(*) from events; select count(*) from quarantine; select count(*) from import_provenance; select count(*) from import_conflicts')" = "$snapshot" ]
	find q -name '*.db' -exec sha256sum {} + | sort | diff sums.before -
}

@test "--dry-run changes nothing" {
	setup_sources
	target_add prod http://127.0.0.1:9/x
	run -65 --separate-stderr sluice import --dir q --target prod --dry-run
	[ "$(echo "$output" | jq -s 'map(.imported) | add')" = 3 ]
	[ "$(sql 'select count(*) from events')" = 0 ]
	[ "$(sql 'select count(*) from import_conflicts')" = 0 ]
}

@test "a conflict is settled by an operator: the kept version is imported, the status clears" {
	setup_sources
	target_add prod http://127.0.0.1:9/x
	sluice import --dir q --target prod > /dev/null 2>&1 || true
	run -65 sluice import --conflicts
	[ "$(echo "$output" | jq -r '.data' | paste -sd'|')" = '{"event_id":"div","payload":{"v":1}}|{"event_id":"div","payload":{"v":2}}' ]
	run -0 --separate-stderr sluice import --resolve div --keep q/queues/queue-0123456789abcdef.db
	[ "$(sql "select payload from events where event_id = 'div'")" = '{"event_id":"div","payload":{"v":2}}' ]
	run -0 sluice import --conflicts
	[ -z "$output" ]
	# the next import counts the other version as settled, not as a conflict
	run -65 --separate-stderr sluice import --dir q --target prod
	[ "$(echo "$output" | jq -s 'map(.conflicts) | add')" = 0 ]
	# a journaled event is never overwritten by a resolution
	run -65 --separate-stderr sluice import --resolve div --keep q/queue.db
}

@test "a conflict with an event already in the journal keeps the journal's" {
	legacy_queue q/queue.db
	row q/queue.db j1 x '{"event_id":"j1","v":"legacy"}'
	echo '{"event_id":"j1","v":"new"}' | journal-append -q
	target_add prod http://127.0.0.1:9/x
	run -65 --separate-stderr sluice import --dir q --target prod
	[ "$(sql "select payload from events where event_id = 'j1'")" = '{"event_id":"j1","v":"new"}' ]
	run -65 --separate-stderr sluice import --resolve j1 --keep q/queue.db
	[[ "$stderr" == *"never overwritten"* ]]
	run -0 --separate-stderr sluice import --resolve j1 --keep journal
	run -0 sluice import --conflicts
}

@test "imported events go to the named target only" {
	stub_start
	legacy_queue q/queue.db
	row q/queue.db i1 x '{"event_id":"i1"}'
	row q/queue.db i2 x '{"event_id":"i2"}'
	events 2 | journal-append -q
	target_add prod "$STUB_URL/prod"
	target_add other "$STUB_URL/other"
	sluice import --dir q --target prod > /dev/null 2>&1
	run -0 --separate-stderr drain
	[ "$(sql "select t.name || ':' || group_concat(e.event_id) from deliveries d join targets t on t.id = d.target_id join events e on e.seq = d.event_seq group by t.name order by t.name" | paste -sd' ')" = "other:e-1,e-2 prod:e-1,e-2,i1,i2" ]
	# and gc does not wait for 'other' to take what is not meant for it
	run -0 --separate-stderr sluice gc --older-than 0s
	[ "$output" = 4 ]
	stub_stop
}

@test "--unknown-target: the events wait, visible in status, until assigned" {
	stub_start
	legacy_queue q/queue.db
	row q/queue.db u1 x '{"event_id":"u1"}'
	target_add prod "$STUB_URL/prod"
	run -0 --separate-stderr sluice import --dir q --unknown-target
	drain > /dev/null 2>&1
	[ "$(sql 'select count(*) from deliveries')" = 0 ]
	run -0 sluice status --json
	[ "$(echo "$output" | jq .journal.unknown_target)" = 1 ]
	run -0 sluice status
	[[ "$output" == *"1 imported events wait for an unknown target (sluice import --assign NAME)"* ]]
	run -0 --separate-stderr sluice gc --older-than 0s
	[ "$output" = 0 ]
	run -0 --separate-stderr sluice import --assign prod
	[ "$output" = 1 ]
	drain > /dev/null 2>&1
	[ "$(jq -r 'select(.status=="success") | .event.event_id' "$STUB_LOG")" = u1 ]
	stub_stop
}

@test "--ndjson replays an export with the same duplicate policy" {
	printf '%s\n' '{"event_id":"n1","v":1}' '{"event_id":"n2","v":2}' 'junk' '{"no":"id"}' '{"event_id":"n1","v":1}' > export.ndjson
	echo '{"event_id":"n2","v":"other"}' | journal-append -q
	target_add prod http://127.0.0.1:9/x
	run -65 --separate-stderr sluice import --ndjson export.ndjson --target prod
	[ "$(echo "$output" | jq -c '[.imported, .present, .conflicts, .quarantined]')" = '[1,1,1,2]' ]
	[ "$(sql "select group_concat(reason) from quarantine")" = "invalid_json,bad_event_id" ]
}

@test "usage: where the events go must be said" {
	legacy_queue q/queue.db
	run -64 --separate-stderr sluice import --dir q
	[[ "$stderr" == *"cannot be guessed"* ]]
	run -69 --separate-stderr sluice import --dir q --target nope
	run -64 --separate-stderr sluice import --target x
}

@test "--assign does not backfill a --no-backfill target; rm of a target gives its events back" {
	stub_start
	events 2 old | journal-append -q
	legacy_queue q/queue.db
	row q/queue.db u1 x '{"event_id":"u1"}'
	sluice import --dir q --unknown-target > /dev/null 2>&1
	events 1 new | journal-append -q
	target_add late "$STUB_URL/late" --no-backfill
	run -0 --separate-stderr sluice import --assign late
	drain > /dev/null 2>&1
	[ "$(jq -r 'select(.status=="success") | .event.event_id' "$STUB_LOG" | paste -sd,)" = u1 ]
	run -0 --separate-stderr sluice target rm late
	[[ "$stderr" == *"1 events meant for late only now wait for an unknown target"* ]]
	[ "$(sql "select route from events where event_id = 'u1'")" = '?' ]
	run -0 --separate-stderr sluice gc --older-than 0s
	[ "$(sql "select count(*) from events where event_id = 'u1' and payload is not null")" = 1 ]
	stub_stop
}

@test "an import for one target never supersedes an event meant for all" {
	echo '{"event_id":"all","coalesce_key":"K"}' | journal-append -q
	legacy_queue q/queue.db with_key
	row q/queue.db mine x '{"event_id":"mine"}'
	sqlite3 q/queue.db "UPDATE queue SET coalesce_key = 'K'"
	target_add prod http://127.0.0.1:9/x
	sluice import --dir q --target prod > /dev/null 2>&1
	[ "$(sql "select coalesce(superseded_by, '-') from events where event_id = 'all'")" = - ]
}

@test "an event_id in data that is not the row's (or not a string) is id_mismatch" {
	legacy_queue q/queue.db
	row q/queue.db x5 x '{"event_id":5}'
	target_add prod http://127.0.0.1:9/x
	run -65 --separate-stderr sluice import --dir q --target prod
	[ "$(sql 'select reason from quarantine')" = id_mismatch ]
	# quarantined once; a re-run is not an error again
	run -0 --separate-stderr sluice import --dir q --target prod
	[ "$(echo "$output" | jq -c '[.quarantined, .quarantined_before]')" = '[0,1]' ]
}
