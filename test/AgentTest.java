import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The README's recipes for the coding agents, run for real: the pinned Claude Code, Codex and
 * Gemini CLI (installed with npm into lib/agents by build.sh) through `llmproxy … -- AGENT`
 * against a local mock of each API, each with its own HOME and its telemetry off.
 */
class AgentTest {
    private static final Path AGENTS = Path.of("lib/agents/node_modules/.bin").toAbsolutePath();
    private static final String ANSWER = "Hello from the mock.";

    @TempDir
    Path dir;

    private static TestSupport.Upstream api;

    /** Anthropic Messages, OpenAI Responses and Gemini, each answering one streamed sentence. */
    @BeforeAll
    static void startMockApis() throws IOException {
        api = TestSupport.Upstream.streaming(exchange -> {
            String path = exchange.getRequestURI().getPath();
            String body = new String(exchange.getRequestBody().readAllBytes(), StandardCharsets.UTF_8);
            OutputStream out = exchange.getResponseBody();
            if (path.endsWith("/v1/messages")) {
                stream(exchange, List.of(
                        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","
                                + "\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,"
                                + "\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}",
                        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                                + "{\"type\":\"text\",\"text\":\"\"}}",
                        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                                + "{\"type\":\"text_delta\",\"text\":\"" + ANSWER + "\"}}",
                        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}",
                        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
                                + "\"usage\":{\"output_tokens\":5}}",
                        "event: message_stop\ndata: {\"type\":\"message_stop\"}"));
            } else if (path.endsWith("/v1/responses")) {
                String message = "{\"type\":\"message\",\"id\":\"msg_1\",\"role\":\"assistant\",\"status\":\"completed\","
                        + "\"content\":[{\"type\":\"output_text\",\"text\":\"" + ANSWER + "\",\"annotations\":[]}]}";
                String response = "{\"id\":\"resp_1\",\"object\":\"response\",\"model\":\"gpt-5-codex\",\"status\":";
                stream(exchange, List.of(
                        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":"
                                + response + "\"in_progress\",\"output\":[]}}",
                        "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,"
                                + "\"output_index\":0,\"item\":{\"type\":\"message\",\"id\":\"msg_1\",\"role\":\"assistant\","
                                + "\"status\":\"in_progress\",\"content\":[]}}",
                        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":2,"
                                + "\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"" + ANSWER + "\"}",
                        "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"sequence_number\":3,"
                                + "\"output_index\":0,\"item\":" + message + "}",
                        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":4,\"response\":"
                                + response + "\"completed\",\"output\":[" + message + "],\"usage\":{\"input_tokens\":10,"
                                + "\"output_tokens\":5,\"total_tokens\":15,\"input_tokens_details\":{\"cached_tokens\":0},"
                                + "\"output_tokens_details\":{\"reasoning_tokens\":0}}}}"));
            } else if (path.contains(":streamGenerateContent") || path.contains(":generateContent")) {
                // Gemini CLI first asks a small model, for JSON, how hard the task is: it retries for a
                // minute and a half on an answer that is not that JSON.
                String text = body.contains("complexity_score")
                        ? "{\\\"complexity_reasoning\\\": \\\"a greeting\\\", \\\"complexity_score\\\": 1}" : ANSWER;
                String answer = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"" + text + "\"}],\"role\":\"model\"},"
                        + "\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":10,"
                        + "\"candidatesTokenCount\":5,\"totalTokenCount\":15},\"modelVersion\":\"gemini-2.5-flash\"}";
                if (path.contains(":stream")) {
                    stream(exchange, List.of("data: " + answer));
                } else {
                    exchange.getResponseHeaders().set("Content-Type", "application/json");
                    exchange.sendResponseHeaders(200, 0);
                    out.write(answer.getBytes(StandardCharsets.UTF_8));
                }
            } else {
                exchange.getResponseHeaders().set("Content-Type", "application/json");
                exchange.sendResponseHeaders(200, 0);
                out.write("{\"input_tokens\": 10}".getBytes(StandardCharsets.UTF_8)); // count_tokens and the like
            }
        });
    }

    @AfterAll
    static void stopMockApis() {
        api.close();
    }

    private static void stream(com.sun.net.httpserver.HttpExchange exchange, List<String> events) throws IOException {
        exchange.getResponseHeaders().set("Content-Type", "text/event-stream");
        exchange.sendResponseHeaders(200, 0);
        for (String event : events) {
            TestSupport.sendChunk(exchange.getResponseBody(), event + "\n\n");
        }
    }

    private record Run(int code, String out, String err, List<List<String>> records) {}

    /** {@code llmproxy -t MOCK -a HEADER -- AGENT ARGS…}, the agent's HOME in the test's folder. */
    private Run run(String header, Map<String, String> env, String agent, String... args) throws Exception {
        Path binary = AGENTS.resolve(agent);
        assertTrue(Files.isExecutable(binary), binary + " is missing: build.sh installs the agents with npm"
                + " (./build.sh test); is npm there?");
        Path log = dir.resolve("log.csv");
        List<String> command = new ArrayList<>(List.of(TestSupport.JAVA, "-jar", "build/llmproxy.jar", "-t", api.url(),
                "-a", header, "-l", log.toString(), "--log-columns", "method,url,status,outcome,request_headers,response_text",
                "--", binary.toString()));
        command.addAll(List.of(args));
        ProcessBuilder builder = new ProcessBuilder(command).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        Path home = Files.createDirectories(dir.resolve("home"));
        builder.environment().put("HOME", home.toString());
        builder.environment().putAll(env);
        if (agent.equals("gemini")) { // the recipe's one-time setting: the API key is the auth type
            Files.createDirectories(home.resolve(".gemini"));
            Files.writeString(home.resolve(".gemini/settings.json"), "{\"security\": {\"auth\": {\"selectedType\": \"gemini-api-key\"}}}");
        }
        Process process = builder.start();
        var err = new java.util.concurrent.CompletableFuture<String>();
        Thread.ofVirtual().start(() -> {
            try {
                err.complete(new String(process.getErrorStream().readAllBytes(), StandardCharsets.UTF_8));
            } catch (IOException e) {
                err.complete(e.toString());
            }
        });
        String out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(process.waitFor(180, TimeUnit.SECONDS), "the agent did not finish");
        List<List<String>> records = TestSupport.Csv.parse(Files.readString(log));
        return new Run(process.exitValue(), out, err.get(30, TimeUnit.SECONDS), records.subList(1, records.size()));
    }

    private static long count(Run run, String method, String path, String status) {
        return run.records().stream().filter(r -> r.get(0).equals(method) && r.get(1).contains(path) && r.get(2).equals(status))
                .count();
    }

    @Test
    void claudeCodeRunsThroughTheProxy() throws Exception {
        Run run = run("x-api-key: ${ANTHROPIC_API_KEY}", Map.of("ANTHROPIC_API_KEY", "sk-ant-test-0123456789",
                "DISABLE_TELEMETRY", "1", "DISABLE_AUTOUPDATER", "1"), "claude", "-p", "say hello");
        assertEquals(0, run.code(), run.err());
        assertTrue(run.out().contains(ANSWER), run.out() + run.err());
        assertTrue(run.err().contains("ANTHROPIC_BASE_URL=http://127.0.0.1:") && run.err().contains(
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"), run.err());
        assertTrue(count(run, "POST", "/v1/messages", "200") >= 1, run.records().toString());
        assertTrue(run.records().stream().allMatch(r -> r.get(3).equals("complete")), run.records().toString());
    }

    @Test
    void codexRunsThroughTheProxyAndFallsBackFromWebSocketAtOnce() throws Exception {
        Run run = run("Authorization: Bearer ${OPENAI_API_KEY}", Map.of("OPENAI_API_KEY", "sk-test-0123456789"),
                "codex", "exec", "--skip-git-repo-check", "say hello");
        assertEquals(0, run.code(), run.err());
        assertTrue(run.out().contains(ANSWER), run.out() + run.err());
        assertTrue(run.err().contains("-c openai_base_url=http://127.0.0.1:"), "Codex ignores OPENAI_BASE_URL: " + run.err());
        assertTrue(run.err().contains("CODEX_API_KEY="), "Codex exec reads its key from CODEX_API_KEY only: " + run.err());
        assertEquals(1, count(run, "GET", "/v1/responses", "426"), "one WebSocket try, not seven: " + run.records());
        assertEquals(1, count(run, "POST", "/v1/responses", "200"), run.records().toString());
    }

    @Test
    void geminiCliRunsThroughTheProxy() throws Exception {
        Run run = run("x-goog-api-key: ${GEMINI_API_KEY}", Map.of("GEMINI_API_KEY", "test-gemini-key-0123456789",
                "GEMINI_CLI_TRUST_WORKSPACE", "true"), "gemini", "-p", "say hello");
        assertEquals(0, run.code(), run.err());
        assertTrue(run.out().contains(ANSWER), run.out() + run.err());
        assertTrue(run.err().contains("GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:"), run.err());
        assertTrue(count(run, "POST", ":streamGenerateContent", "200") >= 1, run.records().toString());
    }
}
