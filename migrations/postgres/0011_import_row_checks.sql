-- A million-pair import spent two fifths of its time in foreign-key checks: one trigger
-- per row for each response's prompt and each pair's prompt and two responses (3M checks,
-- measured: 69 s with them, 39 s without for the rows of 1,000,000 pairs). Those rows are
-- written only by the import, in one transaction that has just inserted or found every row
-- they point to, and prompts and responses are never deleted; so the checks can never fail
-- and are dropped here. The pair's campaign keeps its key (a campaign can be deleted), and
-- SQLite keeps all of them (its checks are cheap: it imports a million pairs in under a
-- minute with them). (0011 is Postgres only, like 0005.)
ALTER TABLE responses DROP CONSTRAINT responses_prompt_id_fkey;
ALTER TABLE pairs DROP CONSTRAINT pairs_prompt_id_fkey;
ALTER TABLE pairs DROP CONSTRAINT pairs_response_a_id_fkey;
ALTER TABLE pairs DROP CONSTRAINT pairs_response_b_id_fkey;
