#!/usr/bin/env bats
# Snapshot targets: a consistent copy of the journal in object storage,
# against a real S3-compatible server (s3rver); failures back off and show.

load helper
load stub
load s3

add_s3_target() {
	sluice target add s3 "$S3_URL" --format snapshot --s3-access-env S3_ACCESS \
		--s3-secret-env S3_SECRET "$@"
}

@test "a write is followed by a snapshot and its manifest; nothing changed, no request" {
	s3_start
	events 50 | journal-append -q
	add_s3_target --gzip
	run -0 --separate-stderr drain
	[[ "$stderr" == *"sluice-snapshot: s3: snapshot journal-"*"-50.db.gz"* ]]
	[ "$(s3_objects | grep -c '^journal-.*-50\.db\.gz$')" = 1 ]
	s3_objects | grep -qx 'journal.latest.json'
	manifest=$(cat "$S3_DATA/snaps/backups/journal.latest.json._S3rver_object")
	[ "$(echo "$manifest" | jq -c '{journal, seq, gzip}')" = '{"journal":"journal","seq":50,"gzip":true}' ]
	[ "$(echo "$manifest" | jq -r .sha256)" = "$(sha256sum "$S3_DATA"/snaps/backups/journal-*.db.gz._S3rver_object | cut -d' ' -f1)" ]
	[ "$(sql "select key || ':' || seq from snapshots")" = "$(echo "$manifest" | jq -r '.key + ":" + (.seq|tostring)')" ]
	requests=$(s3_requests)
	run -0 --separate-stderr drain
	run -0 --separate-stderr sluice snapshot push s3
	[ "$(s3_requests)" = "$requests" ]
	# a new event: a new snapshot
	events 1 more | journal-append -q
	run -0 --separate-stderr drain
	[ "$(sql 'select count(*) from snapshots')" = 2 ]
	s3_stop
}

@test "restore: the latest snapshot, sha256 and integrity checked, never over a file without --force" {
	s3_start
	events 200 | journal-append -q
	add_s3_target
	drain > /dev/null 2>&1
	run -0 --separate-stderr sluice snapshot restore s3 --to "$BATS_TEST_TMPDIR/restored.db"
	[[ "$stderr" == *"sha256 ok, integrity ok"* ]]
	[ "$(stat -c %a restored.db)" = 600 ]
	diff <(sqlite3 restored.db 'select seq, event_id, payload from events') <(sql 'select seq, event_id, payload from events')
	run -73 --separate-stderr sluice snapshot restore s3 --to "$BATS_TEST_TMPDIR/restored.db"
	[[ "$stderr" == *"never replaces a file without --force"* ]]
	run -0 --separate-stderr sluice snapshot restore s3 --to "$BATS_TEST_TMPDIR/restored.db" --force
	# without the journal (it is what was lost): --url and the keys
	mv "$SLUICE_DB" lost.db
	rm -f "$SLUICE_DB"-wal "$SLUICE_DB"-shm
	run -0 --separate-stderr sluice snapshot restore --url "$S3_URL" --s3-access-env S3_ACCESS \
		--s3-secret-env S3_SECRET --to "$SLUICE_DB"
	[ "$(sql 'select count(*) from events')" = 200 ]
	run -0 sluice snapshot list --url "$S3_URL" --s3-access-env S3_ACCESS --s3-secret-env S3_SECRET --json
	[ "$(echo "$output" | jq -r .seq)" = 200 ]
	s3_stop
}

@test "a corrupted snapshot is refused: sha256 mismatch, nothing written" {
	s3_start
	events 20 | journal-append -q
	add_s3_target
	drain > /dev/null 2>&1
	obj=$(ls "$S3_DATA"/snaps/backups/journal-*.db._S3rver_object)
	printf 'X' | dd of="$obj" bs=1 seek=5000 conv=notrunc 2>/dev/null
	run -65 --separate-stderr sluice snapshot restore s3 --to "$BATS_TEST_TMPDIR/r.db"
	[[ "$stderr" == *"does not match the manifest"* ]]
	[ ! -e r.db ]
	s3_stop
}

@test "a consistent snapshot while four appenders write" {
	s3_start
	add_s3_target
	for i in 1 2 3 4; do events 20000 "w$i" > "in$i"; done
	pids=()
	for i in 1 2 3 4; do
		journal-append -q --batch 200 < "in$i" &
		pids+=($!)
	done
	wait_until '[ "$(sqlite3 "$SLUICE_DB" "select count(*) from events" 2>/dev/null || echo 0)" -ge 5000 ]'
	run -0 --separate-stderr sluice snapshot push --force s3
	for pid in "${pids[@]}"; do wait "$pid"; done
	run -0 --separate-stderr sluice snapshot restore s3 --to "$BATS_TEST_TMPDIR/r.db"
	[ "$(sqlite3 r.db 'pragma integrity_check')" = ok ]
	n=$(sqlite3 r.db 'select count(*) from events')
	[ "$n" -ge 5000 ]
	# every event in the copy is in the live journal, byte for byte
	sqlite3 r.db 'select event_id, payload from events order by event_id' > snap
	sql 'select event_id, payload from events order by event_id' > live
	[ "$(comm -23 snap live | wc -l)" = 0 ]
	[ "$(sql 'select count(*) from events')" = 80000 ]
	s3_stop
}

@test "a stopped server: the lag and the failure show, emit still exits 0 with a warning; then it recovers" {
	s3_start
	port=$S3_PORT
	events 5 | journal-append -q
	add_s3_target
	drain > /dev/null 2>&1
	s3_stop
	run -0 --separate-stderr sluice emit <<< "$(events 3 late)"
	[[ "$stderr" == *"sluice: s3 is failing since"*"(connection); run 'sluice retry s3'"* ]]
	run -0 sluice status --json
	[ "$(echo "$output" | jq -c '.targets[0] | [.kind, .state, .snapshot.lag_events, .last_category]')" = '["snapshot","backing_off",3,"connection"]' ]
	run -1 --separate-stderr sluice status --check --max-snapshot-age 0s
	[[ "$stderr" == *"s3: the last good snapshot is"* ]]
	# the server is back: the next write's drain (after the backoff) catches up
	s3_start "$port"
	run -0 --separate-stderr sluice retry s3
	run -0 sluice status --json
	[ "$(echo "$output" | jq -c '.targets[0] | [.state, .snapshot.lag_events]')" = '["ok",0]' ]
	s3_stop
}

@test "--keep removes older snapshots after a good upload; the manifest lists what is kept" {
	s3_start
	add_s3_target --keep 2
	for i in 1 2 3 4; do
		events 1 "k$i" | journal-append -q
		drain > /dev/null 2>&1
	done
	[ "$(s3_objects | grep -c '^journal-')" = 2 ]
	[ "$(sql 'select count(*) from snapshots where deleted_at is null')" = 2 ]
	run -0 sluice snapshot list s3 --json
	[ "$(echo "$output" | jq -r .seq | paste -sd,)" = "4,3" ]
	s3_stop
}

@test "--min-interval spaces snapshots out" {
	s3_start
	# unsigned, so a clock an hour ahead does not upset the server
	sluice target add s3 "$S3_URL" --format snapshot --min-interval 1h
	events 1 | journal-append -q
	drain > /dev/null 2>&1
	events 1 b | journal-append -q
	drain > /dev/null 2>&1
	[ "$(sql 'select count(*) from snapshots')" = 1 ]
	SLUICE_NOW=$(( $(date +%s%3N) + 3600001 )) drain > /dev/null 2>&1
	[ "$(sql 'select count(*) from snapshots')" = 2 ]
	s3_stop
}

@test "a plain HTTP PUT endpoint (stub-receiver --accept-put): push, list, --keep, restore, with a token" {
	mkdir store
	export STORE_TOKEN=plain-secret
	stub_start --accept-put store --token-env STORE_TOKEN --request-log "$BATS_TEST_TMPDIR/requests.ndjson"
	base=http://127.0.0.1:$STUB_PORT/backups/host1
	sluice target add plain "$base" --format snapshot --auth-env STORE_TOKEN --keep 1 --gzip
	for i in 1 2; do
		events 3 "p$i" | journal-append -q
		run -0 --separate-stderr drain
	done
	# the newest snapshot and its manifest; --keep 1 deleted the first
	[ "$(cd store/backups/host1 && ls | sed 's/-[0-9T]*\.[0-9]*Z-/-STAMP-/' | paste -sd,)" = \
	  "journal-STAMP-6.db.gz,journal.latest.json" ]
	[ "$(jq -r .sha256 store/backups/host1/journal.latest.json)" = "$(sha256sum store/backups/host1/journal-*.db.gz | cut -d' ' -f1)" ]
	[ "$(jq -r 'select(.method == "DELETE") | .status' "$BATS_TEST_TMPDIR/requests.ndjson")" = 204 ]
	# every request carried the token (its value is never logged)
	[ "$(jq -r .authorization "$BATS_TEST_TMPDIR/requests.ndjson" | sort -u)" = present ]
	! grep -q plain-secret "$BATS_TEST_TMPDIR/requests.ndjson" "$SLUICE_DB"
	run -0 sluice snapshot list plain --json
	[ "$(echo "$output" | jq -r .seq)" = 6 ]
	run -0 --separate-stderr sluice snapshot restore plain --to "$BATS_TEST_TMPDIR/restored.db"
	[[ "$stderr" == *"sha256 ok, integrity ok"* ]]
	diff <(sqlite3 restored.db 'select seq, event_id, payload from events') <(sql 'select seq, event_id, payload from events')
	# the store refusing: the target backs off, as any delivery does
	port=$STUB_PORT
	stub_stop
	stub_start --accept-put store --token-env STORE_TOKEN --script 503 --port "$port"
	events 1 p3 | journal-append -q
	run -75 --separate-stderr drain
	[ "$(sql "select last_category from targets where name = 'plain'")" = server_error ]
	stub_stop
}

@test "keys come only from the named variables; never in argv, logs or the journal" {
	s3_start
	events 3 | journal-append -q
	export S3_SECRET_X=S3RVER S3_ACCESS_X=S3RVER
	sluice target add s3 "$S3_URL" --format snapshot --s3-access-env S3_ACCESS_X --s3-secret-env S3_SECRET_X
	unset S3_SECRET_X
	run -78 --separate-stderr sluice snapshot push s3
	[[ "$stderr" == *'$S3_SECRET_X is not set'* ]]
	export S3_SECRET_X=S3RVER
	run -0 --separate-stderr sluice snapshot -v push s3
	[[ "$stderr" != *"S3RVER"* ]]
	! grep -q S3RVER "$SLUICE_DB"
	s3_stop
}

@test "the SigV4 headers libcurl sends are the known answer" {
	command -v node > /dev/null
	# a receiver that records every request's headers and answers 200
	cat > capture.js <<'JS'
const http = require('http'), fs = require('fs');
const srv = http.createServer((req, res) => {
  let n = 0;
  req.on('data', c => { n += c.length; });
  req.on('end', () => {
    fs.appendFileSync(process.argv[2], JSON.stringify({method: req.method, url: req.url, headers: req.headers, bytes: n}) + '\n');
    res.writeHead(200, {'ETag': '"x"'});
    res.end();
  });
});
srv.listen(0, '127.0.0.1', () => fs.writeFileSync(process.argv[3], String(srv.address().port)));
setTimeout(() => process.exit(0), 60000);
JS
	node capture.js "$BATS_TEST_TMPDIR/captured" "$BATS_TEST_TMPDIR/port" 3>&- &
	track $!
	wait_until '[ -s port ]'
	events 2 | journal-append -q
	export AKID=AKIDEXAMPLE SECRET=wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
	sluice target add sig "http://127.0.0.1:$(cat port)/bucket/prefix" --format snapshot \
		--s3-region eu-west-1 --s3-access-env AKID --s3-secret-env SECRET
	run -0 --separate-stderr sluice snapshot push sig
	# the manifest PUT has a body we know: recompute its signature independently
	line=$(grep "latest.json" captured)
	body_hash=$(echo "$line" | jq -r '.headers["x-amz-content-sha256"]')
	date=$(echo "$line" | jq -r '.headers["x-amz-date"]')
	[[ "$date" =~ ^[0-9]{8}T[0-9]{6}Z$ ]]
	cat > sign.js <<'JS'
const c = require('crypto');
const [method, url, host, hash, date, region, secret, signed, ctype, len] = process.argv.slice(2);
const hdr = {'content-length': len, 'content-type': ctype, host: host, 'x-amz-content-sha256': hash, 'x-amz-date': date};
const names = signed.split(';');
const canon = [method, url, '', names.map(n => n + ':' + hdr[n] + '\n').join(''), signed, hash].join('\n');
const scope = `${date.slice(0, 8)}/${region}/s3/aws4_request`;
const sts = ['AWS4-HMAC-SHA256', date, scope, c.createHash('sha256').update(canon).digest('hex')].join('\n');
let k = 'AWS4' + secret;
for (const p of [date.slice(0, 8), region, 's3', 'aws4_request']) k = c.createHmac('sha256', k).update(p).digest();
console.log(c.createHmac('sha256', k).update(sts).digest('hex'));
JS
	auth=$(echo "$line" | jq -r .headers.authorization)
	signed=$(echo "$auth" | sed 's/.*SignedHeaders=\([^,]*\),.*/\1/')
	expected=$(node sign.js PUT "$(echo "$line" | jq -r .url)" "$(echo "$line" | jq -r .headers.host)" \
		"$body_hash" "$date" eu-west-1 "$SECRET" "$signed" application/json \
		"$(echo "$line" | jq -r .bytes)")
	[ "$auth" = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/${date:0:8}/eu-west-1/s3/aws4_request, SignedHeaders=$signed, Signature=$expected" ]
	[ "$signed" = "content-type;host;x-amz-content-sha256;x-amz-date" ]
	# the body hash is the body's: the signature covers the bytes sent
	[ "$body_hash" != UNSIGNED-PAYLOAD ]
	[ ${#body_hash} = 64 ]
	# and the secret itself never travels
	! grep -q wJalrXUtnFEMI captured
}

@test "two snapshots in one second with --keep 1: the manifest's object exists" {
	s3_start
	events 2 | journal-append -q
	add_s3_target --keep 1
	sluice snapshot push --force s3 2> /dev/null
	sluice snapshot push --force s3 2> /dev/null
	[ "$(s3_objects | grep -c '^journal-')" = 1 ]
	run -0 --separate-stderr sluice snapshot restore s3 --to "$BATS_TEST_TMPDIR/deep/new/r.db"
	[ "$(stat -c %a "$BATS_TEST_TMPDIR/deep/new")" = 700 ]
	s3_stop
}

@test "a snapshot target never holds up gc; rm forgets its snapshots" {
	s3_start
	stub_start
	events 3 | journal-append -q
	target_add prod "$STUB_URL"
	add_s3_target
	drain > /dev/null 2>&1
	run -0 --separate-stderr sluice gc --older-than 0s
	[ "$output" = 3 ]
	sluice target rm s3 2> /dev/null
	[ "$(sql 'select count(*) from snapshots')" = 0 ]
	stub_stop
	s3_stop
}

@test "restore --force over a journal takes its old write-ahead log away with it" {
	s3_start
	events 4 | journal-append -q
	add_s3_target
	drain > /dev/null 2>&1
	# a journal left by a crash, with pages still in its write-ahead log
	mkfifo hold
	sqlite3 live.db < hold > /dev/null &
	pid=$!
	track "$pid"
	exec 5> hold
	echo 'PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(a); INSERT INTO t VALUES (1);' >&5
	wait_until '[ -s live.db-wal ]'
	other=$BATS_TEST_TMPDIR/other.db
	cp live.db "$other"
	cp live.db-wal "$other-wal"
	exec 5>&-
	wait "$pid"
	run -0 --separate-stderr sluice snapshot restore s3 --to "$other" --force
	[ ! -e "$other-wal" ]
	[ "$(sqlite3 "$other" 'select count(*) from events')" = 4 ]
	s3_stop
}

@test "a target's kind never changes; snapshot options belong to snapshot targets" {
	s3_start
	add_s3_target
	target_add ev http://127.0.0.1:9/x
	run -0 --separate-stderr sluice target set s3 --keep 5 --min-interval 1m
	run -78 --separate-stderr sluice target set s3 --format batch
	[[ "$stderr" == *"is a snapshot target; its format cannot become batch"* ]]
	run -78 --separate-stderr sluice target set ev --keep 3
	run -78 --separate-stderr sluice target add other http://127.0.0.1:9/y --keep 3
	run -78 --separate-stderr sluice target set ev --format snapshot
	s3_stop
}

@test "a push that fails before uploading leaves no temporary copy behind" {
	s3_start
	events 50 | journal-append -q
	sluice target add s3 "$S3_URL" --format snapshot --s3-access-env NOT_SET_A --s3-secret-env NOT_SET_B
	run -78 --separate-stderr sluice snapshot push --force s3
	[ -z "$(find "$BATS_TEST_TMPDIR" -maxdepth 1 -name '.sluice-snapshot*')" ]
	s3_stop
}

@test "a journal whose name holds a space and a % sign: its keys are escaped in URLs, kept as names" {
	s3_start
	export SLUICE_DB="$BATS_TEST_TMPDIR/my journal%1.db"
	events 3 | journal-append -q
	add_s3_target
	run -0 --separate-stderr drain
	[ "$(s3_objects | grep -c '^my journal%1-.*-3\.db$')" = 1 ]
	s3_objects | grep -qx 'my journal%1.latest.json'
	run -0 sluice snapshot list s3 --json
	[[ "$(echo "$output" | jq -r .key)" == "my journal%1-"*"-3.db" ]]
	run -0 --separate-stderr sluice snapshot restore s3 --to "$BATS_TEST_TMPDIR/r.db"
	diff <(sqlite3 r.db 'select seq, event_id, payload from events') <(sqlite3 "$SLUICE_DB" 'select seq, event_id, payload from events')
	s3_stop
}
