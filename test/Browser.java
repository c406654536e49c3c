import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.WebSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A headless Chromium driven through the DevTools protocol over the JDK's own WebSocket client:
 * navigate, evaluate, wait for a condition in the page, and see every request the page makes
 * and every dialog it opens. No test dependency beyond the JDK and Debian's chromium.
 */
final class Browser implements AutoCloseable {
    private final Process process;
    private final Path profile;
    private final WebSocket socket;
    private final AtomicInteger ids = new AtomicInteger();
    private final Map<Integer, CompletableFuture<Map<String, Object>>> calls = new ConcurrentHashMap<>();
    /** Every URL the page asked for (Network.requestWillBeSent), in order. */
    final List<String> requests = Collections.synchronizedList(new ArrayList<>());
    /** Every dialog the page opened (alert, confirm, prompt): a script from the log ran. */
    final List<String> dialogs = Collections.synchronizedList(new ArrayList<>());
    private final List<CompletableFuture<Void>> loads = Collections.synchronizedList(new ArrayList<>());

    private Browser(Process process, Path profile, WebSocket socket) {
        this.process = process;
        this.profile = profile;
        this.socket = socket;
    }

    private static Browser shared;

    /** One browser for every test class of a run, closed when the JVM ends. */
    static synchronized Browser shared() throws Exception {
        if (shared == null) {
            Browser browser = start();
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                try {
                    browser.close();
                } catch (IOException e) {
                    // the profile is in a temporary directory
                }
            }));
            shared = browser;
        }
        return shared;
    }

    static Browser start() throws Exception {
        Path profile = Files.createTempDirectory("llmproxy-chromium");
        Process process = new ProcessBuilder("chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-extensions", "--remote-debugging-port=0", "--remote-allow-origins=*",
                "--user-data-dir=" + profile, "about:blank").redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        int port = devToolsPort(process);
        String pages = HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port
                + "/json/list")).build(), HttpResponse.BodyHandlers.ofString()).body();
        String url = null;
        for (Object target : (List<?>) LlmProxy.Json.parse(pages)) {
            if ("page".equals(LlmProxy.Json.string(target, "type"))) {
                url = LlmProxy.Json.string(target, "webSocketDebuggerUrl");
            }
        }
        if (url == null) {
            process.destroyForcibly();
            throw new AssertionError("chromium offers no page to drive: " + pages);
        }
        Listener listener = new Listener();
        WebSocket socket = HttpClient.newHttpClient().newWebSocketBuilder().buildAsync(URI.create(url), listener)
                .get(20, TimeUnit.SECONDS);
        Browser browser = new Browser(process, profile, socket);
        listener.browser = browser;
        browser.call("Page.enable", Map.of());
        browser.call("Network.enable", Map.of());
        browser.call("Runtime.enable", Map.of());
        return browser;
    }

    private static int devToolsPort(Process process) throws IOException {
        var reader = new BufferedReader(new InputStreamReader(process.getErrorStream(), StandardCharsets.UTF_8));
        Pattern listening = Pattern.compile("DevTools listening on ws://127\\.0\\.0\\.1:(\\d+)/");
        List<String> seen = new ArrayList<>();
        for (String line; (line = reader.readLine()) != null; ) {
            Matcher m = listening.matcher(line);
            if (m.find()) {
                Thread.ofVirtual().start(() -> drain(reader)); // chromium blocks if its stderr fills
                return Integer.parseInt(m.group(1));
            }
            seen.add(line);
        }
        throw new AssertionError("chromium did not start: " + seen);
    }

    private static void drain(BufferedReader reader) {
        try {
            while (reader.readLine() != null) {
                // chromium's own chatter
            }
        } catch (IOException e) {
            // it has exited
        }
    }

    /** Sends one DevTools command and waits for its result. */
    Map<String, Object> call(String method, Map<String, Object> params) throws Exception {
        int id = ids.incrementAndGet();
        CompletableFuture<Map<String, Object>> result = new CompletableFuture<>();
        calls.put(id, result);
        Map<String, Object> message = new LinkedHashMap<>();
        message.put("id", (long) id);
        message.put("method", method);
        message.put("params", params);
        socket.sendText(LlmProxy.Json.write(message), true).get(10, TimeUnit.SECONDS);
        Map<String, Object> answer = result.get(30, TimeUnit.SECONDS);
        if (answer.get("error") != null) {
            throw new AssertionError(method + " failed: " + LlmProxy.Json.write(answer.get("error")));
        }
        return answer;
    }

    /** Opens a URL and waits for its load event. */
    void open(String url) throws Exception {
        CompletableFuture<Void> loaded = new CompletableFuture<>();
        loads.add(loaded);
        call("Page.navigate", Map.of("url", url));
        loaded.get(30, TimeUnit.SECONDS);
    }

    /** The value of a JavaScript expression in the page (a promise is awaited). */
    Object eval(String expression) throws Exception {
        Map<String, Object> params = new LinkedHashMap<>();
        params.put("expression", expression);
        params.put("awaitPromise", Boolean.TRUE);
        params.put("returnByValue", Boolean.TRUE);
        Map<String, Object> answer = call("Runtime.evaluate", params);
        Object exception = LlmProxy.Json.at(answer, "result", "exceptionDetails");
        if (exception != null) {
            throw new AssertionError("the page threw: " + LlmProxy.Json.write(exception));
        }
        return LlmProxy.Json.at(answer, "result", "result", "value");
    }

    /** Waits, inside the page and for at most 15 s, until {@code condition} is truthy; returns its value. */
    Object waitFor(String condition) throws Exception {
        return eval("new Promise((resolve, reject) => { const t0 = Date.now(); (function check() {"
                + " let v; try { v = (" + condition + "); } catch (e) { v = null; }"
                + " if (v) return resolve(v);"
                + " if (Date.now() - t0 > 15000) return reject(new Error('timed out waiting for: ' + "
                + LlmProxy.Json.quote(condition) + "));"
                + " setTimeout(check, 20); })(); })");
    }

    /** Clicks the first element that matches a CSS selector. */
    void click(String selector) throws Exception {
        waitFor("document.querySelector(" + LlmProxy.Json.quote(selector) + ")");
        eval("document.querySelector(" + LlmProxy.Json.quote(selector) + ").click()");
    }

    private void onMessage(String text) {
        Object message = LlmProxy.Json.parse(text);
        Object id = LlmProxy.Json.at(message, "id");
        if (id instanceof Long n) {
            @SuppressWarnings("unchecked")
            Map<String, Object> answer = (Map<String, Object>) message;
            CompletableFuture<Map<String, Object>> call = calls.remove(n.intValue());
            if (call != null) {
                call.complete(answer);
            }
            return;
        }
        switch (String.valueOf(LlmProxy.Json.string(message, "method"))) {
            case "Network.requestWillBeSent" -> requests.add(LlmProxy.Json.string(message, "params", "request", "url"));
            case "Page.javascriptDialogOpening" -> {
                dialogs.add(LlmProxy.Json.string(message, "params", "message"));
                socket.sendText("{\"id\": " + ids.incrementAndGet()
                        + ", \"method\": \"Page.handleJavaScriptDialog\", \"params\": {\"accept\": true}}", true);
            }
            case "Page.loadEventFired" -> {
                synchronized (loads) {
                    loads.forEach(f -> f.complete(null));
                    loads.clear();
                }
            }
            default -> { }
        }
    }

    @Override
    public void close() throws IOException {
        socket.abort();
        process.destroyForcibly();
        try {
            process.waitFor(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        try (var files = Files.walk(profile)) {
            files.sorted(Collections.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    /** Puts WebSocket frames back together into messages. */
    private static final class Listener implements WebSocket.Listener {
        private final StringBuilder partial = new StringBuilder();
        volatile Browser browser;

        @Override
        public CompletionStage<?> onText(WebSocket webSocket, CharSequence data, boolean last) {
            partial.append(data);
            if (last) {
                String message = partial.toString();
                partial.setLength(0);
                browser.onMessage(message);
            }
            webSocket.request(1);
            return null;
        }
    }
}
