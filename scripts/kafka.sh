#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft: broker + controller in one JVM), data under $PRECIS_VAR_DIR/kafka.
set -euo pipefail
source "$(dirname "$0")/common.sh"
"$PRECIS_ROOT/scripts/fetch_kafka.sh"
data="$PRECIS_VAR_DIR/kafka"
mkdir -p "$data"
conf="$PRECIS_VAR_DIR/kafka-server.properties"
cat > "$conf" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$PRECIS_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PRECIS_KAFKA_PORT,CONTROLLER://127.0.0.1:$PRECIS_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PRECIS_KAFKA_PORT
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
cp="$KAFKA_LIBS/*"
jvm=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
     "-Dlog4j2.configurationFile=$PRECIS_ROOT/scripts/kafka/log4j2.properties")
if [ ! -f "$data/meta.properties" ]; then
  log "kafka: formatting storage in $data (once)"
  java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid)" -c "$conf" >/dev/null
fi
exec java "${jvm[@]}" -cp "$cp" kafka.Kafka "$conf"
