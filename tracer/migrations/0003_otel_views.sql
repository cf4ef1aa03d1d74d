-- ordertrail schema, version 3: otel_traces and otel_traces_trace_id_ts become plain views over hops.
--
-- Until now every hop was written twice more by materialized views: a span row in otel_traces
-- (Map columns, five bloom filter indexes, a tokenbf index) and a trace id -> time range row in
-- otel_traces_trace_id_ts. That copy was a quarter of Store.write when measured (200k events), and
-- more in background merges (six skip indexes rebuilt), for tables that only Grafana's trace
-- view reads, one trace at a time. hops already holds every event (the views were
-- filled from it and nothing else), so dropping the copies loses nothing: the views compute the
-- same columns, with the same expressions, when a query reads them.
--
-- Deliberate deviation from the OpenTelemetry Collector ClickHouse exporter: the column names and
-- types are the exporter's (Grafana's trace view and its queries work unchanged), the engine is a
-- view. Spans come out as hops stores them: a re-delivered event is one row once merged, and
-- queries that must not see it twice before then add `SETTINGS final = 1` (FINAL on a view is
-- ignored; the setting reaches hops). A trace is found by the bloom filter index on hops.trace_id.

-- The trace id lookup of Grafana's trace query (WHERE TraceId = …) reads a few granules, not all.
ALTER TABLE {database}.hops ADD INDEX IF NOT EXISTS idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1;

ALTER TABLE {database}.hops MATERIALIZE INDEX idx_trace_id;

DROP VIEW IF EXISTS {database}.otel_traces_trace_id_ts_mv;

DROP VIEW IF EXISTS {database}.otel_traces_from_hops_mv;

DROP TABLE IF EXISTS {database}.otel_traces_trace_id_ts;

DROP TABLE IF EXISTS {database}.otel_traces;

-- The exporter's traces table (exporter/clickhouseexporter, internal/sqltemplates/traces_table.sql),
-- column for column and type for type, computed from hops: every hop is one span.
CREATE VIEW IF NOT EXISTS {database}.otel_traces AS SELECT
    toDateTime64(ts, 9) AS Timestamp,
    trace_id AS TraceId,
    if(span_id != '', span_id, lower(hex(reinterpretAsFixedString(sipHash64(event_id))))) AS SpanId,
    parent_span_id AS ParentSpanId,
    '' AS TraceState,
    hop AS SpanName,
    CAST('Internal', 'LowCardinality(String)') AS SpanKind,
    CAST(if(service != '', toString(service), 'unknown_service'), 'LowCardinality(String)') AS ServiceName,
    CAST(
        map('service.name', if(service != '', toString(service), 'unknown_service')),
        'Map(LowCardinality(String), String)'
    ) AS ResourceAttributes,
    'ordertrail' AS ScopeName,
    '' AS ScopeVersion,
    CAST(
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
        ),
        'Map(LowCardinality(String), String)'
    ) AS SpanAttributes,
    toUInt64(0) AS Duration,
    CAST(multiIf(status = 'error', 'Error', status = 'ok', 'Ok', 'Unset'), 'LowCardinality(String)') AS StatusCode,
    '' AS StatusMessage,
    CAST([], 'Array(DateTime64(9))') AS `Events.Timestamp`,
    CAST([], 'Array(LowCardinality(String))') AS `Events.Name`,
    CAST([], 'Array(Map(LowCardinality(String), String))') AS `Events.Attributes`,
    CAST([], 'Array(String)') AS `Links.TraceId`,
    CAST([], 'Array(String)') AS `Links.SpanId`,
    CAST([], 'Array(String)') AS `Links.TraceState`,
    CAST([], 'Array(Map(LowCardinality(String), String))') AS `Links.Attributes`,
    arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(ResourceAttributes, 'Array(Tuple(String, String))')) AS ResourceAttributeItems,
    arrayMap(kv -> concat(kv.1, '=', kv.2), CAST(SpanAttributes, 'Array(Tuple(String, String))')) AS SpanAttributeItems
FROM {database}.hops;

-- The exporter's trace id -> time range lookup, which Grafana uses to narrow a trace query.
CREATE VIEW IF NOT EXISTS {database}.otel_traces_trace_id_ts AS SELECT
    trace_id AS TraceId,
    CAST(min(toDateTime(ts)), 'SimpleAggregateFunction(min, DateTime)') AS Start,
    CAST(max(toDateTime(ts)), 'SimpleAggregateFunction(max, DateTime)') AS End
FROM {database}.hops
WHERE trace_id != ''
GROUP BY trace_id;
