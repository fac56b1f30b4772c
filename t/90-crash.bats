#!/usr/bin/env bats
# Crash suite: kill -9 of any stage, of the driver, of journal-append, at
# random moments, and power-loss style copies of the journal taken during a
# drain. Afterwards nothing is lost, every event reached the receiver exactly
# once as success (resends only as duplicate), and t/invariants holds.
#
# Sizes (the defaults keep `make check` short; the full run is
#   SLUICE_CRASH_ROUNDS=100 SLUICE_CRASH_EVENTS=20000 bats t/90-crash.bats):
#   SLUICE_CRASH_ROUNDS   rounds of each kill test (default 4)
#   SLUICE_CRASH_EVENTS   events journaled per round (default 5000)
#   SLUICE_CRASH_COPIES   power-loss copies taken and checked (default 8)
#   SLUICE_CRASH_SEED     the random seed (printed; default: a new one)

load helper
load stub

# invariants ARGS...: t/invariants; its findings on stderr when it fails.
invariants() {
	local out rc=0
	out=$("$BATS_TEST_DIRNAME/invariants" "$@" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] || { printf '%s\n' "$out" | head -40 >&2; return 1; }
}

eval "helper_$(declare -f teardown)"
# Every process of a session this test started (setsid) is let go if it was
# stopped, and killed: a failed test leaves nothing behind, stopped or not.
teardown() {
	local sid
	if [ -f "$BATS_TEST_TMPDIR/sessions" ]; then
		while read -r sid; do
			pkill -CONT -s "$sid" 2>/dev/null || true
			pkill -KILL -s "$sid" 2>/dev/null || true
		done < "$BATS_TEST_TMPDIR/sessions"
	fi
	helper_teardown
}

# track_session SID: a process started with setsid, whose session teardown ends
track_session() {
	track "$1"
	echo "$1" >> "$BATS_TEST_TMPDIR/sessions"
}

setup_file() {
	export SLUICE_CRASH_SEED=${SLUICE_CRASH_SEED:-$((RANDOM * 32768 + RANDOM))}
}

# seed_random TEST_NUMBER: one reproducible stream per test.
seed_random() {
	RANDOM=$((SLUICE_CRASH_SEED + $1))
	echo "# seed: SLUICE_CRASH_SEED=$SLUICE_CRASH_SEED" >&2
}

pick() { # pick WORD...: one of them at random
	local a=("$@")
	echo "${a[RANDOM % ${#a[@]}]}"
}

log_lines() { wc -l < "$STUB_LOG" 2>/dev/null || echo 0; }

# The receiver's successes are exactly the journal's events, once each, and
# everything else it logged is a duplicate.
exactly_once() {
	local n=$1
	[ "$(jq -r .status "$STUB_LOG" | sort -u | grep -cv '^\(success\|duplicate\)$')" = 0 ] || {
		echo "statuses other than success/duplicate:" >&2
		jq -r .status "$STUB_LOG" | sort | uniq -c >&2
		return 1
	}
	jq -r 'select(.status == "success") | .event.event_id' "$STUB_LOG" | sort > accepted
	[ -z "$(uniq -d accepted)" ] || { echo "accepted twice: $(uniq -d accepted | head -3)" >&2; return 1; }
	[ "$(wc -l < accepted)" = "$n" ] || { echo "accepted $(wc -l < accepted) of $n" >&2; return 1; }
	diff accepted <(sql 'select event_id from events' | sort)
}

# Every process of the session led by $1 has exited.
session_gone() { ! pgrep -s "$1" > /dev/null; }

@test "kill -9 of a random stage or the driver at a random moment, then a clean drain: each event received once" {
	seed_random 1
	rounds=${SLUICE_CRASH_ROUNDS:-4}
	n=${SLUICE_CRASH_EVENTS:-5000}
	kills=0 resent=0 recovered75=0
	for round in $(seq 1 "$rounds"); do
		rm -rf "$SLUICE_DB" "$SLUICE_DB"-* in.ndjson "$BATS_TEST_TMPDIR/stub.log"
		stub_start
		events "$n" "r$round" > in.ndjson
		journal-append -q < in.ndjson
		batch=$(pick 25 100 500 1000)
		limit=$(pick 300 2000 10000)
		target_add prod "$STUB_URL" --batch-events "$batch"
		victim=$(pick select-undelivered post-batch classify record-results drain)
		at=$((RANDOM % n))
		echo "# round $round: batch $batch, limit $limit, kill $victim after $at receipts" >&2
		# Its own session, so the kill reaches this drain's processes and no others.
		setsid drain -q --limit "$limit" > "out$round" 2> "err$round" &
		pid=$!
		track_session "$pid"
		wait_until "[ \$(log_lines) -ge $at ] || ! kill -0 $pid 2>/dev/null"
		# (a process name is cut to 15 characters) When the one picked is not
		# running at that moment, one of those that are is killed instead.
		killed=0
		if pkill -KILL -s "$pid" -x "${victim:0:15}"; then
			killed=1
		else
			running=$(ps -o comm= -s "$pid" | grep -x 'drain\|select-undelive\|post-batch\|classify\|record-results' | sort -u)
			if [ -n "$running" ]; then
				# shellcheck disable=SC2086 # one word per process name
				victim=$(pick $running)
				pkill -KILL -s "$pid" -x "$victim" && killed=1 && echo "# (killed $victim instead)" >&2
			fi
		fi
		kills=$((kills + killed))
		wait "$pid" || true
		wait_for session_gone "$pid"
		# The clean drain; a target that the crash left backing off is retried.
		rc=0
		drain -q > clean.out 2> clean.err || rc=$?
		if [ "$rc" = 75 ]; then
			recovered75=$((recovered75 + 1))
			run -0 --separate-stderr sluice retry prod
		else
			[ "$rc" = 0 ] || { cat clean.err >&2; false; }
		fi
		# nothing is left: no round runs, or only empty ones
		run -0 --separate-stderr drain -q
		[ "$(echo "$output" | jq -s 'map(.events) | add // 0')" = 0 ]
		exactly_once "$n"
		resent=$((resent + $(jq -r 'select(.status == "duplicate") | 1' "$STUB_LOG" | wc -l)))
		invariants -l "$STUB_LOG" -i in.ndjson --all-delivered
		stub_stop
	done
	echo "# figures: crash rounds=$rounds events/round=$n kills=$kills resent-as-duplicate=$resent retried-after-75=$recovered75 lost=0" >&2
}

@test "kill -9 of journal-append mid-stream: the journal holds a prefix; re-feeding completes it with duplicates" {
	seed_random 2
	rounds=${SLUICE_CRASH_ROUNDS:-4}
	n=${SLUICE_CRASH_EVENTS:-5000}
	kills=0
	for round in $(seq 1 "$rounds"); do
		rm -rf "$SLUICE_DB" "$SLUICE_DB"-* report
		# about 1 line in 50 is not JSON: quarantined, and part of the prefix too
		events "$n" "a$round" | awk 'NR % 50 == 7 { print "not json " NR } { print }' > in.ndjson
		total=$(wc -l < in.ndjson)
		batch=$(pick 10 100 1000)
		at=$((RANDOM % total))
		echo "# round $round: batch $batch, kill after $at reported lines" >&2
		journal-append --report --batch "$batch" < in.ndjson > report 2> err &
		pid=$!
		track "$pid"
		wait_until "[ \$(wc -l < report) -ge $at ] || ! kill -0 $pid 2>/dev/null"
		kill -KILL "$pid" 2>/dev/null && kills=$((kills + 1))
		wait "$pid" || true
		[ "$(sqlite3 "$SLUICE_DB" 'pragma integrity_check')" = ok ]
		got=$(sql 'select count(*) from events')
		# (the last report line may be cut short by the kill; every line, whole
		# or not, is printed after its commit)
		acked=$(grep -c '"status":"appended"' report || true)
		[ "$got" -ge "$acked" ]
		# exactly the first $got events of the input, in order
		[ "$(sql 'select coalesce(max(seq), 0) from events')" = "$got" ]
		sql 'select payload from events order by seq' > got.ndjson
		grep -v '^not json' in.ndjson | head -n "$got" | cmp - got.ndjson
		# every quarantined line is before the last event's line, or in its transaction
		last_event_line=$(grep -n -v '^not json' in.ndjson | sed -n "${got}p" | cut -d: -f1)
		last_q=$(sql 'select coalesce(max(line_no), 0) from quarantine')
		prefix=$(( ${last_event_line:-0} > last_q ? ${last_event_line:-0} : last_q ))
		head -n "$prefix" in.ndjson > prefix.ndjson
		# the quarantined lines of the prefix are exactly its bad lines
		[ "$(sql 'select count(*) from quarantine')" = "$(grep -c '^not json' prefix.ndjson || true)" ]
		run -65 --separate-stderr journal-append < in.ndjson
		[[ "${stderr##*$'\n'}" == "journal-append: $((n - got)) appended, $got duplicate, $(grep -c '^not json' in.ndjson) quarantined" ]]
		invariants -i prefix.ndjson -i in.ndjson
	done
	echo "# figures: journal-append kills=$kills rounds=$rounds lines/round=$total lost=0" >&2
}

@test "power loss: copies of the journal files taken at random moments during a drain open and pass integrity_check" {
	seed_random 3
	copies=${SLUICE_CRASH_COPIES:-8}
	n=${SLUICE_CRASH_EVENTS:-5000}
	stub_start
	events "$n" > in.ndjson
	journal-append -q < in.ndjson
	target_add prod "$STUB_URL" --batch-events 50
	target_add other "$STUB_URL/other" --batch-events 200
	# drains, and an appender, in one session, until enough copies are taken
	setsid bash -c 'while :; do drain -q --limit 700 || true; done' > /dev/null 2> drains.err &
	sid=$!
	track_session "$sid"
	setsid bash -c "i=0; while :; do i=\$((i + 1)); events 50 \"late\$i\" | journal-append -q --batch 7; done" \
		> /dev/null 2> appends.err &
	sid2=$!
	track_session "$sid2"
	taken=0
	while [ "$taken" -lt "$copies" ]; do
		# a random moment: after 0 to 49 more receipts
		at=$(( $(log_lines) + RANDOM % 50 ))
		wait_until "[ \$(log_lines) -ge $at ]"
		# Freeze every writer, so that the copy is what a power cut at this
		# instant leaves on a disk that kept every write (a write(2) is never
		# half done for a stopped process); then let them go on.
		wait_for all_stopped "$sid" "$sid2"
		mkdir "copy$taken"
		for f in "$SLUICE_DB" "$SLUICE_DB-wal" "$SLUICE_DB-shm"; do
			[ -e "$f" ] && cp "$f" "copy$taken/"
		done
		pkill -CONT -s "$sid" || true
		pkill -CONT -s "$sid2" || true
		taken=$((taken + 1))
	done
	pkill -KILL -s "$sid" || true
	pkill -KILL -s "$sid2" || true
	wait_for session_gone "$sid"
	wait_for session_gone "$sid2"
	for i in $(seq 0 $((copies - 1))); do
		copy="copy$i/$(basename "$SLUICE_DB")"
		[ "$(sqlite3 "$copy" 'pragma integrity_check')" = ok ]
		# and the copy keeps the promise against what the receiver logged
		invariants -d "$copy" -l "$STUB_LOG" --earlier
	done
	invariants -l "$STUB_LOG"
	echo "# figures: power-loss copies=$copies events=$(sql 'select count(*) from events') lost=0" >&2
}

# all_stopped SID...: stop every process of these sessions; true once all are.
export -f events
all_stopped() {
	local sid state
	for sid in "$@"; do
		pkill -STOP -s "$sid" || true
	done
	for sid in "$@"; do
		for state in $(ps -o stat= -s "$sid"); do
			# T stopped, t stopped while traced (LeakSanitizer's exit check
			# ptraces its own process), Z exited
			[[ $state == [TtZ]* ]] || return 1
		done
	done
}
