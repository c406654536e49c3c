import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.zip.GZIPInputStream;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Forwarding to https:// upstreams, as every real API is: a throwaway CA and certificate made
 * with keytool, a local TLS upstream (Node.js's http2 module: HTTP/2 with ALPN, or HTTP/1.1),
 * and the proxy in its own JVM trusting that CA through -Djavax.net.ssl.trustStore.
 */
class TlsUpstreamTest {
    private static final String PASSWORD = "changeit";

    @TempDir
    static Path certs;

    @TempDir
    Path dir;

    private static Path trustStore;
    private static Path localhostKey;
    private static Path otherHostKey;
    private static Path script;

    @BeforeAll
    static void makeCertificates() throws Exception {
        Path ca = certs.resolve("ca.p12");
        keytool("-genkeypair", "-alias", "ca", "-keyalg", "EC", "-dname", "CN=llmproxy test CA", "-ext", "bc:c",
                "-validity", "2", "-keystore", ca.toString());
        keytool("-exportcert", "-rfc", "-alias", "ca", "-keystore", ca.toString(), "-file", certs.resolve("ca.pem").toString());
        trustStore = certs.resolve("trust.p12");
        keytool("-importcert", "-noprompt", "-alias", "ca", "-file", certs.resolve("ca.pem").toString(),
                "-keystore", trustStore.toString());
        localhostKey = serverKey(ca, "localhost", "dns:localhost");
        otherHostKey = serverKey(ca, "other", "dns:other.example");
        script = certs.resolve("upstream.js");
        Files.writeString(script, UPSTREAM_JS);
    }

    /** A key and certificate for SAN {@code san}, signed by the CA, in a PKCS#12 file Node.js reads. */
    private static Path serverKey(Path ca, String name, String san) throws Exception {
        Path store = certs.resolve(name + ".p12");
        Path request = certs.resolve(name + ".csr");
        Path signed = certs.resolve(name + ".pem");
        keytool("-genkeypair", "-alias", "server", "-keyalg", "EC", "-dname", "CN=" + name, "-validity", "2",
                "-keystore", store.toString());
        keytool("-certreq", "-alias", "server", "-keystore", store.toString(), "-file", request.toString());
        keytool("-gencert", "-alias", "ca", "-keystore", ca.toString(), "-infile", request.toString(),
                "-outfile", signed.toString(), "-rfc", "-validity", "2", "-ext", "san=" + san);
        keytool("-importcert", "-noprompt", "-alias", "ca", "-file", certs.resolve("ca.pem").toString(),
                "-keystore", store.toString());
        keytool("-importcert", "-alias", "server", "-file", signed.toString(), "-keystore", store.toString());
        return store;
    }

    private static void keytool(String... args) throws Exception {
        List<String> command = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "keytool").toString()));
        command.addAll(List.of(args));
        command.addAll(List.of("-storetype", "PKCS12", "-storepass", PASSWORD));
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, "keytool " + args[0] + ": " + out);
    }

    /** The TLS upstream: h2 (with HTTP/1.1 for clients that ask) or HTTP/1.1 only; it reports on stdout. */
    static final String UPSTREAM_JS = """
            const http2 = require('http2'), https = require('https'), fs = require('fs'), zlib = require('zlib');
            const crypto = require('crypto'), readline = require('readline');
            const [pfx, mode] = process.argv.slice(2);
            const options = {pfx: fs.readFileSync(pfx), passphrase: 'changeit', allowHTTP1: true,
                             settings: {maxConcurrentStreams: 4}};
            const releases = [];           // lockstep: one stdin line "next" lets the next event go
            let pending = 0;
            readline.createInterface({input: process.stdin}).on('line', () => {
              const go = releases.shift(); if (go) go(); else pending++;
            });
            const next = () => new Promise(go => { if (pending > 0) { pending--; go(); } else releases.push(go); });
            let active = 0, peak = 0;
            const handle = async (req, res) => {
              const chunks = []; for await (const c of req) chunks.push(c);
              const body = Buffer.concat(chunks);
              const path = new URL(req.url, 'https://x').pathname;
              console.log('request ' + path + ' HTTP/' + req.httpVersion);
              if (path === '/lockstep') {
                res.writeHead(200, {'content-type': 'text/event-stream'});
                for (let k = 0; k < 5; k++) { res.write('data: event ' + k + '\\n\\n'); if (k < 4) await next(); }
                res.end();
              } else if (path === '/gzip') {
                const text = 'data: ' + 'compressible '.repeat(200) + '\\n\\n';
                res.writeHead(200, {'content-type': 'text/event-stream', 'content-encoding': 'gzip'});
                res.end(zlib.gzipSync(Buffer.from(text)));
              } else if (path === '/echo') {
                const digest = crypto.createHash('sha256').update(body).digest('hex');
                res.writeHead(200, {'content-type': 'text/plain'});
                res.end(body.length + ' ' + digest);
              } else if (path === '/concurrent') {
                active++; peak = Math.max(peak, active);
                res.writeHead(200, {'content-type': 'text/plain'});
                setTimeout(() => { active--; res.end('peak ' + peak); }, 200);
              } else if (path === '/endless') {
                res.writeHead(200, {'content-type': 'text/event-stream'});
                let k = 0;
                const timer = setInterval(() => res.write('data: ' + k++ + '\\n\\n'), 20);
                res.on('close', () => { clearInterval(timer); console.log('closed /endless after ' + k + ' events'); });
                setTimeout(() => { clearInterval(timer); res.end(); }, 10000); // bounded
              } else if (path === '/reset') {
                res.writeHead(200, {'content-type': 'text/event-stream'});
                res.write('data: one\\n\\n');
                await next(); // once the client has it
                if (req.stream) req.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR); else req.socket.destroy();
              } else {
                res.writeHead(404); res.end();
              }
            };
            const server = mode === 'h1' ? https.createServer({pfx: options.pfx, passphrase: 'changeit'}, handle)
                                         : http2.createSecureServer(options, handle);
            server.listen(0, '127.0.0.1', () => console.log('port ' + server.address().port));
            """;

    /** The Node.js upstream, its stdout read line by line, its stdin the lockstep channel. */
    private static final class Upstream implements AutoCloseable {
        final Process process;
        final BlockingQueue<String> lines = new LinkedBlockingQueue<>();
        final int port;

        Upstream(Path key, String mode) throws Exception {
            process = new ProcessBuilder("node", script.toString(), key.toString(), mode)
                    .redirectError(ProcessBuilder.Redirect.INHERIT).start();
            Thread.ofVirtual().start(() -> {
                try (var reader = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8))) {
                    for (String line; (line = reader.readLine()) != null; ) {
                        lines.add(line);
                    }
                } catch (IOException e) {
                    lines.add("(stdout closed)");
                }
            });
            port = Integer.parseInt(awaitLine("port ").substring(5));
        }

        String awaitLine(String start) throws InterruptedException {
            List<String> seen = new ArrayList<>();
            while (true) {
                String line = lines.poll(20, TimeUnit.SECONDS);
                if (line == null) {
                    throw new AssertionError("the upstream said no '" + start + "…'; it said " + seen);
                }
                seen.add(line);
                if (line.startsWith(start)) {
                    return line;
                }
            }
        }

        void next() throws IOException {
            OutputStream in = process.getOutputStream();
            in.write("next\n".getBytes(StandardCharsets.UTF_8));
            in.flush();
        }

        @Override
        public void close() {
            process.destroyForcibly();
        }
    }

    private TestSupport.Launched proxy(String target, boolean trusting, String... more) throws Exception {
        List<String> args = new ArrayList<>(List.of(more));
        if (trusting) {
            args.addAll(List.of("-Djavax.net.ssl.trustStore=" + trustStore, "-Djavax.net.ssl.trustStorePassword=" + PASSWORD));
        }
        return new TestSupport.Launched(target, dir.resolve("log.csv"), args.toArray(String[]::new));
    }

    private List<List<String>> records(TestSupport.Launched proxy) throws Exception {
        assertEquals(0, proxy.terminate());
        return TestSupport.Csv.parse(Files.readString(dir.resolve("log.csv")));
    }

    @ParameterizedTest
    @ValueSource(strings = {"h2", "h1"})
    void streamsInLockstepFromATlsUpstream(String mode) throws Exception {
        try (var upstream = new Upstream(localhostKey, mode);
             var proxy = proxy("https://localhost:" + upstream.port, true, "--log-columns", "status,outcome,response_body");
             var client = new TestSupport.RawClient(proxy.port)) {
            client.send("GET /lockstep HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(200, client.status);
            assertEquals("request /lockstep HTTP/" + (mode.equals("h2") ? "2.0" : "1.1"), upstream.awaitLine("request"));
            StringBuilder all = new StringBuilder();
            for (int k = 0; k < 5; k++) {
                // the next event leaves the upstream only once the client has this one
                all.append(client.readUntil("data: event " + k + "\n\n"));
                if (k < 4) {
                    upstream.next();
                }
            }
            assertEquals(null, client.nextChunk());
            assertEquals(List.of("200", "complete", all.toString()), records(proxy).get(1));
        }
    }

    @Test
    void passesGzipThroughAndLogsItDecoded() throws Exception {
        try (var upstream = new Upstream(localhostKey, "h2");
             var proxy = proxy("https://localhost:" + upstream.port, true, "--log-columns", "response_body")) {
            var response = HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create(
                    "http://127.0.0.1:" + proxy.port + "/gzip")).header("Accept-Encoding", "gzip").build(),
                    HttpResponse.BodyHandlers.ofByteArray());
            assertEquals("gzip", response.headers().firstValue("Content-Encoding").orElseThrow());
            String text = new String(new GZIPInputStream(new java.io.ByteArrayInputStream(response.body())).readAllBytes(),
                    StandardCharsets.UTF_8);
            assertEquals(text, records(proxy).get(1).getFirst());
        }
    }

    @Test
    void sendsA20MegabyteBodyIntact() throws Exception {
        byte[] body = new byte[20 << 20];
        new Random(42).nextBytes(body);
        String digest = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(body));
        try (var upstream = new Upstream(localhostKey, "h2");
             var proxy = proxy("https://localhost:" + upstream.port, true, "--log-columns", "status,request_bytes")) {
            var response = HttpClient.newHttpClient().send(HttpRequest.newBuilder(URI.create(
                    "http://127.0.0.1:" + proxy.port + "/echo")).POST(HttpRequest.BodyPublishers.ofByteArray(body)).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertEquals(body.length + " " + digest, response.body());
            assertEquals(List.of("200", String.valueOf(body.length)), records(proxy).get(1));
        }
    }

    @Test
    void servesMoreStreamsAtOnceThanTheUpstreamAllowsOnOneConnection() throws Exception {
        int streams = 12; // the upstream allows 4 at once per connection (SETTINGS_MAX_CONCURRENT_STREAMS)
        try (var upstream = new Upstream(localhostKey, "h2");
             var proxy = proxy("https://localhost:" + upstream.port, true, "--log-columns", "status,outcome")) {
            var client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
            List<CompletableFuture<HttpResponse<String>>> answers = new ArrayList<>();
            for (int i = 0; i < streams; i++) {
                answers.add(client.sendAsync(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + proxy.port
                        + "/concurrent")).build(), HttpResponse.BodyHandlers.ofString()));
            }
            for (var answer : answers) {
                var response = answer.get(30, TimeUnit.SECONDS);
                assertEquals(200, response.statusCode(), response.body());
                assertTrue(response.body().startsWith("peak "), response.body());
            }
            var rows = records(proxy);
            assertEquals(streams + 1, rows.size());
            rows.subList(1, rows.size()).forEach(row -> assertEquals(List.of("200", "complete"), row));
        }
    }

    @Test
    void resetsTheUpstreamStreamAtOnceWhenTheClientLeaves() throws Exception {
        try (var upstream = new Upstream(localhostKey, "h2");
             var proxy = proxy("https://localhost:" + upstream.port, true, "--log-columns", "outcome")) {
            long left;
            try (var client = new TestSupport.RawClient(proxy.port)) {
                client.send("GET /endless HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
                client.readUntil("data: 2\n\n");
                left = System.nanoTime();
            }
            String closed = upstream.awaitLine("closed /endless");
            long millis = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - left);
            assertTrue(millis < 2000, closed + " " + millis + " ms after the client left");
            int events = Integer.parseInt(closed.replaceAll("\\D+", " ").trim().split(" ")[0]);
            assertTrue(events < 100, "the upstream stopped long before its 10 s end: " + closed);
            assertEquals(List.of("client_closed"), records(proxy).get(1));
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"h2", "h1"})
    void cutsTheClientStreamWhenTheUpstreamResetsIt(String mode) throws Exception {
        try (var upstream = new Upstream(localhostKey, mode);
             var proxy = proxy("https://localhost:" + upstream.port, true, "--log-columns", "outcome,response_body");
             var client = new TestSupport.RawClient(proxy.port)) {
            client.send("GET /reset HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals("data: one\n\n", client.readUntil("data: one\n\n"));
            upstream.next();
            assertThrows(EOFException.class, client::nextChunk, "a cut stream, not a clean end");
            assertEquals(List.of("upstream_error", "data: one\n\n"), records(proxy).get(1));
        }
    }

    @Test
    void answers502NamingAnUntrustedCertificate() throws Exception {
        try (var upstream = new Upstream(localhostKey, "h2");
             var proxy = proxy("https://localhost:" + upstream.port, false, "--log-columns", "status,error")) {
            String body = get(proxy, "/lockstep");
            assertTrue(body.contains("llmproxy_upstream_error") && body.contains("TLS with localhost failed"), body);
            List<String> row = records(proxy).get(1);
            assertEquals("502", row.get(0));
            assertTrue(row.get(1).contains("PKIX path building failed") && row.get(1).contains("javax.net.ssl.trustStore"),
                    row.get(1));
        }
    }

    @Test
    void answers502NamingACertificateForAnotherHost() throws Exception {
        try (var upstream = new Upstream(otherHostKey, "h2");
             var proxy = proxy("https://localhost:" + upstream.port, true, "--log-columns", "status,error")) {
            String body = get(proxy, "/lockstep");
            assertTrue(body.contains("llmproxy_upstream_error") && body.contains("TLS with localhost failed"), body);
            List<String> row = records(proxy).get(1);
            assertEquals("502", row.get(0));
            assertTrue(row.get(1).contains("No subject alternative DNS name matching localhost found"), row.get(1));
        }
    }

    private static String get(TestSupport.Launched proxy, String path) throws Exception {
        try (var client = new TestSupport.RawClient(proxy.port)) {
            client.send("GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n").readHead();
            assertEquals(502, client.status);
            ByteArrayOutputStream body = new ByteArrayOutputStream();
            body.write(client.body());
            return body.toString(StandardCharsets.UTF_8);
        }
    }
}
