import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code llmproxy view LOG}: the self-contained HTML report, opened in a real headless Chromium. */
class ReportTest {
    @TempDir
    Path dir;

    private static Browser browser;

    @BeforeAll
    static void startBrowser() throws Exception {
        browser = Browser.shared();
    }

    /** Prompts and answers that would run script if the page ever treated them as markup. */
    static final String XSS = "<script>window.pwned=1;alert('script')</script><img src=x onerror=\"window.pwned=2;alert('img')\">"
            + "</script><a href=\"javascript:alert('link')\">click</a>";

    private static final String BASE = "http://127.0.0.1:8080";

    private static List<String> row(String method, String path, String request, String response) {
        return List.of(method, BASE + path, request, response);
    }

    /** A log with the default four columns: one exchange of each format, streamed and not, and others. */
    static String defaultColumnsLog() {
        String xssInJson = LlmProxy.Json.quote(XSS);
        List<List<String>> rows = new ArrayList<>();
        rows.add(List.of("method", "url", "request_body", "response_body"));
        rows.add(row("POST", "/v1/chat/completions", ConversationTest.CHAT_REQUEST.replace("Weather in Paris?",
                "Weather in Paris? " + XSS.replace("\"", "\\\"")), ConversationTest.CHAT_STREAM));
        rows.add(row("POST", "/v1/responses", "{\"model\":\"gpt-5\",\"stream\":true,\"instructions\":\"Be terse.\","
                + "\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":\"Weather in Oslo?\"}]}],"
                + "\"tools\":[{\"type\":\"function\",\"name\":\"get_weather\",\"description\":\"Weather by city\","
                + "\"parameters\":{\"type\":\"object\"}}]}", ConversationTest.RESPONSES_STREAM));
        rows.add(row("POST", "/v1/messages", "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1024,\"stream\":true,"
                + "\"system\":\"You are a weather bot.\",\"messages\":[{\"role\":\"user\",\"content\":\"Weather in SF?\"}]}",
                ConversationTest.ANTHROPIC_STREAM));
        rows.add(row("POST", "/v1beta/models/gemini-2.5-flash:generateContent", "{\"contents\":[{\"role\":\"user\","
                + "\"parts\":[{\"text\":\"What is 2+2?\"},{\"inlineData\":{\"mimeType\":\"image/png\","
                + "\"data\":\"[base64 image/png, 1.4 MB]\"}}]}]}", "{\"candidates\":[{\"content\":{\"parts\":["
                + "{\"text\":\"Four.\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\"usageMetadata\":"
                + "{\"promptTokenCount\":9,\"candidatesTokenCount\":2},\"modelVersion\":\"gemini-2.5-flash\"}"));
        rows.add(row("POST", "/api/chat", "{\"model\":\"llama3.2\",\"stream\":false,\"messages\":[{\"role\":\"user\","
                + "\"content\":" + xssInJson + "}]}", "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\","
                + "\"content\":" + xssInJson + "},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":3,"
                + "\"eval_count\":4}"));
        rows.add(row("GET", "/v1/models", "", "{\"object\":\"list\",\"data\":[]}"));
        StringBuilder log = new StringBuilder();
        rows.forEach(r -> log.append(LlmProxy.Csv.record(r)));
        return log.toString();
    }

    /** Three turns of an agent: each resends the history, with other bytes for the same content. */
    static String agentLog() {
        String system = "\"system\":[{\"type\":\"text\",\"text\":\"You are a coding agent.\",\"cache_control\":{\"type\":\"ephemeral\"}}]";
        String turn1 = "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Fix the bug\",\"cache_control\":{\"type\":\"ephemeral\"}}]}";
        String turn1Again = "{\"role\":\"user\",\"content\":\"Fix the bug\"}"; // same words, other bytes
        String call = "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"read_file\","
                + "\"input\":{\"path\":\"a.py\"}}]}";
        String result = "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t1\",\"content\":\"print(1)\"}]}";
        String call2 = "{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t2\",\"name\":\"write_file\","
                + "\"input\":{\"path\":\"a.py\"}}]}";
        String result2 = "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"t2\",\"content\":\"ok\"}]}";
        String answer = "{\"type\":\"message\",\"model\":\"claude-sonnet-4-5\",\"content\":[{\"type\":\"text\",\"text\":\"Done.\"}],"
                + "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":10,\"output_tokens\":2}}";
        StringBuilder log = new StringBuilder(LlmProxy.Csv.record(List.of("method", "url", "request_body", "response_body")));
        for (String messages : List.of(turn1, turn1Again + "," + call + "," + result,
                turn1Again + "," + call + "," + result + "," + call2 + "," + result2)) {
            log.append(LlmProxy.Csv.record(List.of("POST", BASE + "/v1/messages", "{\"model\":\"claude-sonnet-4-5\","
                    + system + ",\"messages\":[" + messages + "]}", answer)));
        }
        return log.toString();
    }

    private record Run(int code, String out, String err) {}

    private Run view(Path log, String... more) {
        var out = new ByteArrayOutputStream();
        var err = new ByteArrayOutputStream();
        List<String> args = new ArrayList<>(List.of("view", log.toString()));
        args.addAll(List.of(more));
        int code = LlmProxy.start(args.toArray(String[]::new), new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Run(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    private Path report(String name, String log) throws Exception {
        Path file = dir.resolve(name);
        Files.writeString(file, log);
        Run run = view(file);
        assertEquals(0, run.code(), run.err());
        Path html = dir.resolve(name.replaceAll("\\.[a-z]+$", "") + ".html");
        assertEquals(html.toAbsolutePath() + System.lineSeparator(), run.out());
        return html;
    }

    private void open(Path html) throws Exception {
        browser.requests.clear();
        browser.dialogs.clear();
        browser.open(html.toUri().toString());
        browser.waitFor("document.querySelectorAll('#list tbody tr').length > 0");
    }

    private String selectRow(int index) throws Exception {
        browser.click("#list tbody tr:nth-child(" + index + ")");
        return (String) browser.waitFor("document.querySelector('#detail .conversation, #detail .raw')"
                + " && document.querySelector('#detail').innerText");
    }

    @Test
    void showsTheConversationOfEachFormatFromTheDefaultColumns() throws Exception {
        open(report("log.csv", defaultColumnsLog()));
        assertEquals(6L, browser.eval("document.querySelectorAll('#list tbody tr').length"));
        String chat = selectRow(1);
        assertTrue(chat.contains("Weather in Paris?") && chat.contains("Hello, wörld"), chat);
        assertEquals("Hello, wörld", browser.eval("document.getElementById('answer-text').textContent"));
        assertTrue(chat.contains("get_weather") && chat.contains("stop: tool_calls"), chat);
        String responses = selectRow(2);
        assertTrue(responses.contains("Be terse.") && responses.contains("Weather in Oslo?")
                && responses.contains("Checking now.") && responses.contains("1 tools offered"), responses);
        String anthropic = selectRow(3);
        assertTrue(anthropic.contains("You are a weather bot.") && anthropic.contains("Let me check.")
                && anthropic.contains("San Francisco"), anthropic);
        String gemini = selectRow(4);
        assertTrue(gemini.contains("What is 2+2?") && gemini.contains("[base64 image/png, 1.4 MB]")
                && gemini.contains("Four."), gemini);
        String ollama = selectRow(5);
        assertTrue(ollama.contains("<script>window.pwned=1") && ollama.contains("onerror="), "shown as text: " + ollama);
        String models = selectRow(6);
        assertTrue(models.contains("response body"), "not an LLM call: the raw view only: " + models);
        assertEquals(0L, browser.eval("document.querySelectorAll('#detail .tab').length - 1"));
    }

    @Test
    void showsTheOtherWayOfEachFormatToo() throws Exception {
        // The fixture above streams chat, Responses and Anthropic and not Gemini and Ollama: here the other way round.
        List<List<String>> rows = new ArrayList<>();
        rows.add(List.of("method", "url", "request_body", "response_body"));
        rows.add(row("POST", "/v1/chat/completions", "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\","
                + "\"content\":[{\"type\":\"text\",\"text\":\"Name a colour\"},{\"type\":\"image_url\",\"image_url\":"
                + "{\"url\":\"[base64 image/jpeg, 12.0 KB]\"}}]}]}", "{\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
                + "\"message\":{\"content\":\"Teal.\"},\"finish_reason\":\"stop\"}]}"));
        rows.add(row("POST", "/v1/responses", "{\"model\":\"gpt-5\",\"input\":\"Say hi\"}", "{\"id\":\"resp_9\","
                + "\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-5\",\"output\":[{\"type\":\"message\","
                + "\"content\":[{\"type\":\"output_text\",\"text\":\"Hi there.\"}]}]}"));
        rows.add(row("POST", "/v1/messages", "{\"model\":\"claude-haiku-4-5\",\"messages\":[{\"role\":\"user\","
                + "\"content\":[{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\","
                + "\"data\":\"[base64 image/png, 1.4 MB]\"}},{\"type\":\"text\",\"text\":\"What is this?\"}]}]}",
                "{\"type\":\"message\",\"model\":\"claude-haiku-4-5\",\"content\":[{\"type\":\"thinking\",\"thinking\":"
                + "\"A chart.\"},{\"type\":\"text\",\"text\":\"A bar chart.\"}],\"stop_reason\":\"end_turn\","
                + "\"usage\":{\"input_tokens\":30,\"output_tokens\":5}}"));
        rows.add(row("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "{\"systemInstruction\":"
                + "{\"parts\":[{\"text\":\"Answer in words.\"}]},\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":"
                + "\"What is 2+2?\"}]}]}", ConversationTest.GEMINI_STREAM));
        rows.add(row("POST", "/api/chat", "{\"model\":\"qwen3:8b\",\"messages\":[{\"role\":\"user\",\"content\":\"Wave\"}]}",
                "{\"model\":\"qwen3:8b\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n"
                + "{\"model\":\"qwen3:8b\",\"message\":{\"role\":\"assistant\",\"content\":\"!\"},\"done\":false}\n"
                + "{\"model\":\"qwen3:8b\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,"
                + "\"done_reason\":\"stop\",\"prompt_eval_count\":5,\"eval_count\":2}\n"));
        StringBuilder log = new StringBuilder();
        rows.forEach(r -> log.append(LlmProxy.Csv.record(r)));
        open(report("other.csv", log.toString()));
        List<List<String>> expected = List.of(List.of("Name a colour", "[base64 image/jpeg, 12.0 KB]", "Teal."),
                List.of("Say hi", "Hi there."), List.of("What is this?", "[base64 image/png, 1.4 MB]", "A bar chart.", "reasoning"),
                List.of("Answer in words.", "What is 2+2?", "Two plus two is four."), List.of("Wave", "Hi!"));
        for (int i = 0; i < expected.size(); i++) {
            String shown = selectRow(i + 1);
            for (String part : expected.get(i)) {
                assertTrue(shown.contains(part), "row " + (i + 1) + " lacks '" + part + "': " + shown);
            }
        }
    }

    @Test
    void runsNothingFromTheLogAndRequestsNothingElsewhere() throws Exception {
        Path html = report("xss.csv", defaultColumnsLog());
        open(html);
        for (int i = 1; i <= 6; i++) {
            selectRow(i);
            browser.click("#detail .tab:last-child"); // the raw view too
            browser.waitFor("document.querySelector('#detail .raw')");
        }
        assertEquals(null, browser.eval("window.pwned === undefined ? null : window.pwned"), "a script from the log ran");
        assertEquals(List.of(), browser.dialogs);
        assertEquals(0L, browser.eval("document.querySelectorAll('#detail img, #detail a, #list img').length"));
        String page = html.toUri().toString();
        for (String url : browser.requests) {
            assertTrue(url.equals(page), "the page asked for " + url);
        }
    }

    @Test
    void foldsTheHistoryAnAgentResendsIntoEarlierMessages() throws Exception {
        open(report("agent.csv", agentLog()));
        String first = selectRow(1);
        assertFalse(first.contains("earlier messages"), first);
        selectRow(3);
        assertEquals("3 earlier messages", browser.waitFor("document.querySelector('.earlier-messages summary')"
                + " && document.querySelector('.earlier-messages summary').textContent"));
        assertEquals(false, browser.eval("document.querySelector('.earlier-messages').open"));
        String shown = (String) browser.eval("document.querySelector('#detail .messages').innerText");
        assertTrue(shown.contains("write_file") && !shown.contains("read_file"), "only the new ones are open: " + shown);
        browser.click(".earlier-messages summary");
        String all = (String) browser.eval("document.querySelector('#detail .messages').innerText");
        assertTrue(all.contains("read_file") && all.contains("Fix the bug"), "one click shows them: " + all);
        assertEquals("1 earlier message", selectRowAndFold(2), "turn 2 resends turn 1's one message");
    }

    private static void filter(String text) throws Exception {
        browser.eval("{ const f = document.getElementById('filter'); f.value = " + LlmProxy.Json.quote(text)
                + "; f.dispatchEvent(new Event('input')); }");
    }

    private String selectRowAndFold(int index) throws Exception {
        selectRow(index);
        return (String) browser.waitFor("document.querySelector('.earlier-messages summary')"
                + " && document.querySelector('.earlier-messages summary').textContent");
    }

    @Test
    void filtersByTextAndOutcomeAndMovesWithTheKeyboard() throws Exception {
        open(report("filter.csv", defaultColumnsLog()));
        filter("oslo");
        assertEquals(1L, browser.waitFor("document.querySelectorAll('#list tbody tr').length === 1 && 1"));
        filter("");
        browser.waitFor("document.querySelectorAll('#list tbody tr').length === 6");
        selectRow(1);
        browser.eval("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'j'}))");
        browser.eval("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown'}))");
        String third = (String) browser.waitFor("document.querySelector('#list tr.selected')"
                + " && document.querySelector('#list tr.selected').innerText");
        assertTrue(third.contains("/v1/messages"), third);
    }

    @Test
    void readsJsonLinesAndSaysWhatItLeftOut() throws Exception {
        Path log = dir.resolve("log.jsonl");
        Files.writeString(log, "{\"method\": \"POST\", \"url\": \"" + BASE + "/v1/chat/completions\", \"status\": 200,"
                + " \"outcome\": \"complete\", \"request_body\": \"{\\\"model\\\":\\\"gpt-4o\\\",\\\"messages\\\":[]}\","
                + " \"response_body\": \"not json at all\"}\n"
                + "this line is no record\n"
                + "{\"method\": \"GET\", \"url\": \"" + BASE + "/v1/models\", \"outcome\": \"upstream_error\","
                + " \"error\": \"cannot reach upstream\"}\n");
        Run run = view(log, "-o", dir.resolve("out.html").toString());
        assertEquals(0, run.code(), run.err());
        assertTrue(run.err().contains("line 2 is not a whole JSON record"), run.err());
        open(dir.resolve("out.html"));
        assertEquals(2L, browser.eval("document.querySelectorAll('#list tbody tr').length"));
        assertTrue(((String) browser.eval("document.querySelector('.problems').innerText")).contains("line 2"));
        String error = selectRow(2);
        assertTrue(error.contains("cannot reach upstream"), "errors at the top of the detail: " + error);
        assertEquals(1L, browser.eval("document.querySelectorAll('#list tr.has-error').length"));
    }

    @Test
    void keepsEveryRecordBeforeATruncatedLastOne() throws Exception {
        String log = defaultColumnsLog();
        Path file = dir.resolve("cut.csv");
        Files.writeString(file, log + "POST," + BASE + "/v1/chat/completions,\"{\"\"model\"\": \"\"gpt");
        Run run = view(file);
        assertEquals(0, run.code(), run.err());
        assertTrue(run.err().contains("the last record is cut short"), run.err());
        open(dir.resolve("cut.html"));
        assertEquals(6L, browser.eval("document.querySelectorAll('#list tbody tr').length"));
    }

    @Test
    void refusesAFileThatIsNotALog() throws Exception {
        Path file = dir.resolve("notes.txt");
        Files.writeString(file, "shopping list\r\neggs\r\n");
        Run run = view(file);
        assertEquals(1, run.code());
        assertTrue(run.err().contains("is not a log written by llmproxy"), run.err());
        assertFalse(Files.exists(dir.resolve("notes.html")), "no half report is left");
        assertEquals(1, view(dir.resolve("missing.csv")).code());
        var usage = view(file, "--bogus");
        assertEquals(2, usage.code());
        assertTrue(usage.err().contains("view: unknown option --bogus"), usage.err());
    }

    @Test
    void opensAReportOfTenThousandExchanges() throws Exception {
        StringBuilder log = new StringBuilder(LlmProxy.Csv.record(List.of("method", "url", "request_body", "response_body")));
        for (int i = 0; i < 10_000; i++) {
            log.append(LlmProxy.Csv.record(List.of("POST", BASE + "/v1/chat/completions", "{\"model\":\"gpt-4o\","
                    + "\"messages\":[{\"role\":\"user\",\"content\":\"question " + i + "\"}]}", "{\"choices\":[{\"index\":0,"
                    + "\"message\":{\"content\":\"answer " + i + "\"}}]}")));
        }
        open(report("big.csv", log.toString()));
        long rows = (Long) browser.eval("document.querySelectorAll('#list tbody tr').length");
        assertTrue(rows >= 200 && rows < 10_000, "rows are made as the list scrolls, not all at once: " + rows);
        String last = selectRow(1);
        assertTrue(last.contains("question 0") && last.contains("answer 0"), last);
        filter("question 9999");
        assertEquals(1L, browser.waitFor("document.querySelectorAll('#list tbody tr').length === 1 && 1"));
    }
}
