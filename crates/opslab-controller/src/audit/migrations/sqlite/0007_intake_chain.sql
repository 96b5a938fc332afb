-- The intake's decisions join the hash chain: each row has its place in the intake's chain (seq)
-- and its link (hash over the link before and the row's content), as a session's events do.
-- Rows recorded before this migration have neither, and stay outside the chain.
ALTER TABLE intake_events ADD COLUMN seq INTEGER;
ALTER TABLE intake_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX intake_events_by_seq ON intake_events (seq);
