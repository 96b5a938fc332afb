-- The text of a model answer still being streamed, one row per session at most: replaced as it
-- grows, deleted in the transaction that appends the session's next event. Not an event: outside
-- the hash chain, never kept, so `follow` and the console can show the reasoning as it is written.
CREATE TABLE drafts (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id),
    -- The seq of the session's last event when the draft was written: a reader that has not yet
    -- read that far reads the events first.
    after_seq  BIGINT  NOT NULL,
    turn       BIGINT NOT NULL,
    text       TEXT NOT NULL,
    at         TEXT NOT NULL
);
