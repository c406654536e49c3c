import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.BufferedInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code make bench}: measures llmproxy against going direct to the same mock upstream, in one
 * run, and prints one table. The mock upstream and the proxy each run in their own JVM, so the
 * proxy's CPU and memory are read from /proc, and this process (the load client) reports its own.
 * {@code make bench-quick} runs a shorter subset. Every load loop here is bounded in time.
 * {@code ./build.sh bench --only scale,heap} runs some parts only: requests (closed and open loop,
 * streaming fidelity, time to headers), logging, scale, heap, overload, startup, llm, bulk, otlp, viewer. {@code --only soak
 * [--soak-minutes 30]} runs the soak test: mixed load with client disconnects and upstream faults,
 * then compares records with exchanges and threads, descriptors and heap with their start.
 */
public final class Bench {
    static final InetAddress LOOPBACK = InetAddress.getLoopbackAddress();
    static final String JAVA = Path.of(System.getProperty("java.home"), "bin", "java").toString();
    static final String CLASSPATH = System.getProperty("java.class.path");
    static final long TICK_NANOS = 10_000_000L; // /proc/<pid>/stat counts CPU in 1/100 s on Linux

    private final boolean quick;
    private final List<String> only;
    private int soakMinutes = 30;
    private final List<String[]> table = new ArrayList<>();
    private final Path work;
    private Jvm upstream;
    private int upstreamPort;

    private Bench(boolean quick, List<String> only) throws IOException {
        this.quick = quick;
        this.only = only;
        this.work = Files.createTempDirectory("llmproxy-bench");
    }

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("upstream")) {
            MockUpstream.serve();
            return;
        }
        if (args.length >= 3 && args[0].equals("streams")) { // for profiling: streams PORT N [EVENTS MS RAMP_MS]
            int[] p = {30, 500, 2500};
            for (int i = 3; i < args.length && i < 6; i++) {
                p[i - 3] = Integer.parseInt(args[i]);
            }
            Streams s = streams(Integer.parseInt(args[1]), Integer.parseInt(args[2]), p[0], p[1], 0, p[2]);
            System.out.printf(Locale.ROOT, "%d complete, %d rejected, %d failed, %d incomplete, steady p99 %s ms%n",
                    s.completed, s.rejected, s.failed, s.incomplete, ms(s.steadyDelay.p(99)));
            return;
        }
        if (args.length == 4 && args[0].equals("load")) { // for profiling: load PORT CONNECTIONS SECONDS
            Load load = closedLoop(Integer.parseInt(args[1]), Integer.parseInt(args[2]), Integer.parseInt(args[3]));
            System.out.printf(Locale.ROOT, "%.0f req/s, p50 %s ms, p99 %s ms, %d errors%n", load.perSecond(),
                    ms(load.latency.p(50)), ms(load.latency.p(99)), load.errors);
            return;
        }
        List<String> options = List.of(args);
        int at = options.indexOf("--only");
        List<String> only = at >= 0 && at + 1 < options.size() ? List.of(options.get(at + 1).split(",")) : List.of();
        Bench bench = new Bench(options.contains("--quick"), only);
        int minutes = options.indexOf("--soak-minutes");
        if (minutes >= 0 && minutes + 1 < options.size()) {
            bench.soakMinutes = Integer.parseInt(options.get(minutes + 1));
        }
        bench.run();
    }

    // --- the run ---

    private void run() throws Exception {
        long started = System.nanoTime();
        System.out.println("llmproxy bench" + (quick ? " (quick)" : "") + ": " + machine());
        upstream = Jvm.start(work.resolve("upstream.err"), List.of(JAVA, "-cp", CLASSPATH, "Bench", "upstream"));
        upstreamPort = upstream.awaitPort("upstream port (\\d+)");
        try {
            int seconds = quick ? 2 : 5;
            if (wanted("requests")) {
                requests(seconds);
            }
            if (wanted("logging")) {
                loggingCost(seconds);
            }
            if (wanted("scale")) {
                for (int n : quick ? new int[] {1000} : new int[] {1000, 5000, 10000}) {
                    scale(n);
                }
            }
            if (wanted("heap") && (!quick || !only.isEmpty())) {
                heapPerStream(quick ? 1000 : 5000);
            }
            if (wanted("overload") && (!quick || !only.isEmpty())) {
                overload(10000);
                bigPrompts(200, 4);
            }
            if (wanted("startup")) {
                startup(quick ? 3 : 5);
            }
            if (wanted("llm")) {
                llmColumns(quick ? 100 : 200);
            }
            if (wanted("bulk")) {
                bulk(quick ? 256 : 1024);
            }
            if (wanted("otlp")) {
                otlpCost(quick ? 2 : 5);
            }
            if (wanted("viewer")) {
                viewer(quick ? 100 : 200);
                report(quick ? 2_000 : 10_000);
            }
            if (only.contains("soak")) { // never part of the default run: it takes soakMinutes
                soak(soakMinutes);
            }
        } finally {
            upstream.close();
        }
        System.out.println();
        System.out.println("| measurement | direct | through llmproxy | proxy vs direct |");
        System.out.println("|---|---|---|---|");
        for (String[] r : table) {
            System.out.println("| " + String.join(" | ", r) + " |");
        }
        System.out.printf(Locale.ROOT, "%nbench finished in %d s%n", TimeUnit.NANOSECONDS.toSeconds(System.nanoTime() - started));
    }

    private boolean wanted(String part) {
        return only.isEmpty() || only.contains(part);
    }

    private void requests(int seconds) throws Exception {
        try (Jvm proxy = startProxy(List.of())) {
            progress("warm-up");
            closedLoop(upstreamPort, 16, 2);
            closedLoop(proxy.port, 16, quick ? 4 : 12); // the JIT needs ~50k requests
            for (int connections : new int[] {1, 16, 64}) {
                progress("closed loop, " + connections + " connections");
                Load direct = closedLoop(upstreamPort, connections, seconds);
                long cpu = proxy.cpuNanos();
                Load proxied = closedLoop(proxy.port, connections, seconds);
                long perRequest = (proxy.cpuNanos() - cpu) / Math.max(1, proxied.requests) / 1000;
                row("non-streaming, " + connections + " conn: req/s", fmt(direct.perSecond()), fmt(proxied.perSecond()),
                        ratio(proxied.perSecond(), direct.perSecond()));
                row("  p50 / p99 latency (ms)", ms(direct.latency.p(50)) + " / " + ms(direct.latency.p(99)),
                        ms(proxied.latency.p(50)) + " / " + ms(proxied.latency.p(99)),
                        "+" + ms(proxied.latency.p(50) - direct.latency.p(50)) + " / +"
                                + ms(proxied.latency.p(99) - direct.latency.p(99)));
                row("  proxy CPU per request (µs)", "", String.valueOf(perRequest),
                        "client " + direct.clientMicrosPerRequest() + " / " + proxied.clientMicrosPerRequest()
                                + " µs/req");
                errors(direct, proxied);
            }
            progress("open loop, 500 req/s");
            Load directOpen = openLoop(upstreamPort, 500, seconds);
            Load proxiedOpen = openLoop(proxy.port, 500, seconds);
            row("open loop 500 req/s: p50 / p99 (ms)",
                    ms(directOpen.latency.p(50)) + " / " + ms(directOpen.latency.p(99)),
                    ms(proxiedOpen.latency.p(50)) + " / " + ms(proxiedOpen.latency.p(99)),
                    "added " + ms(proxiedOpen.latency.p(50) - directOpen.latency.p(50)) + " / "
                            + ms(proxiedOpen.latency.p(99) - directOpen.latency.p(99)));
            errors(directOpen, proxiedOpen);

            progress("streaming fidelity");
            Streams directStreams = streams(upstreamPort, 20, 50, 20, 0, 0);
            Streams proxiedStreams = streams(proxy.port, 20, 50, 20, 0, 0);
            row("20 streams x 50 events, 20 ms: event delay p50 / p99 / max (ms)",
                    ms(directStreams.delay.p(50)) + " / " + ms(directStreams.delay.p(99)) + " / " + ms(directStreams.delay.max()),
                    ms(proxiedStreams.delay.p(50)) + " / " + ms(proxiedStreams.delay.p(99)) + " / " + ms(proxiedStreams.delay.max()),
                    "added p99 " + ms(proxiedStreams.delay.p(99) - directStreams.delay.p(99)));
            row("  events coalesced with the next one", String.valueOf(directStreams.coalesced),
                    String.valueOf(proxiedStreams.coalesced), proxiedStreams.completed + "/20 streams complete");

            progress("time to headers");
            long[] directFirst = firstByte(upstreamPort, 5);
            long[] proxiedFirst = firstByte(proxy.port, 5);
            row("time to headers, first event at 300 ms (ms)", ms(directFirst[0]), ms(proxiedFirst[0]),
                    "+" + ms(proxiedFirst[0] - directFirst[0]));
            row("time to first event (ms)", ms(directFirst[1]), ms(proxiedFirst[1]),
                    "+" + ms(proxiedFirst[1] - directFirst[1]));
        }
    }

    private int proxies;

    /** A proxy JVM from build/llmproxy.jar with default settings but for {@code jvmFlags}. */
    private Jvm startProxy(List<String> jvmFlags, String... args) throws IOException, InterruptedException {
        int id = ++proxies;
        List<String> command = new ArrayList<>(List.of(JAVA));
        command.addAll(jvmFlags);
        command.addAll(List.of("-jar", "build/llmproxy.jar", "--target-url", "http://127.0.0.1:" + upstreamPort,
                "--port", "0", "--log-file", work.resolve("proxy" + id + ".csv").toString()));
        command.addAll(List.of(args));
        Jvm proxy = Jvm.start(work.resolve("proxy" + id + ".err"), command);
        proxy.port = proxy.awaitPort("listening on http://127\\.0\\.0\\.1:(\\d+) ");
        proxy.log = work.resolve("proxy" + id + ".csv");
        return proxy;
    }

    private void loggingCost(int seconds) throws Exception {
        progress("logging on vs off");
        long[] micros = new long[2];
        for (int i = 0; i < 2; i++) {
            try (Jvm proxy = startProxy(i == 0 ? List.of("-Dllmproxy.log=off") : List.of())) {
                closedLoop(proxy.port, 16, quick ? 4 : 10);
                long cpu = proxy.cpuNanos();
                Load load = closedLoop(proxy.port, 16, seconds);
                micros[i] = (proxy.cpuNanos() - cpu) / Math.max(1, load.requests) / 1000;
            }
        }
        row("CPU per request, CSV log off / on (µs)", "", micros[0] + " / " + micros[1],
                "logging costs " + pct(micros[1] - micros[0], micros[0]));
    }

    private void scale(int n) throws Exception {
        progress(n + " concurrent streams");
        Streams direct = streams(upstreamPort, n, 30, 500, 0, 2500);
        try (Jvm proxy = startProxy(List.of())) {
            long cpu = proxy.cpuNanos();
            Streams proxied = streams(proxy.port, n, 30, 500, 0, 2500);
            long cpuPerStream = (proxy.cpuNanos() - cpu) / n / 1000;
            row(n + " streams x 30 events, 500 ms: complete", direct.completed + "/" + n,
                    proxied.completed + "/" + n + (proxied.rejected > 0 ? " (" + proxied.rejected + " got 503)" : ""),
                    proxied.failed > 0 ? proxied.failed + " failed" : "");
            row("  steady-state event delay p99 (ms)", ms(direct.steadyDelay.p(99)), ms(proxied.steadyDelay.p(99)),
                    "+" + ms(proxied.steadyDelay.p(99) - direct.steadyDelay.p(99)));
            row("  proxy peak RSS (MB) / CPU per stream (µs)", "", proxy.peakRssMb() + " / " + cpuPerStream, "");
        }
    }

    private void heapPerStream(int n) throws Exception {
        progress("heap per open stream");
        try (Jvm proxy = startProxy(List.of())) {
            streams(proxy.port, 50, 2, 10, 0, 0); // load the classes an exchange needs
            long idle = proxy.usedHeapAfterGcKb();
            AtomicLong open = new AtomicLong();
            CountDownLatch measured = new CountDownLatch(1);
            Thread measure = Thread.ofPlatform().start(() -> {
                try {
                    // the streams last 15 s; all are open once the 2 s ramp is over
                    Thread.sleep(5000);
                    open.set(proxy.usedHeapAfterGcKb());
                } catch (Exception e) {
                    open.set(-1);
                } finally {
                    measured.countDown();
                }
            });
            Streams s = streams(proxy.port, n, 30, 500, 0, 2500);
            measured.await();
            measure.join();
            row("heap per open stream (KB), " + n + " streams", "",
                    String.format(Locale.ROOT, "%.1f", (open.get() - idle) / (double) n),
                    "idle " + idle / 1024 + " MB, open " + open.get() / 1024 + " MB; " + s.completed + "/" + n + " complete");
        }
    }

    private void overload(int n) throws Exception {
        progress(n + " streams against -Xmx128m");
        Path log;
        Streams s;
        boolean alive;
        try (Jvm proxy = startProxy(List.of("-Xmx128m"))) {
            log = proxy.log;
            s = streams(proxy.port, n, 30, 500, 0, 2500);
            alive = proxy.process.isAlive();
            proxy.terminate();
        }
        long records = Files.readString(log).split("\r\n", -1).length - 2; // header and the empty tail
        row("-Xmx128m, " + n + " streams: complete / 503 / failed", "",
                s.completed + " / " + s.rejected + " / " + s.failed,
                (alive ? "survived" : "DIED") + "; " + records + " records for " + (s.completed + s.rejected + s.incomplete)
                        + " exchanges");
    }

    /** A burst of n exchanges, each with a prompt of mb megabytes, against a proxy held to -Xmx128m. */
    private void bigPrompts(int n, int mb) throws Exception {
        progress(n + " exchanges with " + mb + " MB prompts against -Xmx128m");
        StringBuilder json = new StringBuilder("{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"");
        while (json.length() < (mb << 20) - 4) {
            json.append("All work and no play makes Jack a dull boy. ");
        }
        byte[] body = json.append("\"}]}").toString().getBytes(StandardCharsets.UTF_8);
        byte[] head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + "Content-Length: " + body.length + "\r\n\r\n").getBytes(StandardCharsets.UTF_8);
        AtomicInteger ok = new AtomicInteger();
        AtomicInteger refused = new AtomicInteger();
        AtomicInteger failed = new AtomicInteger();
        Path log;
        boolean alive;
        long peakRssMb;
        try (Jvm proxy = startProxy(List.of("-Xmx128m"))) {
            log = proxy.log;
            try (var pool = Executors.newVirtualThreadPerTaskExecutor()) {
                for (int i = 0; i < n; i++) {
                    pool.submit(() -> {
                        try (Conn c = new Conn(proxy.port)) {
                            c.send(head);
                            c.send(body);
                            c.readHead();
                            c.readBody();
                            (c.status == 200 ? ok : c.status == 503 ? refused : failed).incrementAndGet();
                        } catch (IOException e) {
                            failed.incrementAndGet();
                        }
                        return null;
                    });
                }
            } // waits for all: each connection has a 60 s read timeout
            alive = proxy.process.isAlive();
            peakRssMb = proxy.peakRssMb();
            proxy.terminate();
        }
        long records = 0;
        try (InputStream in = new java.io.BufferedInputStream(Files.newInputStream(log))) {
            for (int b = in.read(), previous = 0; b >= 0; previous = b, b = in.read()) {
                if (previous == '\r' && b == '\n') {
                    records++; // the prompts hold no CR: each CRLF ends a row
                }
            }
        }
        records--; // the header row
        row("-Xmx128m, " + n + " exchanges with " + mb + " MB prompts: complete / 503 / failed", "",
                ok + " / " + refused + " / " + failed,
                (alive ? "survived" : "DIED") + "; " + records + " records for " + n + " exchanges; peak RSS "
                        + peakRssMb + " MB");
    }

    /** CPU per request with OTLP export to a local receiver, against none. */
    private void otlpCost(int seconds) throws Exception {
        progress("OTLP export on vs off");
        var receiver = com.sun.net.httpserver.HttpServer.create(new InetSocketAddress(LOOPBACK, 0), 0);
        AtomicLong spans = new AtomicLong();
        receiver.createContext("/", exchange -> {
            String body = new String(exchange.getRequestBody().readAllBytes(), StandardCharsets.UTF_8);
            spans.addAndGet(body.split("\"spanId\"", -1).length - 1);
            exchange.sendResponseHeaders(200, -1);
            exchange.close();
        });
        receiver.setExecutor(Executors.newVirtualThreadPerTaskExecutor());
        receiver.start();
        long[] micros = new long[2];
        try {
            for (int i = 0; i < 2; i++) {
                try (Jvm proxy = i == 0 ? startProxy(List.of())
                        : startProxy(List.of(), "--otlp-endpoint", "http://127.0.0.1:" + receiver.getAddress().getPort())) {
                    closedLoop(proxy.port, 16, quick ? 4 : 10);
                    long cpu = proxy.cpuNanos();
                    Load load = closedLoop(proxy.port, 16, seconds);
                    Thread.sleep(1500); // the last batch leaves within a second
                    micros[i] = (proxy.cpuNanos() - cpu) / Math.max(1, load.requests) / 1000;
                }
            }
        } finally {
            receiver.stop(0);
        }
        row("CPU per request, OTLP export off / on (µs)", "", micros[0] + " / " + micros[1],
                "export costs " + pct(micros[1] - micros[0], micros[0]) + "; " + spans.get() + " spans received");
    }

    /**
     * Streams through a proxy without the live viewer, then through one whose viewer has a
     * browser-like reader on its feed and following each exchange; then the heap the viewer
     * holds with 1,000 exchanges in it.
     */
    private void viewer(int n) throws Exception {
        progress("live viewer, " + n + " streams");
        long[] cpu = new long[2];
        Streams[] runs = new Streams[2];
        long[] heap = new long[2];
        for (int i = 0; i < 2; i++) {
            try (Jvm proxy = i == 0 ? startProxy(List.of()) : startProxy(List.of(), "--ui-port", "0")) {
                Thread reader = null;
                if (i == 1) {
                    int ui = proxy.awaitPort("live viewer at http://127\\.0\\.0\\.1:(\\d+)/");
                    reader = Thread.ofVirtual().start(() -> readFeed(ui));
                }
                streams(proxy.port, n, 20, 10, 0, 500); // warm-up
                long before = proxy.cpuNanos();
                runs[i] = streams(proxy.port, n, 50, 20, 0, 1000);
                cpu[i] = proxy.cpuNanos() - before;
                for (int k = 0; k < 1000; k += 100) { // 1,000 more exchanges: the viewer is full
                    streams(proxy.port, 100, 5, 1, 0, 100);
                }
                heap[i] = proxy.usedHeapAfterGcKb();
                if (reader != null) {
                    reader.interrupt();
                }
            }
        }
        long events = (long) n * 50;
        row(n + " streams x 50 events: event delay p99 (ms), no viewer / viewer open", "",
                ms(runs[0].delay.p(99)) + " / " + ms(runs[1].delay.p(99)),
                "CPU per event " + cpu[0] / events / 1000 + " / " + cpu[1] / events / 1000 + " µs");
        row("heap after GC with 1,000 exchanges in the viewer (MB), no viewer / viewer", "",
                heap[0] / 1024 + " / " + heap[1] / 1024, "the viewer holds " + (heap[1] - heap[0]) / 1024 + " MB");
    }

    /** A browser on the viewer's feed, reading every event until interrupted. */
    private static void readFeed(int port) {
        try (Conn c = new Conn(port)) {
            c.send(("GET /feed HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\n\r\n").getBytes(StandardCharsets.UTF_8));
            c.readHead();
            while (!Thread.currentThread().isInterrupted() && c.nextChunk() != null) {
                // every event read, as the page reads it
            }
        } catch (IOException e) {
            // the proxy stopped
        }
    }

    /** Time for llmproxy view to write the report of a log of n exchanges of ~20 KB each. */
    private void report(int n) throws Exception {
        progress("report of " + n + " exchanges");
        Path log = work.resolve("report.csv");
        String prompt = "{\"model\":\"claude-sonnet-4-5\",\"messages\":[{\"role\":\"user\",\"content\":\""
                + "Explain the code. ".repeat(1100) + "\"}]}";
        try (var out = Files.newBufferedWriter(log)) {
            out.write(LlmProxy.Csv.record(List.of("method", "url", "request_body", "response_body")));
            for (int i = 0; i < n; i++) {
                out.write(LlmProxy.Csv.record(List.of("POST", "http://127.0.0.1:8080/v1/messages", prompt,
                        "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"Answer " + i + "\"}]}")));
            }
        }
        long t0 = System.nanoTime();
        var sink = new java.io.PrintStream(java.io.OutputStream.nullOutputStream());
        int code = LlmProxy.start(new String[] {"view", log.toString()}, sink, sink);
        long micros = (System.nanoTime() - t0) / 1000;
        row("llmproxy view: report of " + n + " exchanges (" + Files.size(log) / (1 << 20) + " MB log)", "",
                ms(micros) + " ms", code == 0 ? Files.size(work.resolve("report.html")) / (1 << 20) + " MB of HTML" : "FAILED");
        try (Browser browser = Browser.start()) {
            long opened = System.nanoTime();
            browser.open(work.resolve("report.html").toUri().toString());
            browser.waitFor("document.querySelector('#answer-text')"); // the list is there, the last exchange shown
            long shown = (System.nanoTime() - opened) / 1000;
            opened = System.nanoTime();
            browser.click("#list tbody tr:nth-child(1)");
            browser.waitFor("document.querySelector('#answer-text') && document.querySelector('#answer-text').textContent === 'Answer 0'");
            row("  opened in headless Chromium: list and an exchange shown / another opened (ms)", "",
                    ms(shown) + " / " + ms((System.nanoTime() - opened) / 1000), "");
        } catch (IOException e) {
            row("  opened in headless Chromium", "", "not measured", "no chromium: " + e.getMessage());
        }
    }

    private void startup(int reps) throws Exception {
        progress("start-up");
        long[] jvm = new long[reps];
        long[] first = new long[reps];
        for (int i = 0; i < reps; i++) {
            long t0 = System.nanoTime();
            new ProcessBuilder(JAVA, "-version").redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.DISCARD).start().waitFor();
            jvm[i] = (System.nanoTime() - t0) / 1000;
            int port;
            try (ServerSocket free = new ServerSocket(0, 1, LOOPBACK)) {
                port = free.getLocalPort();
            }
            t0 = System.nanoTime();
            try (Jvm proxy = Jvm.start(Files.createTempFile(work, "start", ".err"), List.of(JAVA, "-jar",
                    "build/llmproxy.jar", "-t", "http://127.0.0.1:" + upstreamPort, "-p", String.valueOf(port),
                    "-l", work.resolve("start" + i + ".csv").toString()))) {
                long deadline = t0 + TimeUnit.SECONDS.toNanos(10);
                while (true) {
                    try (Conn c = new Conn(port)) {
                        c.send(Conn.completionRequest());
                        c.readHead();
                        c.readBody();
                        if (c.status == 200) {
                            break;
                        }
                    } catch (IOException e) {
                        if (System.nanoTime() > deadline || !proxy.process.isAlive()) {
                            throw e;
                        }
                        LockSupport.parkNanos(1_000_000); // poll for the port to open, 1 ms apart
                    }
                }
                first[i] = (System.nanoTime() - t0) / 1000;
            }
        }
        Arrays.sort(jvm);
        Arrays.sort(first);
        row("start-up: process start to first proxied response (ms)", "JVM alone (java -version): " + ms(jvm[reps / 2]),
                ms(first[reps / 2]), "median of " + reps);
    }

    /** Streams through a proxy logging the default columns, then all of them (the conversation read too). */
    private void llmColumns(int n) throws Exception {
        progress("LLM columns, " + n + " streams");
        long[] cpu = new long[2];
        Streams[] runs = new Streams[2];
        for (int i = 0; i < 2; i++) {
            try (Jvm proxy = i == 0 ? startProxy(List.of()) : startProxy(List.of(), "--log-columns", "all")) {
                streams(proxy.port, n, 20, 10, 0, 500); // warm-up
                long before = proxy.cpuNanos();
                runs[i] = streams(proxy.port, n, 50, 20, 0, 1000);
                Thread.sleep(500); // the log thread reads the conversation after each stream ends
                cpu[i] = proxy.cpuNanos() - before;
            }
        }
        long events = (long) n * 50;
        row(n + " streams x 50 events: event delay p99 (ms), default / all columns", "",
                ms(runs[0].delay.p(99)) + " / " + ms(runs[1].delay.p(99)),
                "CPU per event " + cpu[0] / events / 1000 + " / " + cpu[1] / events / 1000 + " µs");
    }

    /** A download of {@code mb} MB through a proxy held to a 64 MB heap: throughput and memory. */
    private void bulk(int mb) throws Exception {
        progress("bulk download, " + mb + " MB");
        byte[] request = ("GET /download?bytes=" + ((long) mb << 20) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .getBytes(StandardCharsets.UTF_8);
        double[] seconds = new double[2];
        try (Jvm proxy = startProxy(List.of("-Xmx64m"))) {
            for (int i = 0; i < 2; i++) {
                try (Conn c = new Conn(i == 0 ? upstreamPort : proxy.port)) {
                    long t0 = System.nanoTime();
                    c.send(request);
                    c.readHead();
                    c.readBody();
                    seconds[i] = (System.nanoTime() - t0) / 1e9;
                }
            }
            row(mb + " MB download, MB/s (proxy held to -Xmx64m)", fmt(mb / seconds[0]), fmt(mb / seconds[1]),
                    ratio(seconds[0], seconds[1]) + "; proxy peak RSS " + proxy.peakRssMb() + " MB");
        }
    }

    /**
     * Mixed load for {@code minutes}: completions, streams, clients that leave mid-stream,
     * upstreams that die or fall silent. Afterwards every exchange must have its record, and
     * threads, file descriptors and heap must be back where they started.
     */
    private void soak(int minutes) throws Exception {
        progress("soak, " + minutes + " min");
        try (Jvm proxy = startProxy(List.of(), "--timeout", "0.02", "--log-columns", "id,outcome")) {
            streams(proxy.port, 20, 3, 10, 0, 0); // warm the classes an exchange needs
            Thread.sleep(1000);
            long heapBefore = proxy.usedHeapAfterGcKb();
            long threadsBefore = proxy.threads();
            long filesBefore = proxy.openFiles();
            long warm = Files.readString(proxy.log).split("\r\n", -1).length - 2;
            AtomicLong exchanges = new AtomicLong();
            AtomicLong faults = new AtomicLong();
            AtomicLong failures = new AtomicLong();
            long end = System.nanoTime() + TimeUnit.MINUTES.toNanos(minutes);
            List<Thread> workers = new ArrayList<>();
            long peakThreads = 0;
            long peakFiles = 0;
            for (int w = 0; w < 16; w++) {
                workers.add(Thread.ofVirtual().start(() -> {
                    var random = java.util.concurrent.ThreadLocalRandom.current();
                    while (System.nanoTime() < end) { // bounded by the soak's deadline
                        int dice = random.nextInt(100);
                        try (Conn c = new Conn(proxy.port)) {
                            if (dice < 50) {
                                c.send(Conn.completionRequest());
                                exchanges.incrementAndGet();
                                c.readHead();
                                c.readBody();
                                continue;
                            }
                            int fault = dice < 90 ? 0 : dice < 95 ? 1 : 2;
                            c.send(Conn.request("/v1/chat/completions?events=8&interval=20&first=0&fault=" + fault, "{}"));
                            exchanges.incrementAndGet();
                            c.readHead();
                            if (dice >= 80 && dice < 90) { // the client leaves after two chunks
                                faults.incrementAndGet();
                                c.nextChunk();
                                c.nextChunk();
                                continue;
                            }
                            if (fault > 0) {
                                faults.incrementAndGet();
                            }
                            c.readBody();
                        } catch (IOException e) {
                            if (dice < 90) {
                                failures.incrementAndGet(); // only injected faults may cut a stream
                            }
                        }
                    }
                }));
            }
            while (System.nanoTime() < end) {
                Thread.sleep(2000); // sampling pace
                peakThreads = Math.max(peakThreads, proxy.threads());
                peakFiles = Math.max(peakFiles, proxy.openFiles());
            }
            for (Thread t : workers) {
                t.join();
            }
            Thread.sleep(4000); // stalled streams end by the proxy's timeout
            long heapAfter = proxy.usedHeapAfterGcKb();
            long threadsAfter = proxy.threads();
            long filesAfter = proxy.openFiles();
            proxy.terminate();
            String[] rows = Files.readString(proxy.log).split("\r\n", -1);
            long records = rows.length - 2 - warm;
            java.util.Map<String, Integer> outcomes = new java.util.TreeMap<>();
            for (int i = 1 + (int) warm; i < rows.length - 1; i++) {
                outcomes.merge(rows[i].substring(rows[i].indexOf(',') + 1), 1, Integer::sum);
            }
            row("soak " + minutes + " min: exchanges / records / faults injected / unexpected failures", "",
                    exchanges.get() + " / " + records + " / " + faults.get() + " / " + failures.get(),
                    "outcomes " + outcomes);
            row("  heap after GC / threads / open files: start -> peak -> end", "",
                    heapBefore / 1024 + " MB -> " + heapAfter / 1024 + " MB; " + threadsBefore + " -> " + peakThreads
                            + " -> " + threadsAfter + "; " + filesBefore + " -> " + peakFiles + " -> " + filesAfter, "");
        }
    }

    // --- load generators ---

    /** Results of a request load: latencies in µs, counts, and this client's CPU. */
    record Load(Histogram latency, long requests, long errors, double seconds, long clientCpuNanos) {
        double perSecond() {
            return requests / seconds;
        }

        long clientMicrosPerRequest() {
            return clientCpuNanos / Math.max(1, requests) / 1000;
        }
    }

    /** Each connection sends its next request as soon as the last answer is in. */
    private static Load closedLoop(int port, int connections, int seconds) throws Exception {
        Histogram latency = new Histogram();
        AtomicLong requests = new AtomicLong();
        AtomicLong errors = new AtomicLong();
        long cpu = Jvm.selfCpuNanos();
        long start = System.nanoTime();
        long end = start + TimeUnit.SECONDS.toNanos(seconds);
        byte[] request = Conn.completionRequest();
        List<Thread> threads = new ArrayList<>();
        for (int i = 0; i < connections; i++) {
            threads.add(Thread.ofPlatform().start(() -> {
                long[] mine = new long[1 << 16];
                int count = 0;
                try (Conn c = new Conn(port)) {
                    for (long now = System.nanoTime(); now < end; ) {
                        c.send(request);
                        c.readHead();
                        c.readBody();
                        long done = System.nanoTime();
                        if (c.status != 200) {
                            errors.incrementAndGet();
                        }
                        if (count == mine.length) {
                            mine = Arrays.copyOf(mine, count * 2);
                        }
                        mine[count++] = (done - now) / 1000;
                        now = done;
                    }
                } catch (IOException e) {
                    errors.incrementAndGet();
                }
                requests.addAndGet(count);
                latency.addAll(mine, count);
            }));
        }
        for (Thread t : threads) {
            t.join();
        }
        double elapsed = (System.nanoTime() - start) / 1e9;
        return new Load(latency, requests.get(), errors.get(), elapsed, Jvm.selfCpuNanos() - cpu);
    }

    /** Requests leave at a fixed rate whatever the answers do; latency counts from the planned send time. */
    private static Load openLoop(int port, int rate, int seconds) throws Exception {
        Histogram latency = new Histogram();
        AtomicLong errors = new AtomicLong();
        ConcurrentLinkedQueue<Conn> idle = new ConcurrentLinkedQueue<>();
        for (int i = 0; i < 32; i++) {
            idle.add(new Conn(port));
        }
        byte[] request = Conn.completionRequest();
        int total = rate * seconds;
        long period = 1_000_000_000L / rate;
        CountDownLatch done = new CountDownLatch(total);
        long cpu = Jvm.selfCpuNanos();
        long start = System.nanoTime();
        for (int i = 0; i < total; i++) {
            long planned = start + i * period;
            for (long wait = planned - System.nanoTime(); wait > 0; wait = planned - System.nanoTime()) {
                LockSupport.parkNanos(wait);
            }
            Thread.ofVirtual().start(() -> {
                Conn c = idle.poll();
                try {
                    if (c == null) {
                        c = new Conn(port);
                    }
                    c.send(request);
                    c.readHead();
                    c.readBody();
                    latency.add((System.nanoTime() - planned) / 1000);
                    if (c.status != 200) {
                        errors.incrementAndGet();
                    }
                    idle.add(c);
                } catch (IOException e) {
                    errors.incrementAndGet();
                } finally {
                    done.countDown();
                }
            });
        }
        if (!done.await(30, TimeUnit.SECONDS)) {
            errors.addAndGet(done.getCount());
        }
        double elapsed = (System.nanoTime() - start) / 1e9;
        for (Conn c : idle) {
            c.close();
        }
        return new Load(latency, total, errors.get(), elapsed, Jvm.selfCpuNanos() - cpu);
    }

    /** Results of a set of SSE streams: per-event delays (µs) and how the streams ended. */
    record Streams(Histogram delay, Histogram steadyDelay, int completed, int rejected, int failed, int incomplete,
                   long coalesced) {}

    /**
     * Opens {@code n} streams, {@code rampMillis} apart in total, each of {@code events} events
     * {@code interval} ms apart. A stream's event delay is its receive time minus the send time
     * stamped into it by the upstream (System.nanoTime is one clock for every process here).
     */
    private static Streams streams(int port, int n, int events, int interval, int first, int rampMillis)
            throws Exception {
        Histogram delay = new Histogram();
        List<long[]> stamped = new ArrayList<>(); // pairs of (send time, delay) per stream, for the steady state
        AtomicInteger completed = new AtomicInteger();
        AtomicInteger rejected = new AtomicInteger();
        AtomicInteger failed = new AtomicInteger();
        AtomicInteger incomplete = new AtomicInteger();
        AtomicLong coalesced = new AtomicLong();
        AtomicLong lastHeaders = new AtomicLong();
        byte[] request = Conn.streamRequest(events, interval, first);
        CountDownLatch done = new CountDownLatch(n);
        long start = System.nanoTime();
        for (int i = 0; i < n; i++) {
            long planned = start + (rampMillis * 1_000_000L * i) / n;
            for (long wait = planned - System.nanoTime(); wait > 0; wait = planned - System.nanoTime()) {
                LockSupport.parkNanos(wait);
            }
            Thread.ofVirtual().start(() -> {
                long[] mine = new long[events * 2];
                int got = 0;
                boolean answered = false;
                try (Conn c = new Conn(port)) {
                    c.send(request);
                    c.readHead();
                    answered = true;
                    lastHeaders.accumulateAndGet(System.nanoTime(), Math::max);
                    if (c.status == 503) {
                        c.readBody();
                        rejected.incrementAndGet();
                        return;
                    }
                    if (c.status != 200) {
                        failed.incrementAndGet();
                        return;
                    }
                    // An event counts when its closing blank line arrives; one that straddles two
                    // chunks (a read boundary inside it) is normal for SSE and costs no delay.
                    StringBuilder pending = new StringBuilder();
                    for (byte[] chunk = c.nextChunk(); chunk != null; chunk = c.nextChunk()) {
                        long now = System.nanoTime();
                        pending.append(new String(chunk, StandardCharsets.ISO_8859_1));
                        int inChunk = 0;
                        for (int end = pending.indexOf("\n\n"); end >= 0; end = pending.indexOf("\n\n")) {
                            String event = pending.substring(0, end);
                            pending.delete(0, end + 2);
                            int at = event.indexOf("\"t\":");
                            if (at < 0) {
                                continue; // [DONE]
                            }
                            long sent = Long.parseLong(event.substring(at + 4, event.indexOf(',', at)));
                            if (got < events) {
                                mine[2 * got] = sent;
                                mine[2 * got + 1] = (now - sent) / 1000;
                            }
                            got++;
                            inChunk++;
                        }
                        if (inChunk > 1) {
                            coalesced.addAndGet(inChunk - 1);
                        }
                    }
                    if (got == events) {
                        completed.incrementAndGet();
                    } else {
                        incomplete.incrementAndGet();
                    }
                } catch (IOException | RuntimeException e) {
                    (answered ? incomplete : failed).incrementAndGet();
                } finally {
                    int kept = Math.min(got, events);
                    for (int k = 0; k < kept; k++) {
                        delay.add(mine[2 * k + 1]);
                    }
                    synchronized (stamped) {
                        stamped.add(Arrays.copyOf(mine, 2 * kept));
                    }
                    done.countDown();
                }
            });
        }
        long bound = rampMillis + (long) events * interval + first + 60_000;
        if (!done.await(bound, TimeUnit.MILLISECONDS)) {
            System.out.println("  (" + done.getCount() + " streams still open after " + bound + " ms; counted as failed)");
        }
        Histogram steady = new Histogram();
        long steadyFrom = lastHeaders.get();
        synchronized (stamped) {
            for (long[] pairs : stamped) {
                for (int k = 0; k < pairs.length; k += 2) {
                    if (pairs[k] > steadyFrom) {
                        steady.add(pairs[k + 1]);
                    }
                }
            }
        }
        return new Streams(delay, steady, completed.get(), rejected.get(),
                failed.get() + (int) done.getCount(), incomplete.get(), coalesced.get());
    }

    /** Medians of time to response headers and to the first event, when that event comes 300 ms late. */
    private static long[] firstByte(int port, int reps) throws IOException {
        long[] headers = new long[reps];
        long[] firstEvent = new long[reps];
        byte[] request = Conn.streamRequest(1, 1, 300);
        for (int i = 0; i < reps; i++) {
            try (Conn c = new Conn(port)) {
                long t0 = System.nanoTime();
                c.send(request);
                c.readHead();
                headers[i] = (System.nanoTime() - t0) / 1000;
                c.nextChunk();
                firstEvent[i] = (System.nanoTime() - t0) / 1000;
                c.readBody();
            }
        }
        Arrays.sort(headers);
        Arrays.sort(firstEvent);
        return new long[] {headers[reps / 2], firstEvent[reps / 2]};
    }

    // --- the mock upstream ---

    /** An OpenAI-style mock: JSON completions, and SSE streams whose events carry their send time. */
    static final class MockUpstream {
        static final byte[] COMPLETION = ("{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1764201600,"
                + "\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                + "\"content\":\"The quick brown fox jumps over the lazy dog. It is a pangram: it uses every letter"
                + " of the alphabet at least once, which makes it handy for testing fonts and keyboards.\","
                + "\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":25,"
                + "\"completion_tokens\":38,\"total_tokens\":63},\"system_fingerprint\":\"fp_bench\"}")
                .getBytes(StandardCharsets.UTF_8);

        static void serve() throws IOException {
            System.setProperty("sun.net.httpserver.nodelay", "true");
            HttpServer server = HttpServer.create(new InetSocketAddress(LOOPBACK, 0), 4096);
            server.setExecutor(Executors.newVirtualThreadPerTaskExecutor());
            server.createContext("/", MockUpstream::handle);
            server.start();
            System.err.println("upstream port " + server.getAddress().getPort());
            System.in.read(); // the bench closes our stdin when it is done
            System.exit(0);
        }

        private static void handle(HttpExchange exchange) throws IOException {
            exchange.getRequestBody().readAllBytes();
            String query = exchange.getRequestURI().getRawQuery();
            if (query != null && query.startsWith("bytes=")) { // a download of that many bytes
                long bytes = Long.parseLong(query.substring(6));
                exchange.sendResponseHeaders(200, bytes);
                byte[] block = new byte[64 * 1024];
                Arrays.fill(block, (byte) 'x');
                try (OutputStream out = exchange.getResponseBody()) {
                    for (long left = bytes; left > 0; left -= block.length) {
                        out.write(block, 0, (int) Math.min(block.length, left));
                    }
                }
                return;
            }
            if (query == null) {
                exchange.getResponseHeaders().set("Content-Type", "application/json");
                exchange.sendResponseHeaders(200, COMPLETION.length);
                exchange.getResponseBody().write(COMPLETION);
                exchange.close();
                return;
            }
            int events = param(query, "events");
            int interval = param(query, "interval");
            int first = param(query, "first");
            exchange.getResponseHeaders().set("Content-Type", "text/event-stream");
            exchange.sendResponseHeaders(200, 0);
            OutputStream out = exchange.getResponseBody();
            out.flush();
            try {
                Thread.sleep(first);
                int fault = param(query, "fault"); // 1: die after the second event, 2: fall silent after it
                for (int i = 0; i < events; i++) {
                    if (i > 0) {
                        Thread.sleep(interval); // the pace of a model generating tokens
                    }
                    if (i == 2 && fault == 1) {
                        throw new IOException("mock upstream dies mid-stream"); // the server drops the connection
                    }
                    if (i == 2 && fault == 2) {
                        Thread.sleep(3_000); // longer than the soak proxy's --timeout
                    }
                    out.write(("data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"t\":"
                            + System.nanoTime() + ",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"token " + i
                            + "\"}}]}\n\n").getBytes(StandardCharsets.UTF_8));
                    out.flush();
                }
                out.write("data: [DONE]\n\n".getBytes(StandardCharsets.UTF_8));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            exchange.close();
        }

        private static int param(String query, String name) {
            Matcher m = Pattern.compile("(?:^|&)" + name + "=(\\d+)").matcher(query);
            return m.find() ? Integer.parseInt(m.group(1)) : 0;
        }
    }

    // --- plumbing ---

    /** A raw HTTP/1.1 keep-alive connection: the cheapest client this JDK can be. */
    static final class Conn implements AutoCloseable {
        private final Socket socket;
        private final InputStream in;
        private final OutputStream out;
        private final StringBuilder line = new StringBuilder();
        int status;
        private long contentLength;
        private boolean chunked;

        Conn(int port) throws IOException {
            socket = new Socket();
            socket.setTcpNoDelay(true);
            socket.connect(new InetSocketAddress(LOOPBACK, port), 10_000);
            socket.setSoTimeout(60_000);
            in = new BufferedInputStream(socket.getInputStream(), 8192);
            out = socket.getOutputStream();
        }

        static byte[] completionRequest() {
            return request("/v1/chat/completions", "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\","
                    + "\"content\":\"Write one sentence about foxes.\"}]}");
        }

        static byte[] streamRequest(int events, int interval, int first) {
            return request("/v1/chat/completions?events=" + events + "&interval=" + interval + "&first=" + first,
                    "{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Count.\"}]}");
        }

        static byte[] request(String path, String body) {
            return ("POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    + "Authorization: Bearer sk-bench\r\nContent-Length: " + body.length() + "\r\n\r\n" + body)
                    .getBytes(StandardCharsets.UTF_8);
        }

        void send(byte[] request) throws IOException {
            out.write(request);
        }

        void readHead() throws IOException {
            String statusLine = readLine();
            status = Integer.parseInt(statusLine.substring(9, 12));
            contentLength = -1;
            chunked = false;
            for (String h = readLine(); !h.isEmpty(); h = readLine()) {
                int colon = h.indexOf(':');
                String name = h.substring(0, colon);
                if (name.equalsIgnoreCase("Content-Length")) {
                    contentLength = Long.parseLong(h.substring(colon + 1).trim());
                } else if (name.equalsIgnoreCase("Transfer-Encoding")) {
                    chunked = h.substring(colon + 1).trim().equalsIgnoreCase("chunked");
                }
            }
        }

        void readBody() throws IOException {
            if (chunked) {
                while (nextChunk() != null) {
                    // drained
                }
            } else if (contentLength > 0) {
                in.skipNBytes(contentLength); // throws EOFException when the body is cut short
            }
        }

        byte[] nextChunk() throws IOException {
            int size = Integer.parseInt(readLine().trim(), 16);
            if (size == 0) {
                readLine();
                return null;
            }
            byte[] chunk = in.readNBytes(size);
            if (chunk.length < size) {
                throw new IOException("connection closed inside a chunk");
            }
            readLine();
            return chunk;
        }

        private String readLine() throws IOException {
            line.setLength(0);
            for (int b = in.read(); b != '\n'; b = in.read()) {
                if (b < 0) {
                    throw new IOException("connection closed");
                }
                if (b != '\r') {
                    line.append((char) b);
                }
            }
            return line.toString();
        }

        @Override
        public void close() throws IOException {
            socket.close();
        }
    }

    /** A child JVM whose CPU and memory are read from /proc. */
    static final class Jvm implements AutoCloseable {
        final Process process;
        final List<String> command;
        final Path stderr;
        int port;
        Path log;

        private Jvm(Process process, List<String> command, Path stderr) {
            this.process = process;
            this.command = command;
            this.stderr = stderr;
        }

        static Jvm start(Path stderr, List<String> command) throws IOException {
            Process p = new ProcessBuilder(command).redirectError(stderr.toFile())
                    .redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
            return new Jvm(p, command, stderr);
        }

        int awaitPort(String pattern) throws IOException, InterruptedException {
            Pattern p = Pattern.compile(pattern);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
            while (System.nanoTime() < deadline) {
                Matcher m = p.matcher(Files.readString(stderr));
                if (m.find()) {
                    return Integer.parseInt(m.group(1));
                }
                if (!process.isAlive()) {
                    break;
                }
                Thread.sleep(5); // polling a file another process writes; nothing to wait on
            }
            throw new IOException("no '" + pattern + "' from " + command + ":\n" + Files.readString(stderr));
        }

        long cpuNanos() throws IOException {
            return cpuNanos("/proc/" + process.pid() + "/stat");
        }

        static long selfCpuNanos() throws IOException {
            return cpuNanos("/proc/self/stat");
        }

        private static long cpuNanos(String stat) throws IOException {
            String text = Files.readString(Path.of(stat));
            String[] fields = text.substring(text.lastIndexOf(')') + 2).split(" ");
            return (Long.parseLong(fields[11]) + Long.parseLong(fields[12])) * TICK_NANOS;
        }

        long threads() throws IOException {
            for (String l : Files.readAllLines(Path.of("/proc/" + process.pid() + "/status"))) {
                if (l.startsWith("Threads:")) {
                    return Long.parseLong(l.replaceAll("\\D", ""));
                }
            }
            return -1;
        }

        long openFiles() throws IOException {
            try (var files = Files.list(Path.of("/proc/" + process.pid() + "/fd"))) {
                return files.count();
            }
        }

        long peakRssMb() throws IOException {
            for (String l : Files.readAllLines(Path.of("/proc/" + process.pid() + "/status"))) {
                if (l.startsWith("VmHWM:")) {
                    return Long.parseLong(l.replaceAll("\\D", "")) / 1024;
                }
            }
            return -1;
        }

        /** Used heap in KB right after a full GC, read with jcmd. */
        long usedHeapAfterGcKb() throws IOException, InterruptedException {
            String jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd").toString();
            new ProcessBuilder(jcmd, String.valueOf(process.pid()), "GC.run")
                    .redirectOutput(ProcessBuilder.Redirect.DISCARD).start().waitFor();
            Process info = new ProcessBuilder(jcmd, String.valueOf(process.pid()), "GC.heap_info").start();
            String text = new String(info.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            info.waitFor();
            Matcher m = Pattern.compile("used (\\d+)K").matcher(text);
            if (!m.find()) {
                throw new IOException("no heap figure in: " + text);
            }
            return Long.parseLong(m.group(1));
        }

        void terminate() throws InterruptedException {
            process.toHandle().destroy();
            process.waitFor(30, TimeUnit.SECONDS);
        }

        @Override
        public void close() {
            try {
                process.getOutputStream().close();
                terminate();
            } catch (IOException | InterruptedException e) {
                process.destroyForcibly();
            }
            process.destroyForcibly();
        }
    }

    /** Collects values (µs) and reads percentiles. */
    static final class Histogram {
        private long[] values = new long[1024];
        private int size;

        synchronized void add(long v) {
            if (size == values.length) {
                values = Arrays.copyOf(values, size * 2);
            }
            values[size++] = v;
        }

        synchronized void addAll(long[] vs, int n) {
            if (size + n > values.length) {
                values = Arrays.copyOf(values, Math.max(size + n, values.length * 2));
            }
            System.arraycopy(vs, 0, values, size, n);
            size += n;
        }

        synchronized long p(double percentile) {
            if (size == 0) {
                return 0;
            }
            long[] sorted = Arrays.copyOf(values, size);
            Arrays.sort(sorted);
            return sorted[(int) Math.min(size - 1, Math.ceil(percentile / 100 * size) - 1)];
        }

        long max() {
            return p(100);
        }
    }

    private void row(String... cells) {
        table.add(cells);
        System.out.println("  " + String.join("  |  ", cells));
    }

    private void errors(Load direct, Load proxied) {
        if (direct.errors > 0 || proxied.errors > 0) {
            row("  errors", String.valueOf(direct.errors), String.valueOf(proxied.errors), "");
        }
    }

    private static void progress(String what) {
        System.out.println("- " + what);
    }

    private static String machine() throws IOException {
        String cpu = "unknown CPU";
        for (String l : Files.readAllLines(Path.of("/proc/cpuinfo"))) {
            if (l.startsWith("model name")) {
                cpu = l.substring(l.indexOf(':') + 1).trim();
                break;
            }
        }
        return Runtime.getRuntime().availableProcessors() + " cores (" + cpu + "), Java "
                + System.getProperty("java.version") + ", " + System.getProperty("os.name") + " "
                + System.getProperty("os.arch");
    }

    private static String fmt(double v) {
        return String.format(Locale.ROOT, "%,.0f", v);
    }

    private static String ms(long micros) {
        return String.format(Locale.ROOT, "%.2f", micros / 1000.0);
    }

    private static String ratio(double a, double b) {
        return String.format(Locale.ROOT, "%.2fx", a / b);
    }

    private static String pct(long part, long whole) {
        return String.format(Locale.ROOT, "%+.0f%%", 100.0 * part / Math.max(1, whole));
    }
}
