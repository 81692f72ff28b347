-- RLHF runs (reward model, then policy optimisation against it) and the hand-off to the next
-- round: a successful run may generate new pairs with its adapter into a new campaign.

ALTER TABLE training_runs DROP CONSTRAINT training_runs_method_check;
ALTER TABLE training_runs ADD CONSTRAINT training_runs_method_check CHECK (method IN ('reward', 'dpo', 'rlhf'));
-- What a running run is doing now: reward, dpo, rlhf (the trainer steps) or generate.
ALTER TABLE training_runs ADD COLUMN phase TEXT NOT NULL DEFAULT '';
-- The campaign of new pairs the run's adapter generated (hand-off to the next round).
ALTER TABLE training_runs ADD COLUMN next_campaign_id BIGINT REFERENCES campaigns (id);

-- Lineage the other way: the run whose adapter generated a campaign's responses.
ALTER TABLE campaigns ADD COLUMN source_run_id BIGINT REFERENCES training_runs (id);
