import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** The command line: options, defaults, usage errors, start-up failures, and path joining. */
class CliTest {
    @TempDir
    Path dir;

    private static LlmProxy.Config parse(Map<String, String> env, String... args) {
        var command = LlmProxy.Cli.parse(args, env::get);
        return assertInstanceOf(LlmProxy.Cli.Command.Run.class, command).config();
    }

    /** Runs the command line as main does; returns exit code, stdout and stderr. */
    private record Run(int code, String out, String err) {}

    private static Run run(String... args) {
        var out = new ByteArrayOutputStream();
        var err = new ByteArrayOutputStream();
        int code = LlmProxy.start(args, new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Run(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    @Test
    void appliesDefaults() {
        var config = parse(Map.of(), "--target-url", "https://api.openai.com/v1");
        assertEquals(URI.create("https://api.openai.com/v1"), config.target());
        assertEquals(8080, config.port());
        assertEquals(InetAddress.getLoopbackAddress(), config.host());
        assertEquals(Path.of("log.csv"), config.logFile());
        assertEquals(Duration.ofMinutes(3), config.timeout());
        assertEquals(16L << 20, config.logMaxBody());
        assertEquals(List.of(), config.addHeaders());
    }

    @Test
    void readsShortLongAndEqualsForms() {
        var config = parse(Map.of(), "-t", "http://localhost:11434", "-p", "9000", "--host=127.0.0.2",
                "-l", "a.csv", "--timeout=0.5", "--log-max-body", "64k", "-a", "X-A: 1", "--add-header=X-B: 2");
        assertEquals(9000, config.port());
        assertEquals("127.0.0.2", config.host().getHostAddress());
        assertEquals(Path.of("a.csv"), config.logFile());
        assertEquals(Duration.ofSeconds(30), config.timeout());
        assertEquals(64 * 1024, config.logMaxBody());
        assertEquals(List.of(new LlmProxy.AddedHeader("X-A", "1", false), new LlmProxy.AddedHeader("X-B", "2", false)),
                config.addHeaders());
    }

    @Test
    void readsLogColumnsSecretsAndRotation() {
        var config = parse(Map.of(), "-t", "https://h", "--log-columns", "time,status,outcome", "--log-secrets",
                "--log-rotate", "10m");
        assertEquals(List.of(LlmProxy.Column.TIME, LlmProxy.Column.STATUS, LlmProxy.Column.OUTCOME), config.logColumns());
        assertTrue(config.logSecrets());
        assertEquals(10L << 20, config.logRotate());
        assertEquals(List.of(LlmProxy.Column.values()), parse(Map.of(), "-t", "https://h", "--log-columns", "all").logColumns());
        assertEquals(LlmProxy.Column.DEFAULT, parse(Map.of(), "-t", "https://h").logColumns());
    }

    @Test
    void keepsEverythingAfterTheFirstColonOfAnAddedHeader() {
        var config = parse(Map.of(), "-t", "https://h", "-a", "Authorization:   Bearer a:b:c  ");
        assertEquals(new LlmProxy.AddedHeader("Authorization", "Bearer a:b:c", true), config.addHeaders().getFirst());
    }

    @Test
    void expandsEnvironmentVariablesInAddedHeaders() {
        var config = parse(Map.of("OPENAI_API_KEY", "sk-123", "ORG", "acme"), "-t", "https://h",
                "-a", "Authorization: Bearer ${OPENAI_API_KEY}", "-a", "X-Org: ${ORG}/${ORG}");
        assertEquals("Bearer sk-123", config.addHeaders().get(0).value());
        assertEquals("acme/acme", config.addHeaders().get(1).value());
    }

    @Test
    void neverPrintsAnAddedHeaderValue() {
        assertFalse(new LlmProxy.AddedHeader("Authorization", "Bearer sk-123", true).toString().contains("sk-123"));
    }

    @Test
    void showsHelpAndVersion() {
        Run help = run("--help");
        assertEquals(0, help.code());
        assertTrue(help.out().startsWith("Usage: llmproxy --target-url URL [options]"), help.out());
        assertEquals(help.out(), run("-h").out());
        Run version = run("-V");
        assertEquals(0, version.code());
        assertEquals("llmproxy " + LlmProxy.VERSION + System.lineSeparator(), version.out());
        assertEquals(version.out(), run("--version").out());
    }

    @ParameterizedTest(name = "{0} -> {1}")
    @CsvSource(delimiter = '|', value = {
        "''                                                   | missing required option --target-url",
        "-t https://h --bogus                                 | unknown option --bogus",
        "-t https://h stray                                   | unexpected argument 'stray'",
        "-t https://h --port                                  | option --port needs a value",
        "-t https://h -p 80x                                  | --port must be a number from 0 to 65535, got '80x'",
        "-t https://h -p 70000                                | --port must be a number from 0 to 65535, got '70000'",
        "-t https://h -p 1 -p 2                               | option --port given twice",
        "-t ftp://h                                           | --target-url must be an absolute http:// or https:// URL",
        "-t /just/a/path                                      | --target-url must be an absolute http:// or https:// URL",
        "-t https://h -a NoColon                              | --add-header needs 'Name: Value', but the value given has no colon",
        "-t https://h -a 'Bad Name: v'                        | --add-header has an invalid header name: a name is made of",
        "-t https://h -a 'Host: other'                        | --add-header cannot set Host: Java's HTTP client sets it itself",
        "-t https://h -a 'content-length: 5'                  | --add-header cannot set content-length: Java's HTTP client",
        "-t https://h -a 'Expect: 100-continue'               | --add-header cannot set Expect: Java's HTTP client",
        "-t https://h -a 'Connection: close'                  | --add-header cannot set Connection: it describes one connection",
        "-t https://h -a 'Upgrade: h2c'                       | --add-header cannot set Upgrade: it describes one connection",
        "-t https://h -a 'Transfer-Encoding: chunked'         | --add-header cannot set Transfer-Encoding: it describes one",
        "-t https://h -a 'Proxy-Authorization: Basic eA=='    | --add-header cannot set Proxy-Authorization: it describes one",
        "-t https://h -a 'X-Key: k€y'                         | --add-header X-Key has a character outside Latin-1 in its value (at position 2)",
        "-t https://h --allow-host http://a/                  | --allow-host takes a host name or address",
        "-t https://h --allow-origin localhost:3000           | --allow-origin takes * or an origin as browsers send it",
        "-t https://h --allow-origin http://a/b               | --allow-origin takes * or an origin as browsers send it",
        "-t https://h --log-keep 3                            | --log-keep needs --log-rotate",
        "-t https://h --log-rotate 1m --log-keep 0            | --log-keep must be a whole number from 1 to 999999, got '0'",
        "-t https://h --log-excel-safe=1                      | --log-excel-safe takes no value",
        "-t https://h --                                      | '--' must be followed by a command",
        "-t https://h --env OPENAI_BASE_URL                   | --env names variables for a command",
        "-t https://h --env 1BAD -- true                      | --env takes an environment variable name",
        "-t https://h -l - --log-rotate 1m                    | --log-rotate and --log-keep do not apply to --log-file -",
        "-t https://h -l - -- true                            | --log-file - cannot share standard output",
        "-t https://h --ui-port 99999                         | --ui-port must be a number from 0 to 65535",
        "view                                                 | view needs a log file",
        "view a.csv b.csv                                     | view: unexpected argument 'b.csv'",
        "view a.csv -o                                        | view: option -o needs a file name",
        "-t https://h -a 'Authorization: Bearer ${UNSET_VAR}' | environment variable 'UNSET_VAR' is not set",
        "-t https://h -a 'X: ${OPEN'                          | --add-header value has '${' without a closing '}'",
        "-t https://h -T 0                                    | --timeout must be a positive number of minutes",
        "-t https://h -T abc                                  | --timeout must be a positive number of minutes",
        "-t https://h -T 1e3                                  | --timeout must be a positive number of minutes",
        "-t https://h --log-max-body 5q                       | --log-max-body must be a size in bytes",
        "-t https://h --host no.such.host.invalid             | --host 'no.such.host.invalid' is not an address",
        "-t https://h --log-columns method,bogus              | --log-columns has no column 'bogus'; the columns are time,id,",
        "-t https://h --log-columns url,url                   | --log-columns names 'url' twice",
        "-t https://h --log-secrets=yes                       | --log-secrets takes no value",
        "-t https://h --log-rotate 1x                         | --log-rotate must be a size in bytes",
        "-t https://h --log-format xml                        | --log-format must be csv or jsonl, got 'xml'",
    })
    void rejectsBadUsageWithExit2NamingTheProblem(String args, String message) {
        Run run = run(args.isEmpty() ? new String[0] : split(args));
        assertEquals(2, run.code(), run.err());
        assertTrue(run.err().startsWith("llmproxy: " + message) || run.err().contains(message), run.err());
        assertTrue(run.err().contains("Run 'llmproxy --help' for usage."), run.err());
        assertEquals("", run.out());
    }

    /** Splits on spaces, keeping single-quoted words whole. */
    private static String[] split(String args) {
        var words = new java.util.ArrayList<String>();
        var m = java.util.regex.Pattern.compile("'([^']*)'|(\\S+)").matcher(args);
        while (m.find()) {
            words.add(m.group(1) != null ? m.group(1) : m.group(2));
        }
        return words.toArray(String[]::new);
    }

    @Test
    void exitsWith1WhenThePortIsInUse() throws Exception {
        try (ServerSocket taken = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            Run run = run("-t", "http://127.0.0.1:9", "-p", String.valueOf(taken.getLocalPort()),
                    "-l", dir.resolve("log.csv").toString());
            assertEquals(1, run.code());
            assertTrue(run.err().contains("cannot listen on 127.0.0.1:" + taken.getLocalPort()), run.err());
        }
    }

    @Test
    void exitsWith1WhenTheLogCannotBeWritten() {
        Run run = run("-t", "http://127.0.0.1:9", "-p", "0", "-l", dir.resolve("missing/dir/log.csv").toString());
        assertEquals(1, run.code());
        assertTrue(run.err().contains("cannot create log file") && run.err().contains("directory does not exist"),
                run.err());
    }

    @Test
    void exitsWith1WhenTheLogHasAnotherHeader() throws Exception {
        Path log = dir.resolve("other.csv");
        Files.writeString(log, "a,b,c\r\n1,2,3\r\n");
        Run run = run("-t", "http://127.0.0.1:9", "-p", "0", "-l", log.toString());
        assertEquals(1, run.code());
        assertTrue(run.err().contains("starts with 'a,b,c', not the header of the chosen --log-columns"
                + " 'method,url,request_body,response_body'"),
                run.err());
        assertEquals("a,b,c\r\n1,2,3\r\n", Files.readString(log), "the old file is left as it was");
    }

    @ParameterizedTest(name = "{0} + {1} -> {2}")
    @CsvSource({
        "https://h/v1,              /chat/completions?x=1, https://h/v1/chat/completions?x=1",
        "https://h/v1/,             /chat/completions,     https://h/v1/chat/completions",
        "https://h,                 /v1/models,            https://h/v1/models",
        "https://h/,                /,                     https://h/",
        "https://h/v1,              /,                     https://h/v1/",
        "http://h:8000/api/,        /models//x,            http://h:8000/api/models//x",
        "https://h/v1,              /a%2Fb%20c?q=%26x,     https://h/v1/a%2Fb%20c?q=%26x",
        "https://h/v1?api-version=2,/chat?x=1,             https://h/v1/chat?api-version=2&x=1",
        "https://h/v1,              /a/../b,               https://h/v1/a/../b",
    })
    void joinsTargetAndRequestPaths(String target, String request, String expected) {
        URI uri = URI.create("http://proxy" + request);
        var config = parse(Map.of(), "-t", target);
        assertEquals(expected, config.upstreamUri(uri.getRawPath(), uri.getRawQuery()).toString());
    }

    @ParameterizedTest
    @CsvSource({"/../x", "/a/../../x", "/%2e%2e/x", "/a/%2E%2e/%2e./x", "/%252e%252e/x", "/%25252E%25252E/x",
        "/..%2fx", "/..%2Fx", "/a/..%2f..%2fx", "/%2f../x", "/..%5cx", "/a/..%5c..%5cx", "/..;/x", "/a/..;x=1/..;/x",
        "/%2e%2e;/x", "/.%2e/x", "/%c0%ae%c0%ae/x", "/..%00/x", "/a/%2e%2e%252f%2e%2e/x"})
    void refusesPathsThatClimbAboveTheTarget(String path) {
        var config = parse(Map.of(), "-t", "https://h/v1");
        var e = assertThrows(IllegalArgumentException.class, () -> config.upstreamUri(path, null));
        assertTrue(e.getMessage().contains("'..'"));
    }

    @ParameterizedTest
    @CsvSource({"/models/org%2Fmodel", "/a/..%2fb", "/a/b/..;/c", "/files/..data", "/x/...", "/a%2F..%2Fb"})
    void forwardsPathsThatStayBelowTheTargetAsSent(String path) {
        var config = parse(Map.of(), "-t", "https://h/v1");
        assertEquals("https://h/v1" + path, config.upstreamUri(path, null).toString());
    }

    @Test
    void marksAddedHeadersFromTheEnvironmentOrOnCredentialHeadersAsSecret() {
        var config = parse(Map.of("K", "sk-123"), "-t", "https://h", "-a", "X-Custom: ${K}",
                "-a", "anthropic-version: 2023-06-01", "-a", "x-api-key: literal-key", "-a", "X-Portkey-Api-Key: pk");
        assertEquals(List.of(true, false, true, true), config.addHeaders().stream().map(LlmProxy.AddedHeader::secret).toList());
    }

    @Test
    void neverEchoesAnAddedHeaderValueInAnError() {
        for (String spec : List.of("sk-secret-value", "X-Key: sk-secret-value\u0001x", "X-Key: sk-secret-value€",
                "Host: sk-secret-value", "Bad Name sk-secret-value: v")) {
            Run run = run("-t", "https://h", "-a", spec);
            assertEquals(2, run.code(), spec);
            assertFalse(run.err().contains("sk-secret-value"), run.err());
        }
    }

    @Test
    void readsAllowedHostsOriginsAndLogOptions() {
        var config = parse(Map.of(), "-t", "https://h", "--allow-host", "My-Box.local", "--allow-host", "[::1]",
                "--allow-origin", "http://App.example:3000/", "--allow-origin", "*", "--log-rotate", "1m",
                "--log-keep", "5", "--log-excel-safe");
        assertEquals(List.of("my-box.local", "0:0:0:0:0:0:0:1"), config.allowHosts());
        assertEquals(List.of("http://app.example:3000", "*"), config.allowOrigins());
        assertEquals(5, config.logKeep());
        assertTrue(config.logExcelSafe());
    }

    @Test
    void takesACommandAfterTheDoubleDashAndAFreePortForIt() {
        var config = parse(Map.of(), "-t", "https://api.anthropic.com", "--env", "MY_URL", "--", "claude", "-p", "--", "x");
        assertEquals(List.of("claude", "-p", "--", "x"), config.command(), "everything after the first -- is the command's");
        assertEquals(List.of("MY_URL"), config.envNames());
        assertEquals(0, config.port());
        assertEquals(9000, parse(Map.of(), "-t", "https://h", "-p", "9000", "--", "true").port());
        assertTrue(parse(Map.of(), "-t", "https://h", "-l", "-").logToStdout());
    }

    @Test
    void warnsBeforeListeningBeyondLoopback() throws Exception {
        for (String address : List.of("0.0.0.0", "192.0.2.10", "::")) { // decided without binding anything
            String warning = LlmProxy.Proxy.exposureWarning(InetAddress.getByName(address)).orElseThrow();
            assertTrue(warning.contains("not loopback") && warning.contains("your API key"), warning);
        }
        for (String address : List.of("127.0.0.1", "127.0.0.2", "::1")) {
            assertTrue(LlmProxy.Proxy.exposureWarning(InetAddress.getByName(address)).isEmpty(), address);
        }
    }
}
