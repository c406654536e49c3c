import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** One OpenTelemetry span per exchange, sent over OTLP/HTTP JSON to a fake collector. */
class TelemetryTest {
    @TempDir
    Path dir;

    /** A fake OTLP/HTTP receiver: keeps each POST /v1/traces body; answers as told. */
    static final class Collector implements AutoCloseable {
        final HttpServer server;
        final BlockingQueue<Object> requests = new LinkedBlockingQueue<>();
        final BlockingQueue<Map<String, List<String>>> headers = new LinkedBlockingQueue<>();
        volatile int status = 200;
        final AtomicInteger posts = new AtomicInteger();
        final CountDownLatch release = new CountDownLatch(1);
        volatile boolean slow;

        Collector() throws IOException {
            server = HttpServer.create(new InetSocketAddress(TestSupport.LOOPBACK, 0), 0);
            server.setExecutor(Executors.newVirtualThreadPerTaskExecutor());
            server.createContext("/", exchange -> {
                posts.incrementAndGet();
                byte[] body = exchange.getRequestBody().readAllBytes();
                if (slow) {
                    try {
                        release.await(30, TimeUnit.SECONDS); // a collector that does not answer
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                }
                if (status == 200 && exchange.getRequestURI().getPath().equals("/v1/traces")) {
                    requests.add(LlmProxy.Json.parse(new String(body, StandardCharsets.UTF_8)));
                    headers.add(Map.copyOf(exchange.getRequestHeaders()));
                }
                exchange.sendResponseHeaders(status, -1);
                exchange.close();
            });
            server.start();
        }

        String url() {
            return "http://127.0.0.1:" + server.getAddress().getPort();
        }

        /** The next span received. */
        Map<String, Object> span() throws InterruptedException {
            Object request = requests.poll(15, TimeUnit.SECONDS);
            assertTrue(request != null, "no spans reached the collector");
            last = request;
            return spanOf(request);
        }

        volatile Object last;

        @Override
        public void close() {
            release.countDown();
            server.stop(0);
        }
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> spanOf(Object request) {
        return (Map<String, Object>) LlmProxy.Json.at(request, "resourceSpans", 0, "scopeSpans", 0, "spans", 0);
    }

    /** The span's attributes as key -> the value's JSON (typed, as OTLP writes it). */
    static Map<String, Object> attributes(Map<String, Object> span) {
        Map<String, Object> out = new HashMap<>();
        for (Object a : (List<?>) span.get("attributes")) {
            out.put(LlmProxy.Json.string(a, "key"), LlmProxy.Json.at(a, "value"));
        }
        return out;
    }

    private TestSupport.RunningProxy proxy(String target, String... more) {
        List<String> args = new ArrayList<>(List.of("-t", target, "-a", "x-api-key: ${KEY}"));
        args.addAll(List.of(more));
        return new TestSupport.RunningProxy(dir.resolve("log.csv"), Map.of("KEY", "sk-injected-0123456789abcdef"),
                args.toArray(String[]::new));
    }

    private static HttpResponse<String> post(TestSupport.RunningProxy proxy, String path, String body, String... headers)
            throws Exception {
        var request = HttpRequest.newBuilder(URI.create(proxy.url(path))).POST(HttpRequest.BodyPublishers.ofString(body));
        for (int i = 0; i < headers.length; i += 2) {
            request.header(headers[i], headers[i + 1]);
        }
        return HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build()
                .send(request.build(), HttpResponse.BodyHandlers.ofString());
    }

    private static TestSupport.Upstream answering(String contentType, String body) throws IOException {
        return TestSupport.Upstream.recording(exchange -> {
            byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().set("Content-Type", contentType);
            exchange.sendResponseHeaders(200, 0);
            exchange.getResponseBody().write(bytes);
        });
    }

    private static Map<String, Object> string(String value) {
        return Map.of("stringValue", value);
    }

    private static Map<String, Object> integer(long value) {
        return Map.of("intValue", String.valueOf(value));
    }

    @Test
    void exportsAStreamedOpenAiChatAsAGenAiSpan() throws Exception {
        try (var collector = new Collector();
             var upstream = answering("text/event-stream", ConversationTest.CHAT_STREAM);
             var proxy = proxy(upstream.url() + "/v1", "--otlp-endpoint", collector.url())) {
            String request = "{\"model\": \"gpt-4o-mini\", \"stream\": true, \"max_tokens\": 300, \"temperature\": 0.2,"
                    + " \"top_p\": 0.9, \"messages\": [{\"role\": \"user\", \"content\": \"Weather in Paris?\"}]}";
            assertEquals(200, post(proxy, "/chat/completions", request).statusCode());
            Map<String, Object> span = collector.span();
            assertEquals("chat gpt-4o-mini", span.get("name"));
            assertEquals(3L, span.get("kind"), "CLIENT");
            assertTrue(((String) span.get("traceId")).matches("[0-9a-f]{32}"), "hex, not base64: " + span.get("traceId"));
            assertTrue(((String) span.get("spanId")).matches("[0-9a-f]{16}"));
            assertNull(span.get("parentSpanId"), "a root span when the client sent no traceparent");
            long start = Long.parseLong((String) span.get("startTimeUnixNano"));
            long end = Long.parseLong((String) span.get("endTimeUnixNano"));
            assertTrue(start > 1_700_000_000_000_000_000L && end >= start, start + " .. " + end);
            var a = attributes(span);
            assertEquals(string("chat"), a.get("gen_ai.operation.name"));
            assertEquals(string("openai"), a.get("gen_ai.provider.name"));
            assertEquals(string("chat_completions"), a.get("openai.api.type"));
            assertEquals(string("gpt-4o-mini"), a.get("gen_ai.request.model"));
            assertEquals(string("gpt-4o-mini-2024-07-18"), a.get("gen_ai.response.model"));
            assertEquals(string("chatcmpl-1"), a.get("gen_ai.response.id"));
            assertEquals(Map.of("arrayValue", Map.of("values", List.of(string("tool_calls")))),
                    a.get("gen_ai.response.finish_reasons"));
            assertEquals(integer(25), a.get("gen_ai.usage.input_tokens"));
            assertEquals(integer(12), a.get("gen_ai.usage.output_tokens"));
            assertEquals(integer(8), a.get("gen_ai.usage.cache_read.input_tokens"));
            assertEquals(integer(300), a.get("gen_ai.request.max_tokens"));
            assertEquals(Map.of("doubleValue", 0.2), a.get("gen_ai.request.temperature"));
            assertEquals(Map.of("doubleValue", 0.9), a.get("gen_ai.request.top_p"));
            assertEquals(Map.of("boolValue", true), a.get("gen_ai.request.stream"));
            assertTrue(a.get("gen_ai.response.time_to_first_chunk") instanceof Map<?, ?> m && m.containsKey("doubleValue"));
            assertEquals(string("POST"), a.get("http.request.method"));
            assertEquals(integer(200), a.get("http.response.status_code"));
            assertEquals(string("127.0.0.1"), a.get("server.address"));
            assertEquals(integer(Long.parseLong(upstream.url().replaceAll(".*:", ""))), a.get("server.port"));
            assertEquals(string("/v1/chat/completions"), a.get("url.path"));
            assertNull(a.get("error.type"));
            assertNull(a.get("gen_ai.input.messages"), "no message content without --otlp-content");
            assertEquals(Map.of("code", 0L), span.get("status"));
            assertEquals("first response byte", LlmProxy.Json.string(span, "events", 0, "name"));
            assertEquals("service.name", LlmProxy.Json.string(collector.last, "resourceSpans", 0, "resource", "attributes", 0, "key"));
            assertEquals("llmproxy", LlmProxy.Json.string(collector.last, "resourceSpans", 0, "resource", "attributes", 0,
                    "value", "stringValue"));
        }
    }

    @Test
    void exportsAnAnthropicStreamWithToolUseCountingCachedInputTokens() throws Exception {
        String stream = ConversationTest.ANTHROPIC_STREAM.replace("\"cache_read_input_tokens\":100",
                "\"cache_creation_input_tokens\":20,\"cache_read_input_tokens\":100");
        try (var collector = new Collector();
             var upstream = answering("text/event-stream", stream);
             var proxy = proxy(upstream.url(), "--otlp-endpoint", collector.url() + "/v1/traces", "--otlp-content")) {
            post(proxy, "/v1/messages", "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1024,\"stream\":true,"
                    + "\"system\":\"Be brief.\",\"messages\":[{\"role\":\"user\",\"content\":\"Weather in SF? sk-injected-0123456789abcdef\"}]}");
            Map<String, Object> span = collector.span();
            var a = attributes(span);
            assertEquals("chat claude-sonnet-4-5", span.get("name"));
            assertEquals(string("anthropic"), a.get("gen_ai.provider.name"));
            assertEquals(integer(472 + 100 + 20), a.get("gen_ai.usage.input_tokens"), "cached ones counted in");
            assertEquals(integer(100), a.get("gen_ai.usage.cache_read.input_tokens"));
            assertEquals(integer(20), a.get("gen_ai.usage.cache_creation.input_tokens"));
            assertEquals(integer(89), a.get("gen_ai.usage.output_tokens"));
            assertEquals(string("msg_1"), a.get("gen_ai.response.id"));
            assertEquals(integer(1024), a.get("gen_ai.request.max_tokens"));
            String input = (String) ((Map<?, ?>) a.get("gen_ai.input.messages")).get("stringValue");
            Object messages = LlmProxy.Json.parse(input);
            assertEquals("system", LlmProxy.Json.string(messages, 0, "role"));
            assertEquals("Be brief.", LlmProxy.Json.string(messages, 0, "parts", 0, "content"));
            assertEquals("user", LlmProxy.Json.string(messages, 1, "role"));
            assertFalse(input.contains("sk-injected"), "redacted as in the log: " + input);
            String output = (String) ((Map<?, ?>) a.get("gen_ai.output.messages")).get("stringValue");
            Object answer = LlmProxy.Json.parse(output);
            assertEquals("Let me check.", LlmProxy.Json.string(answer, 0, "parts", 0, "content"));
            assertEquals("tool_call", LlmProxy.Json.string(answer, 0, "parts", 1, "type"));
            assertEquals("get_weather", LlmProxy.Json.string(answer, 0, "parts", 1, "name"));
            assertEquals("tool_use", LlmProxy.Json.string(answer, 0, "finish_reason"));
        }
    }

    @Test
    void exportsANonStreamingGeminiCallAndAPlainHttpSpanForOtherExchanges() throws Exception {
        String answer = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Four.\"}],\"role\":\"model\"},"
                + "\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":2,"
                + "\"thoughtsTokenCount\":5},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r-1\"}";
        try (var collector = new Collector();
             var upstream = answering("application/json", answer);
             var proxy = proxy(upstream.url(), "--otlp-endpoint", collector.url())) {
            post(proxy, "/v1beta/models/gemini-2.5-flash:generateContent", "{\"contents\":[],"
                    + "\"generationConfig\":{\"maxOutputTokens\":100}}");
            Map<String, Object> span = collector.span();
            var a = attributes(span);
            assertEquals("generate_content gemini-2.5-flash", span.get("name"));
            assertEquals(string("gcp.gemini"), a.get("gen_ai.provider.name"));
            assertEquals(integer(7), a.get("gen_ai.usage.output_tokens"));
            assertEquals(integer(5), a.get("gen_ai.usage.reasoning.output_tokens"));
            assertEquals(integer(100), a.get("gen_ai.request.max_tokens"));
            assertEquals(string("r-1"), a.get("gen_ai.response.id"));
            assertNull(a.get("gen_ai.request.stream"));
            post(proxy, "/v1/models", "");
            Map<String, Object> plain = collector.span();
            assertEquals("POST", plain.get("name"));
            assertNull(attributes(plain).get("gen_ai.operation.name"));
            assertEquals(string("/v1/models"), attributes(plain).get("url.path"));
        }
    }

    @Test
    void marksA502AndAClientThatLeftAsErrors() throws Exception {
        int down;
        try (ServerSocket unused = new ServerSocket(0)) {
            down = unused.getLocalPort();
        }
        try (var collector = new Collector();
             var proxy = proxy("http://127.0.0.1:" + down, "--otlp-endpoint", collector.url())) {
            assertEquals(502, post(proxy, "/v1/chat/completions", "{\"model\":\"gpt-4o\"}").statusCode());
            Map<String, Object> span = collector.span();
            assertEquals(string("upstream_error"), attributes(span).get("error.type"));
            assertEquals(integer(502), attributes(span).get("http.response.status_code"));
            assertEquals(2L, LlmProxy.Json.at(span, "status", "code"));
            assertTrue(LlmProxy.Json.string(span, "status", "message").contains("cannot reach"));
        }
        CountDownLatch upstreamSawClose = new CountDownLatch(1);
        try (var collector = new Collector();
             var upstream = TestSupport.Upstream.recording(exchange -> {
                 exchange.sendResponseHeaders(200, 0);
                 OutputStream out = exchange.getResponseBody();
                 try {
                     for (int k = 0; k < 500; k++) { // bounded: 10 s at most
                         TestSupport.sendChunk(out, "data: " + k + "\n\n");
                         Thread.sleep(20); // the pace of a model
                     }
                 } catch (IOException e) {
                     upstreamSawClose.countDown();
                 }
             });
             var proxy = proxy(upstream.url(), "--otlp-endpoint", collector.url())) {
            try (var client = new TestSupport.RawClient(proxy.port())) {
                client.send("GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
                client.readUntil("data: 1\n\n");
            }
            TestSupport.await(upstreamSawClose, "the upstream to see the client leave");
            assertEquals(string("client_closed"), attributes(collector.span()).get("error.type"));
        }
    }

    @Test
    void joinsTheCallersTraceAndPassesItsOwnSpanUpstream() throws Exception {
        try (var collector = new Collector();
             var upstream = answering("application/json", "{}");
             var proxy = proxy(upstream.url(), "--otlp-endpoint", collector.url())) {
            String trace = "4bf92f3577b34da6a3ce929d0e0e4736";
            post(proxy, "/v1/chat/completions", "{}", "traceparent", "00-" + trace + "-00f067aa0ba902b7-01");
            Map<String, Object> span = collector.span();
            assertEquals(trace, span.get("traceId"));
            assertEquals("00f067aa0ba902b7", span.get("parentSpanId"));
            assertEquals("00-" + trace + "-" + span.get("spanId") + "-01", upstream.next().header("traceparent"),
                    "the upstream's work is a child of the proxy's span");
        }
    }

    @Test
    void costsTheClientNothingWhenTheCollectorIsDownSlowOrRefuses() throws Exception {
        try (var slow = new Collector(); var refusing = new Collector()) {
            int down;
            try (ServerSocket unused = new ServerSocket(0)) { // after the collectors: not one of their ports
                down = unused.getLocalPort();
            }
            slow.slow = true;
            refusing.status = 503;
            for (String endpoint : List.of("http://127.0.0.1:" + down, slow.url(), refusing.url())) {
                try (var upstream = answering("text/event-stream", ConversationTest.CHAT_STREAM)) {
                    var proxy = proxy(upstream.url(), "--otlp-endpoint", endpoint);
                    for (int i = 0; i < 3; i++) {
                        var response = post(proxy, "/v1/chat/completions", "{\"model\":\"gpt-4o-mini\",\"stream\":true}");
                        assertEquals(ConversationTest.CHAT_STREAM, response.body(), "the stream completes");
                    }
                    if (endpoint.equals(refusing.url())) { // a 503 is retried, with backoff
                        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
                        while (refusing.posts.get() < 2) {
                            assertTrue(System.nanoTime() < deadline, "the 503 was not retried");
                            Thread.sleep(10); // polling a counter the collector's thread sets
                        }
                    }
                    proxy.stop();
                    String err = proxy.stderr();
                    assertEquals(1, err.split("cannot send spans to", -1).length - 1, "said once: " + err);
                    assertTrue(err.contains("spans could not be sent to"), "a total at shutdown: " + err);
                }
            }
        }
    }

    @Test
    void leavesOutOnlyTheSpanOfARecordItCannotRead() {
        var config = ((LlmProxy.Cli.Command.Run) LlmProxy.Cli.parse(new String[] {"-t", "http://up",
                "--otlp-endpoint", "http://127.0.0.1:9"}, Map.<String, String>of()::get)).config();
        var telemetry = new LlmProxy.Telemetry(config.otlp(), config, new java.io.PrintStream(java.io.OutputStream.nullOutputStream()));
        var good = LogWriterTest.record("POST", "{}", "{}");
        var odd = new LlmProxy.Record("x", good.start(), "GET", "http://a host with spaces/", "/", "", 403,
                LlmProxy.Record.Outcome.REJECTED, "forbidden", 1, -1, Map.of(), Map.of(), good.request(), good.response());
        var trace = LlmProxy.TraceContext.of(null);
        Object request = LlmProxy.Json.parse(telemetry.request(List.of(new Object[] {odd, trace}, new Object[] {good, trace})));
        assertEquals(1, ((List<?>) LlmProxy.Json.at(request, "resourceSpans", 0, "scopeSpans", 0, "spans")).size());
        assertEquals(1, telemetry.dropped());
        telemetry.close();
    }

    @Test
    void readsTheStandardEnvironmentAndTheFlagWins() {
        Map<String, String> env = Map.of("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318",
                "OTEL_EXPORTER_OTLP_HEADERS", "x-team=llm%20ops,authorization=Bearer%20t",
                "OTEL_SERVICE_NAME", "agents", "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=dev");
        var fromEnv = LlmProxy.Telemetry.Settings.of(null, false, env::get);
        assertEquals(URI.create("http://collector:4318/v1/traces"), fromEnv.endpoint());
        assertEquals(Map.of("x-team", "llm ops", "authorization", "Bearer t"), fromEnv.headers());
        assertEquals("agents", fromEnv.resource().get("service.name"));
        assertEquals("dev", fromEnv.resource().get("deployment.environment"));
        assertEquals(URI.create("http://other:4318/v1/traces"),
                LlmProxy.Telemetry.Settings.of("http://other:4318/", false, env::get).endpoint());
        assertEquals(URI.create("http://traces:9/custom"), LlmProxy.Telemetry.Settings.of(null, false,
                Map.of("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9/custom")::get).endpoint(), "used as it is");
        assertNull(LlmProxy.Telemetry.Settings.of(null, false, Map.<String, String>of()::get));
        assertThrows(LlmProxy.UsageException.class, () -> LlmProxy.Telemetry.Settings.of("ftp://x", false, env::get));
    }
}
