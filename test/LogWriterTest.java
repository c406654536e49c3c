import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.zip.Deflater;
import java.util.zip.DeflaterOutputStream;
import java.util.zip.GZIPOutputStream;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The log writer's file handling, and how captured bodies become log fields. */
class LogWriterTest {
    @TempDir
    Path dir;

    private final ByteArrayOutputStream stderr = new ByteArrayOutputStream();

    private LlmProxy.LogWriter open(Path file, String... options) {
        List<String> args = new java.util.ArrayList<>(List.of("-t", "http://up", "-l", file.toString()));
        args.addAll(List.of(options));
        var config = ((LlmProxy.Cli.Command.Run) LlmProxy.Cli.parse(args.toArray(String[]::new),
                Map.of("KEY", "sk-injected-0123456789abcdef")::get)).config();
        return LlmProxy.LogWriter.open(config, new PrintStream(stderr, true, StandardCharsets.UTF_8));
    }

    static LlmProxy.Record record(String method, String request, String response) {
        return record(method, "http://127.0.0.1:8080/x", Map.of(), Map.of(), request, response);
    }

    static LlmProxy.Record record(String method, String url, Map<String, List<String>> requestHeaders,
                                  Map<String, List<String>> responseHeaders, String request, String response) {
        byte[] req = request.getBytes(StandardCharsets.UTF_8);
        byte[] rsp = response.getBytes(StandardCharsets.UTF_8);
        return new LlmProxy.Record("0000abcd-1", java.time.Instant.parse("2026-11-27T14:05:01Z"), method, url, "/x",
                "http://up" + java.net.URI.create(url).getRawPath(), 200, LlmProxy.Record.Outcome.COMPLETE, null, 12, 3, requestHeaders, responseHeaders,
                new LlmProxy.Record.Body(req, req.length, ""), new LlmProxy.Record.Body(rsp, rsp.length, ""));
    }

    @Test
    void writesTheHeaderToANewFile() throws IOException {
        Path file = dir.resolve("new.csv");
        open(file).close();
        assertEquals("method,url,request_body,response_body\r\n", Files.readString(file));
    }

    @Test
    void writesTheHeaderToAnEmptyFile() throws IOException {
        Path file = Files.createFile(dir.resolve("empty.csv"));
        open(file).close();
        assertEquals("method,url,request_body,response_body\r\n", Files.readString(file));
    }

    @Test
    void createsTheFileReadableByItsOwnerOnly() throws IOException {
        Path file = dir.resolve("private.csv");
        open(file).close();
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(file)));
    }

    @Test
    void appendsToAFileWithTheSameHeader() throws IOException {
        Path file = dir.resolve("log.csv");
        try (var log = open(file)) {
            log.submit(record("POST", "first", "one"));
        }
        try (var log = open(file)) {
            log.submit(record("GET", "", "two, \"quoted\""));
        }
        assertEquals(List.of(
                List.of("method", "url", "request_body", "response_body"),
                List.of("POST", "http://127.0.0.1:8080/x", "first", "one"),
                List.of("GET", "http://127.0.0.1:8080/x", "", "two, \"quoted\"")),
                TestSupport.Csv.parse(Files.readString(file)));
    }

    @Test
    void refusesAFileWithAnotherHeader() throws IOException {
        Path file = dir.resolve("other.csv");
        Files.writeString(file, "time,text\r\n");
        var e = assertThrows(LlmProxy.StartupException.class, () -> open(file));
        assertTrue(e.getMessage().contains("starts with 'time,text'"), e.getMessage());
        assertEquals("time,text\r\n", Files.readString(file));
    }

    @Test
    void drainsTheQueueOnClose() throws IOException {
        Path file = dir.resolve("drain.csv");
        try (var log = open(file)) {
            for (int i = 0; i < 1000; i++) {
                log.submit(record("POST", "request " + i, "response " + i));
            }
        }
        List<List<String>> rows = TestSupport.Csv.parse(Files.readString(file));
        assertEquals(1001, rows.size());
        assertEquals("request 999", rows.get(1000).get(2));
    }

    @Test
    void flushesEachRecordWithoutWaitingForClose() throws Exception {
        Path file = dir.resolve("flush.csv");
        try (var log = open(file)) {
            log.submit(record("POST", "flushed", "now"));
            awaitRecords(log, 1); // written counts records once they are flushed to the file
            assertTrue(Files.readString(file).contains("POST,http://127.0.0.1:8080/x,flushed,now\r\n"));
        }
    }

    @Test
    void writesTheChosenColumnsInOrder() throws IOException {
        Path file = dir.resolve("columns.csv");
        try (var log = open(file, "--log-columns", "outcome,time,id,status,duration_ms,ttfb_ms,response_bytes,method")) {
            log.submit(record("POST", "ask", "answer"));
        }
        assertEquals(List.of(
                List.of("outcome", "time", "id", "status", "duration_ms", "ttfb_ms", "response_bytes", "method"),
                List.of("complete", "2026-11-27T14:05:01.000Z", "0000abcd-1", "200", "12", "3", "6", "POST")),
                TestSupport.Csv.parse(Files.readString(file)));
    }

    @Test
    void masksCredentialHeadersAndKeyParametersByDefault() throws IOException {
        Path file = dir.resolve("secrets.csv");
        var requestHeaders = Map.of("Authorization", List.of("Bearer sk-proj-abcdefghijklmnop3xQz"),
                "Cookie", List.of("session=0123456789abcdefXYZW"), "X-api-key", List.of("short"));
        var responseHeaders = Map.of("Set-cookie", List.of("id=s3cr3t-cookie-value-1234"));
        try (var log = open(file, "--log-columns", "url,request_headers,response_headers")) {
            log.submit(record("GET", "http://127.0.0.1:8080/v1/models?key=AIzaSyA-0123456789abcdefWXYZ&x=1",
                    requestHeaders, responseHeaders, "", ""));
        }
        List<String> row = TestSupport.Csv.parse(Files.readString(file)).get(1);
        assertEquals("http://127.0.0.1:8080/v1/models?key=AIza…WXYZ&x=1", row.get(0));
        assertTrue(row.get(1).contains("Authorization: Bearer sk-p…3xQz"), row.get(1));
        assertTrue(row.get(1).contains("Cookie: sess…XYZW"), row.get(1));
        assertTrue(row.get(1).contains("X-api-key: …"), row.get(1));
        assertTrue(row.get(1).contains("Authorization: [set by llmproxy]") || !row.get(1).contains("sk-injected"));
        assertEquals("Set-cookie: id=s…1234", row.get(2));
    }

    @ParameterizedTest
    @CsvSource({"Ocp-Apim-Subscription-Key", "X-Amz-Security-Token", "Cf-Aig-Authorization", "X-Auth-Token",
        "Anthropic-Admin-Api-Key", "X-Portkey-Api-Key", "apikey"})
    void masksEveryKindOfCredentialHeader(String name) throws IOException {
        Path file = dir.resolve("more.csv");
        try (var log = open(file, "--log-columns", "request_headers")) {
            log.submit(record("GET", "http://127.0.0.1:8080/x", Map.of(name, List.of("credential-0123456789abcdef")),
                    Map.of(), "", ""));
        }
        assertEquals(name + ": cred…cdef", TestSupport.Csv.parse(Files.readString(file)).get(1).getFirst());
    }

    @ParameterizedTest
    @CsvSource({"api-key", "apikey", "token", "sig", "X-Amz-Signature", "X-Amz-Credential", "access_token"})
    void masksEveryKindOfKeyParameter(String parameter) throws IOException {
        Path file = dir.resolve("params.csv");
        try (var log = open(file, "--log-columns", "url")) {
            log.submit(record("GET", "http://127.0.0.1:8080/x?" + parameter + "=credential-0123456789abcdef&n=1",
                    Map.of(), Map.of(), "", ""));
        }
        assertEquals("http://127.0.0.1:8080/x?" + parameter + "=cred…cdef&n=1",
                TestSupport.Csv.parse(Files.readString(file)).get(1).getFirst());
    }

    @Test
    void scrubsOnlyAddedValuesThatAreSecrets() throws IOException {
        Path file = dir.resolve("scrub.csv");
        try (var log = open(file, "--log-columns", "request_body,response_body", "-a", "anthropic-version: 2023-06-01",
                "-a", "X-Custom-Auth: ${KEY}")) {
            log.submit(record("POST", "{\"anthropic-version\": \"2023-06-01\"}", "echo sk-injected-0123456789abcdef"));
        }
        assertEquals(List.of("{\"anthropic-version\": \"2023-06-01\"}", "echo [set by llmproxy]"),
                TestSupport.Csv.parse(Files.readString(file)).get(1));
    }

    @Test
    void neutralisesSpreadsheetFormulasOnlyWithExcelSafe() throws IOException {
        Path plain = dir.resolve("plain.csv");
        Path safe = dir.resolve("safe.csv");
        for (Path file : List.of(plain, safe)) {
            try (var log = file == safe ? open(file, "--log-excel-safe") : open(file)) {
                log.submit(record("POST", "=HYPERLINK(\"http://evil\")", "@SUM(1)"));
                log.submit(record("POST", "+1", "-1"));
                log.submit(record("POST", "\tx", "a=1"));
            }
        }
        var rows = TestSupport.Csv.parse(Files.readString(plain));
        assertEquals(List.of("=HYPERLINK(\"http://evil\")", "@SUM(1)"), rows.get(1).subList(2, 4), "byte-exact by default");
        rows = TestSupport.Csv.parse(Files.readString(safe));
        assertEquals(List.of("'=HYPERLINK(\"http://evil\")", "'@SUM(1)"), rows.get(1).subList(2, 4));
        assertEquals(List.of("'+1", "'-1"), rows.get(2).subList(2, 4));
        assertEquals(List.of("'\tx", "a=1"), rows.get(3).subList(2, 4));
        assertEquals("POST", rows.get(3).getFirst());
    }

    @Test
    void showsSecretsWholeWithLogSecretsButNeverAnAddedHeaderValue() throws IOException {
        Path file = dir.resolve("whole.csv");
        try (var log = open(file, "--log-secrets", "--log-columns", "url,request_headers,response_body",
                "-a", "Authorization: Bearer ${KEY}")) {
            var headers = new java.util.LinkedHashMap<String, List<String>>();
            headers.put("Authorization", List.of("Bearer client-token-0123456789abcdef"));
            headers.put("X-goog-api-key", List.of("client-google-key-0123456789"));
            log.submit(record("GET", "http://127.0.0.1:8080/x?api_key=visible-0123456789abcdef", headers, Map.of(), "",
                    "the upstream echoed sk-injected-0123456789abcdef back"));
        }
        String text = Files.readString(file);
        assertTrue(text.contains("api_key=visible-0123456789abcdef"), text);
        assertTrue(text.contains("X-goog-api-key: client-google-key-0123456789"), text);
        // The upstream never saw the client's Authorization: it is listed once, as replaced.
        assertFalse(text.contains("client-token"), text);
        assertEquals(1, text.split("Authorization:", -1).length - 1, text);
        assertTrue(text.contains("Authorization: [set by llmproxy]"), text);
        assertTrue(text.contains("the upstream echoed [set by llmproxy] back"), text);
        assertFalse(text.contains("sk-injected"), text);
    }

    @Test
    void reopensALogFileDeletedWhileRunning() throws Exception {
        Path file = dir.resolve("deleted.csv");
        try (var log = open(file)) {
            log.submit(record("POST", "first", "one"));
            awaitRecords(log, 1);
            Files.delete(file);
            log.submit(record("POST", "second", "two"));
            awaitRecords(log, 2);
        }
        assertEquals(List.of(List.of("method", "url", "request_body", "response_body"),
                List.of("POST", "http://127.0.0.1:8080/x", "second", "two")), TestSupport.Csv.parse(Files.readString(file)));
        assertTrue(stderr.toString(StandardCharsets.UTF_8).contains("was deleted, moved or replaced; writing to it afresh"));
    }

    @Test
    void countsRecordsItCannotWriteWhenTheDiskIsFullAndResumes() throws Exception {
        Path file = dir.resolve("full.csv");
        try (var log = open(file)) {
            log.submit(record("POST", "before", "ok"));
            awaitRecords(log, 1);
            Files.delete(file);
            Files.createSymbolicLink(file, Path.of("/dev/full")); // every write fails with "No space left on device"
            log.submit(record("POST", "lost", "no space"));
            awaitStderr("cannot write to log file");
            Files.delete(file);
            log.submit(record("POST", "after", "ok again"));
            awaitRecords(log, 2);
        }
        String err = stderr.toString(StandardCharsets.UTF_8);
        assertTrue(err.contains("No space left on device"), err);
        assertTrue(err.contains("writing to log file " + file + " again"), err);
        assertTrue(err.contains("1 records could not be written to " + file), err);
        assertEquals("after", TestSupport.Csv.parse(Files.readString(file)).get(1).get(2));
    }

    @Test
    void rotatesBetweenRecordsWhenTheFileExceedsTheSize() throws Exception {
        Path file = dir.resolve("rotating.csv");
        try (var log = open(file, "--log-rotate", "100")) {
            log.submit(record("POST", "x".repeat(120), "first"));
            awaitRecords(log, 1);
            // The new file exists with its header at once, not only when the next record comes.
            waitFor(() -> rotatedFiles("rotating").size() == 1, () -> "no rotation");
            assertEquals("method,url,request_body,response_body\r\n", Files.readString(file));
            log.submit(record("POST", "second", "two"));
        }
        try (var files = Files.list(dir)) {
            List<Path> rotated = files.filter(p -> p.getFileName().toString().matches("rotating-\\d{8}-\\d{6}-\\d{3}\\.csv"))
                    .toList();
            assertEquals(1, rotated.size(), "one rotated file");
            List<List<String>> old = TestSupport.Csv.parse(Files.readString(rotated.getFirst()));
            assertEquals(2, old.size());
            assertEquals("first", old.get(1).get(3));
        }
        List<List<String>> current = TestSupport.Csv.parse(Files.readString(file));
        assertEquals(List.of("method", "url", "request_body", "response_body"), current.get(0));
        assertEquals("second", current.get(1).get(2));
    }

    @Test
    void keepsTheNewestRotatedFilesWithLogKeep() throws Exception {
        Path file = dir.resolve("kept.csv");
        Files.writeString(dir.resolve("kept-notes.csv"), "not a rotated log\r\n");
        try (var log = open(file, "--log-rotate", "100", "--log-keep", "2")) {
            for (int i = 1; i <= 5; i++) {
                log.submit(record("POST", "x".repeat(120), "record " + i));
                awaitRecords(log, i);
                int rotations = i;
                waitFor(() -> rotatedFiles("kept").size() == Math.min(rotations, 2), () -> "rotated: " + rotatedFiles("kept"));
            }
        }
        List<Path> kept = rotatedFiles("kept");
        assertEquals(2, kept.size(), kept.toString());
        List<String> contents = new java.util.ArrayList<>();
        for (Path p : kept) {
            contents.add(TestSupport.Csv.parse(Files.readString(p)).get(1).get(3));
        }
        assertEquals(List.of("record 4", "record 5"), contents.stream().sorted().toList(), "the two newest are kept");
        assertTrue(Files.exists(dir.resolve("kept-notes.csv")), "other files are left alone");
    }

    private List<Path> rotatedFiles(String base) {
        try (var files = Files.list(dir)) {
            return files.filter(p -> p.getFileName().toString().matches(base + "-\\d{8}-\\d{6}-\\d{3}(-\\d+)?\\.csv"))
                    .sorted().toList();
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    /** Waits (bounded) for the writer thread to have written n records. */
    private static void awaitRecords(LlmProxy.LogWriter log, long n) throws InterruptedException {
        waitFor(() -> log.written() >= n, () -> "only " + log.written() + " of " + n + " records written");
    }

    private void awaitStderr(String text) throws InterruptedException {
        waitFor(() -> stderr.toString(StandardCharsets.UTF_8).contains(text), () -> "no '" + text + "' on stderr: " + stderr);
    }

    /** Polls what the writer thread does (it offers nothing to wait on), 5 s at most. */
    private static void waitFor(java.util.function.BooleanSupplier done, java.util.function.Supplier<String> failure)
            throws InterruptedException {
        long deadline = System.nanoTime() + 5_000_000_000L;
        while (!done.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError(failure.get());
            }
            Thread.sleep(5);
        }
    }

    @Test
    void writesJsonLinesWithTypedValuesAndTheConversation() throws IOException {
        Path file = dir.resolve("log.jsonl");
        String stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\\"you\\\"\"}}]}\n\n"
                + "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],"
                + "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        try (var log = open(file, "--log-format", "jsonl", "--log-columns",
                "id,status,ttfb_ms,error,model,stream,response_text,output_tokens,cached_tokens,stop_reason")) {
            log.submit(record("POST", "http://127.0.0.1:8080/v1/chat/completions", Map.of(),
                    Map.of("Content-type", List.of("text/event-stream")), "{\"model\":\"gpt-4o-mini\",\"stream\":true}", stream));
        }
        assertEquals("{\"id\": \"0000abcd-1\", \"status\": 200, \"ttfb_ms\": 3, \"error\": null, \"model\": \"gpt-4o-mini\", "
                + "\"stream\": true, \"response_text\": \"Hi \\\"you\\\"\", \"output_tokens\": 2, \"cached_tokens\": null, "
                + "\"stop_reason\": \"stop\"}\n", Files.readString(file));
        Object parsed = LlmProxy.Json.parse(Files.readString(file).trim());
        assertEquals("Hi \"you\"", LlmProxy.Json.string(parsed, "response_text"));
    }

    @Test
    void refusesToAppendJsonLinesToACsvLog() throws IOException {
        Path file = dir.resolve("log.csv");
        open(file).close();
        var e = assertThrows(LlmProxy.StartupException.class, () -> open(file, "--log-format", "jsonl"));
        assertTrue(e.getMessage().contains("not a JSONL record"), e.getMessage());
    }

    // --- BodyText ---

    private static String text(byte[] body, String encoding) {
        return LlmProxy.BodyText.of(body, body.length, encoding, 1 << 20);
    }

    @Test
    void decodesGzip() throws IOException {
        var zipped = new ByteArrayOutputStream();
        try (var gzip = new GZIPOutputStream(zipped)) {
            gzip.write("hello gzip".getBytes(StandardCharsets.UTF_8));
        }
        assertEquals("hello gzip", text(zipped.toByteArray(), "gzip"));
    }

    @Test
    void decodesZlibAndRawDeflate() throws IOException {
        for (boolean raw : new boolean[] {false, true}) {
            var deflated = new ByteArrayOutputStream();
            try (var out = new DeflaterOutputStream(deflated, new Deflater(Deflater.DEFAULT_COMPRESSION, raw))) {
                out.write("hello deflate".getBytes(StandardCharsets.UTF_8));
            }
            assertEquals("hello deflate", text(deflated.toByteArray(), "deflate"), raw ? "raw" : "zlib");
        }
    }

    @Test
    void decodesWhatArrivedOfAGzipBodyCutShort() throws IOException {
        var zipped = new ByteArrayOutputStream();
        try (var gzip = new GZIPOutputStream(zipped)) {
            gzip.write("a long answer that was cut short by the upstream".repeat(20).getBytes(StandardCharsets.UTF_8));
        }
        byte[] all = zipped.toByteArray();
        byte[] cut = java.util.Arrays.copyOf(all, all.length - 12); // loses the trailer and some data
        String decoded = text(cut, "gzip");
        assertTrue(decoded.startsWith("a long answer that was cut short"), decoded);
    }

    @Test
    void namesAnUnknownEncoding() {
        assertEquals("[undecodable br body, 3 bytes: no decoder for br]", text(new byte[] {1, 2, 3}, "br"));
    }

    @Test
    void logsBinaryBodiesAsTheirSize() {
        assertEquals("[binary 4 bytes]", text(new byte[] {(byte) 0xff, (byte) 0xfe, 0, 1}, ""));
    }

    @Test
    void keepsAReplacementCharacterTheBodyReallyHolds() {
        // U+FFFD is what bad bytes decode to; sent as valid UTF-8 it is text like any other.
        assertEquals("ok \uFFFD ok", text("ok \uFFFD ok".getBytes(StandardCharsets.UTF_8), ""));
        assertEquals("[binary 6 bytes]", text(new byte[] {'o', 'k', ' ', (byte) 0xc3, ' ', (byte) 0xef}, ""));
    }

    @Test
    void marksABodyTruncatedAtTheCapWithoutBreakingACharacter() {
        byte[] captured = "abc\u00fc".getBytes(StandardCharsets.UTF_8); // ü is two bytes
        byte[] cut = java.util.Arrays.copyOf(captured, 4); // the cap fell inside ü
        assertEquals("abc…[truncated: 100 bytes total]", LlmProxy.BodyText.of(cut, 100, "", 4));
    }

    @Test
    void keepsNoCopyOfABigBatchOnceItIsWritten() throws Exception {
        Path file = dir.resolve("released.csv");
        var heap = java.lang.management.ManagementFactory.getMemoryMXBean();
        try (var log = open(file, "--log-max-body", "64m")) {
            long before = usedAfterGc(heap);
            log.submit(record("POST", "{}", "x".repeat(32 << 20)));
            for (int i = 0; i < 500 && log.written() < 1; i++) {
                Thread.sleep(10); // no hook says when a batch is on disk; written() does, polled
            }
            assertEquals(1, log.written());
            long kept = usedAfterGc(heap) - before;
            // The JDK's file stream kept the last array written to it: the whole 32 MB batch.
            assertTrue(kept < 8 << 20, (kept >> 20) + " MB still held after writing a 32 MB record");
        }
    }

    /** Heap in use after a collection; the lower of two, so that another test's stray allocation counts less. */
    private static long usedAfterGc(java.lang.management.MemoryMXBean heap) {
        long least = Long.MAX_VALUE;
        for (int i = 0; i < 2; i++) {
            System.gc();
            least = Math.min(least, heap.getHeapMemoryUsage().getUsed());
        }
        return least;
    }

    @Test
    void readsARecordsConversationOnceForEveryoneWhoAsks() {
        byte[] request = "{\"model\":\"gpt-4o\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
                .getBytes(StandardCharsets.UTF_8);
        byte[] response = "{\"model\":\"gpt-4o\",\"choices\":[{\"message\":{\"content\":\"hello\"}}]}"
                .getBytes(StandardCharsets.UTF_8);
        var record = new LlmProxy.Record("1", java.time.Instant.now(), "POST", "http://localhost/v1/chat/completions",
                "/v1/chat/completions", "https://api.openai.com/v1/chat/completions", 200,
                LlmProxy.Record.Outcome.COMPLETE, null, 1, 1, Map.of(), Map.of("Content-Type", List.of("application/json")),
                new LlmProxy.Record.Body(request, request.length, ""), new LlmProxy.Record.Body(response, response.length, ""));
        var secrets = new LlmProxy.Secrets(true, List.of());
        LlmProxy.Llm first = new LlmProxy.RecordView(record, secrets, 1 << 20, false).llm();
        assertEquals("hello", first.text());
        // The log, the span and the viewer each make a view of their own: the second one reads nothing again.
        assertTrue(first == new LlmProxy.RecordView(record, secrets, 1 << 20, true).llm());
        assertTrue(first == record.reading().get(() -> {
            throw new AssertionError("read a second time");
        }));
    }

    @Test
    void takesABodyReadWholeWithoutCopyingIt() {
        var capture = new LlmProxy.Capture(1 << 20);
        byte[] prompt = "{\"messages\": []}".getBytes(StandardCharsets.UTF_8);
        capture.adopt(prompt, prompt.length);
        assertTrue(prompt == capture.body("").captured(), "the record holds the array the body was read into");

        var small = new LlmProxy.Capture(4); // beyond the limit: only the first bytes are kept, copied
        small.adopt(prompt, prompt.length);
        assertEquals("{\"me", new String(small.snapshot(), StandardCharsets.UTF_8));
        assertEquals(prompt.length, small.total());
    }

    @Test
    void keepsALongBodyInChunksWithLittleSlack() {
        var capture = new LlmProxy.Capture(1 << 20);
        byte[] event = "data: {\"delta\": \"token\"}\n\n".getBytes(StandardCharsets.UTF_8);
        var expected = new ByteArrayOutputStream();
        for (int i = 0; i < 2_000; i++) {
            capture.write(event, 0, event.length);
            expected.write(event, 0, event.length);
        }
        LlmProxy.Record.Body body = capture.body("");
        assertArrayEquals(expected.toByteArray(), body.captured());
        assertEquals(expected.size(), body.length());
        // Chunks grow with the body: it holds at most a chunk's slack (64 KB), not the doubling's half.
        assertTrue(body.held() >= body.length() && body.held() - body.length() <= 64 * 1024,
                body.held() + " held for " + body.length());
    }

    @Test
    void keepsOnlyTheFirstBytesOfALargeBody() {
        var capture = new LlmProxy.Capture(10);
        byte[] data = "0123456789abcdefghij".getBytes(StandardCharsets.UTF_8);
        capture.write(data, 0, 8);
        capture.write(data, 8, 12);
        assertEquals("0123456789", new String(capture.snapshot(), StandardCharsets.UTF_8));
        assertEquals(20, capture.total());
        assertTrue(capture.isFull());
    }

    /** A base64 payload of {@code bytes} bytes that starts with {@code magic}. */
    static String base64(byte[] magic, int bytes) {
        byte[] payload = Arrays.copyOf(magic, bytes);
        Arrays.fill(payload, magic.length, bytes, (byte) 7);
        return java.util.Base64.getEncoder().encodeToString(payload);
    }

    static final byte[] PNG = {(byte) 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

    @Test
    void summarisesInlineBase64PayloadsByTypeAndSize() {
        String png = base64(PNG, 1_468_006);
        String jpeg = base64(new byte[] {(byte) 0xff, (byte) 0xd8, (byte) 0xff, (byte) 0xe0}, 300_000);
        String wav = base64("RIFF\0\0\0\0WAVEfmt ".getBytes(StandardCharsets.ISO_8859_1), 50_000);
        String request = "{\"messages\":[{\"role\":\"user\",\"content\":["
                + "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64," + png + "\"}},"
                + "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/jpeg\",\"data\":\"" + jpeg + "\"}},"
                + "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"" + wav + "\",\"format\":\"wav\"}},"
                + "{\"type\":\"text\",\"text\":\"What is in these?\"}]}]}";
        assertEquals("{\"messages\":[{\"role\":\"user\",\"content\":["
                + "{\"type\":\"image_url\",\"image_url\":{\"url\":\"[base64 image/png, 1.4 MB]\"}},"
                + "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/jpeg\",\"data\":\"[base64 image/jpeg, 293.0 KB]\"}},"
                + "{\"type\":\"input_audio\",\"input_audio\":{\"data\":\"[base64 audio/wav, 48.8 KB]\",\"format\":\"wav\"}},"
                + "{\"type\":\"text\",\"text\":\"What is in these?\"}]}]}", LlmProxy.BodyText.elideBase64(request));
    }

    @Test
    void findsTheEndOfAStringAfterEscapedQuotesAndBackslashes() {
        String png = base64(PNG, 4_000);
        String text = "{\"a\":\"say \\\"hi\\\"\",\"b\":\"C:\\\\\",\"c\":\"" + png + "\"}";
        assertEquals("{\"a\":\"say \\\"hi\\\"\",\"b\":\"C:\\\\\",\"c\":\"[base64 image/png, 3.9 KB]\"}",
                LlmProxy.BodyText.elideBase64(text + " ".repeat(1024)).strip());
    }

    @Test
    void leavesShortBase64AndLongTextAlone() {
        String small = base64(PNG, 700); // under 1 KB of digits: an icon, an id
        String prose = "word ".repeat(400);
        String escaped = "a\\\"b".repeat(400);
        String text = "{\"icon\":\"" + small + "\",\"text\":\"" + prose + "\",\"q\":\"" + escaped + "\"}";
        assertEquals(text, LlmProxy.BodyText.elideBase64(text));
        String cut = "{\"data\":\"" + base64(PNG, 5000).substring(0, 4000); // a body truncated inside the string
        assertEquals(cut, LlmProxy.BodyText.elideBase64(cut));
    }

    @Test
    void logsBase64WholeWithLogBase64() throws IOException {
        String png = base64(PNG, 4096);
        for (boolean whole : new boolean[] {false, true}) {
            Path file = dir.resolve("b64-" + whole + ".csv");
            try (var log = whole ? open(file, "--log-base64") : open(file)) {
                log.submit(record("POST", "{\"data\":\"" + png + "\"}", "{}"));
            }
            assertEquals(whole ? "{\"data\":\"" + png + "\"}" : "{\"data\":\"[base64 image/png, 4.0 KB]\"}",
                    TestSupport.Csv.parse(Files.readString(file)).get(1).get(2));
        }
    }

    @Test
    void stopsKeepingABodyWhenTheLogMemoryIsSpentAndGivesBackWhatItTook() {
        var memory = new LlmProxy.LogMemory(1000);
        var first = new LlmProxy.Capture(10_000, memory);
        var second = new LlmProxy.Capture(10_000, memory);
        byte[] data = new byte[600];
        first.write(data, 0, 600);
        second.write(data, 0, 600); // 600 more do not fit beside the first 600
        assertEquals(600, first.snapshot().length);
        assertEquals(0, second.snapshot().length);
        assertEquals(600, second.total(), "the size is still counted");
        assertTrue(second.partial().startsWith("llmproxy's memory for log bodies was full"), second.partial());
        second.write(data, 0, 10);
        assertEquals(0, second.snapshot().length, "nothing is kept after a gap");
        assertEquals(600, memory.used(), "the first holds what it kept until the writer gives it back");
        var ahead = new LlmProxy.Capture(10_000, memory);
        assertTrue(ahead.takeAhead(300));
        assertEquals(900, memory.used());
        assertTrue(!ahead.takeAhead(500) && memory.used() == 900, "a declared length that does not fit takes nothing");
        ahead.write(data, 0, 100);
        assertEquals(100, ahead.body("").length());
        assertEquals(700, memory.used(), "what was taken ahead and not used is given back when the record takes the body");
    }

    @Test
    void writesTheMetadataOfARecordThatCannotBeFormatted() throws IOException {
        Path file = dir.resolve("salvaged.csv");
        try (var log = open(file, "--log-columns", "id,method,request_bytes,error,request_body,request_headers")) {
            var good = record("POST", "fine", "ok");
            // A header the writer cannot read stands for any formatting failure (a heap full for a moment).
            var broken = new java.util.HashMap<String, List<String>>();
            broken.put("X-Broken", null);
            log.submit(new LlmProxy.Record(good.id(), good.start(), "POST", good.url(), good.path(), good.upstreamUrl(),
                    200, LlmProxy.Record.Outcome.COMPLETE, null, 1, 1, broken, Map.of(),
                    new LlmProxy.Record.Body("hello".getBytes(StandardCharsets.UTF_8), 5, ""), good.response()));
            log.submit(good);
        }
        var rows = TestSupport.Csv.parse(Files.readString(file));
        assertEquals(3, rows.size());
        assertEquals(List.of("0000abcd-1", "POST", "5"), rows.get(1).subList(0, 3));
        assertTrue(rows.get(1).get(3).startsWith("llmproxy could not format this record: java.lang.NullPointerException"),
                rows.get(1).get(3));
        assertEquals("[left out of the log: 5 bytes]", rows.get(1).get(4));
        assertEquals("fine", rows.get(2).get(4), "the writer goes on");
    }

    @Test
    void survivesRecordsLargerThanItsHeapCanFormat() throws Exception {
        Path file = dir.resolve("pressed.csv");
        String javaBin = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process process = new ProcessBuilder(javaBin, "-Xmx32m", "-cp",
                "build/classes" + java.io.File.pathSeparator + "build/test-classes",
                "LogWriterTest", file.toString(), "12").redirectErrorStream(true).start();
        // (the class path above is the build's: JUnit's launcher loads the tests in a loader of its own)
        String output = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(process.waitFor(60, java.util.concurrent.TimeUnit.SECONDS));
        assertEquals(0, process.exitValue(), output);
        var rows = TestSupport.Csv.parse(Files.readString(file));
        assertEquals("after the big one", rows.getLast().get(2), output);
        boolean salvaged = rows.size() == 3 && rows.get(1).get(3).startsWith("llmproxy could not format this record");
        boolean counted = rows.size() == 2 && output.contains("1 records could not be written");
        assertTrue(salvaged || counted, "the big record is written without its bodies, or counted as lost: " + output);
    }

    /** Writes a record with a body of args[1] MB, then a small one, to the log args[0] (for a small heap). */
    public static void main(String[] args) {
        var config = ((LlmProxy.Cli.Command.Run) LlmProxy.Cli.parse(new String[] {"-t", "http://up", "-l", args[0],
                "--log-columns", "method,request_bytes,request_body,error"}, Map.<String, String>of()::get)).config();
        try (var log = LlmProxy.LogWriter.open(config, System.err)) {
            byte[] big = new byte[Integer.parseInt(args[1]) << 20];
            Arrays.fill(big, (byte) 'x');
            var small = record("POST", "after the big one", "");
            log.submit(new LlmProxy.Record("big", small.start(), "POST", small.url(), small.path(), small.upstreamUrl(), 200,
                    LlmProxy.Record.Outcome.COMPLETE, null, 1, 1, Map.of(), Map.of(),
                    new LlmProxy.Record.Body(big, big.length, ""), small.response()));
            big = null;
            log.submit(small);
        }
    }
}
