-- Estimated model spend per session, in US dollars (a projection of llm_response events).
ALTER TABLE sessions ADD COLUMN cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0;
