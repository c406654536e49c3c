import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Which requests may use the proxy: Host names it, Origin is this machine's or allowed. */
class AccessTest {
    @TempDir
    Path dir;

    private static final LlmProxy.Access LOOPBACK = new LlmProxy.Access(Set.of(), true, Set.of());

    @ParameterizedTest
    @ValueSource(strings = {"localhost", "LOCALHOST:8080", "localhost.", "127.0.0.1", "127.0.0.1:9", "127.1.2.3:80",
        "[::1]", "[::1]:8080", "[0:0:0:0:0:0:0:1]:1"})
    void servesLoopbackHostsWithOrWithoutPort(String host) {
        assertNull(LOOPBACK.refusal(host, null, null, null));
    }

    @ParameterizedTest
    @ValueSource(strings = {"evil.example", "evil.example:8080", "localhost.evil.example", "127.0.0.1.evil.example",
        "128.0.0.1", "127.0.0.256", "0.0.0.0", "", "local host", "localhost:80:80", "[::1]x", "[::2]", "10.0.0.1:8080"})
    void refusesHostsThatDoNotNameTheProxy(String host) {
        String why = LOOPBACK.refusal(host, null, null, null);
        assertNotNull(why, host);
        assertTrue(why.contains("does not name this proxy") && why.contains("--allow-host"), why);
    }

    @Test
    void servesARequestWithoutHostFromAnHttp10Client() {
        assertNull(LOOPBACK.refusal(null, null, null, null));
    }

    @Test
    void servesNamesAllowedWithAllowHost() {
        var access = new LlmProxy.Access(Set.of("my-box.local"), true, Set.of());
        assertNull(access.refusal("MY-BOX.local:8080", null, null, null));
        assertNotNull(access.refusal("other-box.local", null, null, null));
    }

    @Test
    void refusesAnAbsoluteFormRequestNamingAnotherHost() {
        assertNotNull(LOOPBACK.refusal("localhost", URI.create("http://evil.example/v1/models"), null, null));
        assertNull(LOOPBACK.refusal("localhost", URI.create("http://127.0.0.1:8080/v1/models"), null, null));
    }

    @ParameterizedTest
    @ValueSource(strings = {"http://localhost:3000", "http://127.0.0.1", "https://localhost", "http://[::1]:5173",
        "HTTP://LOCALHOST:3000"})
    void servesPagesOnThisMachine(String origin) {
        assertNull(LOOPBACK.refusal("localhost:8080", null, origin, "cross-site"));
    }

    @ParameterizedTest
    @ValueSource(strings = {"null", "https://evil.example", "http://localhost.evil.example", "file://",
        "http://127.0.0.1.nip.io", "chrome-extension://abc", "http://user@localhost", "http://localhost/path"})
    void refusesPagesElsewhere(String origin) {
        String why = LOOPBACK.refusal("localhost:8080", null, origin, null);
        assertNotNull(why, origin);
        assertTrue(why.contains("--allow-origin"), why);
    }

    @Test
    void servesOriginsAllowedWithAllowOrigin() {
        var access = new LlmProxy.Access(Set.of(), true, Set.of("https://app.example"));
        assertNull(access.refusal("localhost", null, "https://app.example", "cross-site"));
        assertNotNull(access.refusal("localhost", null, "https://app.example:8443", null));
        var any = new LlmProxy.Access(Set.of(), true, Set.of("*"));
        assertNull(any.refusal("localhost", null, "https://anything.example", "cross-site"));
        assertNull(any.refusal("localhost", null, null, "cross-site"));
    }

    @Test
    void refusesACrossSiteBrowserRequestWithoutOrigin() {
        // A link or an <img> on another site's page: a GET without Origin, but the browser says where it came from.
        assertNotNull(LOOPBACK.refusal("127.0.0.1:8080", null, null, "cross-site"));
        assertNull(LOOPBACK.refusal("127.0.0.1:8080", null, null, "none"));
        assertNull(LOOPBACK.refusal("127.0.0.1:8080", null, null, "same-origin"));
    }

    @Test
    void servesTheBindAddressAndTheMachineNamesOnANonLoopbackBind() throws Exception {
        // Decided without binding: the configuration alone says which names the proxy answers to.
        var config = ((LlmProxy.Cli.Command.Run) LlmProxy.Cli.parse(new String[] {"-t", "https://h",
                "--host", "127.0.0.1", "--allow-host", "proxy.internal"}, Map.<String, String>of()::get)).config();
        var access = LlmProxy.Access.of(config);
        assertNull(access.refusal("proxy.internal:8080", null, null, null));
        assertNull(access.refusal("localhost:8080", null, null, null));
        String name = java.net.InetAddress.getLocalHost().getHostName();
        var wildcard = LlmProxy.Access.of(((LlmProxy.Cli.Command.Run) LlmProxy.Cli.parse(new String[] {"-t", "https://h",
                "--host", "0.0.0.0"}, Map.<String, String>of()::get)).config());
        assertNull(wildcard.refusal(name + ":8080", null, null, null));
        assertNull(wildcard.refusal("localhost", null, null, null));
        assertNotNull(wildcard.refusal("evil.example", null, null, null));
    }

    @Test
    void answers403WithARejectedRecordAndNeverContactsTheUpstream() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(200, -1));
             var proxy = new TestSupport.RunningProxy(dir.resolve("log.csv"), Map.of("KEY", "sk-secret-123456"),
                     "-t", upstream.url(), "-a", "Authorization: Bearer ${KEY}",
                     "--log-columns", "method,url,status,outcome,error,request_body")) {
            for (String head : List.of("Host: evil.example:" + proxy.port(),
                    "Host: localhost\r\nOrigin: https://evil.example")) {
                try (var client = new TestSupport.RawClient(proxy.port())) {
                    client.send("POST /v1/chat/completions HTTP/1.1\r\n" + head
                            + "\r\nContent-Length: 13\r\n\r\n{\"prompt\":1}\n").readHead();
                    assertEquals(403, client.status);
                    String body = new String(client.body(), StandardCharsets.UTF_8);
                    assertTrue(body.contains("\"llmproxy_forbidden\""), body);
                }
            }
            proxy.stop();
            assertTrue(upstream.received.isEmpty(), "the upstream was never contacted");
            var rows = TestSupport.Csv.parse(java.nio.file.Files.readString(proxy.log));
            assertEquals(3, rows.size());
            for (var row : rows.subList(1, 3)) {
                assertEquals("403", row.get(2));
                assertEquals("rejected", row.get(3));
                assertEquals("{\"prompt\":1}\n", row.get(5), "the prompt is kept in the record");
            }
            // One record for each refusal; the log has them in the order the exchanges ended their bookkeeping.
            var errors = rows.subList(1, 3).stream().map(row -> row.get(4)).toList();
            assertTrue(errors.stream().anyMatch(e -> e.contains("does not name this proxy")), errors.toString());
            assertTrue(errors.stream().anyMatch(e -> e.contains("requests from web pages at 'https://evil.example'")),
                    errors.toString());
        }
    }
}
