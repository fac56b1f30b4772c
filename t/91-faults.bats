#!/usr/bin/env bats
# Fault suite: every failure stub-receiver can script, alone and in random
# sequences of 50 responses, followed by a healthy receiver. The categories are
# the contract's (classify(1)), the backoff is as specified (sluice(7):
# min(60 s, 1 s * 2^(n-1)), Retry-After when longer, jitter off here),
# nothing is lost, and the drain converges.
#
#   SLUICE_FAULT_SEQUENCES  random sequences of 50 steps (default 2)
#   SLUICE_FAULT_EVENTS     events per sequence (default 300)
#   SLUICE_FAULT_SEED       the random seed (printed; default: a new one)
# Full run: SLUICE_FAULT_SEQUENCES=40 bats t/91-faults.bats

load helper
load stub

NOW=1800000000000
# Every failure stub-receiver --script knows (see stub-receiver(1)).
STEPS=(401 403 403:private-team 404 408 413 429:retry-after=3 429:retry-after-date=3 500 502 503
	503:retry-after=2 hang close garbage missing unknown-status 400:details 400:details-string 400
	no-results)

setup_file() {
	export SLUICE_FAULT_SEED=${SLUICE_FAULT_SEED:-$((RANDOM * 32768 + RANDOM))}
}

invariants() {
	local out rc=0
	out=$("$BATS_TEST_DIRNAME/invariants" "$@" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] || { printf '%s\n' "$out" | head -40 >&2; return 1; }
}

# ledger: every ledger row as seq:state:category:attempts, in seq order
ledger() {
	sql "select coalesce(group_concat(x, ' '), '') from (select event_seq || ':' || state || ':'
		|| coalesce(category, '') || ':' || attempts as x from deliveries order by event_seq)"
}
# target: failures|category|ms until the next attempt
target() {
	sql "select consecutive_failures || '|' || coalesce(last_category, '') || '|'
		|| coalesce(next_attempt_at - ${1:-$NOW}, '') from targets"
}

# The categories classify(1) documents.
documented_categories() {
	sed -n '/^\.Sh CLASSIFICATION/,/^\.Sh /p' "$BATS_TEST_DIRNAME/../man/classify.1" |
		sed -n 's/^\.Cm \([a-z_]*\).*/\1/p; s/^\.Cm \([a-z_]*\) ,.*/\1/p' | sort -u
}

# every category in the journal is one classify(1) documents
categories_documented() {
	local c
	documented_categories > documented
	for c in $(sql "select category from deliveries where category is not null
			union select last_category from targets where last_category is not null
			union select key from runs, json_each(json_extract(counts, '\$.categories'))"); do
		grep -qx -- "$c" documented || { echo "category $c is not in classify(1)" >&2; return 1; }
	done
}

# one(STEP N RC LEDGER TARGET [BATCH]): a receiver scripted with STEP, N events
# in one batch; the drain exits RC, leaves LEDGER and the target in TARGET. Then
# a healthy receiver and a drain past the backoff deliver the rest.
one() {
	local step=$1 n=$2 rc=$3 want_ledger=$4 want_target=$5 got
	rm -rf "$SLUICE_DB" "$SLUICE_DB"-* "$STUB_LOG"
	stub_start --script "$step"
	events "$n" | journal-append -q
	target_add prod "$STUB_URL" --batch-events "$n" --timeout-ms 300
	SLUICE_NOW=$NOW run --separate-stderr drain -q
	if [ "$status" != "$rc" ] || [ "$(ledger)" != "$want_ledger" ] || ! [[ "$(target)" == $want_target ]]; then
		echo "step $step: exit $status (want $rc), ledger '$(ledger)' (want '$want_ledger')," \
			"target '$(target)' (want '$want_target')" >&2
		echo "$stderr" >&2
		return 1
	fi
	categories_documented
	# healthy now: past every backoff, everything is delivered but a terminal failure
	SLUICE_NOW=$((NOW + 60000)) run -0 --separate-stderr drain -q
	got=$(sql "select count(*) from deliveries where state = 'delivered'")
	[ "$((got + $(sql "select count(*) from deliveries where state = 'failed'")))" = "$n" ] ||
		{ echo "step $step: only $got of $n delivered after recovery" >&2; return 1; }
	[ "$(target $((NOW + 60000)))" = "0||" ]
	invariants -l "$STUB_LOG"
	stub_stop
}

@test "every scripted failure alone: its category, the events untouched or charged as specified, then recovery" {
	export SLUICE_JITTER=0
	# step         events exit ledger                                  failures|category|backoff
	one 401             4 75 ''                                        '1|auth_expired|1000'
	one 403             4 75 ''                                        '1|forbidden|1000'
	one 403:private-team 4 75 ''                                       '1|missing_private_team|1000'
	one 404             4 75 ''                                        '1|not_found|1000'
	one 408             4 75 ''                                        '1|timeout|1000'
	one 500             4 75 ''                                        '1|server_error|1000'
	one 502             4 75 ''                                        '1|server_error|1000'
	one 503             4 75 ''                                        '1|server_error|1000'
	one 429:retry-after=7 4 75 ''                                      '1|rate_limited|7000'
	one 503:retry-after=9 4 75 ''                                      '1|server_error|9000'
	one 429:retry-after-date=7 4 75 ''                                 '1|rate_limited|[5-7]000'
	one hang            4 75 ''                                        '1|timeout|1000'
	one close           4 75 ''                                        '1|connection|1000'
	one garbage         4 75 ''                                        '1|malformed_response|1000'
	one no-results      4 75 ''                                        '1|malformed_response|1000'
	one unknown-status  4 75 ''                                        '1|unknown_status|1000'
	# results for all but the last: three delivered, the last is retried untouched
	one missing         4 75 '1:delivered::0 2:delivered::0 3:delivered::0' '1|missing_result|1000'
	# the first event is rejected (its own backoff), the others were not looked at
	one 400:details     4 75 '1:retrying:validation:1'                 '1|not_processed|1000'
	one 400:details-string 4 75 '1:retrying:validation:1'              '1|not_processed|1000'
	# a whole-batch 400 or 413 is split: the halves go through
	one 400             4 0  '1:delivered::0 2:delivered::0 3:delivered::0 4:delivered::0' '0||'
	one 413             4 0  '1:delivered::0 2:delivered::0 3:delivered::0 4:delivered::0' '0||'
	# for one event: a rejection charged to it, and a terminal failure
	one 400             1 0  '1:retrying:bad_request:1'                '0||'
	one 413             1 0  '1:failed:oversized:1'                    '0||'
}

# The model of sluice(7)'s backoff: the delay after n consecutive failures.
delay_ms() {
	local n=$1 d=1000 i
	for ((i = 1; i < n && d < 60000; i++)); do d=$((d * 2)); done
	[ "$d" -gt 60000 ] && d=60000
	echo "$d"
}

@test "random sequences of 50 failures, then a healthy receiver: backoff as specified, nothing lost, the drain converges" {
	export SLUICE_JITTER=0
	RANDOM=$SLUICE_FAULT_SEED
	echo "# seed: SLUICE_FAULT_SEED=$SLUICE_FAULT_SEED" >&2
	sequences=${SLUICE_FAULT_SEQUENCES:-2}
	n=${SLUICE_FAULT_EVENTS:-300}
	injected=0 drains_total=0 events_total=0
	for sequence in $(seq 1 "$sequences"); do
		rm -rf "$SLUICE_DB" "$SLUICE_DB"-* "$STUB_LOG" req.log
		script=
		for i in $(seq 1 50); do
			# about one step in five is normal service
			if [ $((RANDOM % 5)) = 0 ]; then step=ok; else step=${STEPS[RANDOM % ${#STEPS[@]}]}; fi
			script=${script:+$script,}$step
		done
		echo "# sequence $sequence: $script" >&2
		stub_start --script "$script" --request-log "$BATS_TEST_TMPDIR/req.log"
		events "$n" "s$sequence" > in.ndjson
		journal-append -q < in.ndjson
		batch=$(( (RANDOM % 4 + 1) * 25 ))
		target_add prod "$STUB_URL" --batch-events "$batch" --timeout-ms 300 --max-rejections 4
		now=$NOW
		seen=0 more=0
		for drains in $(seq 1 400); do
			cf_before=$(sql 'select consecutive_failures from targets')
			run --separate-stderr env SLUICE_NOW="$now" drain -q --limit 100000
			[ "$status" = 0 ] || [ "$status" = 75 ] || { echo "$stderr" >&2; false; }
			# the requests of this drain, and the longest Retry-After they carried
			requests=$(wc -l < req.log 2>/dev/null || echo 0)
			steps=$(tail -n "+$((seen + 1))" req.log 2>/dev/null | jq -r .step | paste -sd' ')
			seen=$requests
			summary=$(echo "$output" | tail -1)
			if [ -n "$summary" ] && [ "$(echo "$summary" | jq .failed_transient)" -gt 0 ]; then
				[ "$status" = 75 ]
				delivered=$(echo "$summary" | jq '.success + .duplicate')
				want_cf=$(( delivered > 0 ? 1 : cf_before + 1 ))
				[ "$(sql 'select consecutive_failures from targets')" = "$want_cf" ] ||
					{ echo "after [$steps]: failures $(sql 'select consecutive_failures from targets'), want $want_cf" >&2; false; }
				# transient outcomes other than these carry no Retry-After
				ra=0 ra_date=0
				for s in $steps; do
					case $s in
					429:retry-after=*|503:retry-after=*) v=$(( ${s#*=} * 1000 )); [ "$v" -gt "$ra" ] && ra=$v ;;
					429:retry-after-date=*) ra_date=$(( ${s#*=} * 1000 )) ;;
					esac
				done
				want=$(delay_ms "$want_cf")
				[ "$ra" -gt "$want" ] && want=$ra
				got=$(sql "select next_attempt_at - $now from targets")
				if [ "$ra_date" -gt "$want" ]; then
					# an HTTP date has whole seconds, read against the clock
					[ "$got" -ge $((ra_date - 2000)) ] && [ "$got" -le "$ra_date" ] ||
						{ echo "after [$steps]: backoff $got, want about $ra_date" >&2; false; }
				else
					[ "$got" = "$want" ] || { echo "after [$steps]: backoff $got ms, want $want" >&2; false; }
				fi
			elif [ -n "$summary" ] && [ "$(echo "$summary" | jq '.success + .duplicate')" -gt 0 ]; then
				# a run that delivers anything resets the failure count
				[ "$(sql 'select consecutive_failures from targets')" = 0 ]
			else
				# rejections alone, or nothing due: the count stands
				[ "$(sql 'select consecutive_failures from targets')" = "$cf_before" ]
			fi
			# what is left to do, and when it is due
			left=$(sql "select count(*) from events e where not exists (select 1 from deliveries d
				where d.event_seq = e.seq and d.state in ('delivered', 'failed'))")
			if [ "$left" = 0 ]; then
				# converged; until the 50 steps are spent, more events keep it busy
				[ "$requests" -ge 50 ] && break
				more=$((more + 1))
				events 20 "s$sequence-more$more" | tee -a in.ndjson | journal-append -q
				continue
			fi
			due=$(sql "select min(t) from (select next_attempt_at as t from targets where next_attempt_at > $now
				union all select next_attempt_at from deliveries where state = 'retrying' and next_attempt_at > $now)")
			[ -n "$due" ] && now=$due
		done
		[ "$left" = 0 ] && [ "$requests" -ge 50 ] || { echo "no convergence after $drains drains: $left events left" >&2; false; }
		injected=$((injected + $(jq -r 'select(.step != "ok") | 1' req.log | wc -l)))
		drains_total=$((drains_total + drains))
		events_total=$((events_total + $(sql 'select count(*) from events')))
		# the terminal failures are the ones the contract makes terminal
		sql "select category, attempts from deliveries where state = 'failed'" | while IFS='|' read -r cat attempts; do
			[ "$cat" = oversized ] || [ "$attempts" -ge 4 ] || { echo "failed: $cat after $attempts" >&2; false; }
		done
		categories_documented
		# every delivered event was accepted exactly once by the receiver
		[ -z "$(jq -r 'select(.status == "success") | .event.event_id' "$STUB_LOG" | sort | uniq -d)" ]
		invariants -l "$STUB_LOG" -i in.ndjson
		stub_stop
	done
	echo "# figures: fault sequences=$sequences steps=50 each, failures injected=$injected, drains=$drains_total, events=$events_total, lost=0" >&2
}

@test "the categories this suite checks are the ones classify(1) documents" {
	documented_categories > documented
	for c in auth_expired forbidden missing_private_team not_found timeout server_error rate_limited \
		connection malformed_response unknown_status missing_result validation not_processed \
		bad_request oversized not_attempted tls dns client_error; do
		grep -qx "$c" documented || { echo "$c is not documented" >&2; false; }
	done
}
