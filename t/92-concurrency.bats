#!/usr/bin/env bats
# Concurrency suite: 4 appenders, 2 drain loops per target, 2 targets (each
# with its own stub-receiver), and `sluice status` polling, all at once for a
# bounded time. Nothing is lost, no event is sent twice (each receiver logs
# every event once, as success), no "database is locked" reaches anyone, and
# t/invariants holds.
#
#   SLUICE_CONCURRENCY_SECONDS  how long it all runs (default 10)
#   SLUICE_CONCURRENCY_EVENTS   most events per appender (default 4000)
# Full run: SLUICE_CONCURRENCY_SECONDS=120 SLUICE_CONCURRENCY_EVENTS=100000 bats t/92-concurrency.bats

load helper

invariants() {
	local out rc=0
	out=$("$BATS_TEST_DIRNAME/invariants" "$@" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] || { printf '%s\n' "$out" | head -40 >&2; return 1; }
}

# receiver NAME: a stub-receiver logging to NAME.log; sets RECEIVER_URL.
receiver() {
	local name=$1 i
	stub-receiver --port 0 --port-file "$name.port" --log "$BATS_TEST_TMPDIR/$name.log" \
		--exit-after 300 > /dev/null 2> "$name.stderr" 3>&- &
	track "$!"
	echo "$!" > "$name.pid"
	wait_for test -s "$name.port"
	RECEIVER_URL="http://127.0.0.1:$(cat "$name.port")/ingest"
}

now_ms() { date +%s%3N; }

@test "4 appenders, 2 drains per target, 2 targets, status polling: nothing lost, nothing sent twice, never locked" {
	seconds=${SLUICE_CONCURRENCY_SECONDS:-10}
	max_events=${SLUICE_CONCURRENCY_EVENTS:-4000}
	receiver alpha
	target_add alpha "$RECEIVER_URL" --batch-events 100
	receiver beta
	target_add beta "$RECEIVER_URL" --batch-events 37
	deadline=$(( $(now_ms) + seconds * 1000 ))
	export deadline max_events
	export -f events now_ms

	for i in 1 2 3 4; do
		# shellcheck disable=SC2016
		bash -c 'k=0
			while [ "$(now_ms)" -lt "$deadline" ] && [ $((k * 50)) -lt "$max_events" ]; do
				k=$((k + 1))
				events 50 "p'"$i"'-$k" | tee -a in'"$i"'.ndjson | journal-append -q --batch 10 || echo "exit $?"
			done' > "append$i.out" 2> "append$i.err" 3>&- &
		track "$!"
	done
	for t in alpha beta; do
		for j in 1 2; do
			# shellcheck disable=SC2016
			bash -c 'while [ "$(now_ms)" -lt "$deadline" ]; do
					drain -q -t '"$t"' --limit 500 > /dev/null; echo "exit $?"
				done' > "drain-$t-$j.out" 2> "drain-$t-$j.err" 3>&- &
			track "$!"
		done
	done
	# shellcheck disable=SC2016
	bash -c 'while [ "$(now_ms)" -lt "$deadline" ]; do
			sluice status --json > status.json || echo "exit $?"
			echo >> polls
			jq -e ".targets | length == 2" status.json > /dev/null || echo "bad status"
		done' > status.out 2> status.err 3>&- &
	track "$!"

	# every loop ends by itself at the deadline
	wait_until "[ \$(now_ms) -ge $deadline ]" || true
	for pid in $(cat pids); do
		[ "$pid" = "$(cat alpha.pid)" ] || [ "$pid" = "$(cat beta.pid)" ] || wait "$pid"
	done

	# no appender or status call failed, a drain only ever found the target busy
	cat append*.out status.out > failures
	[ ! -s failures ] || { cat failures >&2; false; }
	! grep -il 'locked\|busy' append*.err status.err drain-*.err
	codes=$(cat drain-*.out | sort -u | paste -sd' ')
	case $codes in
	"exit 0"|"exit 0 exit 75"|"exit 75") ;;
	*) cat drain-*.out | sort | uniq -c >&2; grep -h . drain-*.err | sort | uniq -c >&2; false ;;
	esac
	if grep -qh 'exit 75' drain-*.out; then
		# 75 only ever means the other drain of the same target held its lock
		[ -z "$(grep -hv 'another drain holds its lock; skipped' drain-*.err)" ]
	fi

	# drain what is left, once
	run -0 --separate-stderr drain -q
	n=$(sql 'select count(*) from events')
	[ "$n" -gt 0 ]
	cat in1.ndjson in2.ndjson in3.ndjson in4.ndjson | wc -l > fed
	[ "$(cat fed)" = "$n" ]
	for t in alpha beta; do
		# every event once, as success, and nothing else: no resend at all
		[ "$(jq -r .status "$t.log" | sort | uniq -c | awk '{print $2 ":" $1}')" = "success:$n" ]
		[ -z "$(jq -r .event.event_id "$t.log" | sort | uniq -d)" ]
	done
	invariants -l "alpha=$BATS_TEST_TMPDIR/alpha.log" -l "beta=$BATS_TEST_TMPDIR/beta.log" \
		-i in1.ndjson -i in2.ndjson -i in3.ndjson -i in4.ndjson --all-delivered
	runs=$(sql 'select count(*) from runs')
	echo "# figures: concurrency ${seconds}s: appenders=4 events=$n drains=$(cat drain-*.out | wc -l)" \
		"runs=$runs status-polls=$(wc -l < polls) lost=0 sent-twice=0 locked=0" >&2
}
