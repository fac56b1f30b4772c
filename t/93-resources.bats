#!/usr/bin/env bats
# Resource suite: a full disk while appending and while recording results; a
# 100 MB input line; a 1 GB response body; a journal of many events. Each
# ends with a clear outcome, bounded memory (peak RSS from /usr/bin/time), an
# intact journal, and progress once the resource is back.
#
#   SLUICE_BIG_EVENTS   events in the big journal (default 100000; full: 1000000)
#   SLUICE_BIG_LINE_MB  the long input line (default 100)
#   SLUICE_BIG_BODY_MB  the response body (default 1024)
# Full run: SLUICE_BIG_EVENTS=1000000 bats --show-output-of-passing-tests t/93-resources.bats
# (figures are printed as "# figures: ..." lines; timings are never asserted)

load helper
load stub

eval "helper_$(declare -f teardown)"
teardown() {
	if mountpoint -q "$BATS_TEST_TMPDIR/fs" 2>/dev/null; then
		umount "$BATS_TEST_TMPDIR/fs" || umount -l "$BATS_TEST_TMPDIR/fs"
	fi
	helper_teardown
}

invariants() {
	local out rc=0
	out=$("$BATS_TEST_DIRNAME/invariants" "$@" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] || { printf '%s\n' "$out" | head -40 >&2; return 1; }
}

# small_fs SIZE: a tmpfs of SIZE at ./fs, holding the journal. Fails where
# mounting is not allowed; the tests then use `ulimit -f` instead.
small_fs() {
	mkdir -p "$BATS_TEST_TMPDIR/fs"
	mount -t tmpfs -o "size=$1,mode=0700" tmpfs "$BATS_TEST_TMPDIR/fs" 2>/dev/null || return 1
	export SLUICE_DB="$BATS_TEST_TMPDIR/fs/journal.db"
}
grow_fs() { mount -o "remount,size=$1" "$BATS_TEST_TMPDIR/fs"; }

ms() { date +%s%3N; }

@test "disk full while appending: exit 74, the committed line named, journal intact; resumes when space is back" {
	events 30000 full > in.ndjson
	if small_fs 1M; then
		how=tmpfs
		run -74 --separate-stderr journal-append --batch 500 < in.ndjson
	else
		how="ulimit -f"
		run -74 --separate-stderr bash -c 'ulimit -f 512; exec journal-append --batch 500 < in.ndjson'
	fi
	echo "$stderr" >&2
	# one clear message, naming the program, the cause and the last committed line
	[ "$(echo "$stderr" | wc -l)" = 1 ]
	[[ "$stderr" == "journal-append: "*"input up to line "*" is committed"* ]]
	[[ "$stderr" == *"full"* ]] || [[ "$how" == ulimit* ]]
	line=$(echo "$stderr" | sed -n 's/.*input up to line \([0-9]*\) is committed.*/\1/p')
	[ "$line" -gt 0 ] && [ "$line" -lt 30000 ]
	[ "$(sqlite3 "$SLUICE_DB" 'pragma integrity_check')" = ok ]
	[ "$(sql 'select count(*) from events')" = "$line" ]
	# space is back: the rest goes in, from the next line
	[ "$how" = tmpfs ] && grow_fs 64M
	tail -n "+$((line + 1))" in.ndjson > rest.ndjson
	run -0 --separate-stderr journal-append < rest.ndjson
	[ "$(sql 'select count(*) from events')" = 30000 ]
	head -n "$line" in.ndjson > head.ndjson
	invariants -i head.ndjson -i rest.ndjson
	echo "# figures: disk full ($how) during append after line $line of 30000; resumed, lost=0" >&2
}

# fill_while_recording: 6000 events for a stub-receiver, and a journal with
# room to read but not to record them all; then a drain. Sets $how.
fill_while_recording() {
	stub_start
	events 6000 > in.ndjson
	if small_fs 4M; then
		how=tmpfs
		journal-append -q < in.ndjson
		target_add prod "$STUB_URL" --batch-events 200
		# leave 96 KiB: enough to read, not enough to record 6000 outcomes
		avail=$(df -B1 --output=avail "$BATS_TEST_TMPDIR/fs" | tail -1)
		head -c $((avail - 98304)) /dev/zero > "$BATS_TEST_TMPDIR/fs/filler" || true
		run -74 --separate-stderr drain
	else
		how="ulimit -f"
		journal-append -q < in.ndjson
		target_add prod "$STUB_URL" --batch-events 200
		size=$(( $(stat -c %s "$SLUICE_DB") / 1024 + 96 ))
		run -74 --separate-stderr bash -c "ulimit -f $size; exec drain"
	fi
	echo "$stderr" >&2
}

@test "disk full while recording results: exit 74, journal intact, the next drain resumes and loses nothing" {
	fill_while_recording
	[ "$(sqlite3 "$SLUICE_DB" 'pragma integrity_check')" = ok ]
	recorded=$(sql "select count(*) from deliveries")
	[ "$recorded" -lt 6000 ]
	invariants -l "$STUB_LOG"
	# space is back: the next drain records everything; what was sent but not
	# recorded is sent again and answered duplicate
	rm -f "$BATS_TEST_TMPDIR/fs/filler"
	run -0 --separate-stderr drain
	[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = 6000 ]
	[ "$(jq -r 'select(.status == "success") | .event.event_id' "$STUB_LOG" | sort -u | wc -l)" = 6000 ]
	invariants -l "$STUB_LOG" -i in.ndjson --all-delivered
	echo "# figures: disk full ($how) during record-results after $recorded of 6000 outcomes; resumed, lost=0" >&2
	stub_stop
}

@test "disk full while recording results: record-results says why, and drain names record-results" {
	fill_while_recording
	# the cause, from the stage that met it
	[[ "$stderr" == *"record-results: "*"full"* ]] || [[ "$stderr" == *"record-results: "*"I/O error"* ]]
	# the stages before it only saw their reader go away; drain blames the one that failed
	[[ "$stderr" == *"drain: prod: record-results exited with status 74"* ]]
	stub_stop
}

@test "a 100 MB input line is read past in bounded memory; its neighbours are appended" {
	mb=${SLUICE_BIG_LINE_MB:-100}
	{
		echo '{"event_id":"before"}'
		printf '{"event_id":"huge","pad":"'
		head -c $((mb * 1048576)) /dev/zero | tr '\0' x
		printf '"}\n'
		echo '{"event_id":"after"}'
	} > in.ndjson
	run -65 --separate-stderr /usr/bin/time -f 'rss_kib %M' journal-append < in.ndjson
	[ "$(sql 'select group_concat(event_id) from (select event_id from events order by seq)')" = "before,after" ]
	[ "$(sql "select line_no || ':' || reason || ':' || length(raw) from quarantine")" = "2:too_long:1048576" ]
	echo "$stderr" | grep -q '^journal-append: stdin:2: quarantined (too_long): line longer than 1048576 bytes'
	rss=$(echo "$stderr" | sed -n 's/^rss_kib //p')
	echo "# figures: journal-append with a ${mb} MB line: peak RSS ${rss} KiB" >&2
	[ "$rss" -lt 65536 ]
	# classify reads past it the same way (a 1 MiB limit here)
	run -65 --separate-stderr /usr/bin/time -f 'rss_kib %M' classify --max-bytes 1048576 < in.ndjson
	[[ "$stderr" == *"classify: <stdin>:2: line longer than 1048576 bytes"* ]]
	rss=$(echo "$stderr" | sed -n 's/^rss_kib //p')
	echo "# figures: classify with a ${mb} MB line: peak RSS ${rss} KiB" >&2
	[ "$rss" -lt 65536 ]
}

@test "a 1 GB response body: post-batch reads it in bounded memory and the outcome is a clear transient failure" {
	mb=${SLUICE_BIG_BODY_MB:-1024}
	cc -O2 -o bigbody "$BATS_TEST_DIRNAME/bigbody.c"
	./bigbody big.port $((mb * 1048576)) 2> bigbody.err 3>&- &
	track "$!"
	wait_for test -s big.port
	events 3 | journal-append -q
	target_add big "http://127.0.0.1:$(cat big.port)/ingest" --timeout-ms 120000
	export SLUICE_NOW=1800000000000 SLUICE_JITTER=0
	start=$(ms)
	run -0 --separate-stderr bash -c \
		'select-undelivered -t big | /usr/bin/time -f "rss_kib %M" post-batch -t big > response.ndjson'
	took=$(( $(ms) - start ))
	rss=$(echo "$stderr" | sed -n 's/^rss_kib //p')
	echo "# figures: post-batch reading a ${mb} MB body: peak RSS ${rss} KiB, ${took} ms" >&2
	[ "$rss" -lt 131072 ]
	# one record: HTTP 200, the body passed on cut to 64 KiB as a string
	[ "$(wc -l < response.ndjson)" = 1 ]
	[ "$(jq -c '[.http_status, (.response | type), (.response | length), (.events | length)]' response.ndjson)" = '[200,"string",65536,3]' ]
	run -75 --separate-stderr bash -c 'classify < response.ndjson | record-results -t big'
	[ "$(echo "$output" | jq -c '[.failed_transient, .categories]')" = '[3,{"malformed_response":3}]' ]
	[ "$(sql "select consecutive_failures || '|' || last_category from targets")" = "1|malformed_response" ]
	[ "$(sql 'select count(*) from deliveries')" = 0 ]
}

@test "a big journal: status and a drain stay fast (figures on stderr, nothing asserted on time)" {
	n=${SLUICE_BIG_EVENTS:-100000}
	stub_start
	start=$(ms)
	events "$n" big | journal-append -q --batch 10000
	t_append=$(( $(ms) - start ))
	target_add prod "$STUB_URL"
	start=$(ms); run -0 --separate-stderr sluice status --json; t_status=$(( $(ms) - start ))
	[ "$(echo "$output" | jq '.targets[0].pending')" = "$n" ]
	start=$(ms); run -0 --separate-stderr select-undelivered -t prod --limit 1000; t_select=$(( $(ms) - start ))
	[ "$(echo "$output" | wc -l)" = 1000 ]
	start=$(ms); run -0 --separate-stderr drain -q; t_drain=$(( $(ms) - start ))
	start=$(ms); run -0 --separate-stderr sluice status --json; t_status2=$(( $(ms) - start ))
	[ "$(echo "$output" | jq -c '.targets[0] | [.delivered, .pending]')" = "[$n,0]" ]
	# a few late events after the big backlog: selecting them costs what they are
	events 10 late | journal-append -q
	start=$(ms); run -0 --separate-stderr select-undelivered -t prod; t_select2=$(( $(ms) - start ))
	[ "$(echo "$output" | wc -l)" = 10 ]
	start=$(ms); run -0 --separate-stderr drain -q; t_drain2=$(( $(ms) - start ))
	bytes=$(stat -c %s "$SLUICE_DB")
	invariants -l "$STUB_LOG" --all-delivered
	echo "# figures: journal of $n events ($((bytes / 1048576)) MiB): append ${t_append} ms," \
		"status ${t_status} ms (all pending), ${t_status2} ms (all delivered)," \
		"first 1000 selected ${t_select} ms, drain ${t_drain} ms ($((n * 1000 / (t_drain + 1))) events/s)," \
		"then 10 late events: select ${t_select2} ms, drain ${t_drain2} ms" >&2
	stub_stop
}
