#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars from Maven Central once, into the cache.
set -euo pipefail
source "$(dirname "$0")/common.sh"
if [ -f "$KAFKA_LIBS/.complete" ]; then exit 0; fi
log "fetching Apache Kafka $KAFKA_VERSION broker jars from Maven Central into $KAFKA_LIBS"
command -v mvn >/dev/null || { log "mvn (Apache Maven) is required to fetch Kafka"; exit 1; }
rm -rf "$KAFKA_LIBS"
mvn -B -q -f "$PRECIS_ROOT/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS"
touch "$KAFKA_LIBS/.complete"
log "kafka: $(ls "$KAFKA_LIBS" | wc -l) jars"
