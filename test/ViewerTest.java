import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.OutputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The live viewer (--ui-port), in a real headless Chromium, fed by exchanges through the proxy. */
class ViewerTest {
    @TempDir
    Path dir;

    private static Browser browser;

    @BeforeAll
    static void startBrowser() throws Exception {
        browser = Browser.shared();
    }

    private TestSupport.RunningProxy proxy(TestSupport.Upstream upstream, String... more) {
        List<String> args = new ArrayList<>(List.of("-t", upstream.url(), "--ui-port", "0"));
        args.addAll(List.of(more));
        return new TestSupport.RunningProxy(dir.resolve("log.csv"), Map.of("KEY", "sk-injected-0123456789abcdef"),
                args.toArray(String[]::new));
    }

    private static String viewer(TestSupport.RunningProxy proxy) {
        return "http://127.0.0.1:" + proxy.proxy.viewerPort() + "/";
    }

    private static HttpClient client() {
        return HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
    }

    private static CompletableFuture<HttpResponse<String>> post(TestSupport.RunningProxy proxy, String path, String body) {
        return client().sendAsync(HttpRequest.newBuilder(URI.create(proxy.url(path)))
                .POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
    }

    private static long rows() throws Exception {
        return (Long) browser.eval("document.querySelectorAll('#list tbody tr').length");
    }

    @Test
    void showsExchangesAsTheyHappenWhileThePageIsOpen() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            byte[] body = ("{\"object\":\"chat.completion\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":"
                    + "{\"content\":\"" + ReportTest.XSS.replace("\"", "\\\"") + "\"}}]}").getBytes();
            exchange.getResponseHeaders().set("Content-Type", "application/json");
            exchange.sendResponseHeaders(200, body.length);
            exchange.getResponseBody().write(body);
        }); var proxy = proxy(upstream)) {
            browser.requests.clear();
            browser.dialogs.clear();
            browser.open(viewer(proxy));
            assertEquals(0L, rows());
            post(proxy, "/v1/chat/completions", "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":"
                    + LlmProxy.Json.quote(ReportTest.XSS) + "}]}").get();
            browser.waitFor("document.querySelectorAll('#list tbody tr').length === 1");
            String row = (String) browser.waitFor("document.querySelector('#list tbody tr').innerText.includes('complete')"
                    + " && document.querySelector('#list tbody tr').innerText");
            assertTrue(row.contains("/v1/chat/completions") && row.contains("gpt-4o"), row);
            post(proxy, "/v1/embeddings", "{\"input\": \"a needle in the body\"}").get();
            browser.waitFor("document.querySelectorAll('#list tbody tr').length === 2");
            browser.eval("{ const f = document.getElementById('filter'); f.value = 'NEEDLE'; f.dispatchEvent(new Event('input')); }");
            browser.waitFor("document.querySelectorAll('#list tbody tr').length === 1"
                    + " && document.querySelector('#list tbody tr').innerText.includes('/v1/embeddings')");
            browser.eval("{ const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input')); }");
            browser.waitFor("document.querySelectorAll('#list tbody tr').length === 2");
            assertTrue(((String) browser.eval("document.querySelector('#list tbody tr').innerText")).contains("/v1/embeddings"),
                    "the newest first");
            browser.click("#list tbody tr:nth-child(2)");
            String detail = (String) browser.waitFor("document.querySelector('#detail .conversation')"
                    + " && document.querySelector('#detail').innerText");
            assertTrue(detail.contains("<script>window.pwned=1") && detail.contains("onerror"), detail);
            browser.click("#detail .tab:last-child");
            String raw = (String) browser.waitFor("document.querySelector('#detail .raw') && document.querySelector('#detail').innerText");
            assertTrue(raw.contains("Authorization: [set by llmproxy]") || !raw.contains("sk-injected"), raw);
            assertTrue(!raw.contains("sk-injected"), "no --add-header value in the viewer: " + raw);
            assertEquals(null, browser.eval("window.pwned === undefined ? null : window.pwned"));
            assertEquals(List.of(), browser.dialogs);
            for (String url : browser.requests) {
                assertTrue(url.startsWith(viewer(proxy)), "the page asked for " + url);
            }
        }
    }

    @Test
    void growsAStreamedAnswerWhileItStreams() throws Exception {
        CountDownLatch second = new CountDownLatch(1);
        CountDownLatch end = new CountDownLatch(1);
        try (var upstream = TestSupport.Upstream.recording(exchange -> {
            exchange.getResponseHeaders().set("Content-Type", "text/event-stream");
            exchange.sendResponseHeaders(200, 0);
            OutputStream out = exchange.getResponseBody();
            TestSupport.sendChunk(out, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n");
            TestSupport.await(second, "the page to show the first words");
            TestSupport.sendChunk(out, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\", world\"}}]}\n\n");
            TestSupport.await(end, "the page to show the second words");
            TestSupport.sendChunk(out, "data: [DONE]\n\n");
            out.close();
        }); var proxy = proxy(upstream)) {
            browser.open(viewer(proxy));
            var answer = post(proxy, "/v1/chat/completions", "{\"model\":\"gpt-4o-mini\",\"stream\":true,\"messages\":[]}");
            browser.waitFor("document.querySelector('#list tbody tr.outcome-in_flight')");
            String row = (String) browser.waitFor("document.querySelector('#list tbody tr').innerText.includes('gpt-4o-mini')"
                    + " && document.querySelector('#list tbody tr').innerText");
            assertTrue(row.contains("in flight"), row);
            browser.click("#list tbody tr");
            assertEquals("Hello", browser.waitFor("document.getElementById('answer-text')"
                    + " && document.getElementById('answer-text').textContent === 'Hello' && 'Hello'"));
            second.countDown();
            assertEquals("Hello, world", browser.waitFor("document.getElementById('answer-text')"
                    + " && document.getElementById('answer-text').textContent === 'Hello, world' && 'Hello, world'"));
            end.countDown();
            answer.get();
            browser.waitFor("document.querySelector('#list tbody tr.outcome-complete')");
        }
    }

    @Test
    void answersOnlyToItsOwnHostAndOnlyReads() throws Exception {
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1));
             var proxy = proxy(upstream)) {
            int port = proxy.proxy.viewerPort();
            for (String host : List.of("evil.example:" + port, "127.0.0.1.nip.io:" + port, "localhost:1")) {
                try (var raw = new TestSupport.RawClient(port)) {
                    raw.send("GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n").readHead();
                    assertEquals(403, raw.status, host);
                }
            }
            try (var raw = new TestSupport.RawClient(port)) {
                raw.send("GET / HTTP/1.1\r\nHost: localhost:" + port + "\r\n\r\n").readHead();
                assertEquals(200, raw.status);
                assertTrue(raw.headers.get("content-security-policy").startsWith("default-src 'none'"),
                        raw.headers.get("content-security-policy"));
            }
            try (var raw = new TestSupport.RawClient(port)) {
                raw.send("POST /exchange HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\nContent-Length: 0\r\n\r\n").readHead();
                assertEquals(405, raw.status);
            }
            assertTrue(proxy.stderr().contains("live viewer at http://127.0.0.1:" + port + "/"), proxy.stderr());
        }
    }

    @Test
    void showsTheRecentRecordsOfTheLogAtStartAndKeepsABoundedNumber() throws Exception {
        Files.writeString(dir.resolve("log.csv"), ReportTest.defaultColumnsLog());
        try (var upstream = TestSupport.Upstream.recording(exchange -> exchange.sendResponseHeaders(204, -1))) {
            try (var proxy = TestSupport.withProperty("llmproxy.viewerExchanges", "8", () -> proxy(upstream))) {
                browser.open(viewer(proxy));
                browser.waitFor("document.querySelectorAll('#list tbody tr').length === 6");
                for (int i = 0; i < 4; i++) {
                    post(proxy, "/v1/files/" + i, "{}").get();
                }
                browser.waitFor("document.querySelector('#list tbody tr').innerText.includes('/v1/files/3')");
                browser.waitFor("document.querySelectorAll('#list tbody tr').length === 8");
                String all = (String) browser.eval("document.querySelector('#list').innerText");
                assertTrue(!all.contains("/v1/chat/completions") && all.contains("/v1/messages"),
                        "the oldest two left the page (never the log): " + all);
            }
        }
    }
}
