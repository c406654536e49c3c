#!/usr/bin/env bash
# Builds and tests llmproxy with nothing but a JDK (21 or newer) and, for the tests, Maven to
# fetch the JUnit console launcher once. Honours JAVA_HOME.
set -euo pipefail
cd "$(dirname "$0")"

JUNIT_VERSION=1.14.4
JUNIT_JAR=lib/junit-platform-console-standalone.jar
# The coding agents the tests run through the proxy, pinned; installed with npm into lib/agents.
AGENTS="@anthropic-ai/claude-code@2.1.328 @openai/codex@0.169.0 @google/gemini-cli@0.61.0"

usage() {
    cat <<'USAGE'
Usage: ./build.sh TASK [ARGS...]

Tasks:
  jar          compile src/LlmProxy.java into build/llmproxy.jar
  test         build the jar, compile test/*.java and run every test
  bench        build, then benchmark the jar against going direct (~5 min; bench --quick: ~1.5 min)
  run ARGS...  build the jar and run it with ARGS (e.g. ./build.sh run --target-url https://api.openai.com/v1)
  jdk          print the JDK (JAVA_HOME) the other tasks use
  clean        remove build/

Uses the JDK at JAVA_HOME when it is 21 or newer, else finds one (PATH, /usr/lib/jvm, macOS, SDKMAN, /opt)
and says which.
USAGE
}

# Prints the feature version of the JDK at $1 (a JAVA_HOME), or nothing.
java_major() {
    [ -x "$1/bin/javac" ] || return 0
    "$1/bin/javac" -version 2>&1 | awk '{split($2, v, "."); print v[1]}'
}

# Picks a JDK 21+: JAVA_HOME when it is one, else the javac on PATH, else the newest in the usual
# places (Linux packages, macOS, SDKMAN, /opt), and says which; fails with a clear message if none.
select_jdk() {
    local home major best="" best_major=0
    if [ -n "${JAVA_HOME:-}" ]; then
        major=$(java_major "$JAVA_HOME")
        if [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -ge 21 ]; then
            return 0
        fi
        echo "build.sh: JAVA_HOME=$JAVA_HOME is not a JDK 21 or newer; looking for one" >&2
    fi
    if command -v javac >/dev/null 2>&1; then
        home=$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")
        major=$(java_major "$home")
        if [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -ge 21 ]; then
            export JAVA_HOME=$home
            return 0
        fi
    fi
    for home in /usr/lib/jvm/* /Library/Java/JavaVirtualMachines/*/Contents/Home "$HOME"/.sdkman/candidates/java/* \
                /opt/java/* /opt/jdk*; do
        major=$(java_major "$home")
        if [[ "$major" =~ ^[0-9]+$ ]] && [ "$major" -ge 21 ] && [ "$major" -gt "$best_major" ]; then
            best=$home best_major=$major
        fi
    done
    if [ -z "$best" ]; then
        echo "build.sh: llmproxy needs JDK 21 or newer, and none was found (JAVA_HOME, PATH, /usr/lib/jvm," \
             "/Library/Java/JavaVirtualMachines, ~/.sdkman, /opt); install one or set JAVA_HOME to it" >&2
        exit 1
    fi
    export JAVA_HOME=$best
    echo "build.sh: using JDK $best_major at $JAVA_HOME (the default java is older than 21)" >&2
}

tool() {
    echo "$JAVA_HOME/bin/$1"
}

jar_task() {
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

fetch_agents() {
    if [ ! -x lib/agents/node_modules/.bin/claude ] || [ ! -x lib/agents/node_modules/.bin/codex ] \
       || [ ! -x lib/agents/node_modules/.bin/gemini ]; then
        if command -v npm >/dev/null 2>&1; then
            echo "build.sh: installing the coding agents the tests run ($AGENTS) with npm into lib/agents" >&2
            npm install --prefix lib/agents --no-audit --no-fund --loglevel=error $AGENTS >&2 \
                || echo "build.sh: npm could not install the agents; AgentTest will say so" >&2
        else
            echo "build.sh: no npm: AgentTest will say which agents are missing" >&2
        fi
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
    fetch_agents
    "$(tool java)" -jar "$JUNIT_JAR" execute --disable-banner --details=summary --fail-if-no-tests \
        --class-path "build/classes:build/test-classes" --scan-class-path
}

task=${1:-}
[ $# -gt 0 ] && shift
case "$task" in
    jar|test|bench|run|jdk) select_jdk ;;
esac
case "$task" in
    jar) jar_task ;;
    test) test_task ;;
    bench) compile_tests; exec "$(tool java)" -cp build/classes:build/test-classes Bench "$@" ;;
    run) jar_task; exec "$(tool java)" -jar build/llmproxy.jar "$@" ;;
    jdk) echo "$JAVA_HOME" ;;
    clean) rm -rf build ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
