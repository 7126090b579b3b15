# shellcheck shell=bash
# POST /v1/sessions/{id}/fork, sourced by test/suites/30-edge (its req,
# jb, hdr, check, is_problem, sql, wait_sql, tokens ACME, UMB, and a
# running edge with the embedded cell).  A session with two completed
# message commands is forked at several points; each fork's replayed
# conversation equals the source's at the seq the answer names.  Bad
# bodies, another tenant's session and the wrong method change nothing.

echo "== fork a session (POST /v1/sessions/{id}/fork)"
req POST /v1/sessions "$ACME" '{"metadata":{"purpose":"fork"},"policy":{"k":1}}'
FP=$(jb .id)
for t in one two; do
	req POST "/v1/sessions/$FP/commands" "$ACME" "{\"type\":\"message\",\"payload\":{\"text\":\"$t\"}}"
	FC=$(jb .id)
	check "fork: the source's command '$t' completes" \
		wait_sql "SELECT status = 'completed' FROM nadi.command_inbox WHERE command_id = $FC"
done
# seqs are stable only once the cell has let go of the finished commands
wait_sql "SELECT NOT EXISTS (SELECT 1 FROM nadi.command_inbox WHERE session_id = '$FP' AND status IN ('queued', 'running'))" >/dev/null
FDONE1=$(sql "SELECT min(seq) FROM nadi.events WHERE session_id = '$FP' AND kind = 'command.completed'")
FSTART2=$(sql "SELECT max(seq) FROM nadi.events WHERE session_id = '$FP' AND kind = 'command.started'")
FLAST=$(sql "SELECT last_seq FROM nadi.sessions WHERE session_id = '$FP'")
# same_conversation FORK SEQ: the fork's replayed messages are the source's at SEQ
same_conversation() {
	test "$(sql "SELECT nadi.session_replay('$1')->'messages' = nadi.session_replay('$FP', $2)->'messages'
	             AND jsonb_array_length(nadi.session_replay('$1')->'messages') = jsonb_array_length(nadi.session_replay('$FP', $2)->'messages')")" = t
}
for at in 1 "$FDONE1" "$FSTART2" "$FLAST"; do
	req POST "/v1/sessions/$FP/fork" "$ACME" "{\"at_seq\": $at}"
	FK=$(jb .id)
	FSEQ=$(jb .fork.seq)
	check "fork at $at: 201, a new session of the tenant with the source's metadata and policy" \
		test "$ST:$(jb .tenant_id):$(jb .state):$(jb .metadata.purpose):$(jb .policy.k):$(jb .fork.parent_session_id):$(jb .fork.at_seq)" = "201:acme:pending:fork:1:$FP:$at"
	check "fork at $at: Location names the new session" test "$(hdr Location)" = "/v1/sessions/$FK"
	check "fork at $at: used seq $FSEQ (at most $at; a running command's start moves back)" \
		test "$FSEQ" -le "$at" -a "$FK" != "$FP"
	check "fork at $at: its conversation is the source's at seq $FSEQ" same_conversation "$FK" "$FSEQ"
	req GET "/v1/sessions/$FK/events" "$ACME"
	check "fork at $at: its log starts with session.forked" \
		test "$ST:$(jb '.events[0].kind'):$(jb '.events[0].payload.seq')" = "200:session.forked:$FSEQ"
done
check "a fork at the start of a command moves back to before it" \
	test "$(sql "SELECT seq FROM nadi.session_forks WHERE parent_session_id = '$FP' AND at_seq = $FSTART2")" = "$((FSTART2 - 1))"
req POST "/v1/sessions/$FP/fork" "$ACME"
check "no body: the latest point (nothing runs)" \
	test "$ST:$(jb '.fork.seq == .fork.at_seq'):$(jb ".fork.at_seq >= $FLAST")" = "201:true:true"
FK=$(jb .id)
req POST "/v1/sessions/$FP/fork" "$ACME" '{"at_seq": null}'
check "at_seq null: the latest point" test "$ST:$(jb ".fork.seq >= $FLAST")" = "201:true"
# the fork goes on by itself; the source does not see it
req POST "/v1/sessions/$FK/commands" "$ACME" '{"type":"message","payload":{"text":"branch"}}'
FC=$(jb .id)
check "the fork runs a command of its own" \
	wait_sql "SELECT status = 'completed' AND result->>'text' = 'You said: branch' FROM nadi.command_inbox WHERE command_id = $FC"
check "the fork's conversation: the source's, then its own" \
	test "$(sql "SELECT jsonb_agg(m->>'content') FROM jsonb_array_elements(nadi.session_replay('$FK')->'messages') m")" = '["one", "You said: one", "two", "You said: two", "branch", "You said: branch"]'
check "the source is untouched by the fork's command" \
	test "$(sql "SELECT count(*) FROM nadi.events WHERE session_id = '$FP' AND payload::text LIKE '%branch%'")" = 0

# attacks and bad input: nothing written
FCOUNT="SELECT (SELECT count(*) FROM nadi.sessions) || '/' || (SELECT count(*) FROM nadi.session_forks)"
FBEFORE=$(sql "$FCOUNT")
req POST "/v1/sessions/$FP/fork" "$UMB" '{"at_seq": 1}'
is_problem 404 session_not_found "another tenant's session cannot be forked (nor seen)"
req POST "/v1/sessions/$FP/fork" "" '{"at_seq": 1}'
check "fork without a token: 401" test "$ST" = 401
req POST /v1/sessions/00000000-0000-0000-0000-000000000000/fork "$ACME" '{}'
is_problem 404 session_not_found "fork of an unknown session"
req POST /v1/sessions/not-a-uuid/fork "$ACME" '{}'
is_problem 400 invalid_session_id "fork of a malformed session id"
for bad in '"3"' 0 -1 1.5 true '[1]' '{"n":1}' 99999999999999999999; do
	req POST "/v1/sessions/$FP/fork" "$ACME" "{\"at_seq\": $bad}"
	if [ "$bad" = 99999999999999999999 ]; then
		check "at_seq $bad: 400" test "$ST" = 400
	else
		is_problem 400 invalid_field "at_seq $bad"
	fi
done
req POST "/v1/sessions/$FP/fork" "$ACME" "{\"at_seq\": $((FLAST + 1))}"
is_problem 400 invalid_parameter "at_seq beyond the log"
check "... and the problem says where the log ends" grep -q "numbered 1 to $FLAST" "$B"
req POST "/v1/sessions/$FP/fork" "$ACME" '{"at_seq": 9223372036854775807}'
is_problem 400 invalid_parameter "at_seq the largest bigint"
req POST "/v1/sessions/$FP/fork" "$ACME" '{"at": 1}'
is_problem 400 unknown_field "fork: an unknown field"
req POST "/v1/sessions/$FP/fork" "$ACME" '{"at_seq": '
is_problem 400 invalid_json "fork: malformed JSON"
req POST "/v1/sessions/$FP/fork" "$ACME" "" -H 'Content-Type: text/plain' --data-binary '{}'
is_problem 415 unsupported_media_type "fork: wrong content type"
req GET "/v1/sessions/$FP/fork" "$ACME"
is_problem 405 method_not_allowed "GET /fork"
check "405 names POST" test "$(hdr Allow)" = "POST"
check "no bad fork wrote anything" test "$(sql "$FCOUNT")" = "$FBEFORE"
