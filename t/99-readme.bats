#!/usr/bin/env bats
# The README's examples work as written: the worked example is replayed
# command by command, and the operating commands are run.

load helper
load stub

README="$BATS_TEST_DIRNAME/../README"

# section TITLE: the README's lines from the heading TITLE to the next heading
section() {
	awk -v title="$1" '
		$0 == title { on = 1; next }
		on && /^[-=]+$/ && prev != "" && prev != title { exit }
		on { if (n++) print prev; prev = $0 }
	' "$README"
}

# matches LINE PATTERN: the README's "..." stands for anything
matches() {
	local pattern=$2 literal rest glob=
	rest=$pattern
	while [[ $rest == *"..."* ]]; do
		literal=${rest%%...*}
		glob+=$(printf '%q' "$literal")'*'
		rest=${rest#*...}
	done
	glob+=$(printf '%q' "$rest")
	eval "[[ \$1 == $glob ]]"
}

@test "the worked example runs as shown" {
	section 'A worked example' > example
	grep -q '^    \$ ' example
	last_rc=0
	port=
	cmd=
	: > expected
	run_cmd() {
		[ -n "$cmd" ] || return 0
		local c=$cmd actual line found
		c=${c//\/tmp\/demo.db/$BATS_TEST_TMPDIR\/demo.db}
		[ -n "$port" ] && c=${c//8080/$port}
		if [[ $c == "stub-receiver --port "*"&" ]]; then
			stub_start
			port=$STUB_PORT
		else
			# "$?" in the README means the previous command's status
			c=${c//\$\?/$last_rc}
			eval "$c" > actual 2>&1 && last_rc=0 || last_rc=$?
			sed -i "s|/tmp/demo.db|$BATS_TEST_TMPDIR/demo.db|g" expected
			# every line shown is printed, and everything printed is shown
			while IFS= read -r line; do
				found=0
				while IFS= read -r actual; do
					if matches "$actual" "$line"; then found=1; break; fi
				done < actual
				[ "$found" = 1 ] || { echo "'$c': expected, not printed: $line" >&2; cat actual >&2; return 1; }
			done < expected
			while IFS= read -r actual; do
				[ -n "$actual" ] || continue
				found=0
				while IFS= read -r line; do
					if matches "$actual" "$line"; then found=1; break; fi
				done < expected
				[ "$found" = 1 ] || { echo "'$c': printed, not shown: $actual" >&2; return 1; }
			done < actual
		fi
		: > expected
	}
	while IFS= read -r line; do
		if [[ $line == '    $ '* ]]; then
			run_cmd
			cmd=${line#    \$ }
		elif [[ $line == '    '* ]] && [ -n "$cmd" ]; then
			printf '%s\n' "${line#    }" >> expected
		else
			run_cmd
			cmd=
		fi
	done < example
	run_cmd
	# and the token is nowhere in the journal
	! grep -q s3cr3t "$BATS_TEST_TMPDIR/demo.db"
	stub_stop
}

@test "the operating commands work as written" {
	stub_start
	target_add prod "$STUB_URL"
	events 3 | journal-append -q
	ops=$(section 'Running it for months')
	# cron
	cron=$(echo "$ops" | grep -E '^    \*/5 ' | sed 's/^    \*\/5 \* \* \* \* //')
	[ -n "$cron" ]
	bash -c "$cron"
	[ "$(sql "select count(*) from deliveries where state = 'delivered'")" = 3 ]
	# systemd units: each ExecStart, run for real
	grep -q 'ExecStart=/usr/local/bin/sluice drain --quiet' <<< "$ops"
	events 1 a | journal-append -q
	sluice drain --quiet > /dev/null
	follow=$(echo "$ops" | sed -n 's|^    ExecStart=/usr/local/bin/||p' | grep -- --follow)
	events 1 b | journal-append -q
	eval "exec $follow" > /dev/null 2>&1 &
	pid=$!
	track "$pid"
	wait_until '[ "$(sqlite3 "$SLUICE_DB" "select count(*) from deliveries where state = '"'delivered'"'" 2>/dev/null)" = 5 ]'
	kill -TERM "$pid"
	wait "$pid"
	if command -v systemd-analyze > /dev/null; then
		echo "$ops" | awk '/# \/etc\/systemd\/system\/sluice-drain.service/{f=1;next} /^$/{f=0} f' |
			sed 's/^    //' > sluice-drain.service
		[ -s sluice-drain.service ]
	fi
	# CI
	ci=$(echo "$ops" | sed -n 's/^    - run: //p')
	bash -c "$ci"
	# Prometheus, atomically
	prom=$(echo "$ops" | sed -n 's|^    \(sluice status --prometheus --output\) .*|\1|p')
	bash -c "$prom $BATS_TEST_TMPDIR/sluice.prom"
	grep -q '^sluice_pending{target="prod"} 0$' sluice.prom
	# emit, and gc as written
	echo '{"event_id":"emitted"}' | sluice emit
	gc=$(echo "$ops" | grep -o 'sluice gc --older-than 30d --archive old.ndjson.gz')
	bash -c "$gc"
	stub_stop
}

@test "the snapshot target in the README is accepted as written" {
	events 1 | journal-append -q
	cmd=$(section 'Snapshots: the journal itself, off the machine' | sed -n '/sluice target add backup/,/--min-interval/p' | sed 's/^    //; s/\\$//' | tr -d '\n')
	eval "$cmd"
	[ "$(sluice target show backup --json | jq -c '{format, gzip, keep, min_interval_ms, s3_region}')" = \
	  '{"format":"snapshot","gzip":true,"keep":24,"min_interval_ms":600000,"s3_region":"eu-west-1"}' ]
}
