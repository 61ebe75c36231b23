#!/bin/bash
# Précis Kafka image entrypoint: one Apache Kafka node in KRaft mode (broker + controller in one
# JVM), storage formatted on the first start. Contract (docker/kafka.Dockerfile):
#   KAFKA_NODE_ID          node.id and the single controller voter            (default 1)
#   KAFKA_ADVERTISED_HOST  host clients are told to connect to (the Service)  (default: hostname -f)
#   KAFKA_PORT             PLAINTEXT listener port, on 0.0.0.0                (default 9092)
#   KAFKA_CONTROLLER_PORT  CONTROLLER listener port                           (default 9093)
#   KAFKA_CLUSTER_ID       used only when formatting an empty data dir        (default: a random id
#                          made once and kept in the data dir, so it is fixed per data dir)
#   KAFKA_DATA_DIR         log.dirs                                           (default /var/lib/kafka)
#   KAFKA_HEAP_OPTS        JVM heap                                           (default -Xmx512m)
#   KAFKA_JVM_OPTS         extra JVM flags                                    (default empty)
#   KAFKA_CFG_<NAME>       any other server property: KAFKA_CFG_NUM_PARTITIONS=3 -> num.partitions=3
# Writes only under KAFKA_DATA_DIR and /tmp (generated server.properties, JVM temp files), so it
# runs with a read-only root filesystem.
set -euo pipefail

node_id="${KAFKA_NODE_ID:-1}"
host="${KAFKA_ADVERTISED_HOST:-$(hostname -f 2>/dev/null || hostname)}"
port="${KAFKA_PORT:-9092}"
cport="${KAFKA_CONTROLLER_PORT:-9093}"
data="${KAFKA_DATA_DIR:-/var/lib/kafka}"
heap="${KAFKA_HEAP_OPTS:--Xmx512m}"
cp="/opt/kafka/libs/*"
conf_dir="${TMPDIR:-/tmp}/kafka"
conf="$conf_dir/server.properties"
mkdir -p "$conf_dir" "$data"

# The controller quorum is this node alone, reached over loopback: nothing outside the pod needs
# the controller port, and a static voter set needs no --standalone/--initial-controllers dance.
cat > "$conf" <<PROPS
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$node_id@127.0.0.1:$cport
listeners=PLAINTEXT://0.0.0.0:$port,CONTROLLER://:$cport
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
# KAFKA_CFG_FOO_BAR=x -> foo.bar=x (appended: the last occurrence of a key wins in Java Properties).
while IFS='=' read -r name value; do
  key="$(printf '%s' "${name#KAFKA_CFG_}" | tr '[:upper:]_' '[:lower:].')"
  printf '%s=%s\n' "$key" "$value" >> "$conf"
done < <(env | grep '^KAFKA_CFG_' || true)

# shellcheck disable=SC2206 # word splitting of the JVM option strings is intended
jvm=($heap -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
     -Djava.io.tmpdir="${TMPDIR:-/tmp}" -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties
     ${KAFKA_JVM_OPTS:-})

if [[ ! -f "$data/meta.properties" ]]; then
  id_file="$data/.precis-cluster-id"
  cluster_id="${KAFKA_CLUSTER_ID:-}"
  if [[ -z "$cluster_id" ]]; then
    [[ -s "$id_file" ]] || java -cp "$cp" kafka.tools.StorageTool random-uuid > "$id_file"
    cluster_id="$(cat "$id_file")"
  fi
  echo "kafka: formatting $data (cluster id $cluster_id, node $node_id)"
  java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$cluster_id" -c "$conf" --ignore-formatted
fi
echo "kafka: node $node_id, PLAINTEXT://0.0.0.0:$port advertised as $host:$port, controller :$cport, data $data"
exec java "${jvm[@]}" -cp "$cp" kafka.Kafka "$conf"
