-- Why a session stands where it does, in words (the model API being retried, the cause of a
-- failure), and the retry and cancel requests (annotations) the Incident carried when it started:
-- a request is honoured once, by the first session that sees it change.
ALTER TABLE sessions ADD COLUMN message TEXT;
ALTER TABLE sessions ADD COLUMN retry_request TEXT;
ALTER TABLE sessions ADD COLUMN cancel_request TEXT;
