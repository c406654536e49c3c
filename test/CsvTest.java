import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import org.junit.jupiter.api.Test;

/** RFC 4180 fields and records, and JSON string literals. */
class CsvTest {
    private static String field(String value) {
        StringBuilder out = new StringBuilder();
        LlmProxy.Csv.field(out, value);
        return out.toString();
    }

    @Test
    void leavesPlainFieldUnquoted() {
        assertEquals("plain text: ünïcode 中文 🙂", field("plain text: ünïcode 中文 🙂"));
    }

    @Test
    void writesEmptyFieldAsNothing() {
        assertEquals("", field(""));
    }

    @Test
    void quotesFieldWithComma() {
        assertEquals("\"a,b\"", field("a,b"));
    }

    @Test
    void quotesFieldWithQuoteAndDoublesIt() {
        assertEquals("\"say \"\"hi\"\" \"\"twice\"\"\"", field("say \"hi\" \"twice\""));
    }

    @Test
    void quotesFieldWithNewline() {
        assertEquals("\"line 1\nline 2\"", field("line 1\nline 2"));
    }

    @Test
    void quotesFieldWithCarriageReturn() {
        assertEquals("\"a\rb\"", field("a\rb"));
    }

    @Test
    void endsRecordsWithCrlf() {
        assertEquals("a,\"b,c\",\r\n", LlmProxy.Csv.record(List.of("a", "b,c", "")));
    }

    @Test
    void parsesBackExactly() {
        String alphabet = "ab ,\"\r\n\tü中🙂;'\\";
        Random random = new Random(7);
        StringBuilder file = new StringBuilder();
        List<List<String>> written = new ArrayList<>();
        for (int r = 0; r < 500; r++) {
            List<String> record = new ArrayList<>();
            for (int f = 0; f < 4; f++) {
                StringBuilder value = new StringBuilder();
                int length = random.nextInt(12);
                for (int i = 0; i < length; i++) {
                    value.appendCodePoint(alphabet.codePointAt(alphabet.offsetByCodePoints(0,
                            random.nextInt(alphabet.codePointCount(0, alphabet.length())))));
                }
                record.add(value.toString());
            }
            written.add(record);
            file.append(LlmProxy.Csv.record(record));
        }
        assertEquals(written, TestSupport.Csv.parse(file.toString()));
    }

    @Test
    void quotesJsonStrings() {
        assertEquals("\"a \\\"b\\\" \\\\ \\n\\r\\t \\u0001 ü\"", LlmProxy.Json.quote("a \"b\" \\ \n\r\t \u0001 ü"));
    }
}
