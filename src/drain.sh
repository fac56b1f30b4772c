#!/bin/bash
# drain - deliver due events to every enabled target, or to those named.
#
# For each target it takes the target's lock and runs the four stages
#
#     select-undelivered | post-batch | classify | record-results
#
# in rounds of --limit events until nothing is due or the target fails at
# batch level (then the target backs off and drain moves on). For a snapshot
# target it runs `sluice-snapshot push` instead, which uploads a copy of the
# journal when it changed. The lock is
# flock(1) on a descriptor the stages inherit: it lasts as long as the last
# process holding it and can never go stale; a second drain of the same
# target says so and moves on (exit 75).
#
# Output: the summary record of every round (NDJSON) on stdout; people's
# messages on stderr. A stage that crashes or exits unexpectedly is named
# and the drain exits non-zero; nothing is marked delivered that the
# receiver did not confirm.
set -u

readonly usage='usage: drain [-d PATH] [-t NAME]... [-n N] [--follow [--interval S]] [-v] [-q]

Deliver due events to every enabled target (or the ones named).

  -d, --db PATH        the journal
  -t, --target NAME    drain this target only (repeatable)
  -n, --limit N        events per round (default 10000)
      --follow         keep going: after each pass, sleep until something is due
                       or --interval passes; stop cleanly on SIGTERM or SIGINT
      --interval S     longest sleep between passes with --follow (default 5)
  -v, --verbose        one line per HTTP request on stderr
  -q, --quiet          no per-round summary lines on stderr
      --force-snapshot snapshot targets upload now, changed or not
  -h, --help           this help
  -V, --version        print the version

Exit: 0 nothing due is left, 64 usage, 65 a stage skipped bad records,
66 no journal, 69 unknown target, 70 a stage failed, 73 cannot create the
lock directory, 74 I/O error, 75 a target is backing off or another drain
holds its lock, 78 bad target settings.'

prog=drain
x=${SLUICE_EXEC_PATH:-$(dirname "$0")}

warn() { printf '%s: %s\n' "$prog" "$*" >&2; }
usage_error() {
	warn "$1"
	printf '%s\n' "${usage%%$'\n'*}" >&2
	echo "Try '$prog --help' for more information." >&2
	exit 64
}

db_args=()
targets=()
limit=10000
follow=0
interval=5
verbose=()
quiet=()
force_snapshot=()
while [ $# -gt 0 ]; do
	case $1 in
	-d|--db) [ $# -ge 2 ] || usage_error "$1 needs a value"; db_args=(--db "$2"); shift ;;
	--db=*) db_args=(--db "${1#--db=}") ;;
	-t|--target) [ $# -ge 2 ] || usage_error "$1 needs a value"; targets+=("$2"); shift ;;
	--target=*) targets+=("${1#--target=}") ;;
	-n|--limit) [ $# -ge 2 ] || usage_error "$1 needs a value"; limit=$2; shift ;;
	--limit=*) limit=${1#--limit=} ;;
	--follow) follow=1 ;;
	--interval) [ $# -ge 2 ] || usage_error "$1 needs a value"; interval=$2; shift ;;
	--interval=*) interval=${1#--interval=} ;;
	-v|--verbose) verbose=(--verbose) ;;
	-q|--quiet) quiet=(--quiet) ;;
	--force-snapshot) force_snapshot=(--force) ;;
	-h|--help) printf '%s\n' "$usage"; exit 0 ;;
	-V|--version) "$x/sluice-config" --version | sed "s/^sluice-config/$prog/"; exit 0 ;;
	*) usage_error "unknown argument '$1'" ;;
	esac
	shift
done
case $limit in ''|*[!0-9]*|0) usage_error "--limit must be a positive number" ;; esac
case $interval in ''|*[!0-9]*|0) usage_error "--interval must be a positive number of seconds" ;; esac

db=$("$x/sluice-config" "${db_args[@]}" --get db) || exit 78
db_args=(--db "$db")
if [ ! -e "$db" ]; then
	warn "no journal at $db (nothing has been appended yet?)"
	exit 66
fi
lockdir="$db-locks"
# Two drains may start at once: whoever creates it, it is there.
if ! mkdir -m 700 "$lockdir" 2>/dev/null && [ ! -d "$lockdir" ]; then
	warn "cannot create the lock directory $lockdir"
	exit 73
fi

now_ms() {
	if [ -n "${SLUICE_NOW:-}" ]; then echo "$SLUICE_NOW"; else date +%s%3N; fi
}

# The worse of two exit statuses: a failure outranks "try later" outranks 0.
worse() {
	if [ "$1" -ne 0 ] && [ "$1" -ne 75 ]; then echo "$1"
	elif [ "$2" -ne 0 ] && [ "$2" -ne 75 ]; then echo "$2"
	elif [ "$1" -eq 75 ] || [ "$2" -eq 75 ]; then echo 75
	else echo 0
	fi
}

# Names a stage's unexpected exit; prints the status drain should give.
stage_failed() { # target stage status
	if [ "$3" -gt 128 ]; then
		warn "$1: $2 was killed by signal $(($3 - 128)); nothing it did not confirm is recorded"
		echo 70
	elif [ "$3" -ge 64 ] && [ "$3" -le 78 ]; then
		warn "$1: $2 exited with status $3"
		echo "$3"
	else
		warn "$1: $2 failed (status $3)"
		echo 70
	fi
}

# One target, in rounds, under its lock. Returns the target's exit status.
drain_target() {
	local t=$1 fd out summary events rc=0 s
	local -a st

	exec {fd}>>"$lockdir/$t.lock" || { warn "$t: cannot open its lock file"; return 73; }
	if ! flock -n "$fd"; then
		warn "$t: another drain holds its lock; skipped"
		exec {fd}>&-
		return 75
	fi
	if is_snapshot "$t"; then
		"$x/sluice-snapshot" "${db_args[@]}" "${quiet[@]}" "${verbose[@]}" push \
			"${force_snapshot[@]}" "$t"
		rc=$?
		exec {fd}>&-
		case $rc in
		0|75) return "$rc" ;;
		*) rc=$(stage_failed "$t" sluice-snapshot "$rc"); return "$rc" ;;
		esac
	fi
	# Nothing due at all (the usual cron tick): no need to start the stages.
	if [ -z "$("$x/select-undelivered" "${db_args[@]}" --target "$t" --next-due)" ]; then
		exec {fd}>&-
		return 0
	fi
	while :; do
		out=$(
			"$x/select-undelivered" "${db_args[@]}" --target "$t" --limit "$limit" "${quiet[@]}" |
				"$x/post-batch" "${db_args[@]}" --target "$t" "${verbose[@]}" |
				"$x/classify" |
				"$x/record-results" "${db_args[@]}" --target "$t" "${quiet[@]}"
			echo "pipestatus ${PIPESTATUS[*]}"
		)
		st=()
		read -r -a st <<< "${out##*pipestatus }" || true
		if [ "${#st[@]}" -ne 4 ]; then
			warn "$t: the stages' exit statuses were lost; nothing unconfirmed is recorded"
			rc=70
			break
		fi
		summary=${out%pipestatus*}
		summary=${summary%$'\n'}
		[ -n "$summary" ] && printf '%s\n' "$summary"
		# Last stage first: a stage that dies makes those before it fail
		# writing to it, and those after it see an ordinary end of input.
		s=${st[3]}
		if [ "$s" -ne 0 ] && [ "$s" -ne 75 ] && [ "$s" -ne 65 ]; then
			rc=$(stage_failed "$t" record-results "$s"); break
		fi
		if [ "${st[2]}" -ne 0 ] && [ "${st[2]}" -ne 65 ]; then
			rc=$(stage_failed "$t" classify "${st[2]}"); break
		fi
		if [ "${st[1]}" -ne 0 ] && [ "${st[1]}" -ne 65 ]; then
			rc=$(stage_failed "$t" post-batch "${st[1]}"); break
		fi
		if [ "${st[0]}" -ne 0 ]; then
			rc=$(stage_failed "$t" select-undelivered "${st[0]}"); break
		fi
		if [ "$s" -eq 75 ]; then
			rc=75; break
		elif [ "$s" -eq 65 ]; then
			rc=$(stage_failed "$t" record-results "$s"); break
		fi
		if [ "${st[1]}" -eq 65 ] || [ "${st[2]}" -eq 65 ]; then
			rc=65; break
		fi
		events=$(printf '%s\n' "$summary" | sed -n 's/^{"target":"[^"]*","events":\([0-9]*\).*/\1/p')
		# A round that was not full selected everything that was due.
		if [ -z "$events" ] || [ "$events" -lt "$limit" ]; then
			break
		fi
	done
	exec {fd}>&-
	return "$rc"
}

is_snapshot() {
	local s
	for s in "${snapshots[@]}"; do
		[ "$s" = "$1" ] && return 0
	done
	return 1
}

drain_all() {
	local t rc=0 list
	mapfile -t snapshots < <("$x/sluice-target" "${db_args[@]}" list --names --kind snapshot)
	if [ ${#targets[@]} -gt 0 ]; then
		list=("${targets[@]}")
		for t in "${list[@]}"; do
			"$x/select-undelivered" "${db_args[@]}" --target "$t" --next-due > /dev/null || return $?
		done
	else
		mapfile -t list < <("$x/sluice-target" "${db_args[@]}" list --enabled --names)
		if [ ${#list[@]} -eq 0 ]; then
			[ ${#quiet[@]} -gt 0 ] ||
				warn "no enabled targets; events stay in the journal (add one: sluice target add NAME URL)"
			return 0
		fi
	fi
	for t in "${list[@]}"; do
		drain_target "$t"
		rc=$(worse "$rc" $?)
	done
	return "$rc"
}

if [ "$follow" -eq 0 ]; then
	drain_all
	exit $?
fi

stopping=0
sleeper=
trap 'stopping=1; [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null' TERM INT
while [ "$stopping" -eq 0 ]; do
	drain_all
	[ "$stopping" -eq 0 ] || break
	# Sleep until the earliest thing due, within [0.2 s, --interval].
	now=$(now_ms)
	wake=$((now + interval * 1000))
	if [ ${#targets[@]} -gt 0 ]; then
		list=("${targets[@]}")
	else
		mapfile -t list < <("$x/sluice-target" "${db_args[@]}" list --enabled --names)
	fi
	for t in "${list[@]}"; do
		due=$("$x/select-undelivered" "${db_args[@]}" --target "$t" --next-due 2>/dev/null) || continue
		[ -n "$due" ] || continue
		[ "$due" -eq 0 ] && due=$now
		[ "$due" -lt "$wake" ] && wake=$due
	done
	ms=$((wake - now))
	[ "$ms" -lt 200 ] && ms=200
	sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))" &
	sleeper=$!
	wait "$sleeper"
	sleeper=
done
warn "stopped"
exit 0
