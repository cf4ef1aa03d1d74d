-- ordertrail schema, version 4: owner epochs, which fence a stalled tracer's late writes
-- (docs/kafka.md "Fencing").

-- Every restore of open orders (a start, a takeover of partitions) claims the next epoch here
-- before it reads; the versions of what that tracer writes next carry the epoch in their high
-- bits (`version = epoch << 36 | counter`), so its rows replace those of every tracer that claimed
-- before it, whatever the clocks. One row a restore; never expires (the newest epoch must stay).
CREATE TABLE IF NOT EXISTS {database}.owner_epochs
(
    epoch UInt64,
    claimed_at DateTime64(3),
    owner String,
    partitions Array(UInt32)
)
ENGINE = MergeTree
ORDER BY epoch;
