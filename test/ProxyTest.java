import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.zip.DeflaterOutputStream;
import java.util.zip.GZIPOutputStream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.api.io.TempDir;

/** Forwarding, streaming, faults and records, end to end through a real proxy and a fake upstream. */
class ProxyTest {
    @TempDir
    Path dir;

    private TestSupport.RunningProxy proxy(TestSupport.Upstream upstream, String... args) {
        return proxy(Map.of(), upstream.url(), args);
    }

    private TestSupport.RunningProxy proxy(Map<String, String> env, String target, String... args) {
        List<String> all = new ArrayList<>(List.of("--target-url", target));
        all.addAll(List.of(args));
        return new TestSupport.RunningProxy(dir.resolve("log.csv"), env, all.toArray(String[]::new));
    }

    private static HttpClient client() {
        return HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
    }

    @Test
    void streamsSseEventsInLockstep() throws Exception {
        int events = 10;
        CountDownLatch[] clientRead = new CountDownLatch[events];
        for (int k = 0; k < events; k++) {
            clientRead[k] = new CountDownLatch(1);
        }
        StringBuilder sent = new StringBuilder();
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.getResponseHeaders().set("Content-Type", "text/event-stream");
            exchange.sendResponseHeaders(200, 0);
            OutputStream out = exchange.getResponseBody();
            for (int k = 0; k < events; k++) {
                String event = "data: {\"delta\": \"token " + k + "\"}\n\n";
                sent.append(event);
                TestSupport.sendChunk(out, event);
                // The next event leaves only once the client has the previous one: a proxy that
                // buffers anything stalls this test instead of passing it.
                TestSupport.await(clientRead[k], "the client to read event " + k);
            }
            out.close();
        }); var proxy = proxy(upstream);
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}").readHead();
            assertEquals(200, client.status);
            assertEquals("text/event-stream", client.headers.get("content-type"));
            for (int k = 0; k < events; k++) {
                String got = client.readUntil("token " + k + "\"}\n\n");
                assertEquals("data: {\"delta\": \"token " + k + "\"}\n\n", got, "event " + k + " alone");
                clientRead[k].countDown();
            }
            assertNull(client.nextChunk(), "a clean end after the last event");
            List<List<String>> records = proxy.records();
            assertEquals(1, records.size());
            assertEquals(List.of("POST", "http://localhost/v1/chat/completions", "{}", sent.toString()), records.getFirst());
        }
    }

    @Test
    void sendsResponseHeadersBeforeTheFirstBodyByte() throws Exception {
        CountDownLatch clientHasHeaders = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 0);
            exchange.getResponseBody().flush();
            TestSupport.await(clientHasHeaders, "the client to see the headers");
            TestSupport.sendChunk(exchange.getResponseBody(), "data: first\n\n");
            exchange.getResponseBody().close();
        }); var proxy = proxy(upstream);
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(200, client.status);
            clientHasHeaders.countDown();
            assertEquals("data: first\n\n", new String(client.body(), StandardCharsets.UTF_8));
        }
    }

    @Test
    void appendsRequestPathAndQueryToTargetPathKeepingEncoding() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = proxy(Map.of(), upstream.url() + "/v1/?api-version=7")) {
            var response = client().send(HttpRequest.newBuilder(URI.create(
                    proxy.url("/models/a%2Fb%20c?q=%26x&y=1"))).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(204, response.statusCode());
            assertEquals("/v1/models/a%2Fb%20c?api-version=7&q=%26x&y=1", upstream.next().rawPathAndQuery());
        }
    }

    @Test
    void refusesPathClimbingAboveTargetPath() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(200, -1));
             var proxy = proxy(Map.of(), upstream.url() + "/v1");
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("GET /models/../../admin HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(400, client.status);
            assertTrue(new String(client.body(), StandardCharsets.UTF_8).contains("'..'"));
            assertTrue(upstream.received.isEmpty());
            List<List<String>> records = proxy.records();
            assertEquals(1, records.size());
            assertEquals("http://localhost/models/../../admin", records.getFirst().get(1));
        }
    }

    @Test
    void sendsAbsoluteFormRequestsToTheTargetOnly() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = proxy(upstream);
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("GET http://localhost:" + proxy.port() + "/secret?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    .readHead();
            assertEquals(204, client.status);
            var received = upstream.next();
            assertEquals("/secret?x=1", received.rawPathAndQuery());
            assertEquals(upstream.url().substring("http://".length()), received.header("Host"));
        }
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = proxy(upstream);
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("GET http://elsewhere.invalid/secret HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(403, client.status, "llmproxy is not an open proxy for other hosts");
            assertTrue(upstream.received.isEmpty());
        }
    }

    @Test
    void dropsHopByHopRequestHeadersAndAppliesAddedHeaders() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = proxy(Map.of("KEY", "sk-test:with:colons"), upstream.url(),
                     "-a", "Authorization: Bearer ${KEY}", "--add-header=X-Extra: a:b ");
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("""
                    POST /v1/messages HTTP/1.1\r
                    Host: localhost\r
                    Connection: keep-alive, X-Hop\r
                    Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
                    Sec-WebSocket-Version: 13\r
                    X-Hop: must-not-pass\r
                    Keep-Alive: timeout=5\r
                    TE: trailers\r
                    Proxy-Connection: keep-alive\r
                    HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r
                    Trailer: X-Checksum\r
                    Authorization: Bearer client-key\r
                    x-extra: from-client\r
                    X-Custom: kept\r
                    Accept-Encoding: br, gzip;q=0.8, zstd, deflate\r
                    Content-Length: 5\r
                    \r
                    hello""").readHead();
            assertEquals(204, client.status);
            var received = upstream.next();
            for (String hop : List.of("X-Hop", "Keep-Alive", "TE", "Proxy-Connection", "HTTP2-Settings", "Trailer",
                    "Transfer-Encoding", "Upgrade", "Proxy-Authorization", "Sec-WebSocket-Key", "Sec-WebSocket-Version")) {
                assertNull(received.header(hop), hop + " must not reach the upstream");
            }
            assertEquals("Bearer sk-test:with:colons", received.header("Authorization"));
            assertEquals("a:b", received.header("X-Extra"));
            assertEquals("kept", received.header("X-Custom"));
            assertEquals("gzip;q=0.8, deflate", received.header("Accept-Encoding"));
            assertEquals(upstream.url().substring("http://".length()), received.header("Host"));
            assertEquals("5", received.header("Content-Length"));
            assertEquals("hello", received.bodyText());
            proxy.records(); // stops the proxy, so the whole log is on disk
            String log = java.nio.file.Files.readString(proxy.log);
            assertFalse(log.contains("sk-test"), "the injected key must never reach the log");
        }
    }

    @Test
    void readsTheConversationWhenTheTargetIsTheEndpointItself() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.getResponseHeaders().set("Content-Type", "application/json");
            byte[] body = "{\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"content\":\"Hi\"}}]}"
                    .getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(200, body.length);
            exchange.getResponseBody().write(body);
        }); var proxy = proxy(Map.of(), upstream.url() + "/v1/chat/completions", "--log-columns", "url,model,response_text")) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/")))
                    .POST(HttpRequest.BodyPublishers.ofString("{\"model\":\"gpt-4o\",\"messages\":[]}")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(200, response.statusCode());
            assertEquals("/v1/chat/completions/", upstream.next().rawPathAndQuery());
            proxy.stop();
            var record = recordsByColumn(proxy.log).getFirst();
            assertEquals("gpt-4o", record.get("model"));
            assertEquals("Hi", record.get("response_text"));
        }
    }

    @Test
    void logsAPromptWithScreenshotsInAFewKilobytesAndForwardsItWhole() throws Exception {
        String shot = LogWriterTest.base64(LogWriterTest.PNG, 1_900_000);
        String prompt = "{\"model\":\"claude-sonnet-4-5\",\"messages\":[{\"role\":\"user\",\"content\":["
                + "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"" + shot + "\"}},"
                + "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":\"" + shot + "\"}},"
                + "{\"type\":\"text\",\"text\":\"" + "Compare the two screenshots. ".repeat(100) + "\"}]}]}";
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = proxy(upstream, "--log-columns", "request_bytes,request_body")) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/v1/messages")))
                    .POST(HttpRequest.BodyPublishers.ofString(prompt)).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(204, response.statusCode());
            assertEquals(prompt, upstream.next().bodyText(), "the upstream gets every byte");
            proxy.stop();
            var record = recordsByColumn(proxy.log).getFirst();
            assertTrue(prompt.length() > 5_000_000);
            assertEquals(String.valueOf(prompt.length()), record.get("request_bytes"));
            assertTrue(record.get("request_body").length() < 5_000, record.get("request_body").length() + " characters");
            assertTrue(record.get("request_body").contains("\"data\":\"[base64 image/png, 1.8 MB]\"}"));
            assertTrue(record.get("request_body").contains("Compare the two screenshots."));
        }
    }

    @Test
    void masksAKeyInTheTargetUrlOnTheStartLine() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = proxy(Map.of(), upstream.url() + "/v1?key=AIza-target-0123456789abcdef&api-version=1")) {
            String start = proxy.stderr().lines().findFirst().orElseThrow();
            assertTrue(start.contains("/v1?key=AIza…cdef&api-version=1"), start);
            assertFalse(proxy.stderr().contains("AIza-target"), proxy.stderr());
        }
    }

    @Test
    void answersAWebSocketUpgradeAt426WithoutContactingTheUpstream() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(200, -1));
             var proxy = proxy(upstream, "--log-columns", "method,url,status,outcome,error");
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("GET /v1/responses HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").readHead();
            assertEquals(426, client.status, "the answer Codex takes as final: it falls back to HTTP at once");
            assertTrue(new String(client.body(), StandardCharsets.UTF_8).contains("llmproxy_websocket_unsupported"));
            proxy.stop();
            assertTrue(upstream.received.isEmpty());
            var row = TestSupport.Csv.parse(java.nio.file.Files.readString(proxy.log)).get(1);
            assertEquals(List.of("GET", "426", "rejected"), List.of(row.get(0), row.get(2), row.get(3)));
        }
    }

    @Test
    void dropsHopByHopResponseHeadersAndKeepsTheRest() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            var headers = exchange.getResponseHeaders();
            headers.set("Connection", "X-Up-Hop");
            headers.set("X-Up-Hop", "must-not-pass");
            headers.set("Keep-Alive", "timeout=5");
            headers.set("Proxy-Authenticate", "Basic realm=upstream-proxy");
            headers.set("X-Kept", "yes");
            headers.add("Set-Cookie", "a=1");
            headers.add("Set-Cookie", "b=2");
            exchange.sendResponseHeaders(200, 2);
            exchange.getResponseBody().write("ok".getBytes(StandardCharsets.UTF_8));
        }); var proxy = proxy(upstream)) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/x"))).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals("ok", response.body());
            assertEquals("yes", response.headers().firstValue("X-Kept").orElseThrow());
            assertEquals(List.of("a=1", "b=2"), response.headers().allValues("Set-Cookie"));
            assertTrue(response.headers().firstValue("X-Up-Hop").isEmpty());
            assertTrue(response.headers().firstValue("Keep-Alive").isEmpty());
            assertTrue(response.headers().firstValue("Proxy-Authenticate").isEmpty(), "hop-by-hop: for this connection only");
            assertEquals("2", response.headers().firstValue("Content-Length").orElseThrow(),
                    "a known length stays a fixed length");
        }
    }

    @Test
    void forwardsEveryMethod() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            byte[] body = exchange.getRequestMethod().getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(200, body.length);
            exchange.getResponseBody().write(body);
        }); var proxy = proxy(upstream)) {
            for (String method : List.of("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "PURGE")) {
                var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/r")))
                        .method(method, HttpRequest.BodyPublishers.ofString("b")).build(),
                        HttpResponse.BodyHandlers.ofString());
                assertEquals(method, response.body());
                var received = upstream.next();
                assertEquals(method, received.method());
                assertEquals("b", received.bodyText());
            }
        }
    }

    @Test
    void answersHeadAnd204And304WithoutBody() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            switch (exchange.getRequestURI().getPath()) {
                case "/head" -> {
                    exchange.getResponseHeaders().set("Content-Length", "1234");
                    exchange.sendResponseHeaders(200, -1);
                }
                case "/204" -> {
                    exchange.getResponseHeaders().set("Content-Length", "0"); // as some upstreams send it
                    exchange.sendResponseHeaders(204, -1);
                }
                default -> exchange.sendResponseHeaders(304, -1);
            }
        }); var proxy = proxy(upstream)) {
            for (String request : List.of("HEAD /head", "GET /204", "GET /304")) {
                try (var client = new TestSupport.RawClient(proxy.port())) {
                    client.send(request + " HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
                    assertEquals(request.equals("HEAD /head") ? 200 : Integer.parseInt(request.substring(5)),
                            client.status);
                    assertNull(client.headers.get("transfer-encoding"), request);
                    if (request.equals("GET /204")) {
                        assertNull(client.headers.get("content-length"), "a 204 never carries Content-Length");
                    }
                    if (request.startsWith("HEAD")) {
                        assertEquals("1234", client.headers.get("content-length"), "HEAD keeps the length it describes");
                    }
                    // the connection stays usable: no body bytes are left to confuse the next response
                    client.send("GET /204 HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
                    assertEquals(204, client.status);
                }
            }
        }
    }

    @Test
    void passesRedirectsBackWithoutFollowing() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.getResponseHeaders().set("Location", "/elsewhere");
            exchange.sendResponseHeaders(302, -1);
        }); var proxy = proxy(upstream)) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/old"))).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(302, response.statusCode());
            assertEquals("/elsewhere", response.headers().firstValue("Location").orElseThrow());
            upstream.next();
            assertTrue(upstream.received.isEmpty(), "the proxy followed the redirect");
        }
    }

    @Test
    void passesGzipBytesUnchangedAndLogsThemDecoded() throws Exception {
        String json = "{\"answer\": \"zipped, \\\"quoted\\\" and ünïcode\"}";
        ByteArrayOutputStream zipped = new ByteArrayOutputStream();
        try (var gzip = new GZIPOutputStream(zipped)) {
            gzip.write(json.getBytes(StandardCharsets.UTF_8));
        }
        assertEncodedBodyPassesAndIsLoggedDecoded("gzip", zipped.toByteArray(), json);
    }

    @Test
    void passesDeflateBytesUnchangedAndLogsThemDecoded() throws Exception {
        String json = "{\"answer\": \"deflated\"}";
        ByteArrayOutputStream deflated = new ByteArrayOutputStream();
        try (var deflate = new DeflaterOutputStream(deflated)) {
            deflate.write(json.getBytes(StandardCharsets.UTF_8));
        }
        assertEncodedBodyPassesAndIsLoggedDecoded("deflate", deflated.toByteArray(), json);
    }

    @Test
    void logsAPlaceholderForABrokenGzipBodyAndStillPassesItsBytes() throws Exception {
        // a gzip header, then a deflate block of the reserved type 3: corrupt from its first bit
        byte[] broken = {0x1f, (byte) 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0x07, 0, 0, 0, 0, 0};
        assertEncodedBodyPassesAndIsLoggedDecoded("gzip", broken, "[undecodable gzip body, 16 bytes: ");
    }

    private void assertEncodedBodyPassesAndIsLoggedDecoded(String coding, byte[] encoded, String logged)
            throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.getResponseHeaders().set("Content-Encoding", coding);
            exchange.sendResponseHeaders(200, encoded.length);
            exchange.getResponseBody().write(encoded);
        }); var proxy = proxy(upstream)) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/z")))
                    .header("Accept-Encoding", coding).build(), HttpResponse.BodyHandlers.ofByteArray());
            assertArrayEquals(encoded, response.body(), "the client gets the upstream's bytes");
            assertEquals(coding, response.headers().firstValue("Content-Encoding").orElseThrow());
            String responseBody = proxy.records().getFirst().get(3);
            assertTrue(responseBody.startsWith(logged), responseBody);
        }
    }

    @Test
    void streamsA20MegabyteRequestBodyIntact() throws Exception {
        byte[] body = new byte[20 << 20];
        new Random(42).nextBytes(body);
        try (var upstream = TestSupport.Upstream.streaming(exchange -> {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            long size = 0;
            byte[] buffer = new byte[65536];
            try (InputStream in = exchange.getRequestBody()) {
                for (int n; (n = in.read(buffer)) > 0; size += n) {
                    sha.update(buffer, 0, n);
                }
            }
            byte[] answer = (size + " " + HexFormat.of().formatHex(sha.digest())).getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(200, answer.length);
            exchange.getResponseBody().write(answer);
        }); var proxy = proxy(upstream, "--log-max-body", "1m")) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/upload")))
                    .POST(HttpRequest.BodyPublishers.ofByteArray(body)).build(), HttpResponse.BodyHandlers.ofString());
            String expected = body.length + " " + HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(body));
            assertEquals(expected, response.body());
            assertEquals("[binary " + body.length + " bytes]", proxy.records().getFirst().get(2));
        }
    }

    @Test
    void streamsRequestBodyChunksAsTheyArrive() throws Exception {
        int parts = 5;
        CountDownLatch[] upstreamGot = new CountDownLatch[parts];
        for (int k = 0; k < parts; k++) {
            upstreamGot[k] = new CountDownLatch(1);
        }
        try (var upstream = TestSupport.Upstream.streaming(exchange -> {
            InputStream in = exchange.getRequestBody();
            StringBuilder got = new StringBuilder();
            byte[] buffer = new byte[1024];
            for (int k = 0; k < parts; k++) {
                while (!got.toString().contains("part-" + k + ";")) {
                    int n = in.read(buffer);
                    if (n < 0) {
                        throw new EOFException("request body ended before part " + k);
                    }
                    got.append(new String(buffer, 0, n, StandardCharsets.UTF_8));
                }
                upstreamGot[k].countDown();
            }
            in.readAllBytes();
            exchange.sendResponseHeaders(200, -1);
        }); var proxy = proxy(upstream);
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
            for (int k = 0; k < parts; k++) {
                client.send("7\r\npart-" + k + ";\r\n");
                TestSupport.await(upstreamGot[k], "the upstream to receive part " + k);
            }
            client.send("0\r\n\r\n").readHead();
            assertEquals(200, client.status);
            assertEquals("part-0;part-1;part-2;part-3;part-4;", proxy.records().getFirst().get(2));
        }
    }

    @Test
    void closesUpstreamWhenClientLeavesMidStream() throws Exception {
        CountDownLatch upstreamSawClose = new CountDownLatch(1);
        AtomicLong closedAt = new AtomicLong();
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 0);
            OutputStream out = exchange.getResponseBody();
            try {
                for (int k = 0; k < 500; k++) { // bounded: 10 s at most
                    TestSupport.sendChunk(out, "data: " + k + "\n\n");
                    Thread.sleep(20); // the pace of a model generating tokens, not synchronisation
                }
            } catch (IOException e) {
                closedAt.set(System.nanoTime());
                upstreamSawClose.countDown();
            }
        }); var proxy = proxy(upstream)) {
            long left;
            try (var client = new TestSupport.RawClient(proxy.port())) {
                client.send("GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
                client.readUntil("data: 2\n\n");
                left = System.nanoTime();
            }
            TestSupport.await(upstreamSawClose, "the upstream to see its connection closed");
            long millis = TimeUnit.NANOSECONDS.toMillis(closedAt.get() - left);
            assertTrue(millis < 2000, "upstream connection closed " + millis + " ms after the client left");
            String logged = proxy.records().getFirst().get(3);
            assertTrue(logged.startsWith("data: 0\n\ndata: 1\n\ndata: 2\n\n"), logged);
            assertTrue(proxy.stderr().contains("client_closed"), proxy.stderr());
        }
    }

    @Test
    void answers502WithOneRecordWhenUpstreamIsDown() throws Exception {
        int closedPort;
        try (ServerSocket socket = new ServerSocket(0, 1, TestSupport.LOOPBACK)) {
            closedPort = socket.getLocalPort();
        }
        try (var proxy = proxy(Map.of(), "http://127.0.0.1:" + closedPort + "/v1")) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/chat")))
                    .POST(HttpRequest.BodyPublishers.ofString("{\"prompt\": \"kept\"}")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(502, response.statusCode());
            assertEquals("application/json", response.headers().firstValue("Content-Type").orElseThrow());
            assertTrue(response.body().startsWith("{\"error\": {\"type\": \"llmproxy_upstream_error\""), response.body());
            List<List<String>> records = proxy.records();
            assertEquals(1, records.size());
            assertEquals("{\"prompt\": \"kept\"}", records.getFirst().get(2), "the prompt is kept");
            assertEquals(response.body(), records.getFirst().get(3));
        }
    }

    @Test
    void answers504WithOneRecordWhenHeadersDoNotArriveInTime() throws Exception {
        CountDownLatch release = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            release.await(10, TimeUnit.SECONDS);
            exchange.sendResponseHeaders(200, -1);
        }); var proxy = proxy(upstream, "--timeout", "0.005")) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/slow")))
                    .POST(HttpRequest.BodyPublishers.ofString("question")).build(), HttpResponse.BodyHandlers.ofString());
            release.countDown();
            assertEquals(504, response.statusCode());
            assertTrue(response.body().contains("llmproxy_upstream_timeout"), response.body());
            List<List<String>> records = proxy.records();
            assertEquals(1, records.size());
            assertEquals("question", records.getFirst().get(2));
        }
    }

    @Test
    void cutsTheClientStreamWhenUpstreamFailsMidBody() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 0);
            TestSupport.sendChunk(exchange.getResponseBody(), "data: partial\n\n");
            throw new IOException("upstream dies mid-stream"); // the server drops the connection
        }); var proxy = proxy(upstream);
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(200, client.status);
            client.readUntil("data: partial\n\n");
            assertThrows(EOFException.class, client::nextChunk, "the client must see truncation, not a clean end");
            assertEquals("data: partial\n\n", proxy.records().getFirst().get(3));
            assertTrue(proxy.stderr().contains("upstream_error"), proxy.stderr());
        }
    }

    @Test
    void endsAStalledStreamAfterTheIdleTimeout() throws Exception {
        CountDownLatch release = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 0);
            TestSupport.sendChunk(exchange.getResponseBody(), "data: before the stall\n\n");
            release.await(10, TimeUnit.SECONDS);
        }); var proxy = proxy(upstream, "-T", "0.005");
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            client.readUntil("data: before the stall\n\n");
            assertThrows(EOFException.class, client::nextChunk);
            release.countDown();
            assertEquals("data: before the stall\n\n", proxy.records().getFirst().get(3));
            assertTrue(proxy.stderr().contains(" timeout (upstream sent nothing for 300 ms"), proxy.stderr());
        }
    }

    @Test
    void keepsAStreamThatOutlastsTheTimeoutWhileItKeepsSending() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 0);
            for (int k = 0; k < 12; k++) {
                TestSupport.sendChunk(exchange.getResponseBody(), "data: " + k + "\n\n");
                Thread.sleep(50); // 600 ms in all, twice the timeout, never silent for long
            }
            exchange.getResponseBody().close();
        }); var proxy = proxy(upstream, "-T", "0.005")) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/long"))).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertTrue(response.body().endsWith("data: 11\n\n"), response.body());
            assertEquals(response.body(), proxy.records().getFirst().get(3));
            assertTrue(proxy.stderr().contains(" complete"), proxy.stderr());
        }
    }

    @Test
    void writesOneIntactRecordPerConcurrentExchange() throws Exception {
        int exchanges = 200;
        try (var upstream = TestSupport.Upstream.streaming(exchange -> {
            byte[] request = exchange.getRequestBody().readAllBytes();
            byte[] answer = ("answer to " + new String(request, StandardCharsets.UTF_8)).getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(200, 0);
            exchange.getResponseBody().write(answer);
        }); var proxy = proxy(upstream)) {
            HttpClient client = client();
            List<CompletableFuture<HttpResponse<String>>> responses = new ArrayList<>();
            for (int i = 0; i < exchanges; i++) {
                String body = "request " + i + ", with \"quotes\",\r\nlines and ünïcode";
                responses.add(client.sendAsync(HttpRequest.newBuilder(URI.create(proxy.url("/c/" + i)))
                        .POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString()));
            }
            for (var response : responses) {
                assertEquals(200, response.get(30, TimeUnit.SECONDS).statusCode());
            }
            List<List<String>> records = proxy.records();
            assertEquals(exchanges, records.size());
            boolean[] seen = new boolean[exchanges];
            for (List<String> record : records) {
                int i = Integer.parseInt(record.get(1).substring(record.get(1).lastIndexOf('/') + 1));
                String body = "request " + i + ", with \"quotes\",\r\nlines and ünïcode";
                assertEquals(List.of("POST", proxy.url("/c/" + i), body, "answer to " + body), record);
                seen[i] = true;
            }
            for (boolean s : seen) {
                assertTrue(s);
            }
        }
    }

    @Test
    void refusesConnectAsNotAForwardProxy() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(200, -1));
             var proxy = proxy(upstream)) {
            try (var client = new TestSupport.RawClient(proxy.port())) {
                // The JDK server cannot route an authority-form target and drops the connection.
                client.send("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
                assertThrows(EOFException.class, client::readHead);
            }
            try (var client = new TestSupport.RawClient(proxy.port())) {
                client.send("CONNECT /tunnel HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
                assertEquals(405, client.status);
                assertTrue(new String(client.body(), StandardCharsets.UTF_8).contains("not a forward proxy"));
            }
            assertTrue(upstream.received.isEmpty());
        }
    }

    @Test
    void answers400ForAMethodTheUpstreamClientCannotSend() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(200, -1));
             var proxy = proxy(upstream);
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("G@T /x HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(400, client.status);
            assertTrue(new String(client.body(), StandardCharsets.UTF_8).contains("cannot forward this request"));
            assertTrue(upstream.received.isEmpty());
            assertEquals("G@T", proxy.records().getFirst().getFirst());
        }
    }

    @Test
    void refusesExchangesBeyondTheLimitWith503AndARecord() throws Exception {
        CountDownLatch release = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 0);
            TestSupport.sendChunk(exchange.getResponseBody(), "data: held\n\n");
            if (exchange.getRequestURI().getPath().equals("/held")) {
                TestSupport.await(release, "the test to release the first stream");
            }
            TestSupport.sendChunk(exchange.getResponseBody(), "data: end\n\n");
            exchange.getResponseBody().close();
        }); var proxy = new TestSupport.RunningProxy(dir.resolve("log.csv"), new LlmProxy.Limits(1, 0), Map.of(),
                "--target-url", upstream.url());
             var held = new TestSupport.RawClient(proxy.port())) {
            held.send("GET /held HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            held.readUntil("data: held\n\n");
            try (var raw = new TestSupport.RawClient(proxy.port())) {
                raw.send("GET /refused HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
                assertEquals(503, raw.status);
                assertEquals("close", raw.headers.get("connection"), "a refused client does not keep a connection");
                raw.body();
                assertEquals(-1, raw.in.read(), "the server closed the connection");
            }
            var refused = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/second")))
                    .POST(HttpRequest.BodyPublishers.ofString("the second prompt")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(503, refused.statusCode());
            assertEquals("1", refused.headers().firstValue("Retry-After").orElseThrow());
            assertTrue(refused.body().contains("\"llmproxy_overloaded\""), refused.body());
            release.countDown();
            assertEquals("data: end\n\n", held.readUntil("data: end\n\n"), "the admitted stream completes");
            assertNull(held.nextChunk());
            var after = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/third"))).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(200, after.statusCode(), "the slot is free again");
            List<List<String>> records = proxy.records();
            assertEquals(4, records.size());
            var second = records.stream().filter(r -> r.get(1).endsWith("/second")).findFirst().orElseThrow();
            assertEquals("the second prompt", second.get(2));
            assertEquals(refused.body(), second.get(3));
            assertTrue(proxy.stderr().contains("POST /second 503 "), proxy.stderr());
            assertTrue(proxy.stderr().contains(" rejected ("), proxy.stderr());
        }
    }

    /** The columns of --log-columns all, by name, for each record of a log. */
    private static List<Map<String, String>> recordsByColumn(Path log) throws IOException {
        List<List<String>> rows = TestSupport.Csv.parse(java.nio.file.Files.readString(log));
        List<Map<String, String>> records = new ArrayList<>();
        for (List<String> row : rows.subList(1, rows.size())) {
            Map<String, String> record = new java.util.LinkedHashMap<>();
            for (int c = 0; c < row.size(); c++) {
                record.put(rows.getFirst().get(c), row.get(c));
            }
            records.add(record);
        }
        return records;
    }

    @Test
    void logsEveryColumnAndNoSecretAnywhere() throws Exception {
        String injected = "sk-proj-INJECTED-0123456789abcdefghij";
        String clientKey = "sk-ant-CLIENT-0123456789abcdefghij";
        String cookie = "session=COOKIE-0123456789abcdefghij";
        String queryKey = "AIzaQUERY-0123456789abcdefghij";
        CountDownLatch release = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.getResponseHeaders().add("Set-Cookie", "upstream=SETCOOKIE-0123456789abcdefghij");
            exchange.getResponseHeaders().set("Content-Type", "text/event-stream");
            exchange.sendResponseHeaders(200, 0);
            TestSupport.sendChunk(exchange.getResponseBody(), "data: {\"echo\": \"" + injected + "\"}\n\n");
            if (exchange.getRequestURI().getPath().endsWith("/stall")) {
                release.await(10, TimeUnit.SECONDS); // silent past --timeout
            }
            exchange.getResponseBody().close();
        }); var proxy = proxy(Map.of("KEY", injected), upstream.url() + "/v1", "--log-columns", "all",
                "-T", "0.005", "-a", "Authorization: Bearer ${KEY}")) {
            var ok = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/chat?key=" + queryKey + "&n=1")))
                    .header("x-api-key", clientKey).header("Cookie", cookie)
                    .POST(HttpRequest.BodyPublishers.ofString("{\"prompt\": \"hi\"}")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(200, ok.statusCode());
            assertThrows(IOException.class, () -> client().send(HttpRequest.newBuilder(URI.create(proxy.url("/stall")))
                    .build(), HttpResponse.BodyHandlers.ofString()), "a stream cut by the idle timeout reads as cut");
            release.countDown();
            assertEquals("Bearer " + injected, upstream.next().header("Authorization"), "the upstream gets the key");
            proxy.stop();
            String log = java.nio.file.Files.readString(proxy.log);
            for (String secret : List.of(injected, clientKey, cookie, queryKey, "SETCOOKIE-0123456789abcdefghij")) {
                assertFalse(log.contains(secret), secret + " is in the log");
                assertFalse(proxy.stderr().contains(secret), secret + " is on stderr");
            }
            var records = recordsByColumn(proxy.log);
            assertEquals(List.of("time", "id", "method", "url", "upstream_url", "status", "outcome", "duration_ms",
                    "ttfb_ms", "request_bytes", "response_bytes", "request_headers", "response_headers", "error",
                    "request_body", "response_body", "model", "stream", "response_text", "reasoning_text", "tool_calls",
                    "input_tokens", "output_tokens", "cached_tokens", "stop_reason", "reasoning_tokens",
                    "cache_write_tokens"),
                    List.copyOf(records.getFirst().keySet()));
            var first = records.stream().filter(r -> r.get("url").contains("/chat")).findFirst().orElseThrow();
            assertTrue(first.get("time").matches("\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z"), first.get("time"));
            assertTrue(proxy.stderr().contains(first.get("id") + " POST /chat?… 200 "), "the stderr line names the record");
            assertEquals("POST", first.get("method"));
            assertEquals(proxy.url("/chat?key=AIza…ghij&n=1"), first.get("url"));
            assertEquals(upstream.url() + "/v1/chat?key=AIza…ghij&n=1", first.get("upstream_url"));
            assertEquals("200", first.get("status"));
            assertEquals("complete", first.get("outcome"));
            assertEquals("", first.get("error"));
            assertTrue(Long.parseLong(first.get("ttfb_ms")) <= Long.parseLong(first.get("duration_ms")));
            assertEquals(String.valueOf("{\"prompt\": \"hi\"}".length()), first.get("request_bytes"));
            assertEquals(String.valueOf(ok.body().getBytes(StandardCharsets.UTF_8).length), first.get("response_bytes"));
            assertTrue(first.get("request_headers").contains("X-api-key: sk-a…ghij"), first.get("request_headers"));
            assertTrue(first.get("request_headers").contains("Authorization: [set by llmproxy]"), first.get("request_headers"));
            assertTrue(first.get("response_headers").contains("Set-cookie: upst…ghij"), first.get("response_headers"));
            assertEquals("data: {\"echo\": \"[set by llmproxy]\"}\n\n", first.get("response_body"));
            var second = records.stream().filter(r -> r.get("url").endsWith("/stall")).findFirst().orElseThrow();
            assertEquals("timeout", second.get("outcome"));
            assertEquals("200", second.get("status"));
            assertTrue(second.get("error").startsWith("upstream sent nothing for 300 ms"), second.get("error"));
        }
    }

    @Test
    void recordsTheOutcomeOfEachKindOfFailure() throws Exception {
        int closedPort;
        try (ServerSocket socket = new ServerSocket(0, 1, TestSupport.LOOPBACK)) {
            closedPort = socket.getLocalPort();
        }
        try (var proxy = proxy(Map.of(), "http://127.0.0.1:" + closedPort, "--log-columns", "all")) {
            client().send(HttpRequest.newBuilder(URI.create(proxy.url("/down"))).build(), HttpResponse.BodyHandlers.ofString());
            try (var client = new TestSupport.RawClient(proxy.port())) {
                client.send("GET /../up HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            }
            proxy.stop();
            var records = recordsByColumn(proxy.log);
            var down = records.stream().filter(r -> r.get("url").endsWith("/down")).findFirst().orElseThrow();
            assertEquals("502", down.get("status"));
            assertEquals("upstream_error", down.get("outcome"));
            assertTrue(down.get("error").startsWith("cannot reach 127.0.0.1"), down.get("error"));
            var climb = records.stream().filter(r -> r.get("url").endsWith("/up")).findFirst().orElseThrow();
            assertEquals("400", climb.get("status"));
            assertEquals("rejected", climb.get("outcome"));
            assertEquals("", climb.get("upstream_url"));
        }
    }

    @Test
    void cutsTheClientStreamWhenUpstreamResetsMidBody() throws Exception {
        CountDownLatch clientHasPart = new CountDownLatch(1);
        try (var upstream = new TestSupport.RawUpstream((socket, in, out) -> {
            TestSupport.RawUpstream.readHead(in);
            out.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nf\r\ndata: partial\n\n\r\n"
                    .getBytes(StandardCharsets.UTF_8));
            out.flush();
            TestSupport.await(clientHasPart, "the client to read the partial event");
            socket.setSoLinger(true, 0); // close with RST, not FIN
        }); var proxy = proxy(Map.of(), upstream.url(), "--log-columns", "outcome,error,response_body");
             var client = new TestSupport.RawClient(proxy.port())) {
            client.send("GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            client.readUntil("data: partial\n\n");
            clientHasPart.countDown();
            assertThrows(EOFException.class, client::nextChunk, "the client sees the stream cut");
            proxy.stop();
            var record = recordsByColumn(proxy.log).getFirst();
            assertEquals("upstream_error", record.get("outcome"));
            assertTrue(record.get("error").startsWith("upstream failed mid-body"), record.get("error"));
            assertEquals("data: partial\n\n", record.get("response_body"));
        }
    }

    @Test
    void boundsTheWaitForAClientSendingItsBodyTooSlowly() throws Exception {
        StringBuilder upstreamGot = new StringBuilder();
        CountDownLatch upstreamGotFirst = new CountDownLatch(1);
        try (var upstream = new TestSupport.RawUpstream((socket, in, out) -> {
            TestSupport.RawUpstream.readHead(in);
            byte[] buffer = new byte[1024];
            for (int n; (n = in.read(buffer)) > 0; ) {
                upstreamGot.append(new String(buffer, 0, n, StandardCharsets.ISO_8859_1));
                if (upstreamGot.toString().contains("first")) {
                    upstreamGotFirst.countDown();
                }
            }
        }); var proxy = proxy(Map.of(), upstream.url(), "-T", "0.01",
                "--log-columns", "status,outcome,error,request_body");
             var client = new TestSupport.RawClient(proxy.port())) {
            // The JDK client reads an HTTP/1.1 answer only once the request body is sent, so an
            // upstream giving up on a slow body is not heard; --timeout bounds the wait instead.
            client.send("POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n");
            TestSupport.await(upstreamGotFirst, "the upstream to receive the part that was sent");
            // The client still owes the rest of its body: it stalled, so nobody is left to answer.
            assertThrows(EOFException.class, client::readHead);
            proxy.stop();
            var record = recordsByColumn(proxy.log).getFirst();
            assertEquals("", record.get("status"));
            assertEquals("timeout", record.get("outcome"));
            assertTrue(record.get("error").startsWith("the client's request body stalled"), record.get("error"));
            assertTrue(record.get("request_body").startsWith("first…[partial: the client stopped sending after 5 bytes"),
                    record.get("request_body"));
            assertEquals(0, proxy.proxy.inFlight());
        }
    }

    @Test
    void endsAStalledSmallUploadWithinTheTimeoutWithoutContactingTheUpstream() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = proxy(Map.of(), upstream.url(), "-T", "0.01",
                     "--log-columns", "status,outcome,error,request_bytes,request_body");
             var client = new TestSupport.RawClient(proxy.port())) {
            // A body of 100 declared bytes, of which 10 come: small bodies are read whole, and were
            // waited for without any limit.
            client.send("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789");
            assertThrows(EOFException.class, client::readHead, "the proxy gives up on the client and closes");
            proxy.stop();
            var record = recordsByColumn(proxy.log).getFirst();
            assertEquals("timeout", record.get("outcome"));
            assertEquals("10", record.get("request_bytes"));
            assertTrue(record.get("request_body").startsWith("0123456789…[partial:"), record.get("request_body"));
            assertTrue(upstream.received.isEmpty());
            assertEquals(0, proxy.proxy.inFlight());
        }
    }

    @Test
    void endsTheExchangeAndClosesTheUpstreamWhenTheClientStopsReading() throws Exception {
        CountDownLatch upstreamSawClose = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(200, 0);
            byte[] chunk = new byte[64 * 1024];
            try {
                for (int k = 0; k < 8192; k++) { // bounded: 512 MB at most, far more than any socket buffer
                    exchange.getResponseBody().write(chunk);
                    exchange.getResponseBody().flush();
                }
            } catch (IOException e) {
                upstreamSawClose.countDown();
            }
        }); var proxy = proxy(Map.of(), upstream.url(), "-T", "0.01", "--log-columns", "status,outcome,error");
             var client = new TestSupport.RawClient(proxy.port())) {
            client.socket.setReceiveBufferSize(4096);
            // A suspended agent (Ctrl-Z): it asked, then never reads the answer.
            client.send("GET /v1/files/big HTTP/1.1\r\nHost: localhost\r\n\r\n");
            TestSupport.await(upstreamSawClose, "the upstream to see its connection closed");
            proxy.stop();
            var record = recordsByColumn(proxy.log).getFirst();
            assertEquals("client_closed", record.get("outcome"));
            assertTrue(record.get("error").startsWith("client stopped reading") && record.get("error").contains("--timeout"),
                    record.get("error"));
            assertEquals(0, proxy.proxy.inFlight());
        }
    }

    @Test
    void releasesTheInFlightSlotEvenWhenAnErrorIsThrown() throws Exception {
        var config = ((LlmProxy.Cli.Command.Run) LlmProxy.Cli.parse(new String[] {"-t", "http://127.0.0.1:9",
                "-l", dir.resolve("log.csv").toString(), "--log-columns", "status,outcome,error"},
                Map.<String, String>of()::get)).config();
        var err = new java.io.PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8);
        var log = LlmProxy.LogWriter.open(config, err);
        var throwing = new ThrowingClient(new OutOfMemoryError("Java heap space (thrown by the test)"));
        try (var watchdog = new LlmProxy.IdleWatchdog(config.timeout())) {
            var forwarder = new LlmProxy.Forwarder(config, 10, LlmProxy.LogMemory.UNLIMITED, throwing, watchdog, log, LlmProxy.Access.of(config),
                    new LlmProxy.Secrets(true, List.of()), Thread.ofVirtual().factory(), null, null);
            var server = com.sun.net.httpserver.HttpServer.create(
                    new java.net.InetSocketAddress(TestSupport.LOOPBACK, 0), 0);
            server.createContext("/", forwarder::handle);
            server.setExecutor(java.util.concurrent.Executors.newVirtualThreadPerTaskExecutor());
            server.start();
            try {
                for (int i = 0; i < 3; i++) {
                    try (var client = new TestSupport.RawClient(server.getAddress().getPort())) {
                        client.send("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}");
                        assertThrows(IOException.class, client::readHead, "the Error drops the connection");
                    }
                }
                assertEquals(0, forwarder.inFlight.get(), "every slot came back");
            } finally {
                server.stop(0);
                log.close();
            }
        }
        var rows = TestSupport.Csv.parse(java.nio.file.Files.readString(dir.resolve("log.csv")));
        assertEquals(4, rows.size(), "a record for each exchange");
        assertTrue(rows.get(1).get(2).startsWith("internal error: java.lang.OutOfMemoryError"), rows.get(1).toString());
    }

    /** An upstream client whose send throws what it is given. */
    private static final class ThrowingClient extends HttpClient {
        private final Error error;

        ThrowingClient(Error error) {
            this.error = error;
        }

        @Override
        public <T> HttpResponse<T> send(HttpRequest request, HttpResponse.BodyHandler<T> handler) {
            throw error;
        }

        @Override
        public <T> CompletableFuture<HttpResponse<T>> sendAsync(HttpRequest r, HttpResponse.BodyHandler<T> h) {
            throw error;
        }

        @Override
        public <T> CompletableFuture<HttpResponse<T>> sendAsync(HttpRequest r, HttpResponse.BodyHandler<T> h,
                                                                HttpResponse.PushPromiseHandler<T> p) {
            throw error;
        }

        @Override
        public java.util.Optional<java.net.CookieHandler> cookieHandler() {
            return java.util.Optional.empty();
        }

        @Override
        public java.util.Optional<java.time.Duration> connectTimeout() {
            return java.util.Optional.empty();
        }

        @Override
        public Redirect followRedirects() {
            return Redirect.NEVER;
        }

        @Override
        public java.util.Optional<java.net.ProxySelector> proxy() {
            return java.util.Optional.empty();
        }

        @Override
        public javax.net.ssl.SSLContext sslContext() {
            return null;
        }

        @Override
        public javax.net.ssl.SSLParameters sslParameters() {
            return null;
        }

        @Override
        public java.util.Optional<java.net.Authenticator> authenticator() {
            return java.util.Optional.empty();
        }

        @Override
        public Version version() {
            return Version.HTTP_1_1;
        }

        @Override
        public java.util.Optional<java.util.concurrent.Executor> executor() {
            return java.util.Optional.empty();
        }
    }

    @Test
    void answersNewRequestsOnKeptAliveConnectionsWith503DuringTheGrace() throws Exception {
        CountDownLatch release = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            if (exchange.getRequestURI().getPath().equals("/held")) {
                TestSupport.await(release, "the test to release the held exchange");
                exchange.sendResponseHeaders(200, 2);
                exchange.getResponseBody().write("ok".getBytes(StandardCharsets.UTF_8));
            } else {
                exchange.sendResponseHeaders(204, -1);
            }
        }); var proxy = proxy(upstream, "--log-columns", "url,status,outcome");
             var kept = new TestSupport.RawClient(proxy.port());
             var held = new TestSupport.RawClient(proxy.port())) {
            kept.send("GET /quick HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(204, kept.status);
            held.send("GET /held HTTP/1.1\r\nHost: localhost\r\n\r\n");
            upstream.next(); // /quick
            upstream.next(); // /held is in flight
            Thread stopping = Thread.ofVirtual().start(() -> proxy.proxy.shutdown(java.time.Duration.ofSeconds(10)));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (!proxy.stderr().contains("stopping; waiting up to")) { // printed once new requests are refused
                assertTrue(System.nanoTime() < deadline, proxy.stderr());
                Thread.sleep(5);
            }
            kept.headers.clear();
            kept.send("GET /quick HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(503, kept.status);
            assertEquals("close", kept.headers.get("connection"));
            assertTrue(new String(kept.body(), StandardCharsets.UTF_8).contains("llmproxy_shutdown"));
            release.countDown();
            held.readHead();
            assertEquals(200, held.status);
            assertEquals("close", held.headers.get("connection"), "answers during the grace close their connection");
            assertEquals("ok", new String(held.body(), StandardCharsets.UTF_8));
            stopping.join(TimeUnit.SECONDS.toMillis(20));
            var records = TestSupport.Csv.parse(java.nio.file.Files.readString(proxy.log));
            assertEquals(List.of(List.of("url", "status", "outcome"), List.of("http://localhost/quick", "204", "complete"),
                    List.of("http://localhost/quick", "503", "shutdown"), List.of("http://localhost/held", "200", "complete")),
                    records);
        }
    }

    @ParameterizedTest
    @CsvSource({"21,, false", "22,, false", "23,, false", "24,, true", "25,, true", "21, virtual, true",
        "25, platform, false"})
    void servesExchangesOnPlatformThreadsWhereVirtualOnesWouldPin(int jdk, String property, boolean virtual) {
        assertEquals(virtual, LlmProxy.Threads.choose(jdk, property).virtual());
    }

    @Test
    void refusesAnUnknownThreadMode() {
        var e = assertThrows(LlmProxy.StartupException.class, () -> LlmProxy.Threads.choose(25, "green"));
        assertTrue(e.getMessage().contains("-Dllmproxy.threads must be virtual or platform"), e.getMessage());
    }

    @Test
    void keepsStreamingOnPlatformThreadsWhileTwoClientsStall() throws Exception {
        int streams = 20;
        CountDownLatch stalledSenderArrived = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.streaming(exchange -> {
            switch (exchange.getRequestURI().getPath()) {
                case "/big" -> { // for the client that never reads: more than any socket buffer holds
                    exchange.sendResponseHeaders(200, 0);
                    byte[] chunk = new byte[64 * 1024];
                    try {
                        for (int k = 0; k < 1024; k++) {
                            exchange.getResponseBody().write(chunk);
                        }
                    } catch (IOException e) {
                        // the proxy closed it when the test ended
                    }
                }
                case "/stream" -> {
                    exchange.getRequestBody().readAllBytes();
                    exchange.getResponseHeaders().set("Content-Type", "text/event-stream");
                    exchange.sendResponseHeaders(200, 0);
                    for (int k = 0; k < 5; k++) {
                        TestSupport.sendChunk(exchange.getResponseBody(), "data: " + k + "\n\n");
                    }
                    exchange.getResponseBody().close();
                }
                default -> {
                    stalledSenderArrived.countDown();
                    exchange.getRequestBody().readAllBytes();
                    exchange.sendResponseHeaders(204, -1);
                }
            }
        })) {
            try (var proxy = TestSupport.withProperty("llmproxy.threads", "platform", () -> proxy(upstream));
                 var notReading = new TestSupport.RawClient(proxy.port());
                 var notSending = new TestSupport.RawClient(proxy.port())) {
                assertTrue(proxy.stderr().contains("on platform threads (-Dllmproxy.threads=platform)"), proxy.stderr());
                notReading.socket.setReceiveBufferSize(4096);
                notReading.send("GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n");
                notSending.send("POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n");
                TestSupport.await(stalledSenderArrived, "the stalled upload to reach the upstream");
                var client = client();
                List<CompletableFuture<HttpResponse<String>>> answers = new ArrayList<>();
                for (int i = 0; i < streams; i++) {
                    answers.add(client.sendAsync(HttpRequest.newBuilder(URI.create(proxy.url("/stream")))
                            .POST(HttpRequest.BodyPublishers.ofString("{}")).build(), HttpResponse.BodyHandlers.ofString()));
                }
                for (var answer : answers) {
                    assertEquals("data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n",
                            answer.get(20, TimeUnit.SECONDS).body());
                }
            }
        }
    }

    @Test
    void refusesAnExchangeWhoseDeclaredBodyTheLogMemoryCannotHold() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1))) {
            try (var proxy = TestSupport.withProperty("llmproxy.logMemory", "100k",
                    () -> proxy(upstream, "--log-columns", "status,outcome,error"))) {
                var big = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/v1/chat/completions")))
                        .POST(HttpRequest.BodyPublishers.ofString("x".repeat(200_000))).build(),
                        HttpResponse.BodyHandlers.ofString());
                assertEquals(503, big.statusCode());
                assertEquals("1", big.headers().firstValue("Retry-After").orElseThrow());
                var small = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/v1/chat/completions")))
                        .POST(HttpRequest.BodyPublishers.ofString("{}")).build(), HttpResponse.BodyHandlers.ofString());
                assertEquals(204, small.statusCode(), "what the refused one held was given back");
                proxy.stop();
                var records = recordsByColumn(proxy.log);
                assertEquals("rejected", records.get(0).get("outcome"));
                assertTrue(records.get(0).get("error").startsWith("llmproxy's memory for log bodies is full"),
                        records.get(0).get("error"));
                assertEquals("complete", records.get(1).get("outcome"));
            }
        }
    }

    @Test
    void drainsTheWholePromptForTheLogWhenTheUpstreamIsDown() throws Exception {
        int port;
        try (ServerSocket unused = new ServerSocket(0)) {
            port = unused.getLocalPort();
        }
        String prompt = "{\"messages\": \"" + "x".repeat(300_000) + "\"}";
        try (var proxy = proxy(Map.of(), "http://127.0.0.1:" + port, "--log-columns", "status,request_bytes,request_body",
                "--log-max-body", "200k")) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/v1/chat/completions")))
                    .POST(HttpRequest.BodyPublishers.ofString(prompt)).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(502, response.statusCode());
            proxy.stop();
            var record = recordsByColumn(proxy.log).getFirst();
            assertEquals(String.valueOf(prompt.length()), record.get("request_bytes"), "counts all the client sent");
            assertTrue(record.get("request_body").startsWith(prompt.substring(0, 200 * 1024)), "keeps up to --log-max-body");
            assertTrue(record.get("request_body").endsWith("…[truncated: " + prompt.length() + " bytes total]"),
                    record.get("request_body").substring(200 * 1024));
        }
    }

    @Test
    void refusesOversizedRequestHeadersAndKeepsServing() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = proxy(upstream)) {
            try (var client = new TestSupport.RawClient(proxy.port())) {
                client.send("GET /big HTTP/1.1\r\nHost: localhost\r\nX-Huge: " + "a".repeat(1 << 20) + "\r\n\r\n");
                client.readHead();
                assertTrue(client.status >= 400 && client.status < 500, "status " + client.status);
            } catch (java.net.SocketException e) {
                // the server may reset the connection while the client is still sending the header
            }
            assertTrue(upstream.received.isEmpty(), "an oversized request never reaches the upstream");
            var after = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/next"))).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(204, after.statusCode());
        }
    }

    @Test
    void logsTheAssembledAnswerOfAStreamWithoutChangingWhatTheClientGets() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.getResponseHeaders().set("Content-Type", "text/event-stream");
            exchange.sendResponseHeaders(200, 0);
            for (String event : ConversationTest.ANTHROPIC_STREAM.split("(?<=\n\n)")) {
                TestSupport.sendChunk(exchange.getResponseBody(), event);
            }
            exchange.getResponseBody().close();
        }); var proxy = proxy(Map.of(), upstream.url(), "--log-columns",
                "model,stream,response_text,reasoning_text,tool_calls,input_tokens,output_tokens,cached_tokens,"
                        + "stop_reason,response_body")) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/v1/messages")))
                    .POST(HttpRequest.BodyPublishers.ofString("{\"model\":\"claude-sonnet-4-5\",\"stream\":true}")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(ConversationTest.ANTHROPIC_STREAM, response.body(), "the client gets the bytes unchanged");
            proxy.stop();
            var record = recordsByColumn(proxy.log).getFirst();
            assertEquals("claude-sonnet-4-5", record.get("model"));
            assertEquals("true", record.get("stream"));
            assertEquals("Let me check.", record.get("response_text"));
            assertEquals("The user wants the weather.", record.get("reasoning_text"));
            assertEquals("get_weather({\"location\": \"San Francisco\"})", record.get("tool_calls"));
            assertEquals(List.of("472", "89", "100", "tool_use"), List.of(record.get("input_tokens"),
                    record.get("output_tokens"), record.get("cached_tokens"), record.get("stop_reason")));
            assertEquals(ConversationTest.ANTHROPIC_STREAM, record.get("response_body"), "the raw bytes stay too");
        }
    }

    @Test
    void logsEmptyLlmColumnsForOtherExchanges() throws Exception {
        String models = "{\"object\":\"list\",\"data\":[{\"id\":\"gpt-4o\",\"object\":\"model\"}]}";
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.getResponseHeaders().set("Content-Type", "application/json");
            byte[] body = models.getBytes(StandardCharsets.UTF_8);
            exchange.sendResponseHeaders(200, body.length);
            exchange.getResponseBody().write(body);
        }); var proxy = proxy(Map.of(), upstream.url(), "--log-columns", "method,status,outcome,model,stream,"
                + "response_text,reasoning_text,tool_calls,input_tokens,output_tokens,cached_tokens,stop_reason,response_body")) {
            var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/v1/models"))).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(models, response.body());
            proxy.stop();
            var record = recordsByColumn(proxy.log).getFirst();
            assertEquals(List.of("GET", "200", "complete"), List.of(record.get("method"), record.get("status"),
                    record.get("outcome")));
            for (String column : List.of("model", "stream", "response_text", "reasoning_text", "tool_calls",
                    "input_tokens", "output_tokens", "cached_tokens", "stop_reason")) {
                assertEquals("", record.get(column), column);
            }
            assertEquals(models, record.get("response_body"));
        }
    }

    @Test
    void sendsAPostAgainWhenTheUpstreamClosedThePooledConnectionAsItWasReused() throws Exception {
        AtomicLong requests = new AtomicLong();
        try (ServerSocket upstream = new ServerSocket(0, 50, TestSupport.LOOPBACK)) {
            Thread server = Thread.ofVirtual().start(() -> {
                try (var first = upstream.accept()) {
                    var in = first.getInputStream();
                    var out = first.getOutputStream();
                    String head = TestSupport.RawUpstream.readHead(in);
                    in.readNBytes(contentLength(head));
                    requests.incrementAndGet();
                    out.write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none".getBytes(StandardCharsets.UTF_8));
                    out.flush();
                    // the next request on this kept-alive connection meets an idle-timeout close
                    head = TestSupport.RawUpstream.readHead(in);
                    in.readNBytes(contentLength(head));
                    requests.incrementAndGet();
                } catch (IOException e) {
                    return;
                }
                try (var second = upstream.accept()) {
                    String head = TestSupport.RawUpstream.readHead(second.getInputStream());
                    second.getInputStream().readNBytes(contentLength(head));
                    requests.incrementAndGet();
                    second.getOutputStream().write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo"
                            .getBytes(StandardCharsets.UTF_8));
                } catch (IOException e) {
                    // the assertions below tell
                }
            });
            try (var proxy = proxy(Map.of(), "http://127.0.0.1:" + upstream.getLocalPort())) {
                for (String expected : List.of("one", "two")) {
                    var response = client().send(HttpRequest.newBuilder(URI.create(proxy.url("/v1/chat/completions")))
                            .POST(HttpRequest.BodyPublishers.ofString("{\"prompt\": \"" + expected + "\"}")).build(),
                            HttpResponse.BodyHandlers.ofString());
                    assertEquals(200, response.statusCode(), response.body());
                    assertEquals(expected, response.body());
                }
                server.join();
                assertEquals(3, requests.get(), "the second prompt was sent again on a fresh connection");
            }
        }
    }

    @Test
    void theJdkClientStillNamesAConnectionClosedAsItWasReusedTheWayTheResendExpects() throws Exception {
        try (ServerSocket upstream = new ServerSocket(0, 50, TestSupport.LOOPBACK)) {
            Thread server = Thread.ofVirtual().start(() -> {
                try (var socket = upstream.accept()) {
                    var in = socket.getInputStream();
                    in.readNBytes(contentLength(TestSupport.RawUpstream.readHead(in)));
                    socket.getOutputStream().write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".getBytes(StandardCharsets.UTF_8));
                    in.readNBytes(contentLength(TestSupport.RawUpstream.readHead(in)));
                } catch (IOException e) {
                    // the client's failure is what the test reads
                }
            });
            var client = client();
            var request = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + upstream.getLocalPort() + "/"))
                    .POST(HttpRequest.BodyPublishers.ofString("{}")).build();
            assertEquals("ok", client.send(request, HttpResponse.BodyHandlers.ofString()).body());
            var e = assertThrows(IOException.class, () -> client.send(request, HttpResponse.BodyHandlers.ofString()));
            assertTrue(String.valueOf(e.getMessage()).contains(LlmProxy.Forwarder.STALE_CONNECTION_MESSAGE),
                    "this JDK names the failure '" + e.getMessage() + "': update Forwarder.STALE_CONNECTION_MESSAGE,"
                            + " or a POST on a connection the upstream closed is answered 502 instead of sent again");
            server.join();
        }
    }

    private static int contentLength(String head) {
        var m = java.util.regex.Pattern.compile("(?i)content-length: *(\\d+)").matcher(head);
        return m.find() ? Integer.parseInt(m.group(1)) : 0;
    }

    @Test
    void derivesLimitsFromTheHeapUnlessASystemPropertySetsThem() {
        var derived = LlmProxy.Limits.fromSystem();
        long heapBudget = (Runtime.getRuntime().maxMemory() - LlmProxy.Limits.BASE_HEAP) / 2 / LlmProxy.Limits.HEAP_PER_EXCHANGE;
        assertTrue(derived.maxExchanges() >= 1 && derived.maxExchanges() <= heapBudget, "within half the heap: " + derived);
        assertTrue(derived.maxConnections() > derived.maxExchanges(), "room for connections that get a 503: " + derived);
        System.setProperty("llmproxy.maxExchanges", "7");
        try {
            assertEquals(7, LlmProxy.Limits.fromSystem().maxExchanges());
        } finally {
            System.clearProperty("llmproxy.maxExchanges");
        }
    }

    @Test
    void printsOneLinePerExchangeOnStderr() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.sendResponseHeaders(201, 5);
            exchange.getResponseBody().write("hello".getBytes(StandardCharsets.UTF_8));
        }); var proxy = proxy(upstream)) {
            client().send(HttpRequest.newBuilder(URI.create(proxy.url("/items?key=secret"))).build(),
                    HttpResponse.BodyHandlers.ofString());
            proxy.records(); // stops the proxy, so every stderr line is written
            String line = proxy.stderr().lines().filter(l -> l.contains(" GET ")).findFirst().orElseThrow();
            assertTrue(line.matches("[0-9a-f]{8}-1 GET /items\\?… 201 \\d+ms 5B complete"), line);
        }
    }
}
