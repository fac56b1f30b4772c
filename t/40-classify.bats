#!/usr/bin/env bats
# classify: one outcome per event of each response, by the first matching
# row of the table (SLUICE.md section 5); a pure filter.

load helper

KEYS=seq,event_id,target,status,category,http_status,error,retry_after_ms

ONE_EVENT='[{"seq":1,"event_id":"e-1"}]'

# response HTTP_STATUS [FORMAT] [BODY] [EVENTS]: one response record (BODY
# and EVENTS as JSON; one event, e-1, by default).
response() {
	jq -cn --argjson s "$1" --arg f "${2:-batch}" --argjson b "${3:-null}" \
		--argjson ev "${4:-$ONE_EVENT}" \
		'{target:"prod",format:$f,request:1,http_status:$s,transport_error:null,
		  elapsed_ms:3,retry_after_ms:null,events:$ev,response:$b,note:null}'
}

# verdict: the outcomes in $output as "status/category" lines.
verdict() {
	echo "$output" | jq -r '"\(.status)/\(.category)"'
}

@test "fixtures: each response file gives exactly the outcomes of its .out file" {
	local in name n=0
	for in in "$FIXTURES"/classify/*.in.ndjson; do
		name=${in%.in.ndjson}
		run -0 --separate-stderr classify < "$in"
		[ -z "$stderr" ]
		if ! diff -u <(jq -cS . "$name.out.ndjson") <(printf '%s\n' "$output" | jq -cS .) >&2; then
			echo "fixture ${name##*/} differs (expected, got)" >&2
			return 1
		fi
		# one outcome per event, in the order of the response's events
		[ "$(jq -r '.events[].event_id' "$in" | jq -R . | jq -sc .)" = \
		  "$(printf '%s\n' "$output" | jq -sc 'map(.event_id)')" ]
		n=$((n + 1))
	done
	[ "$n" -ge 8 ]
}

@test "outcomes are compact, one per line, keys in the contract's order" {
	run -0 --separate-stderr classify < "$FIXTURES/classify/http-4xx.in.ndjson"
	[ "$(echo "$output" | jq -r 'keys_unsorted | join(",")' | sort -u)" = "$KEYS" ]
	while IFS= read -r line; do
		[ "$line" = "$(echo "$line" | jq -c .)" ]
	done <<< "$output"
}

@test "transport errors: timeout, connection (connect, reset, other), dns, tls" {
	run -0 --separate-stderr classify < "$FIXTURES/classify/transport.in.ndjson"
	[ "$(echo "$output" | jq -r '"\(.event_id):\(.category)"' | paste -sd' ')" = \
	  "t-1:timeout t-2:timeout t-3:connection t-4:dns t-5:tls t-6:connection t-7:connection t-8:connection t-9:timeout" ]
	[ "$(echo "$output" | jq -r .status | sort -u)" = failed_transient ]
	# the error is the transport's message
	[ "$(echo "$output" | jq -r 'select(.event_id=="t-4") | .error')" = "Could not resolve host: nowhere.invalid" ]
	# a transport error is never given a Retry-After
	[ "$(echo "$output" | jq -r .retry_after_ms | sort -u)" = null ]
}

@test "notes: oversized is permanent, not_attempted transient; no HTTP status" {
	run -0 --separate-stderr classify < "$FIXTURES/classify/notes.in.ndjson"
	[ "$(echo "$output" | jq -r 'select(.event_id=="big-1") | "\(.status)/\(.category)"')" = \
	  failed_permanent/oversized ]
	[ "$(echo "$output" | jq -r 'select(.event_id | startswith("na-")) | "\(.status)/\(.category)"' | sort -u)" = \
	  failed_transient/not_attempted ]
	[ "$(echo "$output" | jq -r .http_status | sort -u)" = null ]
}

@test "2xx batch: each event as its result says, found by event_id" {
	body='{"results":[
		{"event_id":"e-3","status":"duplicate"},
		{"event_id":"e-1","status":"success"},
		{"event_id":"e-2","status":"rejected","code":"schema","error":"order_id is required"}]}'
	ev='[{"seq":1,"event_id":"e-1"},{"seq":2,"event_id":"e-2"},{"seq":3,"event_id":"e-3"},{"seq":4,"event_id":"e-4"}]'
	run -0 --separate-stderr classify <<< "$(response 200 batch "$body" "$ev")"
	[ "$(verdict | paste -sd' ')" = \
	  "success/null rejected/schema duplicate/null failed_transient/missing_result" ]
	[ "$(echo "$output" | jq -r 'select(.seq==2) | .error')" = "order_id is required" ]
	[ "$(echo "$output" | jq -r 'select(.seq==1) | .error')" = null ]
	[ "$(echo "$output" | jq -r .http_status | sort -u)" = 200 ]
}

@test "2xx batch, liberal: accepted and warning are success, permanent is failed_permanent" {
	for s in accepted warning Success; do
		run -0 --separate-stderr classify <<< "$(response 200 batch \
			"{\"results\":[{\"event_id\":\"e-1\",\"status\":\"$s\"}]}")"
		[ "$(verdict)" = success/null ]
	done
	run -0 --separate-stderr classify <<< "$(response 200 batch \
		'{"results":[{"event_id":"e-1","status":"permanent","error_message":"blocked"}]}')"
	[ "$(verdict)" = failed_permanent/failed_permanent ]
	[ "$(echo "$output" | jq -r .error)" = blocked ]
	run -0 --separate-stderr classify <<< "$(response 200 batch \
		'{"results":[{"event_id":"e-1","status":"failed_permanent","code":"blocked_customer"}]}')"
	[ "$(verdict)" = failed_permanent/blocked_customer ]
}

@test "2xx batch: the category is the receiver's code when a non-empty string, else the status" {
	for code in '""' 42 null '{"x":1}'; do
		run -0 --separate-stderr classify <<< "$(response 200 batch \
			"{\"results\":[{\"event_id\":\"e-1\",\"status\":\"rejected\",\"code\":$code}]}")"
		[ "$(verdict)" = rejected/rejected ]
	done
}

@test "2xx batch: the error is error, else error_message, else reason" {
	run -0 --separate-stderr classify <<< "$(response 200 batch \
		'{"results":[{"event_id":"e-1","status":"rejected","reason":"r","error_message":"m","error":"e"}]}')"
	[ "$(echo "$output" | jq -r .error)" = e ]
	run -0 --separate-stderr classify <<< "$(response 200 batch \
		'{"results":[{"event_id":"e-1","status":"rejected","reason":"r","error_message":"m"}]}')"
	[ "$(echo "$output" | jq -r .error)" = m ]
	run -0 --separate-stderr classify <<< "$(response 200 batch \
		'{"results":[{"event_id":"e-1","status":"rejected","reason":"r"}]}')"
	[ "$(echo "$output" | jq -r .error)" = r ]
}

@test "2xx batch: an unknown status word is failed_transient/unknown_status" {
	run -0 --separate-stderr classify <<< "$(response 200 batch \
		'{"results":[{"event_id":"e-1","status":"queued"}]}')"
	[ "$(verdict)" = failed_transient/unknown_status ]
	[ "$(echo "$output" | jq -r .error)" = "unknown result status 'queued'" ]
}

@test "2xx batch: a body that is not JSON, not an object, or without results is malformed_response" {
	for body in '"<html>ok</html>"' null '[1,2]' '{"ok":true}' '{"results":"all good"}'; do
		run -0 --separate-stderr classify <<< "$(response 200 batch "$body")"
		[ "$(verdict)" = failed_transient/malformed_response ]
	done
}

@test "2xx ndjson and json-array: success whatever the body" {
	run -0 --separate-stderr classify <<< "$(response 200 ndjson '{"results":[{"event_id":"e-1","status":"rejected"}]}')"
	[ "$(verdict)" = success/null ]
	run -0 --separate-stderr classify <<< "$(response 204 json-array)"
	[ "$(verdict)" = success/null ]
	[ "$(echo "$output" | jq -r .http_status)" = 204 ]
}

@test "400 with details: listed events rejected/validation, the others not_processed" {
	ev='[{"seq":1,"event_id":"e-1"},{"seq":2,"event_id":"e-2"}]'
	run -0 --separate-stderr classify <<< "$(response 400 batch \
		'{"error":"1 invalid","details":[{"event_id":"e-2","error":"bad amount"}]}' "$ev")"
	[ "$(verdict | paste -sd' ')" = "failed_transient/not_processed rejected/validation" ]
	[ "$(echo "$output" | jq -r 'select(.seq==2) | .error')" = "bad amount" ]
	# details as a JSON string holding the list, the reason as "reason"
	run -0 --separate-stderr classify <<< "$(response 400 batch \
		'{"error_message":"invalid","details":"[{\"event_id\":\"e-1\",\"reason\":\"no id\"}]"}' "$ev")"
	[ "$(verdict | paste -sd' ')" = "rejected/validation failed_transient/not_processed" ]
	[ "$(echo "$output" | jq -r 'select(.seq==1) | .error')" = "no id" ]
	# an item without a reason: the top-level message
	run -0 --separate-stderr classify <<< "$(response 400 batch \
		'{"error_message":"invalid","details":[{"event_id":"e-1"}]}')"
	[ "$(echo "$output" | jq -r .error)" = invalid ]
}

@test "400 without usable details is bad_request; other 4xx are client_error" {
	for body in '{"error":"bad"}' '{"error":"bad","details":[]}' '{"details":"[oops"}' \
		'{"details":[{"event_id":"not-ours","error":"x"}]}' '"Bad Request"' null; do
		run -0 --separate-stderr classify <<< "$(response 400 batch "$body")"
		[ "$(verdict)" = rejected/bad_request ]
	done
	run -0 --separate-stderr classify <<< "$(response 400 batch '{"error":"bad"}')"
	[ "$(echo "$output" | jq -r .error)" = bad ]
	for s in 405 409 410 415 422 451 499; do
		run -0 --separate-stderr classify <<< "$(response "$s")"
		[ "$(verdict)" = rejected/client_error ]
		[ "$(echo "$output" | jq -r .error)" = "HTTP $s" ]
	done
}

@test "401, 403, 404, 408: failed_transient with their categories" {
	run -0 --separate-stderr classify <<< "$(response 401 batch '{"error":"token expired"}')"
	[ "$(verdict)" = failed_transient/auth_expired ]
	[ "$(echo "$output" | jq -r .error)" = "token expired" ]
	run -0 --separate-stderr classify <<< "$(response 403 batch '{"error":"nope"}')"
	[ "$(verdict)" = failed_transient/forbidden ]
	run -0 --separate-stderr classify <<< "$(response 404)"
	[ "$(verdict)" = failed_transient/not_found ]
	[ "$(echo "$output" | jq -r .error)" = "HTTP 404" ]
	run -0 --separate-stderr classify <<< "$(response 408)"
	[ "$(verdict)" = failed_transient/timeout ]
}

@test "403 that says a private team is missing: missing_private_team" {
	for body in '{"error":"Missing private team"}' '{"error_message":"no PRIVATE TEAM given"}' \
		'{"message":"private team required"}' '{"code":"missing_private_team"}' \
		'{"error":{"message":"the private team is missing"}}' '"private team missing"'; do
		run -0 --separate-stderr classify <<< "$(response 403 batch "$body")"
		[ "$(verdict)" = failed_transient/missing_private_team ]
	done
	run -0 --separate-stderr classify <<< "$(response 403 batch '{"error":"privateteam"}')"
	[ "$(verdict)" = failed_transient/forbidden ]
}

@test "413: one event is failed_permanent/oversized, several are oversized_batch" {
	run -0 --separate-stderr classify <<< "$(response 413)"
	[ "$(verdict)" = failed_permanent/oversized ]
	run -0 --separate-stderr classify <<< "$(response 413 batch null \
		'[{"seq":1,"event_id":"e-1"},{"seq":2,"event_id":"e-2"}]')"
	[ "$(verdict | sort -u)" = failed_transient/oversized_batch ]
}

@test "429 and 5xx: failed_transient, with the Retry-After copied" {
	rec=$(response 429 | jq -c '.retry_after_ms = 30000')
	run -0 --separate-stderr classify <<< "$rec"
	[ "$(verdict)" = failed_transient/rate_limited ]
	[ "$(echo "$output" | jq -r .retry_after_ms)" = 30000 ]
	for s in 500 502 503 504; do
		rec=$(response "$s" | jq -c '.retry_after_ms = 1500')
		run -0 --separate-stderr classify <<< "$rec"
		[ "$(verdict)" = failed_transient/server_error ]
		[ "$(echo "$output" | jq -r .retry_after_ms)" = 1500 ]
	done
	run -0 --separate-stderr classify <<< "$(response 503)"
	[ "$(echo "$output" | jq -r .retry_after_ms)" = null ]
	# nowhere else
	for s in 401 403 413 400; do
		rec=$(response "$s" | jq -c '.retry_after_ms = 1500')
		run -0 --separate-stderr classify <<< "$rec"
		[ "$(echo "$output" | jq -r .retry_after_ms)" = null ]
	done
}

@test "any other status (1xx, 3xx, none without a transport error) is unexpected_status" {
	for s in 100 302 304 600 0 null; do
		run -0 --separate-stderr classify <<< "$(response "$s")"
		[ "$(verdict)" = failed_transient/unexpected_status ]
	done
	run -0 --separate-stderr classify <<< "$(response 302 batch '{"message":"moved"}')"
	[ "$(echo "$output" | jq -r .error)" = moved ]
	run -0 --separate-stderr classify <<< "$(response 0)"
	[ "$(echo "$output" | jq -r .http_status)" = null ]
}

@test "the first matching row wins: note, then transport error, then the status" {
	rec=$(response 200 batch '{"results":[{"event_id":"e-1","status":"success"}]}' |
		jq -c '.transport_error = {kind:"reset",curl_code:56,message:"reset"}')
	run -0 --separate-stderr classify <<< "$rec"
	[ "$(verdict)" = failed_transient/connection ]
	run -0 --separate-stderr classify <<< "$(echo "$rec" | jq -c '.note = "oversized"')"
	[ "$(verdict)" = failed_permanent/oversized ]
}

@test "strings are escaped; escaped and non-ASCII event ids are matched by their text" {
	body='{"results":[{"event_id":"caf\u00e9-1","status":"rejected","code":"x","error":"a \"quoted\"\nline\twith \\ and \u00e9 \ud83d\ude00"}]}'
	ev='[{"seq":1,"event_id":"café-1"}]'
	run -0 --separate-stderr classify <<< "$(response 200 batch "$body" "$ev")"
	[ "$(verdict)" = rejected/x ]
	[ "$(echo "$output" | jq -r .event_id)" = "café-1" ]
	[ "$(echo "$output" | jq -r .error)" = "$(printf 'a "quoted"\nline\twith \\ and é 😀')" ]
	[ "$(echo "$output" | wc -l)" = 1 ]
}

@test "a batch of 5000 answered in reverse order: every event matched" {
	seq 1 5000 | jq -cn '[inputs | {seq: ., event_id: "ev-\(.)"}]' > ev.json
	jq -c '{results: [reverse[] | {event_id, status: (if .seq % 10 == 0 then "rejected" else "success" end)}]}' \
		ev.json > body.json
	response 200 | jq -c --slurpfile ev ev.json --slurpfile b body.json \
		'.events = $ev[0] | .response = $b[0]' > in.ndjson
	run -0 --separate-stderr classify < in.ndjson
	[ "$(echo "$output" | jq -r .seq | paste -sd,)" = "$(seq 1 5000 | paste -sd,)" ]
	[ "$(echo "$output" | jq -r .status | sort | uniq -c | awk '{print $2 "=" $1}' | paste -sd' ')" = \
	  "rejected=500 success=4500" ]
}

@test "a bad line is named with its line number and skipped; the rest is classified; exit 65" {
	good=$(response 200 ndjson)
	{
		echo "$good"
		echo 'not json'
		echo '{"events":[]}'
		echo '{"target":"prod","events":{}}'
		echo '{"target":"prod","events":[{"seq":"7","event_id":"x"}]}'
		echo '{"target":"prod","events":[{"seq":7,"event_id":7}]}'
		echo '{"target":"prod","events":[{"seq":7}]}'
		echo '{"target":"prod","events":["e-1"]}'
		echo '{"target":"prod","events":[],"x":1} trailing'
		echo '{"target":"prod","events":[],"note":"lost"}'
		echo '{"target":"prod","events":[],"http_status":"200"}'
		echo '{"target":"prod","events":[{"seq":1,"event_id":"e-1"}],"http_status":200}'
		echo "$good" | jq -c '.events[0].seq = 2'
	} > in.ndjson
	run -65 --separate-stderr classify < in.ndjson
	[ "$(echo "$output" | jq -r .seq | paste -sd,)" = 1,2 ]
	[ "$(echo "$stderr" | grep -c '^classify: <stdin>:[0-9]*: ')" = 11 ]
	[ "$(echo "$stderr" | sed -n 's/^classify: <stdin>:\([0-9]*\): .*/\1/p' | paste -sd,)" = \
	  2,3,4,5,6,7,8,9,10,11,12 ]
	echo "$stderr" | grep -q '^classify: <stdin>:3: target is missing'
	echo "$stderr" | grep -q '^classify: <stdin>:4: events is missing or not an array'
	echo "$stderr" | grep -q "^classify: <stdin>:5: an event's seq"
	echo "$stderr" | grep -q '^classify: <stdin>:12: a 2xx response without a format'
}

@test "a line longer than --max-bytes is named and skipped" {
	{
		response 500
		printf '{"target":"prod","events":[],"pad":"%s"}\n' "$(head -c 5000 /dev/zero | tr '\0' x)"
		response 401
	} > in.ndjson
	run -65 --separate-stderr classify --max-bytes 4096 < in.ndjson
	[ "$(verdict | paste -sd' ')" = "failed_transient/server_error failed_transient/auth_expired" ]
	echo "$stderr" | grep -q '^classify: <stdin>:2: line longer than 4096 bytes'
	run -0 --separate-stderr classify < in.ndjson
}

@test "empty lines are skipped and CRLF is accepted" {
	{ response 401; echo; echo '   '; response 404; } | sed 's/$/\r/' > in.ndjson
	run -0 --separate-stderr classify < in.ndjson
	[ "$(verdict | paste -sd' ')" = "failed_transient/auth_expired failed_transient/not_found" ]
}

@test "each response's outcomes are written before the next response is read" {
	mkfifo in.fifo
	classify < in.fifo > out 2> err &
	pid=$!
	track "$pid"
	exec 5> in.fifo
	response 401 >&5
	wait_until '[ "$(wc -l < out)" = 1 ]'
	response 404 >&5
	wait_until '[ "$(wc -l < out)" = 2 ]'
	exec 5>&-
	wait "$pid"
	[ "$(jq -r .category out | paste -sd' ')" = "auth_expired not_found" ]
}

@test "the same input gives the same output, and no journal is touched" {
	cat "$FIXTURES"/classify/*.in.ndjson > in.ndjson
	export SLUICE_DB="$BATS_TEST_TMPDIR/nowhere/journal.db"
	classify < in.ndjson > a
	classify < in.ndjson > b
	cmp a b
	[ ! -e "$BATS_TEST_TMPDIR/nowhere" ]
}

@test "a failed write to stdout is exit 74" {
	run -74 --separate-stderr bash -c 'classify < "$1" > /dev/full' _ \
		"$FIXTURES/classify/http-4xx.in.ndjson"
	echo "$stderr" | grep -q '^classify: .*cannot write standard output'
}

@test "usage errors exit 64; --help and --version exit 0" {
	run -64 --separate-stderr classify --bogus
	run -64 --separate-stderr classify --max-bytes 0
	run -64 --separate-stderr classify --max-bytes 12k
	run -64 --separate-stderr classify extra-arg
	[[ "$stderr" == *"unexpected argument"* ]]
	run -0 classify --help
	[[ "$output" == usage:* ]]
	run -0 classify -h
	run -0 classify --version
	[[ "$output" == "classify "* ]]
	run -0 classify -V
}
