-- The caller of `next`, a vote or a skip, checked in the statement that does the work.
--
-- The server looked the caller's token or session up in one statement and then called the
-- vote function in another: two round trips, each waiting for a pooled connection. A second
-- lookup per request cost 10% of the vote rate and 20% of a fresh `next`'s latency on the
-- bench of BENCHMARKS.md, so the lookup is worth a round trip of its own. The server now
-- passes the credential's kind and hash, and the call reads
-- `pairwise_next($1, pairwise_rater(kind, hash, now), …)`: the argument is evaluated once,
-- before the function runs, and a credential that is not a live session or unrevoked token
-- of an active user fails the statement with PW401 before anything is written. The checks
-- are those of `lookup_caller` in server/src/accounts/sessions.rs; keep the two in step.
--
-- (A set-returning SQL function joined LATERAL to the vote function was tried first and was
-- slower than the two round trips: see BENCHMARKS.md.)

CREATE FUNCTION pairwise_rater(p_kind TEXT, p_hash TEXT, p_now BIGINT)
RETURNS BIGINT
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_user BIGINT;
BEGIN
    IF p_kind = 'token' THEN
        SELECT u.id INTO v_user FROM api_tokens t JOIN users u ON u.id = t.user_id
        WHERE t.token_hash = p_hash AND t.revoked_at IS NULL AND u.active = 1;
    ELSIF p_kind = 'session' THEN
        SELECT u.id INTO v_user FROM sessions s JOIN users u ON u.id = s.user_id
        WHERE s.token_hash = p_hash AND s.expires_at > p_now AND u.active = 1;
    END IF;
    IF v_user IS NULL THEN
        RAISE EXCEPTION 'not signed in' USING ERRCODE = 'PW401';
    END IF;
    RETURN v_user;
END
$$;
