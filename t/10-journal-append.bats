#!/usr/bin/env bats
# journal-append: every line is appended, a duplicate, or quarantined with a reason.

load helper

@test "appends events and reports each line" {
	events 3 > in.ndjson
	run -0 --separate-stderr journal-append --report < in.ndjson
	[ "$(echo "$output" | jq -s 'map(.status) | join(",")' -r)" = "appended,appended,appended" ]
	[ "$(echo "$output" | jq -s 'map(.seq) | join(",")' -r)" = "1,2,3" ]
	[ "$stderr" = "journal-append: 3 appended, 0 duplicate, 0 quarantined" ]
	[ "$(sql 'select group_concat(event_id) from events order by seq')" = "e-1,e-2,e-3" ]
	# stored byte for byte
	[ "$(sql 'select payload from events where seq = 2')" = "$(sed -n 2p in.ndjson)" ]
}

@test "without --report stdout is empty" {
	events 2 > in.ndjson
	run -0 --separate-stderr journal-append < in.ndjson
	[ -z "$output" ]
}

@test "every kind of bad line is quarantined with its reason; valid neighbours are appended" {
	{
		echo '{"event_id":"ok-1","n":1}'
		echo '{"event_id":"x",'                        # invalid JSON
		echo '{"event_id":"ok-2","n":2}'
		echo '{"event_id":"t-1"} trailing'              # trailing garbage
		echo '[1,2,3]'                                  # not an object
		printf '{"event_id":"u-1","s":"\xc3\x28"}\n'    # invalid UTF-8
		printf '{"event_id":"z-1","s":"a\0b"}\n'        # NUL byte
		echo '{"event_id":"has space"}'                 # bad event_id
		echo '{"event_id":"r-1","data":{}}'             # missing required key
		echo '{"event_id":"ok-1","n":999}'              # conflicting duplicate
		echo '{"event_id":"ok-3","n":3,"data":{"order_id":7}}'
		echo '{"event_id":"ty-1","event_type":42}'      # event_type not a string
	} > in.ndjson
	awk 'NR==3 || NR==1 || NR==10 { sub(/}$/, ",\"data\":{\"order_id\":1}}") } { print }' in.ndjson > in2.ndjson
	# a line over the limit
	printf '{"event_id":"big-1","pad":"%s"}\n' "$(head -c 3000 /dev/zero | tr '\0' x)" >> in2.ndjson
	echo '{"event_id":"ok-4","data":{"order_id":4}}' >> in2.ndjson
	run -65 --separate-stderr journal-append --report --require data.order_id --max-bytes 2048 < in2.ndjson
	echo "$output" | jq -c . >&2
	[ "$(sql 'select group_concat(event_id) from events order by seq')" = "ok-1,ok-2,ok-3,ok-4" ]
	[ "$(sql 'select group_concat(line_no || ":" || reason, " ") from quarantine order by id')" = \
	  "2:invalid_json 4:invalid_json 5:not_object 6:invalid_utf8 7:nul_byte 8:bad_event_id 9:missing_key 10:conflict 12:bad_field 13:too_long" ]
	# the report agrees, line by line
	[ "$(echo "$output" | jq -r 'select(.status=="quarantined") | "\(.line):\(.reason)"' | paste -sd' ')" = \
	  "2:invalid_json 4:invalid_json 5:not_object 6:invalid_utf8 7:nul_byte 8:bad_event_id 9:missing_key 10:conflict 12:bad_field 13:too_long" ]
	# raw bytes kept exactly, NUL included
	sql "select hex(raw) from quarantine where line_no = 7" > hex
	[ "$(cat hex)" = "$(sed -n 7p in2.ndjson | head -c -1 | od -An -tx1 | tr -d ' \n' | tr a-f A-F)" ]
	# the overlong line keeps its first --max-bytes bytes
	[ "$(sql 'select length(raw) from quarantine where reason = "too_long"')" = 2048 ]
	# one message per bad line on stderr, naming the line
	echo "$stderr" | grep -q '^journal-append: stdin:6: quarantined (invalid_utf8): '
	echo "$stderr" | grep -q '^journal-append: stdin:10: quarantined (conflict): event_id ok-1 is already journaled'
	[ "$(echo "$stderr" | grep -c quarantined)" = 11 ]
	# the original of the conflict is untouched
	[ "$(sql "select payload from events where event_id = 'ok-1'")" = "$(sed -n 1p in2.ndjson)" ]
}

@test "an overlong line is read past without holding it in memory" {
	{
		echo '{"event_id":"a"}'
		head -c 50000000 /dev/zero | tr '\0' x
		echo
		echo '{"event_id":"b"}'
	} > in.ndjson
	run -65 --separate-stderr /usr/bin/time -f '%M' journal-append --max-bytes 4096 < in.ndjson
	[ "$(sql 'select group_concat(event_id) from events order by seq')" = "a,b" ]
	[ "$(sql 'select reason || ":" || line_no from quarantine')" = "too_long:2" ]
	rss_kib=$(echo "$stderr" | tail -1)
	# a 50 MB line; the program stays far below it
	[ "$rss_kib" -lt 30000 ]
}

@test "empty lines are skipped and CRLF is accepted" {
	printf '{"event_id":"a"}\r\n\r\n\n   \n{"event_id":"b"}\r\n' > in.ndjson
	run -0 --separate-stderr journal-append --report < in.ndjson
	[ "$(echo "$output" | jq -r '.line' | paste -sd,)" = "1,5" ]
	[ "$(sql "select payload from events where event_id = 'b'")" = '{"event_id":"b"}' ]
}

@test "an event without event_id gets a UUIDv7 as its first member, other bytes kept" {
	printf '{"x": 1.50, "y":[1, 2]}\n{}\n' > in.ndjson
	run -0 --separate-stderr journal-append --report < in.ndjson
	id=$(echo "$output" | jq -r 'select(.line==1) | .event_id')
	[[ "$id" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]]
	[ "$(sql 'select payload from events where seq = 1')" = "{\"event_id\":\"$id\",\"x\": 1.50, \"y\":[1, 2]}" ]
	id2=$(echo "$output" | jq -r 'select(.line==2) | .event_id')
	[ "$(sql 'select payload from events where seq = 2')" = "{\"event_id\":\"$id2\"}" ]
	[[ "$id" < "$id2" ]]
}

@test "re-appending the same file is idempotent" {
	events 500 > in.ndjson
	run -0 journal-append < in.ndjson
	run -0 --separate-stderr journal-append --report < in.ndjson
	[ "$stderr" = "journal-append: 0 appended, 500 duplicate, 0 quarantined" ]
	[ "$(echo "$output" | jq -s 'map(select(.status=="duplicate")) | length')" = 500 ]
	[ "$(sql 'select count(*) from events')" = 500 ]
}

@test "the same payload with other key order and spacing is a duplicate, not a conflict" {
	echo '{"event_id":"k","a":1,"b":{"c":2}}' | journal-append
	run -0 --separate-stderr journal-append --report <<< '{ "b" : {"c":2}, "a":1, "event_id":"k" }'
	[ "$(echo "$output" | jq -r .status)" = duplicate ]
	[ "$(sql 'select payload from events')" = '{"event_id":"k","a":1,"b":{"c":2}}' ]
}

@test "100k lines: every one journaled, content intact" {
	events 100000 > in.ndjson
	run -0 --separate-stderr journal-append --batch 5000 < in.ndjson
	[ "$stderr" = "journal-append: 100000 appended, 0 duplicate, 0 quarantined" ]
	[ "$(sql 'select count(*), min(seq), max(seq) from events')" = "100000|1|100000" ]
	sql 'select payload from events order by seq' > out.ndjson
	cmp in.ndjson out.ndjson
}

@test "producer and source are recorded" {
	printf '{"event_id":"p1"}\nbad\n' | SLUICE_PRODUCER=ci-runner journal-append --source build.log || true
	[ "$(sql 'select producer from events')" = ci-runner ]
	[ "$(sql 'select source || ":" || line_no || ":" || producer from quarantine')" = "build.log:2:ci-runner" ]
	echo '{"event_id":"p2"}' | SLUICE_PRODUCER=ci-runner journal-append --producer cli
	[ "$(sql "select producer from events where event_id='p2'")" = cli ]
}

@test "the journal is created 0600 in a 0700 directory, in WAL mode" {
	export SLUICE_DB="$BATS_TEST_TMPDIR/state/deep/journal.db"
	events 1 | journal-append
	[ "$(stat -c %a "$SLUICE_DB")" = 600 ]
	[ "$(stat -c %a "$BATS_TEST_TMPDIR/state/deep")" = 700 ]
	[ "$(stat -c %a "$BATS_TEST_TMPDIR/state")" = 700 ]
	[ "$(sql 'pragma journal_mode')" = wal ]
}

@test "the default journal is under XDG_STATE_HOME" {
	unset SLUICE_DB
	export XDG_STATE_HOME="$BATS_TEST_TMPDIR/xdg"
	events 1 | journal-append
	[ -f "$XDG_STATE_HOME/sluice/journal.db" ]
	unset XDG_STATE_HOME
	events 1 | journal-append
	[ -f "$HOME/.local/state/sluice/journal.db" ]
}

@test "a slow producer's events are committed within moments, before its input ends" {
	mkfifo in.fifo
	journal-append < in.fifo 2> err &
	pid=$!
	track "$pid"
	exec 5> in.fifo
	echo '{"event_id":"slow-1"}' >&5
	wait_until '[ "$(sqlite3 "$SLUICE_DB" "select count(*) from events" 2>/dev/null)" = 1 ]'
	echo '{"event_id":"slow-2"}' >&5
	wait_until '[ "$(sqlite3 "$SLUICE_DB" "select count(*) from events" 2>/dev/null)" = 2 ]'
	exec 5>&-
	wait "$pid"
}

@test "kill -9 mid-append leaves an intact journal holding a prefix that covers every acknowledged line" {
	events 300000 > in.ndjson
	journal-append --report --batch 500 < in.ndjson > report 2> err &
	pid=$!
	track "$pid"
	wait_until '[ "$(wc -l < report)" -ge 20000 ]'
	kill -KILL "$pid"
	wait "$pid" || true
	[ "$(sqlite3 "$SLUICE_DB" 'pragma integrity_check')" = ok ]
	n=$(sql 'select count(*) from events')
	# a line cut by the kill is not an acknowledgement: only whole lines count
	acked=$(jq -Rn '[inputs | fromjson? | select(.status=="appended")] | length' < report)
	[ "$n" -ge "$acked" ]
	[ "$n" -lt 300000 ]
	# exactly the first n lines, in order
	[ "$(sql 'select max(seq) from events')" = "$n" ]
	sql 'select payload from events order by seq' > got
	head -n "$n" in.ndjson | cmp - got
	# re-feeding the whole input completes it; the prefix comes back duplicate
	run -0 --separate-stderr journal-append < in.ndjson
	[ "$stderr" = "journal-append: $((300000 - n)) appended, $n duplicate, 0 quarantined" ]
}

@test "disk full: exit 74, the last committed line is named, the journal is intact and resumable" {
	events 10 | journal-append
	events 20000 big > in.ndjson
	run -74 --separate-stderr bash -c 'ulimit -f 1024; exec journal-append --batch 1000 < in.ndjson'
	echo "$stderr" >&2
	line=$(echo "$stderr" | sed -n 's/.*input up to line \([0-9]*\) is committed.*/\1/p')
	[ -n "$line" ]
	[ "$(sqlite3 "$SLUICE_DB" 'pragma integrity_check')" = ok ]
	[ "$(sql "select count(*) from events where event_id like 'big-%'")" = "$line" ]
	[ "$(sql "select count(*) from events where event_id like 'e-%'")" = 10 ]
	# space is back: resume from the next line
	run -0 --separate-stderr bash -c "tail -n +$((line + 1)) in.ndjson | journal-append"
	[ "$(sql 'select count(*) from events')" = 20010 ]
}

@test "four concurrent appenders lose nothing" {
	for i in 1 2 3 4; do events 5000 "p$i" > "in$i"; done
	for i in 1 2 3 4; do journal-append --batch 100 < "in$i" 2> "err$i" & done
	wait
	[ "$(sql 'select count(*) from events')" = 20000 ]
	for i in 1 2 3 4; do
		[ "$(sql "select count(*) from events where event_id like 'p$i-%'")" = 5000 ]
		grep -q '5000 appended' "err$i"
	done
}

@test "a journal locked past --busy-timeout: exit 75" {
	events 1 | journal-append
	mkfifo hold
	sqlite3 "$SLUICE_DB" < hold > locked &
	pid=$!
	track "$pid"
	exec 5> hold
	echo 'BEGIN IMMEDIATE; SELECT "locked";' >&5
	wait_for grep -q locked locked
	run -75 --separate-stderr journal-append --busy-timeout 200ms <<< '{"event_id":"late"}'
	echo "$stderr" | grep -q 'busy'
	exec 5>&-
	wait "$pid"
	[ "$(sql "select count(*) from events where event_id = 'late'")" = 0 ]
}

@test "a journal from a newer sluice is refused with exit 78" {
	events 1 | journal-append
	sqlite3 "$SLUICE_DB" 'pragma user_version = 99'
	run -78 --separate-stderr journal-append <<< '{"event_id":"x"}'
	echo "$stderr" | grep -q 'schema version 99 is newer'
}

@test "a journal from the previous schema version is brought up to date, nothing lost" {
	events 3 | journal-append -q
	v=$(sql 'pragma user_version')
	# version 5 lacked the indexes that selection and status read
	v6="'deliveries_retrying','deliveries_failed','events_gone','events_superseded','events_routed'"
	sqlite3 "$SLUICE_DB" "$(sql "select group_concat('drop index ' || name, ';') from sqlite_master where name in ($v6)"); pragma user_version = 5"
	[ "$(sql "select count(*) from sqlite_master where name in ($v6)")" = 0 ]
	target_add prod
	[ "$(sql 'pragma user_version')" = "$v" ]
	[ "$(sql "select count(*) from sqlite_master where name in ($v6)")" = 5 ]
	run -0 select-undelivered -t prod
	[ "$(echo "$output" | jq -r .seq | paste -sd,)" = "1,2,3" ]
}

@test "a file that is not a journal is refused" {
	echo 'hello' > "$SLUICE_DB"
	run -74 --separate-stderr journal-append <<< '{"event_id":"x"}'
	echo "$stderr" | grep -q 'not an SQLite database'
	[ "$(cat "$SLUICE_DB")" = hello ]
}

@test "a journal that cannot be created: exit 73" {
	run -73 --separate-stderr journal-append -d /proc/nope/journal.db <<< '{"event_id":"x"}'
	echo "$stderr" | grep -q '^journal-append: fatal: cannot create'
}

@test "usage errors exit 64; --help and --version exit 0" {
	run -64 --separate-stderr journal-append --bogus
	run -64 --separate-stderr journal-append --batch 0
	run -64 --separate-stderr journal-append extra-arg
	run -0 journal-append --help
	[[ "$output" == usage:* ]]
	run -0 journal-append --version
	[[ "$output" == "journal-append "* ]]
}
