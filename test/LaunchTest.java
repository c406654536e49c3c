import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The program as users start it: the jar and the source file, in their own JVMs. */
class LaunchTest {
    private static final String JAVA = Path.of(System.getProperty("java.home"), "bin", "java").toString();

    @TempDir
    Path dir;

    private static String output(String... command) throws Exception {
        Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(process.waitFor(60, TimeUnit.SECONDS), "process did not end");
        assertEquals(0, process.exitValue(), out);
        return out;
    }

    /** The text between the README's help markers, without the code fence. */
    private static String readmeHelp() throws IOException {
        String readme = Files.readString(Path.of("README.md"));
        Matcher m = Pattern.compile("<!-- help -->\\n```text\\n(.*?)```\\n<!-- /help -->", Pattern.DOTALL).matcher(readme);
        assertTrue(m.find(), "README.md has no <!-- help --> block");
        return m.group(1);
    }

    @Test
    void helpIsTheSameFromJarSourceAndReadme() throws Exception {
        String fromJar = output(JAVA, "-jar", "build/llmproxy.jar", "--help");
        String fromSource = output(JAVA, "src/LlmProxy.java", "--help");
        assertEquals(fromJar, fromSource);
        assertEquals(readmeHelp(), fromJar);
    }

    @Test
    void buildFindsAJdk21ItselfWhenJavaHomeIsOlder() throws Exception {
        for (String javaHome : List.of("/nonexistent/jdk", "")) {
            ProcessBuilder build = new ProcessBuilder("./build.sh", "jdk");
            build.environment().put("JAVA_HOME", javaHome);
            build.environment().put("PATH", "/usr/bin:/bin"); // a javac there is older than 21, or none
            Process process = build.start();
            String out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
            String err = new String(process.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
            assertTrue(process.waitFor(60, TimeUnit.SECONDS));
            assertEquals(0, process.exitValue(), err);
            Process version = new ProcessBuilder(out + "/bin/javac", "-version").redirectErrorStream(true).start();
            String said = new String(version.getInputStream().readAllBytes(), StandardCharsets.UTF_8).trim();
            assertTrue(version.waitFor(60, TimeUnit.SECONDS));
            int major = Integer.parseInt(said.split(" ")[1].split("\\.")[0]);
            assertTrue(major >= 21, out + " is " + said);
            assertTrue(javaHome.isEmpty() || err.contains("is not a JDK 21 or newer; looking for one"), err);
        }
    }

    @Test
    void writesTheSameRecordsToStandardOutputAsToAFile() throws Exception {
        String onStdout;
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 2);
            exchange.getResponseBody().write("ok".getBytes(StandardCharsets.UTF_8));
        })) {
            List<String> logs = new ArrayList<>();
            for (String file : List.of("-", dir.resolve("file.csv").toString())) {
                try (var proxy = new TestSupport.Launched(upstream.url(), Path.of(file))) {
                    for (String path : List.of("/v1/a", "/v1/b")) {
                        try (var client = new TestSupport.RawClient(proxy.port)) {
                            client.send("POST " + path + " HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}").readHead();
                            client.body();
                        }
                    }
                    assertEquals(0, proxy.terminate());
                    logs.add(file.equals("-") ? new String(proxy.process.getInputStream().readAllBytes(), StandardCharsets.UTF_8)
                            : Files.readString(Path.of(file)));
                }
            }
            onStdout = logs.get(0);
            assertEquals(logs.get(1), onStdout, "byte for byte what the file holds, and nothing else");
        }
        assertEquals(3, TestSupport.Csv.parse(onStdout).size());
    }

    @Test
    void runsACommandWithTheBaseUrlsAndExitsWithItsStatus() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 2);
            exchange.getResponseBody().write("hi".getBytes(StandardCharsets.UTF_8));
        })) {
            Path log = dir.resolve("child.csv");
            Process process = new ProcessBuilder(JAVA, "-jar", "build/llmproxy.jar", "-t", upstream.url(), "-l", log.toString(),
                    "--", "sh", "-c", "echo \"openai=$OPENAI_BASE_URL anthropic=$ANTHROPIC_BASE_URL\";"
                            + " curl -s -X POST -d '{}' \"$OPENAI_BASE_URL/v1/chat/completions\"; echo; exit 3").start();
            String out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            String err = new String(process.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
            assertTrue(process.waitFor(60, TimeUnit.SECONDS));
            assertEquals(3, process.exitValue(), err);
            Matcher m = Pattern.compile("openai=http://127\\.0\\.0\\.1:(\\d+) anthropic=http://127\\.0\\.0\\.1:(\\d+)\nhi\n")
                    .matcher(out);
            assertTrue(m.matches(), "the child's output only, on stdout: " + out);
            assertEquals(m.group(1), m.group(2));
            assertTrue(err.contains("setting both OPENAI_BASE_URL and ANTHROPIC_BASE_URL"), err);
            List<List<String>> records = TestSupport.Csv.parse(Files.readString(log));
            assertEquals(List.of("POST", "http://127.0.0.1:" + m.group(1) + "/v1/chat/completions", "{}", "hi"),
                    records.get(1), "every record is written before llmproxy exits");
        }
    }

    @Test
    void choosesTheVariableFromTheTargetOrFromEnv() {
        var err = new java.io.PrintStream(java.io.OutputStream.nullOutputStream());
        assertEquals(Map.of("ANTHROPIC_BASE_URL", "http://127.0.0.1:9"),
                LlmProxy.Child.environment(java.net.URI.create("https://api.anthropic.com"), 9, List.of(), err));
        assertEquals(Map.of("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
                LlmProxy.Child.environment(java.net.URI.create("https://api.openai.com"), 9, List.of(), err));
        assertEquals(Map.of("OPENAI_BASE_URL", "http://127.0.0.1:9"),
                LlmProxy.Child.environment(java.net.URI.create("https://api.openai.com/v1"), 9, List.of(), err));
        assertEquals(Map.of("OPENAI_BASE_URL", "http://127.0.0.1:9"),
                LlmProxy.Child.environment(java.net.URI.create("https://openrouter.ai/api/v1"), 9, List.of(), err));
        assertEquals(Map.of("OLLAMA_HOST", "http://127.0.0.1:9"),
                LlmProxy.Child.environment(java.net.URI.create("http://localhost:11434"), 9, List.of(), err));
        assertEquals(Map.of("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9"),
                LlmProxy.Child.environment(java.net.URI.create("https://generativelanguage.googleapis.com"), 9, List.of(), err));
        assertEquals(Map.of("MY_URL", "http://127.0.0.1:9"),
                LlmProxy.Child.environment(java.net.URI.create("https://api.openai.com"), 9, List.of("MY_URL"), err));
    }

    @Test
    void exitsLikeAShellWhenTheCommandIsKilledByASignal() throws Exception {
        Process process = new ProcessBuilder(JAVA, "-jar", "build/llmproxy.jar", "-t", "http://127.0.0.1:9",
                "-l", dir.resolve("killed.csv").toString(), "--", "sh", "-c", "kill -9 $$").start();
        process.getInputStream().readAllBytes();
        assertTrue(process.waitFor(60, TimeUnit.SECONDS));
        assertEquals(128 + 9, process.exitValue());
    }

    @Test
    void passesSigintOnToTheCommand() throws Exception {
        Process process = new ProcessBuilder(JAVA, "-jar", "build/llmproxy.jar", "-t", "http://127.0.0.1:9",
                "-l", dir.resolve("int.csv").toString(), "--", "sh", "-c",
                "trap 'echo got INT; exit 42' INT; echo ready; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done")
                .start();
        var out = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8));
        assertEquals("ready", out.readLine());
        new ProcessBuilder("kill", "-INT", String.valueOf(process.pid())).start().waitFor();
        assertEquals("got INT", out.readLine());
        assertTrue(process.waitFor(60, TimeUnit.SECONDS));
        assertEquals(42, process.exitValue(), "the command's status is llmproxy's");
    }

    @Test
    void printsTheVersion() throws Exception {
        assertEquals("llmproxy " + LlmProxy.VERSION + "\n", output(JAVA, "-jar", "build/llmproxy.jar", "--version"));
    }

    @Test
    void exitsWith2OnAUsageErrorWithoutStarting() throws Exception {
        Process process = new ProcessBuilder(JAVA, "-jar", "build/llmproxy.jar", "--port", "x").start();
        String err = new String(process.getErrorStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(process.waitFor(30, TimeUnit.SECONDS));
        assertEquals(2, process.exitValue());
        assertTrue(err.contains("--port must be a number"), err);
    }

    @Test
    void shrinksTheHeapToWhatIsLiveOnceStarted() throws Exception {
        // The JVM would keep its initial heap (here 256 MB, by default 1/64 of the machine's memory)
        // and let the young generation fill it; llmproxy settles it to what is live once it serves.
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = new TestSupport.Launched(upstream.url(), dir.resolve("log.csv"),
                     "-XX:+UseG1GC", "-XX:InitialHeapSize=256m", "-Xmx1g")) {
            assertTrue(committedHeapFallsTo(proxy.process.pid(), 64 * 1024), "the initial heap was kept");
        }
    }

    @Test
    void givesTheHeapBackOnceIdleAfterABurst() throws Exception {
        byte[] block = new byte[1 << 20];
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 40L << 20);
            try (OutputStream out = exchange.getResponseBody()) {
                for (int i = 0; i < 40; i++) {
                    out.write(block);
                }
            }
        }); var proxy = new TestSupport.Launched(upstream.url(), dir.resolve("log.csv"), "-XX:+UseG1GC", "-Xmx1g",
                "-Dllmproxy.heapIdleSeconds=1", "--log-max-body", "64m");
             var client = new TestSupport.RawClient(proxy.port)) {
            client.send("GET /v1/download HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(40 << 20, client.body().length); // kept for the log too: the heap grows to a few hundred MB
            assertTrue(committedHeapFallsTo(proxy.process.pid(), 64 * 1024), "the heap was not given back");
        }
    }

    /** Asks jcmd for the committed heap until it is at most {@code kilobytes}; false after 30 s. */
    private static boolean committedHeapFallsTo(long pid, long kilobytes) throws Exception {
        String jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd").toString();
        Pattern committed = Pattern.compile("heap +total reserved \\d+K, committed (\\d+)K");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (System.nanoTime() < deadline) { // each jcmd call is its own wait (~0.3 s)
            Matcher m = committed.matcher(output(jcmd, String.valueOf(pid), "GC.heap_info"));
            assertTrue(m.find(), "no committed heap in jcmd's answer");
            if (Long.parseLong(m.group(1)) <= kilobytes) {
                return true;
            }
        }
        return false;
    }

    @Test
    void stopsOnSigtermWithExit0AndAFlushedLog() throws Exception {
        Path log = dir.resolve("log.csv");
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 2);
            exchange.getResponseBody().write("hi".getBytes(StandardCharsets.UTF_8));
        }); var proxy = new TestSupport.Launched(upstream.url(), log);
             var client = new TestSupport.RawClient(proxy.port)) {
            client.send("POST /v1/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello").readHead();
            assertEquals("hi", new String(client.body(), StandardCharsets.UTF_8));
            assertEquals(0, proxy.terminate());
            assertEquals(List.of("POST", "http://localhost/v1/x", "hello", "hi"),
                    TestSupport.Csv.parse(Files.readString(log)).get(1));
        }
    }

    @Test
    void letsAStreamInFlightFinishOnSigterm() throws Exception {
        Path log = dir.resolve("log.csv");
        CountDownLatch stopping = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 0);
            OutputStream out = exchange.getResponseBody();
            TestSupport.sendChunk(out, "data: one\n\n");
            TestSupport.await(stopping, "the proxy to start stopping");
            TestSupport.sendChunk(out, "data: two\n\n");
            out.close();
        }); var proxy = new TestSupport.Launched(upstream.url(), log, "-Dllmproxy.shutdownGrace=10");
             var client = new TestSupport.RawClient(proxy.port)) {
            client.send("GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            client.readUntil("data: one\n\n");
            proxy.process.toHandle().destroy(); // SIGTERM while the stream is open
            proxy.awaitLine("stopping; waiting up to 10 s for 1 exchanges in flight");
            stopping.countDown();
            assertEquals("data: two\n\n", client.readUntil("data: two\n\n"));
            assertEquals(null, client.nextChunk(), "the stream ends cleanly");
            assertEquals(0, proxy.exitCode());
            assertEquals("data: one\n\ndata: two\n\n", TestSupport.Csv.parse(Files.readString(log)).get(1).get(3));
        }
    }

    @Test
    void endsAStreamStillOpenAfterTheGraceWithOutcomeShutdown() throws Exception {
        Path log = dir.resolve("log.csv");
        CountDownLatch release = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 0);
            TestSupport.sendChunk(exchange.getResponseBody(), "data: one\n\n");
            release.await(20, TimeUnit.SECONDS); // a stream that outlasts the grace
        }); var proxy = new TestSupport.Launched(upstream.url(), log, "-Dllmproxy.shutdownGrace=1",
                "--log-columns", "outcome,error,response_body");
             var client = new TestSupport.RawClient(proxy.port)) {
            client.send("GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            client.readUntil("data: one\n\n");
            assertEquals(0, proxy.terminate());
            release.countDown();
            assertThrows(EOFException.class, client::nextChunk, "the client sees its stream cut, not ended");
            List<String> record = TestSupport.Csv.parse(Files.readString(log)).get(1);
            assertEquals("shutdown", record.get(0));
            assertTrue(record.get(1).startsWith("llmproxy was stopped before the exchange ended"), record.get(1));
            assertEquals("data: one\n\n", record.get(2));
        }
    }

    @Test
    void stopsAtOnceOnASecondSigtermStillWritingTheRecords() throws Exception {
        Path log = dir.resolve("log.csv");
        CountDownLatch release = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 0);
            TestSupport.sendChunk(exchange.getResponseBody(), "data: one\n\n");
            release.await(30, TimeUnit.SECONDS);
        }); var proxy = new TestSupport.Launched(upstream.url(), log, "-Dllmproxy.shutdownGrace=60",
                "--log-columns", "outcome,response_body");
             var client = new TestSupport.RawClient(proxy.port)) {
            client.send("GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            client.readUntil("data: one\n\n");
            proxy.process.toHandle().destroy();
            proxy.awaitLine("stopping; waiting up to 1 min for 1 exchanges in flight");
            assertEquals(0, proxy.terminate(), "the second SIGTERM ends it long before the 60 s grace");
            release.countDown();
            assertEquals(List.of("shutdown", "data: one\n\n"), TestSupport.Csv.parse(Files.readString(log)).get(1));
        }
    }

    @Test
    void keepsServingWhileTenThousandIdleConnectionsAreHeld() throws Exception {
        Path log = dir.resolve("log.csv");
        List<java.net.Socket> idle = new ArrayList<>();
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 2);
            exchange.getResponseBody().write("ok".getBytes(StandardCharsets.UTF_8));
        }); var proxy = new TestSupport.Launched(upstream.url(), log)) {
            try {
                for (int i = 0; i < 10_000; i++) { // bounded: opened once, never sending a byte
                    idle.add(new java.net.Socket(TestSupport.LOOPBACK, proxy.port));
                }
                try (var client = new TestSupport.RawClient(proxy.port)) {
                    client.send("GET /still-serving HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
                    assertEquals(200, client.status);
                    assertEquals("ok", new String(client.body(), StandardCharsets.UTF_8));
                }
            } finally {
                for (var socket : idle) {
                    socket.close();
                }
            }
            assertEquals(0, proxy.terminate());
            assertEquals("http://localhost/still-serving", TestSupport.Csv.parse(Files.readString(log)).get(1).get(1));
        }
    }

    @Test
    void stopsOnSigintLikeOnSigterm() throws Exception {
        Path log = dir.resolve("log.csv");
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = new TestSupport.Launched(upstream.url(), log);
             var client = new TestSupport.RawClient(proxy.port)) {
            client.send("DELETE /v1/files/1 HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(204, client.status);
            Process kill = new ProcessBuilder("kill", "-INT", String.valueOf(proxy.process.pid())).start();
            assertTrue(kill.waitFor(10, TimeUnit.SECONDS));
            assertEquals(0, proxy.exitCode());
            assertEquals(List.of("DELETE", "http://localhost/v1/files/1", "", ""), TestSupport.Csv.parse(Files.readString(log)).get(1));
        }
    }
}
