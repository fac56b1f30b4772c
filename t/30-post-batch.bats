#!/usr/bin/env bats
# post-batch: batches over HTTP, splitting whole-batch rejections, stopping
# after a batch-level failure. Run against a real stub-receiver.

load helper
load stub

sent_ids() { jq -r 'select(.status=="success") | .event.event_id' "$STUB_LOG" | sort; }

@test "events go in batches of --batch-events, bytes as journaled, one record per request" {
	stub_start
	events 25 | journal-append -q
	target_add prod "$STUB_URL" --batch-events 10
	select-undelivered -t prod > sel
	run -0 --separate-stderr post-batch -t prod < sel
	[ "$(echo "$output" | jq -s 'map(.events | length) | join(",")' -r)" = "10,10,5" ]
	[ "$(echo "$output" | jq -s 'map(.request) | join(",")' -r)" = "1,2,3" ]
	[ "$(echo "$output" | jq -r '.http_status' | sort -u)" = 200 ]
	[ "$(echo "$output" | jq -s 'map(.response.results | length) | add')" = 25 ]
	# what the receiver got is byte for byte what was journaled
	sed 's/^{"request":[0-9]*,"status":"success","event":\(.*\)}$/\1/' "$STUB_LOG" > got
	sql 'select payload from events order by seq' > want
	[ "$(wc -l < got)" = 25 ]
	cmp got want
	stub_stop
}

@test "the receiver's log holds each event's exact bytes" {
	stub_start
	printf '{"event_id":"x1","n": 1.50,  "s":"caf\\u00e9"}\n' | journal-append -q
	target_add prod "$STUB_URL"
	select-undelivered -t prod | post-batch -t prod > out
	[ "$(sed -n 's/.*"event":\(.*\)}$/\1/p' "$STUB_LOG")" = '{"event_id":"x1","n": 1.50,  "s":"caf\u00e9"}' ]
	stub_stop
}

@test "--batch-bytes bounds every request body" {
	stub_start --request-log "$BATS_TEST_TMPDIR/req.log"
	events 40 | journal-append -q
	target_add prod "$STUB_URL" --batch-bytes 600
	select-undelivered -t prod | post-batch -t prod > out
	[ "$(jq -s 'map(.bytes) | max' req.log)" -le 600 ]
	[ "$(jq -s 'map(.events) | add' req.log)" = 40 ]
	[ "$(sent_ids | wc -l)" = 40 ]
	stub_stop
}

@test "an event over --max-event-bytes is never sent: note oversized; the others go" {
	stub_start
	{ events 3; printf '{"event_id":"big","pad":"%s"}\n' "$(head -c 500 /dev/zero | tr '\0' x)"; events 2 z; } | journal-append -q
	target_add prod "$STUB_URL" --max-event-bytes 300
	run -0 --separate-stderr bash -c 'select-undelivered -t prod | post-batch -t prod'
	[ "$(echo "$output" | jq -c 'select(.note=="oversized") | [.events[].event_id, .request, .http_status]')" = '["big",null,null]' ]
	[ "$(sent_ids | paste -sd,)" = "e-1,e-2,e-3,z-1,z-2" ]
	stub_stop
}

@test "413 for a batch splits it down to the one event too big; its neighbours are delivered" {
	stub_start --max-body 2000
	{ events 6; printf '{"event_id":"big","pad":"%s"}\n' "$(head -c 2500 /dev/zero | tr '\0' x)"; events 5 z; } | journal-append -q
	target_add prod "$STUB_URL"
	select-undelivered -t prod | post-batch -t prod > out
	# no record carries a 413 for more than one event
	[ "$(jq -s 'map(select(.http_status==413 and (.events|length) > 1)) | length' out)" = 0 ]
	[ "$(jq -c 'select(.http_status==413) | [.events[].event_id]' out)" = '["big"]' ]
	[ "$(sent_ids | wc -l)" = 11 ]
	! sent_ids | grep -qx big
	stub_stop
}

@test "a whole-batch 400 without details is split so one bad event is rejected alone" {
	stub_start --reject-when data.n=37 --reject-mode batch
	events 100 | journal-append -q
	target_add prod "$STUB_URL"
	select-undelivered -t prod | post-batch -t prod > out
	[ "$(jq -c 'select(.http_status==400) | [.events[].event_id]' out)" = '["e-37"]' ]
	[ "$(sent_ids | wc -l)" = 99 ]
	# classify charges only that event
	[ "$(classify < out | jq -r 'select(.status != "success") | "\(.event_id) \(.status) \(.category)"')" = "e-37 rejected bad_request" ]
	stub_stop
}

@test "after a batch-level failure nothing more is sent; the rest is not_attempted" {
	stub_start --script 500 --request-log "$BATS_TEST_TMPDIR/req.log"
	events 35 | journal-append -q
	target_add prod "$STUB_URL" --batch-events 10
	select-undelivered -t prod | post-batch -t prod > out
	[ "$(wc -l < req.log)" = 1 ]
	[ "$(jq -c '[.http_status, .note, (.events|length)]' out | paste -sd' ')" = '[500,null,10] [null,"not_attempted",10] [null,"not_attempted",10] [null,"not_attempted",5]' ]
	stub_stop
}

@test "transport errors: connection refused and a receiver that hangs past the timeout" {
	events 3 | journal-append -q
	target_add dead http://127.0.0.1:9/x
	run -0 --separate-stderr bash -c 'select-undelivered -t dead | post-batch -t dead'
	[ "$(echo "$output" | jq -c '[.transport_error.kind, .http_status, (.events|length)]')" = '["connect",null,3]' ]
	stub_start --script hang
	target_add slow "$STUB_URL" --timeout-ms 300
	run -0 --separate-stderr bash -c 'select-undelivered -t slow | post-batch -t slow'
	[ "$(echo "$output" | jq -c '[.transport_error.kind, .transport_error.curl_code]')" = '["timeout",28]' ]
	stub_stop
}

@test "Retry-After is read in both forms" {
	stub_start --script 429:retry-after=7,429:retry-after-date=30
	events 1 | journal-append -q
	target_add prod "$STUB_URL"
	select-undelivered -t prod | post-batch -t prod > out1
	select-undelivered -t prod | post-batch -t prod > out2
	[ "$(jq -r .retry_after_ms out1)" = 7000 ]
	ms=$(jq -r .retry_after_ms out2)
	[ "$ms" -ge 28000 ] && [ "$ms" -le 31000 ]
	stub_stop
}

@test "the token comes from the named variable or file, and is never printed" {
	export STUB_TOKEN=s3cr3t-t0ken
	stub_start --token-env STUB_TOKEN --request-log "$BATS_TEST_TMPDIR/req.log"
	events 2 | journal-append -q
	target_add prod "$STUB_URL" --auth-env PROD_TOKEN
	# the variable is not set: a configuration error, and no request
	run -78 --separate-stderr bash -c 'select-undelivered -t prod | post-batch -t prod'
	[[ "$stderr" == *'the token variable $PROD_TOKEN is not set'* ]]
	[ ! -s req.log ]
	PROD_TOKEN=wrong run -0 --separate-stderr bash -c 'select-undelivered -t prod | post-batch -t prod'
	[ "$(echo "$output" | jq .http_status)" = 401 ]
	PROD_TOKEN=s3cr3t-t0ken run -0 --separate-stderr bash -c 'select-undelivered -t prod | post-batch -v -t prod'
	[ "$(echo "$output" | jq .http_status)" = 200 ]
	[[ "$stderr" != *s3cr3t* ]]
	printf 's3cr3t-t0ken\n' > token
	sluice target set prod --auth-file "$BATS_TEST_TMPDIR/token"
	events 2 f | journal-append -q
	run -0 --separate-stderr bash -c 'select-undelivered -t prod | post-batch -v -t prod'
	[ "$(echo "$output" | jq -r .http_status | sort -u)" = 200 ]
	! grep -q s3cr3t req.log "$SLUICE_DB"
	stub_stop
}

@test "gzip bodies, fixed headers, and no Expect: 100-continue even for big bodies" {
	stub_start --request-log "$BATS_TEST_TMPDIR/req.log"
	seq 1 3000 | awk '{ printf "{\"event_id\":\"g-%d\",\"pad\":\"%0400d\"}\n", $1, $1 }' | journal-append -q
	target_add prod "$STUB_URL" --gzip --header 'X-Team-Slug: acme' --batch-events 3000 --batch-bytes 4000000
	select-undelivered -t prod | post-batch -t prod > out
	[ "$(jq -r .content_encoding req.log)" = gzip ]
	[ "$(jq -r '.headers["x-team-slug"]' req.log)" = acme ]
	[ "$(jq -r '.headers | has("expect")' req.log)" = false ]
	[ "$(jq -r .bytes req.log)" -lt 1000000 ]
	[ "$(sent_ids | wc -l)" = 3000 ]
	stub_stop
}

@test "ndjson and json-array formats" {
	stub_start
	events 4 | journal-append -q
	target_add nd "$STUB_URL" --format ndjson
	target_add arr "$STUB_URL" --format json-array
	select-undelivered -t nd | post-batch -t nd > out
	[ "$(jq -c '[.format, .http_status]' out)" = '["ndjson",200]' ]
	[ "$(classify < out | jq -r .status | sort -u)" = success ]
	select-undelivered -t arr | post-batch -t arr > out
	[ "$(jq -c '[.format, .http_status]' out)" = '["json-array",200]' ]
	[ "$(jq -r .status "$STUB_LOG" | paste -sd,)" = "success,success,success,success,duplicate,duplicate,duplicate,duplicate" ]
	stub_stop
}

@test "bad input lines are reported and skipped; post-batch writes nothing to the journal" {
	stub_start
	events 2 | journal-append -q
	target_add prod "$STUB_URL"
	sqlite3 "$SLUICE_DB" 'pragma wal_checkpoint(truncate)' > /dev/null
	before=$(cat "$SLUICE_DB" "$SLUICE_DB-wal" 2>/dev/null | sha256sum)
	{ select-undelivered -t prod | head -1; echo 'garbage'; echo '{"seq":"x","event_id":"y","event":{}}'; select-undelivered -t prod | tail -1; } > sel
	run -65 --separate-stderr post-batch -t prod < sel
	[[ "$stderr" == *"post-batch: <stdin>:2: not a selection record"* ]]
	[[ "$stderr" == *"post-batch: <stdin>:3: not a selection record: seq missing"* ]]
	[ "$(sent_ids | paste -sd,)" = "e-1,e-2" ]
	[ "$(cat "$SLUICE_DB" "$SLUICE_DB-wal" 2>/dev/null | sha256sum)" = "$before" ]
	stub_stop
}
