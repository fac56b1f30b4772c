#!/usr/bin/env bats
# sluice target: receivers and their settings; tokens are never stored.

load helper

@test "add, list, show (human and JSON), enable, disable, rm" {
	run -0 sluice target add prod https://ingest.example.com/v1/events --auth-env PROD_TOKEN \
		--batch-events 200 --gzip --header 'X-Team-Slug: acme' --max-rejections 4
	run -0 sluice target add backup http://127.0.0.1:8080/x --format ndjson
	run -0 sluice target list --names
	[ "$output" = $'backup\nprod' ]
	run -0 sluice target show prod --json
	[ "$(echo "$output" | jq -c '{name, url, format, auth_env, auth_file, batch_events, gzip, headers, max_rejections, enabled, insecure}')" = \
	  '{"name":"prod","url":"https://ingest.example.com/v1/events","format":"batch","auth_env":"PROD_TOKEN","auth_file":null,"batch_events":200,"gzip":true,"headers":["X-Team-Slug: acme"],"max_rejections":4,"enabled":true,"insecure":false}' ]
	run -0 sluice target show prod
	[[ "$output" == *"auth:             bearer token from \$PROD_TOKEN"* ]]
	[[ "$output" == *"tls:              verified (system CAs)"* ]]
	run -0 sluice target disable backup
	run -0 sluice target list --enabled --names
	[ "$output" = prod ]
	run -0 sluice target enable backup
	run -0 sluice target list --json
	[ "$(echo "$output" | jq -s 'map(select(.enabled)) | length')" = 2 ]
	run -0 --separate-stderr sluice target rm backup
	[[ "$stderr" == *"removed target backup"* ]]
	run -0 sluice target list --names
	[ "$output" = prod ]
}

@test "set changes only what it is given" {
	target_add prod --auth-env A --timeout-ms 500
	run -0 sluice target set prod http://127.0.0.1:1234/new --batch-bytes 1000
	run -0 sluice target show prod --json
	[ "$(echo "$output" | jq -c '{url, auth_env, timeout_ms, batch_bytes}')" = '{"url":"http://127.0.0.1:1234/new","auth_env":"A","timeout_ms":500,"batch_bytes":1000}' ]
	run -0 sluice target set prod --auth-file /etc/sluice/token
	run -0 sluice target show prod --json
	[ "$(echo "$output" | jq -c '{auth_env, auth_file}')" = '{"auth_env":null,"auth_file":"/etc/sluice/token"}' ]
	run -0 sluice target set prod --insecure
	run -0 sluice target list
	[[ "$output" == *"(TLS NOT VERIFIED)"* ]]
}

@test "a URL with credentials is refused, and nothing is stored" {
	run -78 --separate-stderr sluice target add prod https://user:secret@example.com/x
	[[ "$stderr" == *"carries credentials; refused"* ]]
	run -78 --separate-stderr sluice target add prod https://user@example.com/x
	[ ! -e "$SLUICE_DB" ]
	target_add other
	run -78 --separate-stderr sluice target set other https://u:secret@example.com/x
	[ "$(sql 'select count(*) from targets where url like "%secret%"')" = 0 ]
	! grep -q "secret@" "$SLUICE_DB"
}

@test "an Authorization header is refused: tokens come from env or file only" {
	run -78 --separate-stderr sluice target add prod http://127.0.0.1:1/x --header 'Authorization: Bearer abc'
	[[ "$stderr" == *"use --auth-env or --auth-file"* ]]
}

@test "bad settings are refused with a clear message" {
	run -64 --separate-stderr sluice target add 'Prod!' http://127.0.0.1:1/x
	run -78 --separate-stderr sluice target add prod ftp://127.0.0.1/x
	run -78 --separate-stderr sluice target add prod 'not a url'
	run -78 --separate-stderr sluice target add prod http://127.0.0.1:1/x --format xml
	run -78 --separate-stderr sluice target add prod http://127.0.0.1:1/x --auth-env A --auth-file /t
	run -78 --separate-stderr sluice target add prod http://127.0.0.1:1/x --auth-env 'A B'
	run -64 --separate-stderr sluice target add prod http://127.0.0.1:1/x --batch-events 0
	run -64 --separate-stderr sluice target add prod http://127.0.0.1:1/x --header 'nocolon'
	target_add prod
	run -78 --separate-stderr sluice target add prod http://127.0.0.1:1/x
	[[ "$stderr" == *"exists already"* ]]
	run -69 --separate-stderr sluice target show nope
	run -69 --separate-stderr sluice target rm nope
}

@test "a new target starts at 0 (backfill), or at the journal's end with --no-backfill" {
	events 5 | journal-append -q
	target_add all
	target_add new --no-backfill
	[ "$(sql "select group_concat(name || ':' || cursor_seq) from targets order by name")" = "all:0,new:5" ]
	run -0 select-undelivered -t new
	[ -z "$output" ]
	run -0 select-undelivered -t all
	[ "$(echo "$output" | wc -l)" = 5 ]
}

@test "rm removes the target's ledger but never an event" {
	events 3 | journal-append -q
	target_add prod
	id=$(sql "select id from targets")
	sqlite3 "$SLUICE_DB" "insert into deliveries(target_id, event_seq, state) values ($id, 1, 'delivered')"
	run -0 --separate-stderr sluice target rm prod
	[ "$(sql 'select count(*) from deliveries')" = 0 ]
	[ "$(sql 'select count(*) from events where payload is not null')" = 3 ]
}

@test "sluice dispatches verbs, passes -d on, and refuses unknown verbs" {
	run -0 sluice -d "$BATS_TEST_TMPDIR/other.db" target add x http://127.0.0.1:1/
	[ -f "$BATS_TEST_TMPDIR/other.db" ]
	run -0 sluice --db "$BATS_TEST_TMPDIR/other.db" target list --names
	[ "$output" = x ]
	run -64 --separate-stderr sluice frobnicate
	[[ "$stderr" == "sluice: 'frobnicate' is not a sluice verb"* ]]
	run -0 sluice --help
	[[ "$output" == *"status"* ]]
	run -0 sluice --version
	[[ "$output" == "sluice "* ]]
}
