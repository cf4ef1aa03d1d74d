-- ordertrail schema, version 2: stitching re-keyed orders (docs/stitching.md).

-- Other keys of orders (a payment id, a shipment id): value of key -> its order. The stitcher
-- re-keys events reported under them, and the lookup finds an order by any of its keys. The
-- newest link of a (value, key) wins.
CREATE TABLE IF NOT EXISTS {database}.order_keys
(
    value String CODEC(ZSTD(1)),
    key LowCardinality(String),
    order_id String CODEC(ZSTD(1)),
    trace_id String CODEC(ZSTD(1)),
    ts DateTime64(3) CODEC(Delta, ZSTD(1)),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (value, key)
SETTINGS index_granularity = 1024;

-- Events reported under another key whose link had not arrived yet, kept so that a restart
-- loses none of them; `done` marks the newest version of one that was linked or reported.
CREATE TABLE IF NOT EXISTS {database}.stitch_waiting
(
    key LowCardinality(String),
    value String CODEC(ZSTD(1)),
    event_id String CODEC(ZSTD(1)),
    `partition` UInt32,
    `offset` UInt64,
    since Int64,
    doc String CODEC(ZSTD(1)),
    done Bool,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (key, value, event_id)
SETTINGS index_granularity = 1024;
