#!/bin/bash
# Creates ordertrail's topics (CONTRACT §6) if they do not exist. Run once per Kafka cluster, by
# the compose file's kafka-topics service and the Kubernetes Job kafka-topics.
# BOOTSTRAP: host:port; HOPS_PARTITIONS: partitions of ordertrail.hops (the most tracer
# processes that can share the work); REPLICATION_FACTOR: 1 on one broker, 3 in production.
set -euo pipefail
: "${BOOTSTRAP:?host:port of a broker}" "${HOPS_PARTITIONS:=8}" "${REPLICATION_FACTOR:=1}"
topics=/opt/kafka/bin/kafka-topics.sh
create() {  # topic partitions [--config k=v ...]
  local topic=$1 partitions=$2
  shift 2
  "$topics" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "$topic" \
    --partitions "$partitions" --replication-factor "$REPLICATION_FACTOR" "$@"
}
min_isr=$(( REPLICATION_FACTOR > 1 ? 2 : 1 ))
# Keyed by order id: the partition decides which tracer owns an order, so never shrink it.
create ordertrail.hops "$HOPS_PARTITIONS" --config min.insync.replicas="$min_isr" --config retention.ms=604800000
create ordertrail.deadletter 1 --config min.insync.replicas="$min_isr" --config retention.ms=2592000000
create ordertrail.findings "$HOPS_PARTITIONS" --config min.insync.replicas="$min_isr" --config retention.ms=604800000
"$topics" --bootstrap-server "$BOOTSTRAP" --describe --topic ordertrail.hops
