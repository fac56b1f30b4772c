#!/usr/bin/env bats
# Coalescing without mutation, and the discard audit.

load helper
load stub

@test "a newer event with the same coalesce key supersedes older ones; delivered bytes never change" {
	stub_start
	target_add early "$STUB_URL/early"
	echo '{"event_id":"v1","coalesce_key":"mission-7","state":"started"}' | journal-append -q
	# early receives v1 before anything supersedes it
	drain --target early > /dev/null 2>&1
	before=$(sql "select hex(payload) from events where event_id = 'v1'")
	target_add late "$STUB_URL/late"
	printf '%s\n' '{"event_id":"v2","coalesce_key":"mission-7","state":"running"}' \
		'{"event_id":"other","coalesce_key":"mission-8"}' \
		'{"event_id":"v3","coalesce_key":"mission-7","state":"done"}' | journal-append -q
	[ "$(sql "select group_concat(event_id || ':' || coalesce(superseded_by, '-'), ' ') from events")" = "v1:2 v2:4 other:- v3:-" ]
	run -0 --separate-stderr drain
	# late never sees the superseded ones; early keeps its history and gets the newest
	[ "$(jq -r 'select(.status=="success") | .event.event_id' "$STUB_LOG" | paste -sd,)" = "v1,other,v3" ]
	[ "$(sql "select t.name || ':' || e.event_id from deliveries d join targets t on t.id = d.target_id join events e on e.seq = d.event_seq order by t.name, e.seq" | paste -sd,)" = "early:v1,early:other,early:v3,late:other,late:v3" ]
	# the delivered event's bytes are untouched, byte for byte
	[ "$(sql "select hex(payload) from events where event_id = 'v1'")" = "$before" ]
	# status counts superseded events; nothing is pending
	run -0 sluice status --json
	[ "$(echo "$output" | jq -c '[.journal.superseded, (.targets | map(.pending) | add)]')" = '[2,0]' ]
	stub_stop
}

@test "--coalesce-key builds a key from fields; an event lacking one of them is not coalesced" {
	printf '%s\n' \
		'{"event_id":"a","event_type":"m","data":{"project":"p","mission":"x"}}' \
		'{"event_id":"b","event_type":"m","data":{"project":"p"}}' \
		'{"event_id":"c","event_type":"m","data":{"project":"p","mission":"x"}}' \
		'{"event_id":"d","event_type":"m","data":{"project":"p","mission":"y"},"coalesce_key":"own"}' |
		journal-append -q --coalesce-key event_type,data.project,data.mission
	[ "$(sql "select group_concat(event_id || '=' || coalesce(coalesce_key, '-') || '>' || coalesce(superseded_by, '-'), ' ') from events")" = \
	  'a=["m","p","x"]>3 b=->- c=["m","p","x"]>- d=own>-' ]
	# the payload is never touched: no key is written into it
	[ "$(sql "select payload from events where event_id = 'a'")" = '{"event_id":"a","event_type":"m","data":{"project":"p","mission":"x"}}' ]
}

@test "coalescing is one indexed lookup, not a scan" {
	echo '{"event_id":"a","coalesce_key":"k"}' | journal-append -q
	plan=$(sqlite3 "$SLUICE_DB" "explain query plan UPDATE events SET superseded_by = 9 WHERE coalesce_key = 'k' AND seq < 9 AND superseded_by IS NULL")
	[[ "$plan" == *"USING INDEX events_coalesce"* ]]
	# and the index holds only the events not yet superseded: one live event
	# per key, however long the key's history
	[[ "$(sql "select sql from sqlite_schema where name = 'events_coalesce'")" == *"superseded_by IS NULL"* ]]
}

@test "discarded types are not journaled but counted, in --report and in status" {
	printf '%s\n' '{"event_id":"a","event_type":"debug.trace"}' '{"event_id":"b","event_type":"order"}' \
		'{"event_id":"c","event_type":"debug.span"}' '{"event_id":"d","event_type":"debug.trace"}' > in
	run -0 --separate-stderr journal-append --report --discard-type 'debug.*' < in
	[ "$(echo "$output" | jq -r '"\(.line):\(.status)"' | paste -sd,)" = "1:discarded,2:appended,3:discarded,4:discarded" ]
	[ "$stderr" = "journal-append: 1 appended, 0 duplicate, 0 quarantined, 3 discarded" ]
	[ "$(sql 'select group_concat(event_id) from events')" = b ]
	run -0 sluice status --json
	[ "$(echo "$output" | jq -c .journal.discarded)" = '{"debug.span":1,"debug.trace":2}' ]
	run -0 sluice status
	[[ "$output" == *"discarded by type: debug.span: 1, debug.trace: 2"* ]]
}

@test "discard_types from the config file applies; a flag replaces it" {
	mkdir -p "$HOME/.config/sluice"
	echo 'discard_types = noise,debug.*' > "$HOME/.config/sluice/config"
	printf '%s\n' '{"event_id":"a","event_type":"noise"}' '{"event_id":"b","event_type":"debug.x"}' '{"event_id":"c","event_type":"keep"}' | journal-append -q
	[ "$(sql 'select group_concat(event_id) from events')" = c ]
	echo '{"event_id":"n2","event_type":"noise"}' | journal-append -q --discard-type other
	[ "$(sql "select count(*) from events where event_id = 'n2'")" = 1 ]
	[ "$(sql "select count from discards where event_type = 'noise'")" = 1 ]
}

@test "a journal with no targets is a valid mode: events are kept, gc applies retention" {
	events 5 | journal-append -q
	run -0 --separate-stderr drain
	run -0 sluice status
	[[ "$output" == *"no targets: events stay in the journal"* ]]
	run -0 --separate-stderr sluice gc --older-than 1h
	[ "$output" = 0 ]
	mkdir -p "$HOME/.config/sluice"
	echo 'retain = 0s' > "$HOME/.config/sluice/config"
	run -0 --separate-stderr sluice gc --archive "$BATS_TEST_TMPDIR/old.ndjson"
	[ "$output" = 5 ]
	[ "$(wc -l < old.ndjson)" = 5 ]
}
