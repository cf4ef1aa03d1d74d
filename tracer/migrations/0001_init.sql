-- ordertrail schema, version 1. `{database}` is replaced by the store's database name.
-- Statements are separated by a semicolon at the end of a line; each one is idempotent.

-- Hop events by order id, typed, for SQL and dashboards, and the source of otel_traces.
-- A re-delivered event (same event_id) is the same row, merged away in the background.
CREATE TABLE IF NOT EXISTS {database}.hops
(
    order_id String CODEC(ZSTD(1)),
    event_id String CODEC(ZSTD(1)),
    ts DateTime64(3) CODEC(Delta, ZSTD(1)),
    hop LowCardinality(String),
    trace_id String CODEC(ZSTD(1)),
    span_id String CODEC(ZSTD(1)),
    parent_span_id String CODEC(ZSTD(1)),
    service LowCardinality(String),
    status LowCardinality(String),
    journey LowCardinality(String),
    customer_id String CODEC(ZSTD(1)),
    attrs Map(String, String) CODEC(ZSTD(1)),
    ingested_at DateTime64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (order_id, event_id)
SETTINGS index_granularity = 1024;

-- The OpenTelemetry Collector ClickHouse exporter's traces table (exporter/clickhouseexporter,
-- internal/sqltemplates/traces_table.sql), column for column, so Grafana's ClickHouse trace view
-- reads hops as spans. Deviation, allowed by the exporter's `table_engine` option: the engine is
-- ReplacingMergeTree and the sorting key ends with (TraceId, SpanId), so a re-delivered hop merges
-- into one span; the primary key is the exporter's.
CREATE TABLE IF NOT EXISTS {database}.otel_traces
(
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested
    (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested
    (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(ResourceAttributes, 'Array(Tuple(String, String))')),
    SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(SpanAttributes, 'Array(Tuple(String, String))')),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp, TraceId, SpanId)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

-- The exporter's trace id -> time range lookup, which Grafana uses to narrow a trace query.
CREATE TABLE IF NOT EXISTS {database}.otel_traces_trace_id_ts
(
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
)
ENGINE = AggregatingMergeTree
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_traces_trace_id_ts_mv
TO {database}.otel_traces_trace_id_ts
AS SELECT
    TraceId,
    min(Timestamp) AS Start,
    max(Timestamp) AS End
FROM {database}.otel_traces
WHERE TraceId != ''
GROUP BY TraceId;

-- Every hop becomes one span: never inserted from Python, so the two tables cannot disagree.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.otel_traces_from_hops_mv
TO {database}.otel_traces
AS SELECT
    toDateTime64(ts, 9) AS Timestamp,
    trace_id AS TraceId,
    if(span_id != '', span_id, lower(hex(reinterpretAsFixedString(sipHash64(event_id))))) AS SpanId,
    parent_span_id AS ParentSpanId,
    '' AS TraceState,
    hop AS SpanName,
    'Internal' AS SpanKind,
    if(service != '', service, 'unknown_service') AS ServiceName,
    map('service.name', if(service != '', toString(service), 'unknown_service')) AS ResourceAttributes,
    'ordertrail' AS ScopeName,
    '' AS ScopeVersion,
    mapUpdate(
        CAST(attrs, 'Map(LowCardinality(String), String)'),
        mapFilter(
            (k, v) -> v != '',
            map(
                'app.order.id', order_id,
                'app.order.hop', toString(hop),
                'app.journey', toString(journey),
                'app.customer.id', customer_id,
                'app.event.id', event_id
            )
        )
    ) AS SpanAttributes,
    toUInt64(0) AS Duration,
    multiIf(status = 'error', 'Error', status = 'ok', 'Ok', 'Unset') AS StatusCode,
    '' AS StatusMessage
FROM {database}.hops;

-- Latest state of every order the tracer has seen: the newest version wins.
CREATE TABLE IF NOT EXISTS {database}.orders
(
    order_id String CODEC(ZSTD(1)),
    `partition` UInt32,
    journey LowCardinality(String),
    trace_id String CODEC(ZSTD(1)),
    customer_id String CODEC(ZSTD(1)),
    status LowCardinality(String),
    hops Array(LowCardinality(String)),
    hop_ts Array(Int64) CODEC(ZSTD(1)),
    implied Array(Bool),
    first_ts DateTime64(3) CODEC(Delta, ZSTD(1)),
    last_ts DateTime64(3) CODEC(Delta, ZSTD(1)),
    next_hop LowCardinality(String),
    next_due DateTime64(3) CODEC(Delta, ZSTD(1)),
    `open` Bool,
    seen_mask UInt64,
    implied_mask UInt64,
    raised_mask UInt64,
    eids Array(UInt64) CODEC(ZSTD(1)),
    pending Array(Tuple(hop String, ts Int64, error Bool)),
    version UInt64,
    INDEX idx_customer_id customer_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version)
ORDER BY order_id
SETTINGS index_granularity = 1024;

-- Findings; identity (order_id, hop, kind), the newest version wins (open, then resolved).
CREATE TABLE IF NOT EXISTS {database}.findings
(
    order_id String CODEC(ZSTD(1)),
    hop LowCardinality(String),
    kind LowCardinality(String),
    journey LowCardinality(String),
    `after` LowCardinality(String),
    due_at DateTime64(3) CODEC(Delta, ZSTD(1)),
    detected_at DateTime64(3) CODEC(Delta, ZSTD(1)),
    status LowCardinality(String),
    resolved_at Nullable(DateTime64(3)),
    late_by_ms Nullable(Int64),
    trace_id String CODEC(ZSTD(1)),
    customer_id String CODEC(ZSTD(1)),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (order_id, hop, kind)
SETTINGS index_granularity = 1024;

-- Everything about an order, each record whole as JSON (ordertrail's msgspec structs), for the
-- lookup: one point read of one table. In ClickHouse a point read costs ~1 ms per part and column
-- read, so reading the typed tables above took ~3x longer. kind 'event': id is the event_id;
-- 'order': the snapshot, id ''; 'finding': id is hop/kind. The newest version of each wins.
-- Small granules and compressed blocks: a lookup decompresses a few KiB per part, not 64 KiB+.
CREATE TABLE IF NOT EXISTS {database}.trail
(
    order_id String CODEC(ZSTD(1)),
    kind Enum8('order' = 0, 'event' = 1, 'finding' = 2),
    id String CODEC(ZSTD(1)),
    version UInt64,
    ts DateTime64(3) CODEC(Delta, ZSTD(1)),
    doc String CODEC(ZSTD(1))
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (order_id, kind, id)
SETTINGS index_granularity = 256, min_compress_block_size = 4096, max_compress_block_size = 16384;
