#!/usr/bin/env bash
# Builds and tests llmproxy with nothing but a JDK (21 or newer) and, for the tests, Maven to
# fetch the JUnit console launcher once. Honours JAVA_HOME.
set -euo pipefail
cd "$(dirname "$0")"

JUNIT_VERSION=1.14.4
JUNIT_JAR=lib/junit-platform-console-standalone.jar

usage() {
    cat <<'USAGE'
Usage: ./build.sh TASK [ARGS...]

Tasks:
  jar          compile src/LlmProxy.java into build/llmproxy.jar
  test         build the jar, compile test/*.java and run every test
  bench        build, then benchmark the jar against going direct (~5 min; bench --quick: ~1.5 min)
  run ARGS...  build the jar and run it with ARGS (e.g. ./build.sh run --target-url https://api.openai.com/v1)
  clean        remove build/

Uses $JAVA_HOME/bin/java and javac when JAVA_HOME is set, else the ones on PATH; needs JDK 21+.
USAGE
}

tool() {
    if [ -n "${JAVA_HOME:-}" ]; then echo "$JAVA_HOME/bin/$1"; else echo "$1"; fi
}

require_jdk21() {
    local javac version major
    javac=$(tool javac)
    if ! command -v "$javac" >/dev/null 2>&1; then
        echo "build.sh: no javac at '$javac'; install a JDK 21+ or set JAVA_HOME to one" >&2
        exit 1
    fi
    version=$("$javac" -version 2>&1 | awk '{print $2}')
    major=${version%%.*}
    if ! [[ "$major" =~ ^[0-9]+$ ]] || [ "$major" -lt 21 ]; then
        echo "build.sh: llmproxy needs JDK 21 or newer, but $javac is version $version;" \
             "set JAVA_HOME to a JDK 21+ (for example JAVA_HOME=/usr/lib/jvm/temurin-25-jdk-amd64)" >&2
        exit 1
    fi
}

jar_task() {
    require_jdk21
    # An empty -sourcepath makes a second source file a compile error, as source launch on JDK 21 would.
    mkdir -p build/empty-sourcepath
    rm -rf build/classes
    "$(tool javac)" --release 21 -Xlint:all -Werror -encoding UTF-8 \
        -sourcepath build/empty-sourcepath -d build/classes src/LlmProxy.java
    "$(tool jar)" --create --file build/llmproxy.jar --main-class LlmProxy -C build/classes .
    echo "build.sh: built build/llmproxy.jar; run it with: $(tool java) -jar build/llmproxy.jar --target-url URL" >&2
}

fetch_junit() {
    if [ ! -f "$JUNIT_JAR" ]; then
        echo "build.sh: fetching the JUnit console launcher $JUNIT_VERSION with Maven" >&2
        mvn -q dependency:copy \
            -Dartifact="org.junit.platform:junit-platform-console-standalone:$JUNIT_VERSION" \
            -DoutputDirectory=lib -Dmdep.stripVersion=true
    fi
}

compile_tests() {
    jar_task
    fetch_junit
    rm -rf build/test-classes
    "$(tool javac)" --release 21 -Xlint:all -Xlint:-serial -Werror -encoding UTF-8 \
        -cp "build/classes:$JUNIT_JAR" -d build/test-classes test/*.java
}

test_task() {
    compile_tests
    "$(tool java)" -jar "$JUNIT_JAR" execute --disable-banner --details=summary --fail-if-no-tests \
        --class-path "build/classes:build/test-classes" --scan-class-path
}

task=${1:-}
[ $# -gt 0 ] && shift
case "$task" in
    jar) jar_task ;;
    test) test_task ;;
    bench) compile_tests; exec "$(tool java)" -cp build/classes:build/test-classes Bench "$@" ;;
    run) jar_task; exec "$(tool java)" -jar build/llmproxy.jar "$@" ;;
    clean) rm -rf build ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
