-- The pgbench baseline's table: a bigserial key and a small payload, like a
-- command row without the bookkeeping.
CREATE TABLE bench_insert (
    id         bigserial PRIMARY KEY,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
