import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpHandler;
import com.sun.net.httpserver.HttpServer;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Shared pieces of the tests: a fake upstream, a raw HTTP client, a CSV reader, a proxy launcher. */
final class TestSupport {
    static {
        LlmProxy.Proxy.tuneJdkProperties(); // before any HttpServer or HttpClient exists in this JVM
    }

    private TestSupport() {}

    static final InetAddress LOOPBACK = InetAddress.getLoopbackAddress();
    static final String JAVA = Path.of(System.getProperty("java.home"), "bin", "java").toString();

    /** A request as the fake upstream received it. */
    record Received(String method, String rawPathAndQuery, Map<String, List<String>> headers, byte[] body) {
        String header(String name) {
            List<String> values = headers.get(name.toLowerCase(Locale.ROOT));
            return values == null ? null : String.join(",", values);
        }

        String bodyText() {
            return new String(body, StandardCharsets.UTF_8);
        }
    }

    /** An exchange handler of the fake upstream that may throw anything. */
    interface Answer {
        void answer(HttpExchange exchange) throws Exception;
    }

    /** A fake upstream: an HttpServer on 127.0.0.1, port 0, recording what it receives. */
    static final class Upstream implements AutoCloseable {
        final HttpServer server;
        final BlockingQueue<Received> received = new LinkedBlockingQueue<>();

        /** An upstream whose handler reads the request itself. */
        static Upstream streaming(Answer answer) throws IOException {
            return new Upstream(answer, false);
        }

        /** An upstream that reads and records each request, then lets {@code answer} respond. */
        static Upstream recording(Answer answer) throws IOException {
            return new Upstream(answer, true);
        }

        private Upstream(Answer answer, boolean readFirst) throws IOException {
            server = HttpServer.create(new InetSocketAddress(LOOPBACK, 0), 0);
            server.setExecutor(Executors.newVirtualThreadPerTaskExecutor());
            HttpHandler handler = exchange -> {
                try {
                    if (readFirst) {
                        record(exchange, exchange.getRequestBody().readAllBytes());
                    }
                    answer.answer(exchange);
                    exchange.close();
                } catch (IOException | RuntimeException e) {
                    throw e;
                } catch (Exception e) {
                    throw new IOException(e);
                }
            };
            server.createContext("/", handler);
            server.start();
        }

        void record(HttpExchange exchange, byte[] body) {
            Map<String, List<String>> headers = new LinkedHashMap<>();
            exchange.getRequestHeaders().forEach((k, v) -> headers.put(k.toLowerCase(Locale.ROOT), List.copyOf(v)));
            received.add(new Received(exchange.getRequestMethod(), exchange.getRequestURI().toString(), headers, body));
        }

        Received next() throws InterruptedException {
            Received r = received.poll(10, TimeUnit.SECONDS);
            if (r == null) {
                throw new AssertionError("the upstream received no request within 10 s");
            }
            return r;
        }

        String url() {
            return "http://127.0.0.1:" + server.getAddress().getPort();
        }

        @Override
        public void close() {
            server.stop(0);
        }
    }

    /** A socket-level fake upstream, for faults the JDK server cannot produce (resets, timeouts). */
    static final class RawUpstream implements AutoCloseable {
        interface Conversation {
            void talk(Socket socket, InputStream in, OutputStream out) throws Exception;
        }

        final ServerSocket server;
        final Thread thread;

        RawUpstream(Conversation conversation) throws IOException {
            server = new ServerSocket(0, 50, LOOPBACK);
            thread = Thread.ofVirtual().start(() -> {
                try (Socket socket = server.accept()) {
                    conversation.talk(socket, socket.getInputStream(), socket.getOutputStream());
                } catch (Exception e) {
                    // the test asserts what the proxy and its client saw
                }
            });
        }

        /** Reads a request head (up to the blank line) byte by byte. */
        static String readHead(InputStream in) throws IOException {
            ByteArrayOutputStream head = new ByteArrayOutputStream();
            while (!head.toString(StandardCharsets.ISO_8859_1).endsWith("\r\n\r\n")) {
                int b = in.read();
                if (b < 0) {
                    throw new EOFException("request head cut short");
                }
                head.write(b);
            }
            return head.toString(StandardCharsets.ISO_8859_1);
        }

        String url() {
            return "http://127.0.0.1:" + server.getLocalPort();
        }

        @Override
        public void close() throws IOException {
            server.close();
        }
    }

    /** A proxy started the way the command line starts it, with its stderr kept for assertions. */
    static final class RunningProxy implements AutoCloseable {
        final LlmProxy.Proxy proxy;
        final Path log;
        final ByteArrayOutputStream stderr = new ByteArrayOutputStream();

        RunningProxy(Path log, Map<String, String> env, String... args) {
            this(log, null, env, args);
        }

        /** A proxy with the given limits instead of those derived from this JVM. */
        RunningProxy(Path log, LlmProxy.Limits limits, Map<String, String> env, String... args) {
            this.log = log;
            List<String> all = new ArrayList<>(List.of("--port", "0", "--log-file", log.toString()));
            all.addAll(List.of(args));
            var command = LlmProxy.Cli.parse(all.toArray(String[]::new), env::get);
            var config = ((LlmProxy.Cli.Command.Run) command).config();
            var err = new PrintStream(stderr, true, StandardCharsets.UTF_8);
            proxy = limits == null ? LlmProxy.Proxy.start(config, err) : LlmProxy.Proxy.start(config, limits, err);
        }

        int port() {
            return proxy.port();
        }

        String url(String path) {
            return "http://127.0.0.1:" + port() + path;
        }

        String stderr() {
            return stderr.toString(StandardCharsets.UTF_8);
        }

        /** Stops the proxy, draining the log and its stderr lines. */
        void stop() {
            proxy.close();
        }

        /** Stops the proxy (draining the log) and returns the data rows of a CSV log with the default columns. */
        List<List<String>> records() throws IOException {
            close();
            List<List<String>> rows = Csv.parse(Files.readString(log));
            if (!rows.getFirst().equals(List.of("method", "url", "request_body", "response_body"))) {
                throw new AssertionError("unexpected header row " + rows.getFirst());
            }
            return rows.subList(1, rows.size());
        }

        @Override
        public void close() {
            proxy.close();
        }
    }

    /** A proxy in its own JVM, with its stderr read line by line. */
    static final class Launched implements AutoCloseable {
        final Process process;
        final BlockingQueue<String> stderr = new LinkedBlockingQueue<>();
        final int port;

        Launched(String target, Path log, String... more) throws Exception {
            List<String> command = new ArrayList<>(List.of(JAVA));
            command.addAll(List.of(more).stream().filter(Launched::jvmOption).toList());
            command.addAll(List.of("-jar", "build/llmproxy.jar", "--target-url", target, "--port", "0",
                    "--log-file", log.toString()));
            command.addAll(List.of(more).stream().filter(a -> !jvmOption(a)).toList());
            process = new ProcessBuilder(command).start();
            Thread.ofVirtual().start(() -> {
                try (var reader = new BufferedReader(new InputStreamReader(process.getErrorStream(), StandardCharsets.UTF_8))) {
                    for (String line; (line = reader.readLine()) != null; ) {
                        stderr.add(line);
                    }
                } catch (IOException e) {
                    stderr.add("(stderr closed: " + e + ")");
                }
            });
            Matcher m = Pattern.compile("listening on http://127\\.0\\.0\\.1:(\\d+) ").matcher(awaitLine("listening on"));
            assertTrue(m.find());
            port = Integer.parseInt(m.group(1));
        }

        /** -D and -X arguments go to the JVM, the rest to llmproxy. */
        private static boolean jvmOption(String argument) {
            return argument.startsWith("-D") || argument.startsWith("-X");
        }

        String awaitLine(String part) throws InterruptedException {
            List<String> seen = new ArrayList<>();
            while (true) {
                String line = stderr.poll(30, TimeUnit.SECONDS);
                if (line == null) {
                    throw new AssertionError("no stderr line with '" + part + "'; saw " + seen);
                }
                seen.add(line);
                if (line.contains(part)) {
                    return line;
                }
            }
        }

        /** Sends SIGTERM and returns the exit code. */
        int terminate() throws InterruptedException {
            process.toHandle().destroy(); // SIGTERM; Process.destroy() would also close our end of its stderr
            return exitCode();
        }

        int exitCode() throws InterruptedException {
            assertTrue(process.waitFor(30, TimeUnit.SECONDS), "the proxy did not stop");
            return process.exitValue();
        }

        @Override
        public void close() {
            process.destroyForcibly();
        }
    }

    /** A strict RFC 4180 reader: quoted fields, doubled quotes, CRLF record ends. */
    static final class Csv {
        static List<List<String>> parse(String text) {
            List<List<String>> rows = new ArrayList<>();
            List<String> row = new ArrayList<>();
            StringBuilder field = new StringBuilder();
            int i = 0;
            while (i < text.length()) {
                char c = text.charAt(i);
                if (c == '"' && field.isEmpty()) {
                    i++;
                    while (true) {
                        if (i >= text.length()) {
                            throw new AssertionError("unterminated quoted field");
                        }
                        char q = text.charAt(i++);
                        if (q == '"') {
                            if (i < text.length() && text.charAt(i) == '"') {
                                field.append('"');
                                i++;
                            } else {
                                break;
                            }
                        } else {
                            field.append(q);
                        }
                    }
                    if (i < text.length() && text.charAt(i) != ',' && text.charAt(i) != '\r') {
                        throw new AssertionError("text after a closing quote at " + i);
                    }
                } else if (c == ',') {
                    row.add(field.toString());
                    field.setLength(0);
                    i++;
                } else if (c == '\r') {
                    if (i + 1 >= text.length() || text.charAt(i + 1) != '\n') {
                        throw new AssertionError("bare CR outside quotes at " + i);
                    }
                    row.add(field.toString());
                    field.setLength(0);
                    rows.add(row);
                    row = new ArrayList<>();
                    i += 2;
                } else if (c == '\n') {
                    throw new AssertionError("bare LF outside quotes at " + i);
                } else {
                    field.append(c);
                    i++;
                }
            }
            if (!field.isEmpty() || !row.isEmpty()) {
                throw new AssertionError("last record does not end with CRLF");
            }
            return rows;
        }
    }

    /** A raw HTTP/1.1 client over a socket: sends exact bytes, reads chunk by chunk. */
    static final class RawClient implements AutoCloseable {
        final Socket socket;
        final InputStream in;
        final OutputStream out;
        int status;
        final Map<String, String> headers = new LinkedHashMap<>();

        RawClient(int port) throws IOException {
            socket = new Socket(LOOPBACK, port);
            socket.setSoTimeout(10_000);
            in = socket.getInputStream();
            out = socket.getOutputStream();
        }

        RawClient send(String text) throws IOException {
            out.write(text.getBytes(StandardCharsets.UTF_8));
            out.flush();
            return this;
        }

        /** Reads the status line and headers. */
        RawClient readHead() throws IOException {
            String statusLine = line();
            status = Integer.parseInt(statusLine.split(" ")[1]);
            for (String line = line(); !line.isEmpty(); line = line()) {
                int colon = line.indexOf(':');
                headers.merge(line.substring(0, colon).trim().toLowerCase(Locale.ROOT),
                        line.substring(colon + 1).trim(), (a, b) -> a + "\n" + b);
            }
            return this;
        }

        /** The next chunk of a chunked body; null after the terminating chunk; EOFException if cut. */
        byte[] nextChunk() throws IOException {
            String size = line();
            int length = Integer.parseInt(size.split(";")[0].trim(), 16);
            if (length == 0) {
                for (String line = line(); !line.isEmpty(); line = line()) {
                    // trailers
                }
                return null;
            }
            byte[] chunk = in.readNBytes(length);
            if (chunk.length < length) {
                throw new EOFException("connection closed inside a chunk");
            }
            line();
            return chunk;
        }

        /** Reads chunks until {@code text} has arrived in full; returns all bytes read for it. */
        String readUntil(String text) throws IOException {
            StringBuilder got = new StringBuilder();
            while (!got.toString().contains(text)) {
                byte[] chunk = nextChunk();
                if (chunk == null) {
                    throw new AssertionError("body ended before '" + text + "'; got '" + got + "'");
                }
                got.append(new String(chunk, StandardCharsets.UTF_8));
            }
            return got.toString();
        }

        /** The whole body, by Content-Length or chunks; throws EOFException if it is cut short. */
        byte[] body() throws IOException {
            String length = headers.get("content-length");
            if (length != null) {
                byte[] body = in.readNBytes(Integer.parseInt(length));
                if (body.length < Integer.parseInt(length)) {
                    throw new EOFException("connection closed inside a fixed-length body");
                }
                return body;
            }
            if ("chunked".equalsIgnoreCase(headers.get("transfer-encoding"))) {
                ByteArrayOutputStream body = new ByteArrayOutputStream();
                for (byte[] chunk = nextChunk(); chunk != null; chunk = nextChunk()) {
                    body.write(chunk);
                }
                return body.toByteArray();
            }
            return in.readAllBytes();
        }

        private String line() throws IOException {
            ByteArrayOutputStream line = new ByteArrayOutputStream();
            while (true) {
                int b = in.read();
                if (b < 0) {
                    throw new EOFException("connection closed; line so far: '" + line + "'");
                }
                if (b == '\n') {
                    String s = line.toString(StandardCharsets.ISO_8859_1);
                    return s.endsWith("\r") ? s.substring(0, s.length() - 1) : s;
                }
                line.write(b);
            }
        }

        @Override
        public void close() throws IOException {
            socket.close();
        }
    }

    /** Starts a proxy with a system property set, for the properties read once at start. */
    static RunningProxy withProperty(String name, String value, java.util.function.Supplier<RunningProxy> start) {
        System.setProperty(name, value);
        try {
            return start.get();
        } finally {
            System.clearProperty(name);
        }
    }

    /** Waits for a latch, failing the test instead of hanging when it never opens. */
    static void await(CountDownLatch latch, String what) throws InterruptedException {
        if (!latch.await(10, TimeUnit.SECONDS)) {
            throw new AssertionError("timed out waiting for " + what);
        }
    }

    /** Writes text to a response body and flushes it, so it leaves as one chunk now. */
    static void sendChunk(OutputStream out, String text) throws IOException {
        out.write(text.getBytes(StandardCharsets.UTF_8));
        out.flush();
    }
}
