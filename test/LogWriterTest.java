import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
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

    private LlmProxy.LogWriter open(Path file) {
        return LlmProxy.LogWriter.open(file, 1 << 20, new PrintStream(stderr, true, StandardCharsets.UTF_8));
    }

    private static LlmProxy.Record record(String method, String request, String response) {
        byte[] req = request.getBytes(StandardCharsets.UTF_8);
        byte[] rsp = response.getBytes(StandardCharsets.UTF_8);
        return new LlmProxy.Record(method, "http://127.0.0.1:8080/x", "/x", "http://up/x", 200,
                LlmProxy.Record.Outcome.COMPLETE, null, 1, req.length, rsp.length, req, "", rsp, "");
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
            long deadline = System.nanoTime() + 5_000_000_000L; // bounded poll for a file written by another thread
            while (!Files.readString(file).contains("flushed") && System.nanoTime() < deadline) {
                Thread.onSpinWait();
            }
            assertTrue(Files.readString(file).contains("POST,http://127.0.0.1:8080/x,flushed,now\r\n"));
        }
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
    void marksABodyTruncatedAtTheCapWithoutBreakingACharacter() {
        byte[] captured = "abc\u00fc".getBytes(StandardCharsets.UTF_8); // ü is two bytes
        byte[] cut = java.util.Arrays.copyOf(captured, 4); // the cap fell inside ü
        assertEquals("abc…[truncated: 100 bytes total]", LlmProxy.BodyText.of(cut, 100, "", 4));
    }

    @Test
    void keepsOnlyTheFirstBytesOfALargeBody() {
        var capture = new LlmProxy.Capture(10);
        byte[] data = "0123456789abcdefghij".getBytes(StandardCharsets.UTF_8);
        capture.write(data, 0, 8);
        capture.write(data, 8, 12);
        assertEquals("0123456789", new String(capture.bytes(), StandardCharsets.UTF_8));
        assertEquals(20, capture.total());
        assertTrue(capture.isFull());
    }
}
