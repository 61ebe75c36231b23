#!/usr/bin/env bash
# Fetch the upstream CRDs the chart's custom resources need, from package registries only
# (no container registry, no GitHub), into $PRECIS_CACHE/k8s/crds/<project>-<version>/.
# Idempotent: a directory with its .complete stamp is reused as it is. Nothing goes into git.
#
#   KEDA                 Go module github.com/kedacore/keda/v2 (Go module proxy): config/crd/bases/*.yaml
#   prometheus-operator  Go module github.com/prometheus-operator/prometheus-operator: example/prometheus-operator-crd/*.yaml
#   Strimzi              Maven Central ships no CRD YAML (io.strimzi:api jar has only classes), so the
#                        CRDs are generated exactly as Strimzi's own build does (api/pom.xml, execution
#                        generate-crd-co-install-v1): io.strimzi:crd-generator's CrdGenerator run over the
#                        io.strimzi:api classes, same arguments, same file names. For 1.2.0 the output is
#                        byte-identical to packaging/install/cluster-operator/04x-Crd-*.yaml of the tag.
#                        CrdGenerator 1.x is Java 21 bytecode: needs java >= 21 ($STRIMZI_JAVA, or found
#                        on PATH / under /usr/lib/jvm).
#
# Writes $PRECIS_CACHE/k8s/crds/index.json (project -> version, dir, source, files) for
# deploy/k8s_dry_run.py. Usage: bash scripts/k8s/crds.sh   (PRECIS_CRDS_FORCE=1 refetches)
set -euo pipefail

export PATH="/usr/local/go/bin:$PATH"
source "$(dirname "${BASH_SOURCE[0]}")/../cache.sh"
CRDS_HOME="$PRECIS_CACHE/k8s/crds"

# Pinned versions (all exist on the registries: `go list -m -versions`, Maven Central metadata).
KEDA_VERSION="${KEDA_VERSION:-v2.21.0}"                 # keda.sh/v1alpha1
PROM_OPERATOR_VERSION="${PROM_OPERATOR_VERSION:-v0.85.0}" # monitoring.coreos.com/v1
STRIMZI_VERSION="${STRIMZI_VERSION:-1.2.0}"             # kafka.strimzi.io/v1 only (1.0 removed v1beta2)

log() { printf '\033[1m[crds]\033[0m %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$CRDS_HOME"
t0=$(date +%s)

is_done() { [[ "${PRECIS_CRDS_FORCE:-0}" != 1 && -f "$1/.complete" ]]; }

finish_dir() {   # dir source-description
  local dir="$1" src="$2" n
  n=$(find "$dir" -maxdepth 1 -name '*.yaml' | wc -l)
  (( n > 0 )) || die "no CRD YAML ended up in $dir"
  printf '%s\n' "$src" > "$dir/SOURCE"
  (cd "$dir" && sha256sum ./*.yaml > SHA256SUMS)
  touch "$dir/.complete"
}

# --- Go modules (Go module proxy, `go mod download`) ----------------------------------------
go_module_crds() {   # project module version subdir
  local project="$1" module="$2" version="$3" sub="$4"
  local dir="$CRDS_HOME/$project-$version"
  if is_done "$dir"; then log "$project $version: cached ($dir)"; return; fi
  command -v go >/dev/null || die "go is not installed (needed to fetch $module from the Go module proxy)"
  log "$project $version: go mod download $module@$version"
  local json moddir
  # Outside any module so the main module's go.mod (if any) is not touched.
  json=$(cd /tmp && GOFLAGS=-mod=mod GO111MODULE=on go mod download -json "$module@$version") \
    || die "go mod download $module@$version failed: $json"
  moddir=$(printf '%s' "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or "")')
  [[ -n "$moddir" && -d "$moddir/$sub" ]] || die "$module@$version has no $sub (module dir: '$moddir')"
  rm -rf "$dir"; mkdir -p "$dir"
  cp "$moddir/$sub"/*.yaml "$dir/"
  chmod u+w "$dir"/*.yaml        # the module cache is read-only
  finish_dir "$dir" "Go module proxy: $module@$version, $sub/*.yaml"
}

# --- Strimzi (Maven Central, mvn) ------------------------------------------------------------
find_java21() {
  local c v
  for c in ${STRIMZI_JAVA:-} "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
    [[ -n "$c" && -x "$c" ]] || continue
    v=$("$c" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/{print $2; exit}')
    [[ "${v%%.*}" =~ ^[0-9]+$ ]] && (( ${v%%.*} >= 21 )) && { echo "$c"; return 0; }
  done
  return 1
}

strimzi_crds() {
  local version="$STRIMZI_VERSION" dir="$CRDS_HOME/strimzi-$STRIMZI_VERSION"
  if is_done "$dir"; then log "strimzi $version: cached ($dir)"; return; fi
  command -v mvn >/dev/null || die "mvn is not installed (needed for io.strimzi artifacts from Maven Central)"
  local java work cp
  java=$(find_java21) || die "Strimzi $version's crd-generator needs java >= 21; none found (set STRIMZI_JAVA)"
  work="$CRDS_HOME/.strimzi-gen-$version"
  rm -rf "$work"; mkdir -p "$work"
  # Strimzi's own dependency versions (import its parent POM's dependencyManagement).
  cat > "$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.precis</groupId><artifactId>strimzi-crds</artifactId><version>0</version>
  <packaging>pom</packaging>
  <dependencyManagement><dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>strimzi</artifactId><version>$version</version><type>pom</type><scope>import</scope></dependency>
  </dependencies></dependencyManagement>
  <dependencies>
    <dependency><groupId>io.strimzi</groupId><artifactId>api</artifactId><version>$version</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>$version</version></dependency>
    <dependency><groupId>io.strimzi</groupId><artifactId>crd-annotations</artifactId><version>$version</version></dependency>
  </dependencies>
</project>
EOF
  log "strimzi $version: mvn dependency:build-classpath (io.strimzi:api, crd-generator, crd-annotations:$version)"
  (cd "$work" && mvn -q -B dependency:build-classpath -Dmdep.outputFile=classpath.txt >mvn.log 2>&1) \
    || { tail -20 "$work/mvn.log" >&2; die "mvn could not resolve io.strimzi:*:$version"; }
  cp=$(cat "$work/classpath.txt")
  rm -rf "$dir"; mkdir -p "$dir"
  local m=io.strimzi.api.kafka.model
  log "strimzi $version: CrdGenerator with $java"
  # Arguments of api/pom.xml execution generate-crd-co-install-v1 (Strimzi $version).
  "$java" -cp "$cp" io.strimzi.crdgenerator.CrdGenerator \
    --label app:strimzi --label strimzi.io/crd-install:true \
    --target-kube 1.16+ --crd-api-version v1 --api-versions v1 --storage-version v1 \
    --yaml \
    "$m.kafka.Kafka=$dir/040-Crd-kafka.yaml" \
    "$m.connect.KafkaConnect=$dir/041-Crd-kafkaconnect.yaml" \
    "$m.topic.KafkaTopic=$dir/043-Crd-kafkatopic.yaml" \
    "$m.user.KafkaUser=$dir/044-Crd-kafkauser.yaml" \
    "$m.bridge.KafkaBridge=$dir/046-Crd-kafkabridge.yaml" \
    "$m.connector.KafkaConnector=$dir/047-Crd-kafkaconnector.yaml" \
    "$m.mirrormaker2.KafkaMirrorMaker2=$dir/048-Crd-kafkamirrormaker2.yaml" \
    "$m.rebalance.KafkaRebalance=$dir/049-Crd-kafkarebalance.yaml" \
    "$m.podset.StrimziPodSet=$dir/042-Crd-strimzipodset.yaml" \
    "$m.nodepool.KafkaNodePool=$dir/045-Crd-kafkanodepool.yaml" \
    > "$work/crdgen.log" 2>&1 || { tail -20 "$work/crdgen.log" >&2; die "CrdGenerator failed"; }
  finish_dir "$dir" "Maven Central: io.strimzi:api:$version classes + io.strimzi:crd-generator:$version (CrdGenerator, args of Strimzi's api/pom.xml generate-crd-co-install-v1), java $("$java" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.version =/{print $2; exit}')"
}

go_module_crds keda github.com/kedacore/keda/v2 "$KEDA_VERSION" config/crd/bases
go_module_crds prometheus-operator github.com/prometheus-operator/prometheus-operator "$PROM_OPERATOR_VERSION" example/prometheus-operator-crd
strimzi_crds

# --- index + what we have ----------------------------------------------------------------------
python3 - "$CRDS_HOME" "keda=$KEDA_VERSION" "prometheus-operator=$PROM_OPERATOR_VERSION" "strimzi=$STRIMZI_VERSION" <<'PY'
import json, sys
from pathlib import Path
home = Path(sys.argv[1])
index = {}
for arg in sys.argv[2:]:
    project, version = arg.split("=", 1)
    d = home / f"{project}-{version}"
    index[project] = {
        "version": version,
        "dir": str(d),
        "source": (d / "SOURCE").read_text().strip(),
        "files": sorted(p.name for p in d.glob("*.yaml")),
    }
(home / "index.json").write_text(json.dumps(index, indent=2) + "\n")
for project, e in index.items():
    print(f"  {project:20} {e['version']:8} {len(e['files']):2} CRDs  {e['dir']}")
    print(f"  {'':20} {'':8} source: {e['source']}")
PY
log "CRDs ready in $(( $(date +%s) - t0 )) s; index $CRDS_HOME/index.json"
