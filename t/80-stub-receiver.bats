#!/usr/bin/env bats
# stub-receiver: the batch contract, deduplication, the logs, every scripted
# failure, rules, limits, formats, tokens, TLS and a clean stop.

load helper
load stub

# post DATA [CURL-ARGS...]: POST DATA to the stub as JSON; $output is the
# body and $code the HTTP status.
post() {
	local data=$1
	shift
	run -0 --separate-stderr curl -sS -w '\n%{http_code}' -H 'Content-Type: application/json' \
		--data-binary "$data" "$@" "$STUB_URL"
	code=${output##*$'\n'}
	output=${output%$'\n'*}
}

# reap PID: wait for a background process of this shell; its exit status in
# $rc. (Not under `run`: its subshell is not the process's parent.)
reap() {
	rc=0
	wait "$1" || rc=$?
}

# statuses: the results' statuses, comma-separated, from $output.
statuses() {
	echo "$output" | jq -r '.results | map(.status) | join(",")'
}

# reqlog N: line N of the request log.
reqlog() {
	sed -n "${1}p" "$BATS_TEST_TMPDIR/requests.ndjson"
}

@test "listens on 127.0.0.1 only, on the port it writes to the port file" {
	stub_start
	[[ "$STUB_PORT" =~ ^[0-9]+$ ]]
	[ "$(cat "$BATS_TEST_TMPDIR/stub.port")" = "$STUB_PORT" ]
	[ ! -e "$BATS_TEST_TMPDIR/stub.port.tmp" ]
	run -0 ss -Htln "( sport = :$STUB_PORT )"
	[ "$(echo "$output" | wc -l)" = 1 ]
	[ "$(echo "$output" | awk '{ print $4 }')" = "127.0.0.1:$STUB_PORT" ]
	post '{"events":[]}'
	[ "$code" = 200 ]
	[ "$output" = '{"results":[]}' ]
	stub_stop
}

@test "--print-port prints the port and nothing else on stdout" {
	stub-receiver --port 0 --print-port --port-file p --exit-after 60 > out 2> err 3>&- &
	pid=$!
	track "$pid"
	wait_until '[ -s out ] && [ -s p ]'
	[ "$(cat out)" = "$(cat p)" ]
	kill -TERM "$pid"
	reap "$pid"
	[ "$rc" = 0 ]
	[ "$(wc -l < out)" = 1 ]
	[ ! -s err ]
}

@test "a batch: success, then duplicate by event_id, within and across requests" {
	stub_start
	post '{"events":[{"event_id":"a","n":1},{"event_id":"b","n":2},{"event_id":"a","n":1}]}'
	[ "$code" = 200 ]
	[ "$(statuses)" = "success,success,duplicate" ]
	[ "$(echo "$output" | jq -r '.results | map(.event_id) | join(",")')" = "a,b,a" ]
	# code and error only for rejections
	[ "$(echo "$output" | jq '[.results[] | has("code") or has("error")] | any')" = false ]
	post '{"events":[{"event_id":"b","n":2},{"event_id":"c"}]}'
	[ "$(statuses)" = "duplicate,success" ]
	stub_stop
}

@test "the log keeps each event's bytes exactly, one line per event, duplicates included" {
	stub_start
	post '{"events":[ {"event_id":"x-1", "amount": 1.50, "note":"a  b"} ,{"event_id":"x-2","u":"\u00e9"}]}'
	post '{"events":[{"event_id":"x-1", "amount": 1.50, "note":"a  b"}]}'
	[ "$(sed -n 1p "$STUB_LOG")" = '{"request":1,"status":"success","event":{"event_id":"x-1", "amount": 1.50, "note":"a  b"}}' ]
	[ "$(sed -n 2p "$STUB_LOG")" = '{"request":1,"status":"success","event":{"event_id":"x-2","u":"\u00e9"}}' ]
	[ "$(sed -n 3p "$STUB_LOG")" = '{"request":2,"status":"duplicate","event":{"event_id":"x-1", "amount": 1.50, "note":"a  b"}}' ]
	[ "$(wc -l < "$STUB_LOG")" = 3 ]
	stub_stop
}

@test "a pretty-printed event still takes one log line" {
	stub_start
	post $'{\n  "events": [\n    {\n      "event_id": "p-1",\n      "n": 1\n    }\n  ]\n}\n'
	[ "$(statuses)" = success ]
	[ "$(wc -l < "$STUB_LOG")" = 1 ]
	[ "$(jq -c .event "$STUB_LOG")" = '{"event_id":"p-1","n":1}' ]
	stub_stop
}

@test "an event without a usable event_id is rejected and not logged as received" {
	stub_start
	post '{"events":[{"n":1},{"event_id":42},{"event_id":""},{"event_id":"ok"}]}'
	[ "$(statuses)" = "rejected,rejected,rejected,success" ]
	[ "$(echo "$output" | jq -r '.results | map(.code // "-") | join(",")')" = \
		"missing_event_id,invalid_event_id,invalid_event_id,-" ]
	[ "$(echo "$output" | jq -c '.results[0].event_id')" = null ]
	[ "$(echo "$output" | jq -r '.results[0].error')" = "the event has no event_id" ]
	[ "$(jq -r .status "$STUB_LOG" | paste -sd,)" = "rejected,rejected,rejected,success" ]
	stub_stop
}

@test "an escaped event_id is deduplicated by its value" {
	stub_start
	post '{"events":[{"event_id":"id-\u0041"}]}'
	post '{"events":[{"event_id":"id-A"}]}'
	[ "$(statuses)" = duplicate ]
	stub_stop
}

@test "a body that is not valid for its format is a 400 without details" {
	stub_start
	for body in '' 'nope' '{"events":' '{"events":{}}' '{"other":[]}' '{"events":[1,2]}' '[{"event_id":"a"},' '{"events":[]} x'; do
		post "$body"
		[ "$code" = 400 ]
		echo "$output" | jq -e '(.error | type) == "string" and (has("details") | not)'
	done
	[ ! -s "$STUB_LOG" ]
	stub_stop
}

@test "each status step answers its status and body" {
	stub_start --script 400,401,403,403:private-team,404,408,413,429,500,502,503
	while read -r step want; do
		post '{"events":[{"event_id":"s"}]}'
		echo "step $step: $code $output" >&2
		[ "$code" = "${step%%:*}" ]
		[ "$output" = "$want" ]
	done <<-'EOF'
	400 {"error":"bad request"}
	401 {"error":"unauthorized"}
	403 {"error":"forbidden"}
	403:private-team {"error":"User is not a member of the required private team","code":"missing_private_team"}
	404 {"error":"not found"}
	408 {"error":"request timeout"}
	413 {"error":"payload too large"}
	429 {"error":"rate limited"}
	500 {"error":"internal server error"}
	502 {"error":"bad gateway"}
	503 {"error":"service unavailable"}
	EOF
	# the script is used up: normal service, and nothing scripted was recorded
	post '{"events":[{"event_id":"s"}]}'
	[ "$code" = 200 ]
	[ "$(statuses)" = success ]
	[ "$(jq -r .request "$STUB_LOG")" = 12 ]
	stub_stop
}

@test "a step's repeat count" {
	stub_start --script 500x3,503x1,ok,429x2
	codes=
	for i in $(seq 1 8); do
		post '{"events":[]}'
		codes="$codes $code"
	done
	[ "$codes" = " 500 500 500 503 200 429 429 200" ]
	stub_stop
}

@test "Retry-After in seconds and as an HTTP date" {
	export SLUICE_NOW=1700000000000 # Tue, 14 Nov 2023 22:13:20 GMT
	stub_start --script 429:retry-after=7,503:retry-after=2,429:retry-after-date=120,503,429
	post '{"events":[]}' -D headers
	[ "$code" = 429 ]
	[ "$(grep -i '^retry-after:' headers | tr -d '\r')" = "Retry-After: 7" ]
	post '{"events":[]}' -D headers
	[ "$code" = 503 ]
	[ "$(grep -i '^retry-after:' headers | tr -d '\r')" = "Retry-After: 2" ]
	post '{"events":[]}' -D headers
	[ "$code" = 429 ]
	[ "$(grep -i '^retry-after:' headers | tr -d '\r')" = "Retry-After: Tue, 14 Nov 2023 22:15:20 GMT" ]
	for want in 503 429; do
		post '{"events":[]}' -D headers
		[ "$code" = "$want" ]
		run -1 grep -qi '^retry-after:' headers
	done
	stub_stop
}

@test "hang: the client times out, the request is released, the server goes on" {
	stub_start --request-log "$BATS_TEST_TMPDIR/requests.ndjson" --script hang
	run -28 --separate-stderr curl -sS --max-time 1 -H 'Content-Type: application/json' \
		--data-binary '{"events":[{"event_id":"h"}]}' "$STUB_URL"
	[ "$(reqlog 1 | jq -c '[.status, .step, .events]')" = '[null,"hang",1]' ]
	# the held connection is closed once its client is gone
	wait_until "[ -z \"\$(ss -Htn state close-wait '( sport = :$STUB_PORT )')\" ]"
	post '{"events":[{"event_id":"h"}]}'
	[ "$(statuses)" = success ]
	[ "$(jq -r .event.event_id "$STUB_LOG")" = h ]
	stub_stop
}

@test "hang does not hold up SIGTERM" {
	stub_start --request-log "$BATS_TEST_TMPDIR/requests.ndjson" --script hang,hang
	curl -s --max-time 60 --data-binary '{"events":[]}' "$STUB_URL" 3>&- &
	curl_pid1=$!
	track "$curl_pid1"
	wait_until "[ \$(wc -l < '$BATS_TEST_TMPDIR/requests.ndjson') -ge 1 ]"
	curl -s --max-time 60 --data-binary '{"events":[]}' "$STUB_URL" 3>&- &
	curl_pid2=$!
	track "$curl_pid2"
	wait_until "[ \$(wc -l < '$BATS_TEST_TMPDIR/requests.ndjson') -ge 2 ]"
	start=$(date +%s%N)
	stub_stop
	elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
	echo "stopped in $elapsed_ms ms" >&2
	[ "$elapsed_ms" -lt 1500 ]
	# the held clients see the connection closed without an answer
	reap "$curl_pid1"
	[ "$rc" = 52 ]
	reap "$curl_pid2"
	[ "$rc" = 52 ]
}

@test "close: the client sees a transport error" {
	stub_start --script close,close
	run --separate-stderr curl -sS -H 'Content-Type: application/json' \
		--data-binary '{"events":[{"event_id":"c"}]}' "$STUB_URL"
	echo "curl: $status $stderr" >&2
	[[ " 18 52 56 " == *" $status "* ]]
	run --separate-stderr curl -sS --data-binary '{"events":[]}' "$STUB_URL"
	[[ " 18 52 56 " == *" $status "* ]]
	post '{"events":[{"event_id":"c"}]}'
	[ "$(statuses)" = success ]
	[ "$(jq -r .request "$STUB_LOG")" = 3 ]
	stub_stop
}

@test "garbage and no-results: a 200 without results, nothing recorded" {
	stub_start --script garbage,no-results
	post '{"events":[{"event_id":"g"}]}' -D headers
	[ "$code" = 200 ]
	[ "$output" = '<html>oops</html>' ]
	grep -qi '^content-type: text/html' headers
	post '{"events":[{"event_id":"g"}]}'
	[ "$code" = 200 ]
	[ "$output" = '{"status":"ok"}' ]
	post '{"events":[{"event_id":"g"}]}'
	[ "$(statuses)" = success ]
	[ "$(wc -l < "$STUB_LOG")" = 1 ]
	stub_stop
}

@test "missing: no result for the last event, which is not recorded" {
	stub_start --script missing
	post '{"events":[{"event_id":"m1"},{"event_id":"m2"},{"event_id":"m3"}]}'
	[ "$code" = 200 ]
	[ "$(echo "$output" | jq -r '.results | map("\(.event_id):\(.status)") | join(",")')" = "m1:success,m2:success" ]
	post '{"events":[{"event_id":"m1"},{"event_id":"m3"}]}'
	[ "$(statuses)" = "duplicate,success" ]
	[ "$(jq -r '"\(.request):\(.event.event_id)"' "$STUB_LOG" | paste -sd,)" = "1:m1,1:m2,2:m1,2:m3" ]
	stub_stop
}

@test "unknown-status answers weird for every event and records nothing" {
	stub_start --script unknown-status
	post '{"events":[{"event_id":"w1"},{"event_id":"w2"}]}'
	[ "$(statuses)" = "weird,weird" ]
	post '{"events":[{"event_id":"w1"},{"event_id":"w2"}]}'
	[ "$(statuses)" = "success,success" ]
	[ "$(jq -r .request "$STUB_LOG" | paste -sd,)" = "2,2" ]
	stub_stop
}

@test "accepted and warning: answered for every event, and recorded" {
	stub_start --script accepted,warning
	post '{"events":[{"event_id":"a1"}]}'
	[ "$(statuses)" = accepted ]
	post '{"events":[{"event_id":"a2"},{"event_id":"a1"}]}'
	[ "$(statuses)" = "warning,warning" ]
	post '{"events":[{"event_id":"a1"},{"event_id":"a2"}]}'
	[ "$(statuses)" = "duplicate,duplicate" ]
	[ "$(jq -r .status "$STUB_LOG" | paste -sd,)" = "accepted,warning,warning,duplicate,duplicate" ]
	stub_stop
}

@test "400 with details: as a list, as a string, with reason and error_message; nothing recorded" {
	stub_start --script 400:details,400:details-string,400:reason
	body='{"events":[{"event_id":"d1"},{"event_id":"d2"}]}'
	post "$body"
	[ "$code" = 400 ]
	[ "$output" = '{"error":"validation failed","details":[{"event_id":"d1","error":"bad field"}]}' ]
	post "$body"
	[ "$code" = 400 ]
	[ "$(echo "$output" | jq -r '.details | type')" = string ]
	[ "$(echo "$output" | jq -c '.details | fromjson')" = '[{"event_id":"d1","error":"bad field"}]' ]
	[ "$(echo "$output" | jq -r .error)" = "validation failed" ]
	post "$body"
	[ "$code" = 400 ]
	[ "$output" = '{"error_message":"validation failed","details":[{"event_id":"d1","reason":"bad field"}]}' ]
	[ ! -s "$STUB_LOG" ]
	post "$body"
	[ "$(statuses)" = "success,success" ]
	stub_stop
}

@test "--reject-when and --permanent-when, per event" {
	stub_start --reject-when data.bad=true --reject-when kind=evil --permanent-when data.size=huge
	post '{"events":[{"event_id":"r1","data":{"bad":true}},{"event_id":"r2","data":{"bad":false}},{"event_id":"r3","kind":"evil"},{"event_id":"r4","data":{"size":"huge"}},{"event_id":"r5","data":{"note":"data.bad=true"},"bad":true}]}'
	[ "$code" = 200 ]
	[ "$(statuses)" = "rejected,success,rejected,failed_permanent,success" ]
	[ "$(echo "$output" | jq -c '.results[0] | [.code, .error]')" = '["validation","data.bad is true"]' ]
	[ "$(echo "$output" | jq -c '.results[2] | [.code, .error]')" = '["validation","kind is evil"]' ]
	[ "$(echo "$output" | jq -c '.results[3] | [.code, .error]')" = '["permanent","data.size is huge"]' ]
	# rejected events are not recorded as received: they are rejected again
	post '{"events":[{"event_id":"r1","data":{"bad":true}},{"event_id":"r2"},{"event_id":"r4","data":{"size":"huge"}}]}'
	[ "$(statuses)" = "rejected,duplicate,failed_permanent" ]
	[ "$(jq -r 'select(.request == 1) | .status' "$STUB_LOG" | paste -sd,)" = \
		"rejected,success,rejected,failed_permanent,success" ]
	stub_stop
}

@test "--reject-when compares a number's text as sent, a string's contents" {
	stub_start --reject-when amount=1.50 --reject-when 'who=a "b"'
	post '{"events":[{"event_id":"n1","amount":1.50},{"event_id":"n2","amount":1.5},{"event_id":"n3","amount":"1.50"},{"event_id":"n4","who":"a \"b\""}]}'
	[ "$(statuses)" = "rejected,success,rejected,rejected" ]
	[ "$(echo "$output" | jq -r '.results[3].error')" = 'who is a "b"' ]
	stub_stop
}

@test "--reject-mode batch: one matching event fails the whole batch, nothing recorded" {
	stub_start --reject-mode batch --reject-when data.bad=true \
		--request-log "$BATS_TEST_TMPDIR/requests.ndjson"
	post '{"events":[{"event_id":"b1"},{"event_id":"b2","data":{"bad":true}},{"event_id":"b3"}]}'
	[ "$code" = 400 ]
	[ "$output" = '{"error":"validation failed"}' ]
	[ ! -s "$STUB_LOG" ]
	[ "$(reqlog 1 | jq -c '[.status, .events]')" = '[400,3]' ]
	post '{"events":[{"event_id":"b1"},{"event_id":"b3"}]}'
	[ "$code" = 200 ]
	[ "$(statuses)" = "success,success" ]
	stub_stop
}

@test "--max-body: a larger body as sent is a 413; a gzip'd body is measured as sent" {
	stub_start --max-body 200 --request-log "$BATS_TEST_TMPDIR/requests.ndjson"
	big=$(printf '{"events":[{"event_id":"big","pad":"%s"}]}' "$(head -c 300 /dev/zero | tr '\0' x)")
	post "$big"
	[ "$code" = 413 ]
	[ "$output" = '{"error":"payload too large"}' ]
	[ "$(reqlog 1 | jq -c '[.status, .bytes, .events]')" = "[413,${#big},null]" ]
	# a body bigger than 1 MiB is read to its end and still answered
	head -c 2000000 /dev/zero | tr '\0' ' ' > huge
	run -0 --separate-stderr curl -sS -w '\n%{http_code}' --data-binary @huge "$STUB_URL"
	[ "${output##*$'\n'}" = 413 ]
	echo "$big" | gzip -c > big.gz
	[ "$(stat -c %s big.gz)" -lt 200 ]
	post @big.gz -H 'Content-Encoding: gzip'
	[ "$code" = 200 ]
	[ "$(statuses)" = success ]
	[ "$(jq -c .event "$STUB_LOG")" = "$(echo "$big" | jq -c '.events[0]')" ]
	stub_stop
}

@test "gzip request bodies are inflated; bad gzip is a 400" {
	stub_start --request-log "$BATS_TEST_TMPDIR/requests.ndjson"
	events 50 z | jq -sc '{events: .}' > batch.json
	gzip -c batch.json > batch.json.gz
	post @batch.json.gz -H 'Content-Encoding: gzip'
	[ "$code" = 200 ]
	[ "$(echo "$output" | jq '[.results[] | select(.status == "success")] | length')" = 50 ]
	[ "$(jq -c .event "$STUB_LOG")" = "$(jq -c '.events[]' batch.json)" ]
	[ "$(reqlog 1 | jq -c '[.content_encoding, .bytes, .events]')" = "[\"gzip\",$(stat -c %s batch.json.gz),50]" ]
	# two gzip members are one body
	{ echo '{"events":[{"event_id":"m-1"},'; } | gzip -c > two.gz
	{ echo '{"event_id":"m-2"}]}'; } | gzip -c >> two.gz
	post @two.gz -H 'Content-Encoding: gzip'
	[ "$(statuses)" = "success,success" ]
	post 'not gzip at all' -H 'Content-Encoding: gzip'
	[ "$code" = 400 ]
	post '{"events":[]}' -H 'Content-Encoding: br'
	[ "$code" = 415 ]
	stub_stop
}

@test "ndjson and json-array bodies: ok, deduplicated and logged" {
	stub_start --request-log "$BATS_TEST_TMPDIR/requests.ndjson"
	printf '{"event_id":"n1","a": 1}\r\n\n{"event_id":"n2"}\n{"no_id":true}' > body.ndjson
	run -0 --separate-stderr curl -sS -H 'Content-Type: application/x-ndjson' --data-binary @body.ndjson "$STUB_URL"
	[ "$output" = '{"ok":true}' ]
	post ' [{"event_id":"n2"},{"event_id":"n3"}]'
	[ "$code" = 200 ]
	[ "$output" = '{"ok":true}' ]
	post '{"events":[{"event_id":"n1"},{"event_id":"n3"},{"event_id":"n4"}]}'
	[ "$(statuses)" = "duplicate,duplicate,success" ]
	[ "$(jq -r '"\(.request):\(.status):\(.event.event_id)"' "$STUB_LOG" | paste -sd' ')" = \
		"1:success:n1 1:success:n2 1:success:null 2:duplicate:n2 2:success:n3 3:duplicate:n1 3:duplicate:n3 3:success:n4" ]
	[ "$(sed -n 1p "$STUB_LOG")" = '{"request":1,"status":"success","event":{"event_id":"n1","a": 1}}' ]
	[ "$(jq -r .format "$BATS_TEST_TMPDIR/requests.ndjson" | paste -sd,)" = "ndjson,json-array,batch" ]
	# a line that is not an object fails the whole body
	run -0 --separate-stderr curl -sS -w '\n%{http_code}' -H 'Content-Type: application/x-ndjson' \
		--data-binary $'{"event_id":"n5"}\n[1]\n' "$STUB_URL"
	[ "${output##*$'\n'}" = 400 ]
	stub_stop
}

@test "ndjson and json-array: a rule match fails the whole body (no per-event answer)" {
	stub_start --reject-when bad=1 --permanent-when huge=1
	post '[{"event_id":"j1"},{"event_id":"j2","bad":1}]'
	[ "$code" = 400 ]
	[ "$output" = '{"error":"validation failed"}' ]
	run -0 --separate-stderr curl -sS -w '\n%{http_code}' -H 'Content-Type: application/x-ndjson' \
		--data-binary $'{"event_id":"j3","huge":1}\n' "$STUB_URL"
	[ "${output##*$'\n'}" = 400 ]
	[ ! -s "$STUB_LOG" ]
	stub_stop
}

@test "a token from the environment: 401 without it; its value is never logged" {
	export STUB_TEST_TOKEN=s3cr3t-t0ken-value
	stub_start --token-env STUB_TEST_TOKEN --request-log "$BATS_TEST_TMPDIR/requests.ndjson"
	post '{"events":[{"event_id":"t1"}]}'
	[ "$code" = 401 ]
	[ "$output" = '{"error":"unauthorized"}' ]
	post '{"events":[{"event_id":"t1"}]}' -H 'Authorization: Bearer wrong'
	[ "$code" = 401 ]
	post '{"events":[{"event_id":"t1"}]}' -H "Authorization: Bearer $STUB_TEST_TOKEN"
	[ "$code" = 200 ]
	[ "$(statuses)" = success ]
	[ "$(jq -r .authorization "$BATS_TEST_TMPDIR/requests.ndjson" | paste -sd,)" = "absent,present,present" ]
	[ "$(jq -r '.status' "$BATS_TEST_TMPDIR/requests.ndjson" | paste -sd,)" = "401,401,200" ]
	[ "$(jq -r '.events' "$BATS_TEST_TMPDIR/requests.ndjson" | paste -sd,)" = "1,1,1" ]
	run -1 grep -q "$STUB_TEST_TOKEN" "$BATS_TEST_TMPDIR/requests.ndjson"
	[ "$(jq -r '.headers | keys[]' "$BATS_TEST_TMPDIR/requests.ndjson" | grep -c authorization)" = 0 ]
	run -1 grep -q 'Bearer' "$BATS_TEST_TMPDIR/requests.ndjson"
	# the events of a refused request were not processed
	[ "$(jq -r .request "$STUB_LOG")" = 3 ]
	# and the token is not in argv
	run -1 grep -q "$STUB_TEST_TOKEN" "/proc/$STUB_PID/cmdline"
	stub_stop
}

@test "a token from a file, its trailing newline trimmed" {
	printf 'file-token\n' > token
	stub_start --token-file token
	post '{"events":[]}' -H 'Authorization: Bearer file-token'
	[ "$code" = 200 ]
	post '{"events":[]}' -H 'Authorization: Bearer file-token2'
	[ "$code" = 401 ]
	stub_stop
}

@test "token errors: unset variable, missing or empty file, both sources" {
	unset NO_SUCH_TOKEN_VAR
	run -78 --separate-stderr stub-receiver --port 0 --token-env NO_SUCH_TOKEN_VAR
	[[ "$stderr" == "stub-receiver: fatal: the token variable NO_SUCH_TOKEN_VAR is unset or empty" ]]
	run -66 --separate-stderr stub-receiver --port 0 --token-file no-such-file
	[[ "$stderr" == "stub-receiver: fatal: cannot read no-such-file: "* ]]
	: > empty
	run -78 --separate-stderr stub-receiver --port 0 --token-file empty
	run -64 --separate-stderr stub-receiver --port 0 --token-file empty --token-env X
}

@test "the request log: one line per request, lower-cased headers, no Authorization" {
	stub_start --request-log "$BATS_TEST_TMPDIR/requests.ndjson" --script 503
	body='{"events":[{"event_id":"q1"},{"event_id":"q2"}]}'
	post "$body" -H 'X-Team-Slug: acme'
	[ "$code" = 503 ]
	post '{"events":[{"event_id":"q1"}]}' -H 'X-Team-Slug: acme' -H 'Authorization: Bearer abc' \
		-H 'X-Multi: 1' -H 'X-Multi: 2'
	run -0 --separate-stderr curl -sS -w '\n%{http_code}' "http://127.0.0.1:$STUB_PORT/other/path"
	[ "${output##*$'\n'}" = 405 ]
	[ "$(wc -l < "$BATS_TEST_TMPDIR/requests.ndjson")" = 3 ]
	r1=$(reqlog 1)
	[ "$(echo "$r1" | jq -c '[.request, .method, .path, .status, .step, .events, .content_encoding, .content_type, .authorization]')" = \
		'[1,"POST","/ingest",503,"503",2,null,"application/json","absent"]' ]
	[ "$(echo "$r1" | jq -r '.headers["x-team-slug"]')" = acme ]
	[ "$(echo "$r1" | jq -r .bytes)" = "${#body}" ]
	r2=$(reqlog 2)
	[ "$(echo "$r2" | jq -c '[.request, .status, .step, .authorization]')" = '[2,200,"ok","present"]' ]
	[ "$(echo "$r2" | jq -r '.headers | has("authorization")')" = false ]
	[ "$(echo "$r2" | jq -r '.headers["x-multi"]')" = "1, 2" ]
	[ "$(echo "$r2" | jq -r '.headers | keys | map(select(test("[A-Z]"))) | length')" = 0 ]
	[ "$(reqlog 3 | jq -c '[.request, .method, .path, .status, .step]')" = '[3,"GET","/other/path",405,null]' ]
	# the scripted failure's events are in the request log only
	[ "$(jq -r '"\(.request):\(.event.event_id)"' "$STUB_LOG")" = "2:q1" ]
	stub_stop
}

@test "--exit-after: it stops by itself, exit 0" {
	stub_start --exit-after 1
	wait_until "! kill -0 $STUB_PID 2>/dev/null"
	reap "$STUB_PID"
	[ "$rc" = 0 ]
	grep -q '^stub-receiver: stopping: --exit-after' "$STUB_STDERR"
}

@test "SIGTERM and SIGINT stop it cleanly with the logs complete" {
	stub_start --request-log "$BATS_TEST_TMPDIR/requests.ndjson"
	post '{"events":[{"event_id":"k1"}]}'
	stub_stop
	run -7 curl -sS --data-binary '{"events":[]}' "$STUB_URL"
	[ "$(wc -l < "$STUB_LOG")" = 1 ]
	[ "$(wc -l < "$BATS_TEST_TMPDIR/requests.ndjson")" = 1 ]
	stub_start
	kill -INT "$STUB_PID"
	wait_until "! kill -0 $STUB_PID 2>/dev/null"
	reap "$STUB_PID"
	[ "$rc" = 0 ]
}

@test "usage errors exit 64 and name the problem" {
	run -64 --separate-stderr stub-receiver --port 0 --script ok,500,teapot,503
	[ "${stderr_lines[0]}" = "stub-receiver: unknown script step 'teapot' (known: ok, 400, 400:details, 400:details-string, 400:reason, 401, 403, 403:private-team, 404, 408, 413, 429, 500, 502, 503, hang, close, garbage, no-results, missing, unknown-status, accepted, warning)" ]
	[ -z "$output" ]
	run -64 --separate-stderr stub-receiver --port 0 --script 500x0
	[[ "$stderr" == *"bad repeat count in script step '500x0'"* ]]
	run -64 --separate-stderr stub-receiver --port 0 --script hang:retry-after=3
	[[ "$stderr" == *"only a status step takes a Retry-After"* ]]
	run -64 --separate-stderr stub-receiver
	[[ "$stderr" == *"--port is required"* ]]
	run -64 --separate-stderr stub-receiver --port 70000
	run -64 --separate-stderr stub-receiver --port 0 --reject-when novalue
	run -64 --separate-stderr stub-receiver --port 0 --reject-mode sometimes
	run -64 --separate-stderr stub-receiver --port 0 --max-body 0
	run -64 --separate-stderr stub-receiver --port 0 --tls-cert x.pem
	run -64 --separate-stderr stub-receiver --port 0 --exit-after soon
	run -64 --separate-stderr stub-receiver --port 0 extra
}

@test "a port in use exits 69; an unwritable log or port file exits 74" {
	stub_start
	run -69 --separate-stderr stub-receiver --port "$STUB_PORT"
	[ "$stderr" = "stub-receiver: fatal: cannot listen on 127.0.0.1:$STUB_PORT: Address already in use" ]
	run -74 --separate-stderr stub-receiver --port 0 --log /nonexistent/dir/log
	[[ "$stderr" == "stub-receiver: fatal: cannot open the log /nonexistent/dir/log: "* ]]
	run -74 --separate-stderr stub-receiver --port 0 --port-file /nonexistent/dir/port
	[[ "$stderr" == "stub-receiver: cannot write the port file /nonexistent/dir/port: "* ]]
	stub_stop
}

@test "a log that cannot be written: 500 for that request, then exit 74" {
	[ -w /dev/full ] || skip "no /dev/full"
	stub_start --request-log /dev/full
	post '{"events":[{"event_id":"f1"}]}'
	[ "$code" = 500 ]
	wait_until "! kill -0 $STUB_PID 2>/dev/null"
	reap "$STUB_PID"
	[ "$rc" = 74 ]
	grep -q '^stub-receiver: cannot write the log' "$STUB_STDERR"
}

@test "non-POST requests get a 405 and use no script step" {
	stub_start --script 500
	run -0 --separate-stderr curl -sS -w '\n%{http_code}' "$STUB_URL"
	[ "$output" = $'{"error":"method not allowed"}\n405' ]
	post '{"events":[]}'
	[ "$code" = 500 ]
	stub_stop
}

@test "--accept-put: PUT stores the body as sent, GET answers it, DELETE removes it" {
	mkdir store
	stub_start --accept-put "$PWD/store/" --request-log "$BATS_TEST_TMPDIR/requests.ndjson"
	base=http://127.0.0.1:$STUB_PORT
	head -c 100000 /dev/urandom > object.bin
	run -0 curl -sS -o /dev/null -D headers -w '%{http_code}' -T object.bin "$base/bucket/a/b/x.db"
	[ "$output" = 200 ]
	grep -qi '^etag: "' headers
	cmp object.bin store/bucket/a/b/x.db
	[ "$(stat -c %a store/bucket/a)" = 700 ]
	# a second PUT replaces it; nothing is left beside it
	printf 'new' | curl -sS -f -T - "$base/bucket/a/b/x.db"
	[ "$(cat store/bucket/a/b/x.db)" = new ]
	[ "$(ls -A store/bucket/a/b)" = x.db ]
	run -0 curl -sS -w '\n%{http_code}' "$base/bucket/a/b/x.db"
	[ "$output" = $'new\n200' ]
	run -0 curl -sS -o /dev/null -w '%{http_code}' "$base/bucket/a/b/none"
	[ "$output" = 404 ]
	run -0 curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$base/bucket/a/b/x.db"
	[ "$output" = 204 ]
	[ ! -e store/bucket/a/b/x.db ]
	run -0 curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$base/bucket/a/b/x.db"
	[ "$output" = 204 ]
	# no way out of the directory, and nothing in it named by a dot segment
	for path in /bucket/../../etc/x /bucket/.hidden /bucket//x /bucket/x/ /; do
		run -0 curl -sS --path-as-is -o /dev/null -w '%{http_code}' -X PUT --data-binary @object.bin "$base$path"
		[ "$output" = 400 ]
	done
	[ -z "$(find store -name x -o -name .hidden)" ]
	# POST still receives events
	post '{"events":[{"event_id":"p1"}]}'
	[ "$code" = 200 ]
	stub_stop
	[ "$(jq -r '"\(.method) \(.status)"' "$BATS_TEST_TMPDIR/requests.ndjson" | head -n 7 | paste -sd,)" = \
	  "PUT 200,PUT 200,GET 200,GET 404,DELETE 204,DELETE 204,PUT 400" ]
}

@test "--accept-put: the script, the token and --max-body apply to PUT, GET and DELETE" {
	mkdir store
	echo 's3cret' > token
	stub_start --accept-put store --token-file token --max-body 10 --script 503,ok,401
	base=http://127.0.0.1:$STUB_PORT
	auth=(-H 'Authorization: Bearer s3cret')
	run -0 curl -sS -o /dev/null -w '%{http_code}' "${auth[@]}" -T token "$base/o"
	[ "$output" = 503 ]
	run -0 curl -sS -o /dev/null -w '%{http_code}' -T token "$base/o"
	[ "$output" = 401 ]
	run -0 curl -sS -o /dev/null -w '%{http_code}' "${auth[@]}" "$base/o"
	[ "$output" = 401 ]
	[ ! -e store/o ]
	run -0 curl -sS -o /dev/null -w '%{http_code}' "${auth[@]}" -T token "$base/o"
	[ "$output" = 200 ]
	head -c 11 /dev/zero > big
	run -0 curl -sS -o /dev/null -w '%{http_code}' "${auth[@]}" -T big "$base/big"
	[ "$output" = 413 ]
	[ ! -e store/big ]
	[ "$(cat store/o)" = s3cret ]
	stub_stop
	# other methods still get a 405
	stub_start --accept-put store
	run -0 curl -sS -o /dev/null -D headers -w '%{http_code}' -X PATCH "http://127.0.0.1:$STUB_PORT/o"
	[ "$output" = 405 ]
	grep -qi '^allow: POST, PUT, GET, DELETE' headers
	stub_stop
	run -66 --separate-stderr stub-receiver --port 0 --accept-put "$PWD/none"
	[ "$stderr" = "stub-receiver: fatal: --accept-put $PWD/none: No such file or directory" ]
}

@test "TLS with a self-signed certificate" {
	command -v openssl > /dev/null || skip "no openssl"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 \
		-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 2> /dev/null
	stub_start --tls-cert cert.pem --tls-key key.pem
	url="https://127.0.0.1:$STUB_PORT/ingest"
	run -0 --separate-stderr curl -sS --cacert cert.pem -H 'Content-Type: application/json' \
		--data-binary '{"events":[{"event_id":"tls-1"}]}' "$url"
	[ "$(statuses)" = success ]
	# not trusted without the certificate
	run -60 --separate-stderr curl -sS --data-binary '{"events":[]}' "$url"
	stub_stop
	run -66 --separate-stderr stub-receiver --port 0 --tls-cert cert.pem --tls-key no-such.pem
	run -69 --separate-stderr stub-receiver --port 0 --tls-cert cert.pem --tls-key cert.pem
	[[ "$stderr" == "stub-receiver: fatal: cannot serve HTTPS on 127.0.0.1:0 with cert.pem and cert.pem: "* ]]
}

@test "many events in one batch, and many batches" {
	stub_start
	events 20000 big | jq -sc '{events: .}' > batch.json
	post @batch.json
	[ "$(echo "$output" | jq '[.results[] | select(.status == "success")] | length')" = 20000 ]
	post @batch.json
	[ "$(echo "$output" | jq '[.results[] | select(.status == "duplicate")] | length')" = 20000 ]
	for i in $(seq 1 20); do
		events 500 "b$i" | jq -sc '{events: .}'
	done > batches
	while read -r b; do
		post "$b"
		[ "$(echo "$output" | jq '.results | length')" = 500 ]
	done < batches
	[ "$(wc -l < "$STUB_LOG")" = 50000 ]
	[ "$(jq -r 'select(.status == "success") | .event.event_id' "$STUB_LOG" | sort -u | wc -l)" = 30000 ]
	stub_stop
}

@test "--help and the man page list the same options; the page is lint clean" {
	page="$BATS_TEST_DIRNAME/../man/stub-receiver.1"
	run -0 --separate-stderr stub-receiver --help
	help_opts=$(echo "$output" | grep -o -- '--[a-z][a-z-]*' | sort -u)
	page_opts=$(grep -o 'Fl -[a-z][a-z-]*' "$page" | sed 's/^Fl -/--/' | sort -u)
	[ "$help_opts" = "$page_opts" ]
	run -0 --separate-stderr mandoc -T lint -W warning "$page"
	[ -z "$output" ]
	for code in 0 64 66 69 70 74 78; do
		grep -q "^\.It $code\$" "$page"
	done
	run -0 stub-receiver --version
	[[ "$output" == "stub-receiver "* ]]
}
