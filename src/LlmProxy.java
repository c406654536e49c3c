//JAVA 21+
//COMPILE_OPTIONS --release 21
//DESCRIPTION Logging reverse proxy for LLM APIs: streams every answer, records every exchange as CSV

/*
 * llmproxy: a logging reverse proxy for LLM APIs, in one file of plain Java 21.
 *
 * Point an LLM client (an OpenAI or Anthropic SDK, a coding agent, curl) at llmproxy instead of
 * the API. It forwards every request to --target-url, streams the response back chunk by chunk
 * as it arrives, and appends one CSV record per exchange (method, url, request and response
 * body) to the log file. It listens on 127.0.0.1 unless told otherwise.
 *
 *   java -jar build/llmproxy.jar --target-url https://api.openai.com/v1
 *   java src/LlmProxy.java --target-url https://api.anthropic.com
 *
 * Map of the parts, in the order a request flows through them:
 *   LlmProxy        entry point: start(args, out, err) returns an exit code; main only exits
 *   Signals         SIGINT/SIGTERM: a graceful stop, and an immediate one on the second signal
 *   Child           llmproxy … -- COMMAND: a command run with its base URL pointing at the proxy
 *   Cli, Config     argument parsing, help text and the validated configuration, with
 *                   LogFormat (csv or jsonl) and AddedHeader (one --add-header)
 *   Proxy           the running server: HttpServer, HttpClient, shutdown
 *   Threads         virtual threads, or platform ones on JDK 21-23 where virtual ones would pin
 *   PlainHttpOnly   a TLS context that is never used, so http:// targets start fast
 *   Limits          exchanges and connections at once, from the heap and open-file limits
 *   LogMemory       the heap that bodies kept for the log may hold; past it, 503s
 *   Heap            the heap settled to what is live at start, and given back once idle
 *   Access          who may use the proxy: Host must name it, Origin be this machine's (403)
 *   Forwarder       one exchange: upstream request, response headers, copy loop, record
 *   HeaderRules     which headers cross the proxy in each direction
 *   RequestBody     the client's body: read whole, streamed upstream, or drained for the log
 *   IdleWatchdog    ends every wait on a peer that outlasts --timeout: silent upstreams, stalled clients
 *   Capture         the bounded copy of a body kept for the log, in chunks that are never copied
 *   Record          what the log keeps of one exchange; Reading keeps its conversation once read
 *   Column, RecordView, Secrets  the log's columns, one record as they read it (its
 *                   conversation read once), and what they may show of credentials
 *   LogWriter       one thread that appends records to the log file (or stdout), rotates and re-opens it
 *   BodyText        decodes a captured body (gzip, deflate, UTF-8, base64 summed up) into a log field
 *   Llm, Conversation, Sse  the answer read out of five LLM APIs' bodies, streamed or not
 *   TraceContext, Telemetry, Content  one OpenTelemetry GenAI span per exchange over OTLP/HTTP JSON
 *   ViewerPage      the viewer's HTML, CSS and JavaScript, for the live viewer and the report
 *   Viewer          --ui-port: the live viewer's server, fed off the request path
 *   Report          llmproxy view LOG: a self-contained HTML file of a log
 *   Csv, Json, Durations  RFC 4180 fields, JSON, and durations and failures in messages
 *   UsageException  a bad command line (exit 2); StartupException: cannot start (exit 1);
 *                   ClientTimeout, TruncatedResponse: how a stalled client and a cut response end
 */

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.Serial;
import java.io.Writer;
import java.net.BindException;
import java.net.ConnectException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.UnknownHostException;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.ByteBuffer;
import java.security.Provider;
import java.security.SecureRandom;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Flow;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.BooleanSupplier;
import java.util.function.UnaryOperator;
import java.util.zip.DataFormatException;
import java.util.zip.GZIPInputStream;
import java.util.zip.Inflater;
import java.util.zip.ZipException;

import javax.net.ssl.KeyManager;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLContextSpi;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLServerSocketFactory;
import javax.net.ssl.SSLSessionContext;
import javax.net.ssl.SSLSocketFactory;
import javax.net.ssl.TrustManager;

/** Entry point: parses the command line, starts the proxy, and stops it cleanly on SIGINT/SIGTERM. */
public final class LlmProxy {
    static final String VERSION = "0.1.0";

    private LlmProxy() {}

    /** What {@link #start} returns while the proxy serves: a signal ends it, not main. */
    static final int SERVING = -1;

    public static void main(String[] args) {
        int code = start(args, System.out, System.err);
        if (code != SERVING) {
            System.exit(code);
        }
        // The server's dispatcher thread keeps the JVM alive until a signal runs the shutdown hook.
    }

    /**
     * Runs the command line: prints help or version, writes a report, runs a command through the
     * proxy, or starts the proxy and returns while it serves. Returns the exit code: 0 done, 1
     * could not start, 2 usage error, a command's own status, or {@link #SERVING}.
     */
    static int start(String[] args, PrintStream out, PrintStream err) {
        Cli.Command command;
        try {
            command = Cli.parse(args, System::getenv);
        } catch (UsageException e) {
            err.println("llmproxy: " + e.getMessage());
            err.println("Run 'llmproxy --help' for usage.");
            return 2;
        }
        // instanceof rather than a pattern switch: that one is bootstrapped at run time, ~10 ms of start-up
        if (command instanceof Cli.Command.Help) {
            out.print(Cli.HELP);
            return 0;
        }
        if (command instanceof Cli.Command.Version) {
            out.println("llmproxy " + VERSION);
            return 0;
        }
        if (command instanceof Cli.Command.View view) {
            return Report.write(view.log(), view.output(), out, err);
        }
        Config config = ((Cli.Command.Run) command).config();
        Proxy proxy;
        try {
            proxy = Proxy.start(config, out, err);
        } catch (StartupException e) {
            err.println("llmproxy: " + e.getMessage());
            return 1;
        }
        Heap.settle();
        if (!config.command().isEmpty()) {
            return Child.run(config, proxy, err);
        }
        Signals.install(proxy, err);
        return SERVING;
    }

    // --- signals ---

    /**
     * SIGINT/SIGTERM: the first stops gracefully (in-flight exchanges get the grace period), a
     * second stops at once, ending them and still writing every record. The JDK's signal API
     * is reached reflectively: it lives in jdk.unsupported, and naming it is a compiler warning
     * that cannot be silenced. Without it, a shutdown hook gives the graceful stop alone.
     */
    static final class Signals {
        private Signals() {}

        static void install(Proxy proxy, PrintStream err) {
            AtomicInteger received = new AtomicInteger();
            boolean caught = handle(name -> {
                if (received.incrementAndGet() == 1) {
                    // Not a daemon (the signal thread is one): the JVM must not end before the log is written.
                    Thread.ofPlatform().name("llmproxy-shutdown").daemon(false).start(() -> {
                        proxy.shutdown(Proxy.shutdownGrace());
                        // The user asked us to stop and everything is written: exit 0, not 128+signal.
                        Runtime.getRuntime().halt(0);
                    });
                } else {
                    err.println("llmproxy: second signal: stopping now");
                    proxy.shutdownNow();
                    Runtime.getRuntime().halt(0);
                }
            });
            if (!caught) {
                Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                    proxy.shutdown(Proxy.shutdownGrace());
                    Runtime.getRuntime().halt(0);
                }, "llmproxy-shutdown"));
            }
        }

        /** Calls {@code onSignal} with "TERM" or "INT" for each SIGTERM and SIGINT; false where the JDK cannot. */
        static boolean handle(java.util.function.Consumer<String> onSignal) {
            try {
                Class<?> signal = Class.forName("sun.misc.Signal");
                Class<?> handlerType = Class.forName("sun.misc.SignalHandler");
                Object handler = java.lang.reflect.Proxy.newProxyInstance(handlerType.getClassLoader(),
                        new Class<?>[] {handlerType}, (self, method, args) -> {
                            if (method.getName().equals("handle")) {
                                onSignal.accept((String) signal.getMethod("getName").invoke(args[0]));
                            }
                            return null;
                        });
                var handle = signal.getMethod("handle", signal, handlerType);
                for (String name : List.of("TERM", "INT")) {
                    handle.invoke(null, signal.getConstructor(String.class).newInstance(name), handler);
                }
                return true;
            } catch (ReflectiveOperationException | RuntimeException e) {
                return false;
            }
        }
    }

    // --- a command through the proxy ---

    /**
     * {@code llmproxy [options] -- COMMAND [ARGS...]}: runs one command with its LLM client's
     * base URL pointing at the proxy, passes its standard streams and the signals llmproxy gets
     * through, and when it exits, finishes the exchanges in flight, writes every record and
     * returns its exit status (128 + n for a command killed by signal n, as shells do).
     */
    static final class Child {
        private Child() {}

        static int run(Config config, Proxy proxy, PrintStream err) {
            List<String> command = new ArrayList<>(config.command());
            Map<String, String> variables = AGENTS.contains(program(command)) && config.envNames().isEmpty()
                    ? new LinkedHashMap<>() // the agent's own variable, below
                    : environment(config.target(), proxy.port(), config.envNames(), err);
            boolean keyFromProxy = config.addHeaders().stream().anyMatch(h -> Secrets.isCredentialHeader(
                    h.name().toLowerCase(Locale.ROOT)));
            agent(command, variables, System.getenv(), config.target(), proxy.port(), keyFromProxy);
            ProcessBuilder builder = new ProcessBuilder(command).inheritIO();
            builder.environment().putAll(variables);
            err.println("llmproxy: running " + String.join(" ", command) + " with "
                    + String.join(" ", variables.entrySet().stream().map(e -> e.getKey() + "=" + e.getValue()).toList()));
            // Handled before the command starts, so that no signal finds the JVM's default action
            // (exit) while the command runs on; one that comes before the start is passed on after it.
            var started = new java.util.concurrent.CompletableFuture<Process>();
            Signals.handle(name -> started.thenAccept(child -> forward(child, name))); // the command decides how to stop
            Process child;
            try {
                child = builder.start();
            } catch (IOException e) {
                err.println("llmproxy: cannot run " + config.command().getFirst() + ": " + e.getMessage());
                proxy.shutdown(Duration.ZERO);
                return 127; // as shells say "command not found"
            }
            started.complete(child);
            int status;
            while (true) {
                try {
                    status = child.waitFor();
                    break;
                } catch (InterruptedException e) {
                    // only the command's end ends the wait
                }
            }
            proxy.shutdown(Proxy.shutdownGrace());
            return status; // the JDK already reports a command killed by signal n as 128 + n
        }

        /** The coding agents the wrapper knows by their command's name. */
        static final Set<String> AGENTS = Set.of("claude", "codex", "gemini");

        private static String program(List<String> command) {
            return Path.of(command.getFirst()).getFileName().toString();
        }

        /** A key's stand-in for a client that will not start without one, when llmproxy adds the real key. */
        static final String KEY_SET_BY_PROXY = "set-by-llmproxy";

        /**
         * What the coding agents need beyond a base URL, when the command is one of them:
         * Claude Code opens connections straight to its API host unless told not to; Codex
         * ignores OPENAI_BASE_URL (it takes -c openai_base_url=…) and, in exec mode, reads its
         * key from CODEX_API_KEY only; Gemini CLI reads GOOGLE_GEMINI_BASE_URL. Each gets a
         * stand-in key when none is set and --add-header supplies the real one.
         */
        static void agent(List<String> command, Map<String, String> variables, Map<String, String> env, URI target,
                          int port, boolean keyFromProxy) {
            String root = "http://127.0.0.1:" + port;
            switch (program(command)) {
                case "claude" -> {
                    variables.putIfAbsent("ANTHROPIC_BASE_URL", root);
                    if (env.get("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC") == null) {
                        variables.put("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
                    }
                    if (keyFromProxy && env.get("ANTHROPIC_API_KEY") == null && env.get("ANTHROPIC_AUTH_TOKEN") == null) {
                        variables.put("ANTHROPIC_API_KEY", KEY_SET_BY_PROXY);
                    }
                }
                case "codex" -> {
                    String path = Conversation.trimSlashes(target.getRawPath());
                    String base = variables.getOrDefault("OPENAI_BASE_URL", root + (path.endsWith("/v1") ? "" : "/v1"));
                    command.addAll(1, List.of("-c", "openai_base_url=" + base));
                    if (env.get("CODEX_API_KEY") == null && (env.get("OPENAI_API_KEY") != null || keyFromProxy)) {
                        variables.put("CODEX_API_KEY", env.get("OPENAI_API_KEY") != null ? env.get("OPENAI_API_KEY")
                                : KEY_SET_BY_PROXY);
                    }
                }
                case "gemini" -> {
                    variables.put("GOOGLE_GEMINI_BASE_URL", root);
                    if (keyFromProxy && env.get("GEMINI_API_KEY") == null) {
                        variables.put("GEMINI_API_KEY", KEY_SET_BY_PROXY);
                    }
                }
                default -> { }
            }
        }

        /** Sends the command the signal llmproxy got: the same one where the system's kill can, else SIGTERM. */
        private static void forward(Process child, String name) {
            try {
                Process kill = new ProcessBuilder("kill", "-" + name, String.valueOf(child.pid()))
                        .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
                if (kill.waitFor() == 0) {
                    return;
                }
            } catch (IOException e) {
                // no kill command here
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            child.destroy();
        }

        /**
         * The variables that point the command's client at the proxy, chosen from the target:
         * OpenAI's API and OpenAI-compatible /v1 targets set OPENAI_BASE_URL, Anthropic's
         * ANTHROPIC_BASE_URL, Gemini's GOOGLE_GEMINI_BASE_URL, Ollama's OLLAMA_HOST; a target
         * that fits none sets both OpenAI's and Anthropic's, and says so. --env names them instead.
         */
        static Map<String, String> environment(URI target, int port, List<String> names, PrintStream err) {
            String root = "http://127.0.0.1:" + port;
            Map<String, String> variables = new LinkedHashMap<>();
            if (!names.isEmpty()) {
                names.forEach(name -> variables.put(name, root));
                return variables;
            }
            String host = target.getHost().toLowerCase(Locale.ROOT);
            String path = Conversation.trimSlashes(target.getRawPath());
            if (host.equals("api.openai.com")) {
                variables.put("OPENAI_BASE_URL", root + (path.endsWith("/v1") ? "" : "/v1"));
            } else if (host.equals("api.anthropic.com")) {
                variables.put("ANTHROPIC_BASE_URL", root);
            } else if (host.equals("generativelanguage.googleapis.com")) {
                variables.put("GOOGLE_GEMINI_BASE_URL", root);
            } else if (target.getPort() == 11434) {
                variables.put("OLLAMA_HOST", root);
            } else if (path.endsWith("/v1")) {
                variables.put("OPENAI_BASE_URL", root);
            } else {
                variables.put("OPENAI_BASE_URL", root);
                variables.put("ANTHROPIC_BASE_URL", root);
                err.println("llmproxy: " + target.getHost() + " is neither OpenAI's nor Anthropic's API: setting both"
                        + " OPENAI_BASE_URL and ANTHROPIC_BASE_URL (--env NAME chooses)");
            }
            return variables;
        }
    }

    // --- command line ---

    /** Hand-written parsing of the command line into a {@link Config}; never exits the JVM. */
    static final class Cli {
        private Cli() {}

        static final String HELP = """
                Usage: llmproxy --target-url URL [options]
                       llmproxy view LOG [-o FILE]

                A logging reverse proxy for LLM APIs. Forwards every request to URL, streams
                each response back as it arrives, and appends one CSV record per exchange
                (method, url, request body, response body by default) to the log file.

                Options:
                  -t, --target-url URL       upstream base URL, http:// or https:// (required);
                                             the request path and query are appended to it
                  -p, --port N               port to listen on; 0 picks a free one (default: 8080)
                      --host ADDR            address to listen on (default: 127.0.0.1)
                      --allow-host NAME      also serve requests whose Host header is NAME (by
                                             default only this proxy's own addresses and names:
                                             localhost, 127.0.0.1 and [::1] on loopback);
                                             repeatable
                      --otlp-endpoint URL    send one OpenTelemetry span per exchange (GenAI
                                             conventions) over OTLP/HTTP JSON to URL, /v1/traces
                                             added; also OTEL_EXPORTER_OTLP_ENDPOINT and the
                                             other OTEL_* variables (default: off)
                      --otlp-content         put the messages in the spans too, redacted as in the
                                             log (default: left out)
                      --ui-port N            serve the live viewer at http://127.0.0.1:N/ (always
                                             on loopback); 0 picks a free port (default: off)
                      --allow-origin ORIGIN  also serve requests from web pages at ORIGIN, e.g.
                                             http://app.example:3000 (by default only pages on
                                             this machine: localhost, 127.x, [::1]); * allows
                                             every page; repeatable
                  -a, --add-header 'Name: Value'
                                             set this header on every upstream request, replacing
                                             the client's; ${VAR} is read from the environment;
                                             repeatable
                  -l, --log-file PATH        file to append records to, or - for standard output
                                             (default: log.csv)
                      --log-format FORMAT    csv, or jsonl: one JSON object per line (default: csv)
                      --log-columns LIST     columns to log, comma-separated, or all (default:
                                             method,url,request_body,response_body); also time, id,
                                             upstream_url, status, outcome, duration_ms, ttfb_ms,
                                             request_bytes, response_bytes, request_headers,
                                             response_headers, error, and read from LLM APIs:
                                             model, stream, response_text, reasoning_text,
                                             tool_calls, input_tokens, output_tokens,
                                             cached_tokens, stop_reason, reasoning_tokens,
                                             cache_write_tokens
                      --log-secrets          log credential headers and key query parameters whole
                                             (by default: Bearer sk-p…3xQz); --add-header values
                                             are never logged
                      --log-max-body SIZE    log at most SIZE bytes of each body, e.g. 512k, 16m;
                                             the client still gets every byte (default: 16m)
                      --log-base64           log inline base64 payloads (images, audio, files)
                                             whole; by default each is logged as its type and
                                             size: [base64 image/png, 1.4 MB]
                      --log-rotate SIZE      when the log exceeds SIZE, rename it with a timestamp
                                             and start a new one, e.g. 100m (default: off)
                      --log-keep N           with --log-rotate, keep the N newest rotated files
                                             and delete older ones (default: keep all)
                      --log-excel-safe       start CSV fields that a spreadsheet would run as a
                                             formula (=, +, -, @, tab, CR) with a '
                  -T, --timeout MINUTES      longest wait on a peer: for response headers, silence
                                             inside a response body, a client sending its body or
                                             reading the answer; decimals allowed (default: 3)
                  -h, --help                 print this help and exit
                  -V, --version              print the version and exit

                Run a command through the proxy:
                  llmproxy [options] -- COMMAND [ARGS...]
                                             start the proxy (on a free port unless -p is given),
                                             run COMMAND with its base URL variable pointing at
                                             it (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, ... chosen
                                             from the target), and exit with its status
                      --env NAME             set NAME to the proxy's URL instead; repeatable

                Report:
                  llmproxy view LOG [-o FILE]
                                             write the log (CSV or JSONL) as one self-contained
                                             HTML file that shows each exchange's conversation
                                             (default FILE: LOG with .html); prints its path

                Examples:
                  llmproxy -t https://api.openai.com/v1 -a 'Authorization: Bearer ${OPENAI_API_KEY}'
                  llmproxy -t https://api.anthropic.com -a 'x-api-key: ${ANTHROPIC_API_KEY}' -p 8081
                  llmproxy -t http://localhost:11434 -l ollama.csv -T 10
                  llmproxy -t https://api.anthropic.com -a 'x-api-key: ${ANTHROPIC_API_KEY}' -- claude
                  llmproxy view log.csv
                """;

        /** What the command line asks for. */
        sealed interface Command {
            record Run(Config config) implements Command {}

            record Help() implements Command {}

            record Version() implements Command {}

            record View(Path log, Path output) implements Command {}
        }

        static Command parse(String[] args, UnaryOperator<String> env) {
            if (args.length > 0 && args[0].equals("view")) {
                return parseView(args);
            }
            String target = null;
            String host = null;
            Integer port = null;
            Integer uiPort = null;
            String logFile = null;
            List<Column> columns = null;
            LogFormat format = null;
            boolean secrets = false;
            boolean excelSafe = false;
            boolean base64 = false;
            boolean otlpContent = false;
            String otlpEndpoint = null;
            Long maxBody = null;
            Long rotate = null;
            Integer keep = null;
            List<String> allowHosts = new ArrayList<>();
            List<String> allowOrigins = new ArrayList<>();
            List<String> envNames = new ArrayList<>();
            List<String> command = List.of();
            Duration timeout = null;
            List<AddedHeader> headers = new ArrayList<>();
            for (int i = 0; i < args.length; i++) {
                String arg = args[i];
                if (arg.equals("--")) {
                    command = List.of(args).subList(i + 1, args.length);
                    if (command.isEmpty()) {
                        throw new UsageException("'--' must be followed by a command to run through the proxy");
                    }
                    break;
                }
                String name = arg;
                String value = null;
                int eq = arg.indexOf('=');
                if (arg.startsWith("--") && eq > 0) {
                    name = arg.substring(0, eq);
                    value = arg.substring(eq + 1);
                }
                switch (name) {
                    case "-h", "--help" -> {
                        return new Command.Help();
                    }
                    case "-V", "--version" -> {
                        return new Command.Version();
                    }
                    case "--log-secrets", "--log-excel-safe", "--log-base64", "--otlp-content" -> {
                        if (value != null) {
                            throw new UsageException(name + " takes no value");
                        }
                        switch (name) {
                            case "--log-secrets" -> secrets = true;
                            case "--log-excel-safe" -> excelSafe = true;
                            case "--otlp-content" -> otlpContent = true;
                            default -> base64 = true;
                        }
                        continue;
                    }
                    default -> {
                        if (!name.startsWith("-")) {
                            throw new UsageException("unexpected argument '" + arg + "'");
                        }
                    }
                }
                String option = longName(name);
                if (value == null) {
                    if (i + 1 >= args.length) {
                        throw new UsageException("option " + option + " needs a value");
                    }
                    value = args[++i];
                }
                switch (option) {
                    case "--target-url" -> target = once(option, target, value);
                    case "--host" -> host = once(option, host, value);
                    case "--port" -> port = once(option, port, parsePort(option, value));
                    case "--ui-port" -> uiPort = once(option, uiPort, parsePort(option, value));
                    case "--log-file" -> logFile = once(option, logFile, value);
                    case "--log-max-body" -> maxBody = once(option, maxBody, parseSize(option, value));
                    case "--log-rotate" -> rotate = once(option, rotate, parseSize(option, value));
                    case "--log-keep" -> keep = once(option, keep, parseCount(option, value));
                    case "--allow-host" -> allowHosts.add(Access.parseAllowedHost(value));
                    case "--allow-origin" -> allowOrigins.add(Access.parseAllowedOrigin(value));
                    case "--env" -> envNames.add(parseEnvName(value));
                    case "--otlp-endpoint" -> otlpEndpoint = once(option, otlpEndpoint, value);
                    case "--log-columns" -> columns = once(option, columns, Column.parse(value));
                    case "--log-format" -> format = once(option, format, LogFormat.parse(value));
                    case "--timeout" -> timeout = once(option, timeout, parseMinutes(value));
                    case "--add-header" -> headers.add(AddedHeader.parse(value, env));
                    default -> throw new AssertionError(option);
                }
            }
            if (target == null) {
                throw new UsageException("missing required option --target-url");
            }
            if (!envNames.isEmpty() && command.isEmpty()) {
                throw new UsageException("--env names variables for a command: give one after '--'");
            }
            return new Command.Run(new Config(
                    parseTarget(target),
                    bindAddress(host == null ? "127.0.0.1" : host),
                    port == null ? (command.isEmpty() ? 8080 : 0) : port,
                    headers,
                    Path.of(logFile == null ? "log.csv" : logFile),
                    format == null ? LogFormat.CSV : format,
                    columns == null ? Column.DEFAULT : columns,
                    secrets,
                    excelSafe,
                    base64,
                    maxBody == null ? 16L << 20 : maxBody,
                    rotate == null ? 0 : rotate,
                    keep == null ? 0 : keep,
                    timeout == null ? Duration.ofMinutes(3) : timeout,
                    allowHosts,
                    allowOrigins,
                    uiPort == null ? -1 : uiPort,
                    command,
                    envNames,
                    Telemetry.Settings.of(otlpEndpoint, otlpContent, env)));
        }

        /** {@code view LOG [-o FILE]}: the report of a log. */
        private static Command parseView(String[] args) {
            Path log = null;
            Path output = null;
            for (int i = 1; i < args.length; i++) {
                String arg = args[i];
                if (arg.equals("-h") || arg.equals("--help")) {
                    return new Command.Help();
                } else if (arg.equals("-o") || arg.equals("--output")) {
                    if (i + 1 >= args.length) {
                        throw new UsageException("view: option " + arg + " needs a file name");
                    }
                    output = Path.of(once("--output", output == null ? null : output.toString(), args[++i]));
                } else if (arg.startsWith("-")) {
                    throw new UsageException("view: unknown option " + arg + " (view takes LOG and -o FILE)");
                } else if (log == null) {
                    log = Path.of(arg);
                } else {
                    throw new UsageException("view: unexpected argument '" + arg + "': give one log file");
                }
            }
            if (log == null) {
                throw new UsageException("view needs a log file: llmproxy view LOG [-o FILE]");
            }
            return new Command.View(log, output == null ? Report.defaultOutput(log) : output);
        }

        private static String longName(String name) {
            return switch (name) {
                case "-t", "--target-url" -> "--target-url";
                case "-p", "--port" -> "--port";
                case "--ui-port" -> "--ui-port";
                case "--host" -> "--host";
                case "-a", "--add-header" -> "--add-header";
                case "-l", "--log-file" -> "--log-file";
                case "--log-max-body" -> "--log-max-body";
                case "--log-rotate" -> "--log-rotate";
                case "--log-keep" -> "--log-keep";
                case "--allow-host" -> "--allow-host";
                case "--allow-origin" -> "--allow-origin";
                case "--env" -> "--env";
                case "--otlp-endpoint" -> "--otlp-endpoint";
                case "--log-columns" -> "--log-columns";
                case "--log-format" -> "--log-format";
                case "-T", "--timeout" -> "--timeout";
                default -> throw new UsageException("unknown option " + name);
            };
        }

        private static <T> T once(String option, T previous, T value) {
            if (previous != null) {
                throw new UsageException("option " + option + " given twice");
            }
            return value;
        }

        static URI parseTarget(String value) {
            try {
                URI uri = new URI(value);
                String scheme = uri.getScheme() == null ? "" : uri.getScheme().toLowerCase(Locale.ROOT);
                if ((scheme.equals("http") || scheme.equals("https")) && uri.getHost() != null
                        && uri.getRawFragment() == null && uri.getRawUserInfo() == null) {
                    return uri;
                }
            } catch (URISyntaxException e) {
                // reported below, with the value the user gave
            }
            throw new UsageException("--target-url must be an absolute http:// or https:// URL"
                    + " with a host (no user info or #fragment), got '" + value + "'");
        }

        private static String parseEnvName(String value) {
            if (value.matches("[A-Za-z_][A-Za-z0-9_]*")) {
                return value;
            }
            throw new UsageException("--env takes an environment variable name such as OPENAI_BASE_URL, got '" + value + "'");
        }

        private static int parsePort(String option, String value) {
            try {
                int port = Integer.parseInt(value);
                if (port >= 0 && port <= 65535) {
                    return port;
                }
            } catch (NumberFormatException e) {
                // reported below
            }
            throw new UsageException(option + " must be a number from 0 to 65535, got '" + value + "'");
        }

        private static int parseCount(String option, String value) {
            if (value.matches("[0-9]{1,6}") && Integer.parseInt(value) > 0) {
                return Integer.parseInt(value);
            }
            throw new UsageException(option + " must be a whole number from 1 to 999999, got '" + value + "'");
        }

        private static Duration parseMinutes(String value) {
            if (value.matches("[0-9]{1,6}(\\.[0-9]{1,9})?|\\.[0-9]{1,9}")) {
                double minutes = Double.parseDouble(value);
                if (minutes > 0 && minutes <= 525_600) {
                    return Duration.ofNanos(Math.max(1, Math.round(minutes * 60e9)));
                }
            }
            throw new UsageException("--timeout must be a positive number of minutes (up to a year),"
                    + " got '" + value + "'");
        }

        static long parseSize(String option, String value) {
            String digits = value.toLowerCase(Locale.ROOT);
            long unit = 1;
            if (digits.endsWith("k")) {
                unit = 1L << 10;
            } else if (digits.endsWith("m")) {
                unit = 1L << 20;
            } else if (digits.endsWith("g")) {
                unit = 1L << 30;
            }
            if (unit > 1) {
                digits = digits.substring(0, digits.length() - 1);
            }
            if (digits.matches("[0-9]{1,12}")) {
                long size = Long.parseLong(digits) * unit;
                if (size <= Integer.MAX_VALUE - 64) {
                    return size;
                }
            }
            throw new UsageException(option + " must be a size in bytes with an optional k, m or g"
                    + " suffix, below 2g, got '" + value + "'");
        }

        private static InetAddress bindAddress(String host) {
            try {
                return InetAddress.getByName(host);
            } catch (UnknownHostException e) {
                throw new UsageException("--host '" + host + "' is not an address of this machine");
            }
        }
    }

    /** The validated configuration of one proxy. */
    record Config(URI target, InetAddress host, int port, List<AddedHeader> addHeaders, Path logFile,
                  LogFormat logFormat, List<Column> logColumns, boolean logSecrets, boolean logExcelSafe,
                  boolean logBase64, long logMaxBody, long logRotate, int logKeep, Duration timeout,
                  List<String> allowHosts, List<String> allowOrigins, int uiPort, List<String> command,
                  List<String> envNames, Telemetry.Settings otlp) {
        Config {
            if (!target.isAbsolute() || target.getHost() == null) {
                throw new UsageException("--target-url must be an absolute URL, got '" + target + "'");
            }
            if (port < 0 || port > 65535) {
                throw new UsageException("--port must be from 0 to 65535, got " + port);
            }
            if (logMaxBody < 0 || logRotate < 0 || logKeep < 0) {
                throw new UsageException("--log-max-body, --log-rotate and --log-keep must not be negative");
            }
            if (logKeep > 0 && logRotate == 0) {
                throw new UsageException("--log-keep needs --log-rotate: without rotation there are no old files to keep");
            }
            if (logColumns.isEmpty()) {
                throw new UsageException("--log-columns needs at least one column");
            }
            logColumns = List.copyOf(logColumns);
            if (timeout.isNegative() || timeout.isZero()) {
                throw new UsageException("--timeout must be positive");
            }
            addHeaders = List.copyOf(addHeaders);
            allowHosts = List.copyOf(allowHosts);
            allowOrigins = List.copyOf(allowOrigins);
            command = List.copyOf(command);
            envNames = List.copyOf(envNames);
            boolean toStdout = logFile.toString().equals("-"); // the field is not set yet: see logToStdout()
            if (toStdout && (logRotate > 0 || logKeep > 0)) {
                throw new UsageException("--log-rotate and --log-keep do not apply to --log-file - (standard output)");
            }
            if (toStdout && !command.isEmpty()) {
                throw new UsageException("--log-file - cannot share standard output with the command's own output;"
                        + " give a file");
            }
        }

        /** True for --log-file -: records go to standard output. */
        boolean logToStdout() {
            return logFile.toString().equals("-");
        }

        /**
         * The upstream URL for a request: the request's raw path appended to the target's path,
         * and both queries joined. Refuses a path whose {@code ..} segments climb above the target.
         */
        URI upstreamUri(String rawPath, String rawQuery) {
            String base = target.getRawPath() == null ? "" : target.getRawPath();
            while (base.endsWith("/")) {
                base = base.substring(0, base.length() - 1);
            }
            String path = rawPath == null || rawPath.isEmpty() || rawPath.equals("*") ? "/" : rawPath;
            if (!path.startsWith("/")) {
                path = "/" + path;
            }
            requireNoClimb(path);
            String query = target.getRawQuery();
            if (rawQuery != null && !rawQuery.isEmpty()) {
                query = query == null || query.isEmpty() ? rawQuery : query + "&" + rawQuery;
            }
            return URI.create(target.getScheme() + "://" + target.getRawAuthority() + base + path
                    + (query == null ? "" : "?" + query));
        }

        /**
         * Refuses a path whose {@code ..} segments climb above the target as some server on the
         * way may read it: percent-decoded again and again (%252e), backslashes and encoded
         * slashes as separators, overlong UTF-8 dots and slashes, a segment cut at ';' (..;/)
         * or a NUL. The path itself is forwarded as sent: this reading only decides.
         */
        static void requireNoClimb(String rawPath) {
            if (plainPath(rawPath)) {
                return;
            }
            String path = rawPath;
            for (int round = 0; round < 4; round++) {
                String decoded = percentDecode(path);
                if (decoded.equals(path)) {
                    break;
                }
                path = decoded;
            }
            path = path.replace("\u00c0\u00ae", ".").replace("\u00e0\u0080\u00ae", ".")
                    .replace("\u00c0\u00af", "/").replace("\u00e0\u0080\u00af", "/").replace('\\', '/');
            int depth = 0;
            for (String segment : path.split("/", -1)) {
                int end = segment.length();
                for (int i = 0; i < segment.length(); i++) {
                    if (segment.charAt(i) == ';' || segment.charAt(i) == 0) {
                        end = i;
                        break;
                    }
                }
                String name = segment.substring(0, end);
                if (name.equals("..")) {
                    if (--depth < 0) {
                        throw new IllegalArgumentException("path climbs above the target URL with '..'");
                    }
                } else if (!name.equals(".") && !name.isEmpty()) {
                    depth++;
                }
            }
        }

        /** True for a path that cannot spell a dot segment in any way: ASCII, no '.', '%' or '\\'. */
        private static boolean plainPath(String rawPath) {
            for (int i = 0; i < rawPath.length(); i++) {
                char c = rawPath.charAt(i);
                if (c == '.' || c == '%' || c == '\\' || c >= 0x80) {
                    return false;
                }
            }
            return true;
        }

        /** One round of %XX decoding into one char per byte; a malformed escape stays as it is. */
        private static String percentDecode(String text) {
            if (text.indexOf('%') < 0) {
                return text;
            }
            StringBuilder out = new StringBuilder(text.length());
            for (int i = 0; i < text.length(); i++) {
                char c = text.charAt(i);
                int high = c == '%' && i + 2 < text.length() ? Character.digit(text.charAt(i + 1), 16) : -1;
                int low = high >= 0 ? Character.digit(text.charAt(i + 2), 16) : -1;
                if (low >= 0) {
                    out.append((char) (high * 16 + low));
                    i += 2;
                } else {
                    out.append(c);
                }
            }
            return out.toString();
        }
    }

    /** How the log file is written. */
    enum LogFormat {
        CSV, JSONL;

        static LogFormat parse(String value) {
            return switch (value) {
                case "csv" -> CSV;
                case "jsonl" -> JSONL;
                default -> throw new UsageException("--log-format must be csv or jsonl, got '" + value + "'");
            };
        }
    }

    /**
     * One {@code --add-header}: a header set on every upstream request, never logged. A secret
     * one (read from the environment, or a credential header) is also scrubbed from every
     * logged field, error message and stderr line in which its value appears.
     */
    record AddedHeader(String name, String value, boolean secret) {
        @Override
        public String toString() {
            return name + ": [hidden]";
        }

        /**
         * Parses 'Name: Value' and checks at start that the JDK client can send it, so that no
         * request fails on it later. No message shows the value: it may be the key.
         */
        static AddedHeader parse(String spec, UnaryOperator<String> env) {
            int colon = spec.indexOf(':');
            if (colon < 0) {
                throw new UsageException("--add-header needs 'Name: Value', but the value given has no colon"
                        + " (not shown: it may hold a key)");
            }
            String name = spec.substring(0, colon).trim();
            if (!name.matches("[!#$%&'*+.^_`|~0-9A-Za-z-]+")) {
                throw new UsageException("--add-header has an invalid header name: a name is made of letters, digits"
                        + " and !#$%&'*+.^_`|~- only");
            }
            String lower = name.toLowerCase(Locale.ROOT);
            if (HeaderRules.SET_BY_CLIENT.contains(lower)) {
                throw new UsageException("--add-header cannot set " + name + ": Java's HTTP client sets it itself");
            }
            if (HeaderRules.HOP_BY_HOP.contains(lower) || lower.startsWith("sec-websocket-")) {
                throw new UsageException("--add-header cannot set " + name + ": it describes one connection"
                        + " (a hop-by-hop header), and llmproxy never forwards it");
            }
            String raw = spec.substring(colon + 1).trim();
            String value = expand(raw, env);
            for (int i = 0; i < value.length(); i++) {
                char c = value.charAt(i);
                if ((c < 0x20 && c != '\t') || c == 0x7f) {
                    throw new UsageException("--add-header " + name + " has a control character in its value");
                }
                if (c > 0xff) {
                    throw new UsageException("--add-header " + name + " has a character outside Latin-1 in its value"
                            + " (at position " + (i + 1) + "), which HTTP headers cannot carry");
                }
            }
            try {
                HttpRequest.newBuilder().header(name, value);
            } catch (IllegalArgumentException e) {
                // The JDK's message quotes the value: say what is wrong without it.
                throw new UsageException("--add-header " + name + " cannot be sent by Java's HTTP client"
                        + " (restricted name or invalid value)");
            }
            return new AddedHeader(name, value, raw.contains("${") || Secrets.isCredentialHeader(lower));
        }

        /** Replaces each {@code ${VAR}} with the environment variable VAR; unset is an error. */
        static String expand(String value, UnaryOperator<String> env) {
            StringBuilder out = new StringBuilder();
            int i = 0;
            while (true) {
                int open = value.indexOf("${", i);
                if (open < 0) {
                    return out.append(value, i, value.length()).toString();
                }
                int close = value.indexOf('}', open);
                if (close < 0) {
                    throw new UsageException("--add-header value has '${' without a closing '}'");
                }
                String variable = value.substring(open + 2, close);
                String resolved = variable.isEmpty() ? null : env.apply(variable);
                if (resolved == null) {
                    throw new UsageException("--add-header uses ${" + variable + "}, but environment variable '"
                            + variable + "' is not set");
                }
                out.append(value, i, open).append(resolved);
                i = close + 1;
            }
        }
    }

    // --- server ---

    /** A running proxy: the HTTP server, the upstream client, the log writer. Close to stop it. */
    static final class Proxy implements AutoCloseable {
        private final HttpServer server;
        private final ExecutorService handlers;
        private final HttpClient client;
        private final IdleWatchdog watchdog;
        private final LogWriter log;
        private final Forwarder forwarder;
        private final Viewer viewer; // null without --ui-port
        private final Telemetry telemetry; // null without an OTLP endpoint
        private final PrintStream err;
        private boolean stopped;

        private Proxy(HttpServer server, ExecutorService handlers, HttpClient client, IdleWatchdog watchdog,
                      LogWriter log, Forwarder forwarder, Viewer viewer, Telemetry telemetry, PrintStream err) {
            this.viewer = viewer;
            this.telemetry = telemetry;
            this.server = server;
            this.handlers = handlers;
            this.client = client;
            this.watchdog = watchdog;
            this.log = log;
            this.forwarder = forwarder;
            this.err = err;
        }

        /** Seconds that in-flight exchanges get to finish on SIGINT/SIGTERM. */
        static Duration shutdownGrace() {
            return Duration.ofSeconds(Long.getLong("llmproxy.shutdownGrace", 10));
        }

        /**
         * JDK settings read once, when the first server or client is created; a user's -D wins.
         * Without nodelay the last chunk of each response waits for the client's delayed ACK
         * (~40 ms). The client's read buffer stays with each upstream connection for as long as
         * it is open: 16 KB by default, a quarter of an open stream's heap; LLM events fit in 4 KB.
         */
        static void tuneJdkProperties() {
            if (System.getProperty("sun.net.httpserver.nodelay") == null) {
                System.setProperty("sun.net.httpserver.nodelay", "true");
            }
            if (System.getProperty("jdk.httpclient.bufsize") == null) {
                System.setProperty("jdk.httpclient.bufsize", "4096");
            }
        }

        static Proxy start(Config config, PrintStream err) {
            return start(config, System.out, err);
        }

        /** Starts the proxy; {@code out} takes the records with --log-file -. */
        static Proxy start(Config config, PrintStream out, PrintStream err) {
            Limits limits = Limits.fromSystem();
            if (System.getProperty("jdk.httpserver.maxConnections") == null && limits.maxConnections() > 0) {
                System.setProperty("jdk.httpserver.maxConnections", String.valueOf(limits.maxConnections()));
            }
            return start(config, limits, out, err);
        }

        static Proxy start(Config config, Limits limits, PrintStream err) {
            return start(config, limits, System.out, err);
        }

        static Proxy start(Config config, Limits limits, PrintStream out, PrintStream err) {
            tuneJdkProperties();
            Threads threads = Threads.fromSystem();
            LogMemory memory = LogMemory.fromSystem();
            LogWriter log = LogWriter.open(config, memory, out, err);
            HttpServer server;
            try {
                server = HttpServer.create(new InetSocketAddress(config.host(), config.port()), 1024);
            } catch (BindException e) {
                log.close();
                throw new StartupException("cannot listen on " + hostPort(config.host(), config.port()) + ": "
                        + e.getMessage() + " (is another process using the port? --port 0 picks a free one)");
            } catch (IOException e) {
                log.close();
                throw new StartupException("cannot listen on " + hostPort(config.host(), config.port()) + ": " + e);
            }
            boolean https = config.target().getScheme().equalsIgnoreCase("https");
            HttpClient.Builder clientBuilder = HttpClient.newBuilder();
            if (!https) {
                clientBuilder.sslContext(PlainHttpOnly.CONTEXT).sslParameters(new SSLParameters());
            }
            HttpClient client = clientBuilder
                    .version(https ? HttpClient.Version.HTTP_2 : HttpClient.Version.HTTP_1_1)
                    .followRedirects(HttpClient.Redirect.NEVER)
                    .connectTimeout(config.timeout())
                    // The client's follow-up tasks run on the thread that triggers them instead of
                    // being handed to a pool: a third less CPU per request. None of them blocks:
                    // ofInputStream only offers to its lock-step queue, and RequestBody pushes
                    // from its own thread.
                    .executor(Runnable::run)
                    .build();
            Viewer viewer;
            try {
                viewer = config.uiPort() < 0 ? null : Viewer.start(config);
            } catch (StartupException e) {
                server.stop(0);
                log.close();
                throw e;
            }
            Telemetry telemetry = config.otlp() == null ? null : new Telemetry(config.otlp(), config, err);
            IdleWatchdog watchdog = new IdleWatchdog(config.timeout());
            ExecutorService handlers = Executors.newThreadPerTaskExecutor(threads.factory("llmproxy-exchange-"));
            Forwarder forwarder = new Forwarder(config, limits.maxExchanges(), memory, client, watchdog, log,
                    Access.of(config), new Secrets(!config.logSecrets(), config.addHeaders()),
                    threads.factory("llmproxy-upload-"), viewer, telemetry);
            server.createContext("/", forwarder::handle);
            server.setExecutor(handlers);
            server.start();
            Proxy proxy = new Proxy(server, handlers, client, watchdog, log, forwarder, viewer, telemetry, err);
            InetAddress host = config.host();
            err.println("llmproxy " + VERSION + " listening on http://" + hostPort(host, proxy.port())
                    + " -> " + Secrets.maskQuery(config.target().toString()) + ", logging to "
                    + (config.logToStdout() ? "standard output" : config.logFile().toAbsolutePath())
                    + ", up to " + limits.maxExchanges() + " exchanges at once on " + threads.describe());
            if (viewer != null) {
                err.println("llmproxy: live viewer at http://127.0.0.1:" + viewer.port() + "/ (loopback only)");
            }
            if (config.otlp() != null) {
                err.println("llmproxy: sending a span per exchange to " + Secrets.maskQuery(config.otlp().endpoint().toString())
                        + (config.otlp().content() ? ", messages included" : ", without messages (--otlp-content)"));
            }
            exposureWarning(host).ifPresent(err::println);
            if (config.allowOrigins().contains("*")) {
                err.println("llmproxy: WARNING: --allow-origin * lets every web page you visit send requests through"
                        + " llmproxy with your --add-header values (your API key)");
            }
            return proxy;
        }

        /** What a user must hear before exposing the proxy beyond this machine; nothing for loopback. */
        static Optional<String> exposureWarning(InetAddress host) {
            if (host.isLoopbackAddress()) {
                return Optional.empty();
            }
            return Optional.of("llmproxy: WARNING: listening on " + host.getHostAddress() + ", not loopback: anyone"
                    + " who can reach this port uses the --add-header values (your API key) and can read your traffic");
        }

        int port() {
            return server.getAddress().getPort();
        }

        /** The live viewer's port, or -1 without --ui-port. */
        int viewerPort() {
            return viewer == null ? -1 : viewer.port();
        }

        /** Exchanges being forwarded now (refused ones are not counted). */
        int inFlight() {
            return forwarder.inFlight.get();
        }

        /** Stops accepting, gives in-flight exchanges up to {@code grace} to finish, then drains the log. */
        synchronized void shutdown(Duration grace) {
            if (stopped) {
                return;
            }
            stopped = true;
            forwarder.closing = true;
            int inFlight = forwarder.inFlight.get();
            if (inFlight > 0) {
                err.println("llmproxy: stopping; waiting up to " + Durations.format(grace) + " for "
                        + inFlight + " exchanges in flight");
            }
            // JDK 21's stop(n) waits the whole n seconds when nothing is in flight.
            server.stop(inFlight == 0 ? 0 : (int) Math.max(1, grace.toSeconds()));
            client.shutdownNow();
            watchdog.close();
            handlers.shutdown();
            try {
                if (!handlers.awaitTermination(5, TimeUnit.SECONDS)) {
                    err.println("llmproxy: some exchanges did not end within 5 s of shutdown");
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            log.close();
            if (viewer != null) {
                viewer.close();
            }
            if (telemetry != null) {
                telemetry.close();
            }
            err.println("llmproxy: stopped; " + log.written() + " records written to " + log.file());
        }

        /** Ends every exchange now (their records say shutdown) and writes the queued records. */
        void shutdownNow() {
            forwarder.closing = true;
            server.stop(0);
            client.shutdownNow();
            handlers.shutdown();
            try {
                handlers.awaitTermination(2, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            log.close();
        }

        @Override
        public void close() {
            shutdown(Duration.ZERO);
        }

        static String hostPort(InetAddress host, int port) {
            String address = host.getHostAddress();
            return (address.indexOf(':') >= 0 ? "[" + address + "]" : address) + ":" + port;
        }
    }

    /**
     * Which threads serve exchanges. Virtual threads, except on JDK 21 to 23: there the JDK
     * server's streams block inside synchronized methods, where a virtual thread pins its
     * carrier, so as many stalled clients as cores would freeze every other stream (JEP 491
     * ends that in JDK 24). -Dllmproxy.threads=virtual or platform chooses.
     */
    record Threads(boolean virtual, String reason) {
        static Threads fromSystem() {
            return choose(Runtime.version().feature(), System.getProperty("llmproxy.threads"));
        }

        static Threads choose(int jdkFeature, String property) {
            if (property != null) {
                return switch (property) {
                    case "virtual" -> new Threads(true, "-Dllmproxy.threads=virtual");
                    case "platform" -> new Threads(false, "-Dllmproxy.threads=platform");
                    default -> throw new StartupException("-Dllmproxy.threads must be virtual or platform, got '"
                            + property + "'");
                };
            }
            return jdkFeature >= 24 ? new Threads(true, "JDK " + jdkFeature)
                    : new Threads(false, "JDK " + jdkFeature + ": its virtual threads pin in the JDK server's locks");
        }

        /** New threads named prefix + a counter; platform ones are daemons with a modest stack. */
        java.util.concurrent.ThreadFactory factory(String prefix) {
            return virtual ? Thread.ofVirtual().name(prefix, 0).factory()
                    : Thread.ofPlatform().name(prefix, 0).daemon(true).stackSize(512 * 1024).factory();
        }

        String describe() {
            return (virtual ? "virtual" : "platform") + " threads (" + reason + ")";
        }
    }

    /**
     * The TLS context of a client that only speaks to an http:// target. The JDK client wants
     * one even then, and building the default one (TLS provider, cipher suites, the whole
     * certificate store) took half of llmproxy's start-up time. This one refuses all TLS work.
     */
    static final class PlainHttpOnly extends SSLContext {
        static final SSLContext CONTEXT = new PlainHttpOnly();

        private PlainHttpOnly() {
            super(new Refusing(), new NoProvider(), "none");
        }

        /** Every operation is a TLS connection that an http:// target never makes. */
        private static final class Refusing extends SSLContextSpi {
            private static UnsupportedOperationException refused() {
                return new UnsupportedOperationException("llmproxy speaks plain HTTP to its http:// target");
            }

            @Override
            protected void engineInit(KeyManager[] km, TrustManager[] tm, SecureRandom random) {
                throw refused();
            }

            @Override
            protected SSLSocketFactory engineGetSocketFactory() {
                throw refused();
            }

            @Override
            protected SSLServerSocketFactory engineGetServerSocketFactory() {
                throw refused();
            }

            @Override
            protected SSLEngine engineCreateSSLEngine() {
                throw refused();
            }

            @Override
            protected SSLEngine engineCreateSSLEngine(String host, int port) {
                throw refused();
            }

            @Override
            protected SSLSessionContext engineGetServerSessionContext() {
                throw refused();
            }

            @Override
            protected SSLSessionContext engineGetClientSessionContext() {
                throw refused();
            }
        }

        /** The provider an SSLContext must name. */
        private static final class NoProvider extends Provider {
            @Serial
            private static final long serialVersionUID = 1L;

            NoProvider() {
                super("llmproxy-plain-http", "1", "no TLS: the target is http://");
            }
        }
    }

    /**
     * How many exchanges may run at once, and how many client connections the server keeps.
     * Past the first, new exchanges get a 503 instead of slowing every stream or exhausting the
     * heap; past the second the server resets new connections. Both follow the heap size (-Xmx)
     * and the open-file limit, so a small heap or a low ulimit is still safe; each can be set
     * with -Dllmproxy.maxExchanges and -Djdk.httpserver.maxConnections.
     */
    record Limits(int maxExchanges, int maxConnections) {
        /** Heap an open stream holds, measured at ~61 KB (make bench, heap part), plus room for the collector. */
        static final long HEAP_PER_EXCHANGE = 128 * 1024;
        /** Heap a connection holds in the JDK server (its buffers) while it waits for an answer. */
        static final long HEAP_PER_CONNECTION = 16 * 1024;
        /** Heap the proxy needs before its first exchange. */
        static final long BASE_HEAP = 24L << 20;
        /** File descriptors kept for the JVM, the log, and the like. */
        static final long RESERVED_FILES = 256;

        static Limits fromSystem() {
            long heap = Math.max(0, Runtime.getRuntime().maxMemory() - BASE_HEAP);
            long files = openFileLimit();
            // Half the heap for open exchanges; each also holds two sockets (client and upstream),
            // and a tenth of the descriptors stays free for connections that are to get a 503.
            long byHeap = heap / 2 / HEAP_PER_EXCHANGE;
            long byFiles = files > 0 ? (files - RESERVED_FILES) * 45 / 100 : Integer.MAX_VALUE;
            int maxExchanges = Integer.getInteger("llmproxy.maxExchanges", (int) Math.max(1, Math.min(byHeap, byFiles)));
            // A quarter of the heap for connections waiting for their 503: a burst of them must not
            // fill the heap, or the JDK's own threads die of OutOfMemoryError.
            long connectionsByHeap = maxExchanges + heap / 4 / HEAP_PER_CONNECTION;
            long connectionsByFiles = files > 0 ? files - RESERVED_FILES - maxExchanges : Integer.MAX_VALUE;
            int maxConnections = (int) Math.max(1, Math.min(connectionsByHeap, connectionsByFiles));
            return new Limits(maxExchanges, maxConnections);
        }

        /** The soft limit on open files from /proc, or -1 where that cannot be read. */
        private static long openFileLimit() {
            try {
                for (String line : Files.readAllLines(Path.of("/proc/self/limits"))) {
                    if (line.startsWith("Max open files")) {
                        String soft = line.substring("Max open files".length()).trim().split("\\s+")[0];
                        return soft.equals("unlimited") ? -1 : Long.parseLong(soft);
                    }
                }
            } catch (IOException | RuntimeException e) {
                // not Linux: rely on the heap limit alone
            }
            return -1;
        }
    }

    /**
     * Heap that bodies kept for the log may hold at once: the captures of exchanges in flight
     * and the records waiting for the writer. Captures take from it as they grow and the writer
     * gives back what each record held once it is written. When it is spent, captures stop
     * keeping bytes (the client still gets every one) and new exchanges get a 503, so that no
     * burst of large prompts can run the heap out. -Dllmproxy.logMemory=SIZE sets it.
     */
    static final class LogMemory {
        /** For a writer or capture on their own (tests, tools): counts, never refuses. */
        static final LogMemory UNLIMITED = new LogMemory(Long.MAX_VALUE);

        private final long limit;
        private final AtomicLong used = new AtomicLong();

        LogMemory(long limit) {
            this.limit = limit;
        }

        /** Two fifths of the heap beyond what the proxy needs to run, unless -Dllmproxy.logMemory says. */
        static LogMemory fromSystem() {
            String property = System.getProperty("llmproxy.logMemory");
            if (property != null) {
                try {
                    return new LogMemory(Cli.parseSize("-Dllmproxy.logMemory", property));
                } catch (UsageException e) {
                    throw new StartupException(e.getMessage());
                }
            }
            long heap = Math.max(0, Runtime.getRuntime().maxMemory() - Limits.BASE_HEAP);
            return new LogMemory(Math.max(4L << 20, heap * 2 / 5));
        }

        /** Takes {@code bytes} if they fit; false, taking nothing, if they do not. */
        boolean take(long bytes) {
            if (limit == Long.MAX_VALUE) {
                used.addAndGet(bytes);
                return true;
            }
            while (true) {
                long now = used.get();
                if (now + bytes > limit || now + bytes < 0) {
                    return false;
                }
                if (used.compareAndSet(now, now + bytes)) {
                    return true;
                }
            }
        }

        void give(long bytes) {
            used.addAndGet(-bytes);
        }

        /** True when a new exchange must wait: bodies already hold all of it. */
        boolean spent() {
            return used.get() >= limit;
        }

        long used() {
            return used.get();
        }

        long limit() {
            return limit;
        }
    }

    /** The heap: settled to what is live once the proxy serves, and given back after idle time. */
    static final class Heap {
        private Heap() {}

        /**
         * The JVM starts with a heap of 1/64 of the machine's memory (384 MB of 24 GB) and lets the
         * young generation fill most of it before it first collects: resident memory the proxy never
         * needs. One full collection just after start, while a few megabytes are live, shrinks the
         * heap to what is live (MaxHeapFreeRatio); from there it grows with the load. After a burst
         * the collector would keep what it grew to for good: once the proxy has been idle for
         * -Dllmproxy.heapIdleSeconds (30; 0 leaves the heap alone) it collects concurrently and gives
         * the rest back (G1's periodic collection, which a program may switch on as it runs). A
         * thread of its own, so that nothing waits for it; it pauses the proxy for a few milliseconds.
         */
        static void settle() {
            long idleSeconds = Long.getLong("llmproxy.heapIdleSeconds", 30);
            Thread.ofPlatform().daemon(true).name("llmproxy-settle-heap").start(() -> {
                System.gc();
                if (idleSeconds <= 0) {
                    return;
                }
                // The management classes take ~20 ms to load: not while the first requests are served.
                LockSupport.parkNanos(TimeUnit.SECONDS.toNanos(5));
                try {
                    var hotspot = java.lang.management.ManagementFactory.getPlatformMXBean(
                            com.sun.management.HotSpotDiagnosticMXBean.class);
                    if (hotspot.getVMOption("G1PeriodicGCInterval").getValue().equals("0")) { // a user's own value wins
                        hotspot.setVMOption("G1PeriodicGCInterval", String.valueOf(idleSeconds * 1000));
                    }
                } catch (RuntimeException | LinkageError e) {
                    // not HotSpot, or a JVM without the option: the heap stays as its collector leaves it
                }
            });
        }
    }

    // --- access ---

    /**
     * Which requests may use the proxy. Any web page the user visits can send requests to
     * 127.0.0.1 (CSRF), and a page whose own name now resolves to 127.0.0.1 (DNS rebinding) can
     * even read the answers: both would spend the key that --add-header injects. Browsers
     * always say who asks: Host carries the name the page used, Origin the page itself. So a
     * request is served only when its Host names this proxy and its Origin, when it has one, is
     * a page on this machine or one allowed with --allow-origin.
     */
    static final class Access {
        // Compiled once: the Host check runs on every request.
        private static final java.util.regex.Pattern IPV4 =
                java.util.regex.Pattern.compile("[0-9]{1,3}(\\.[0-9]{1,3}){3}");
        private static final java.util.regex.Pattern PORT = java.util.regex.Pattern.compile(":[0-9]{1,5}");
        private static final java.util.regex.Pattern IPV6 = java.util.regex.Pattern.compile("[0-9a-f:.]+");

        private final Set<String> hosts; // lower case, without port or brackets
        private final boolean loopbackNames;
        private final Set<String> origins; // lower case scheme://host[:port]
        private final boolean anyOrigin;
        /** Host headers already found to name the proxy: a client sends the same one every time. */
        private final Set<String> allowedHostHeaders = ConcurrentHashMap.newKeySet();

        Access(Set<String> hosts, boolean loopbackNames, Set<String> origins) {
            this.hosts = Set.copyOf(hosts);
            this.loopbackNames = loopbackNames;
            this.anyOrigin = origins.contains("*");
            this.origins = Set.copyOf(origins);
        }

        /** The names this proxy answers to: loopback names on a loopback bind, else its addresses and names. */
        static Access of(Config config) {
            Set<String> hosts = new HashSet<>(config.allowHosts());
            InetAddress bind = config.host();
            boolean loopback = bind.isLoopbackAddress() || bind.isAnyLocalAddress();
            if (!bind.isLoopbackAddress()) {
                hosts.add(bare(bind.getHostAddress()));
                try {
                    if (bind.isAnyLocalAddress()) {
                        for (var nic : java.util.Collections.list(java.net.NetworkInterface.getNetworkInterfaces())) {
                            for (InetAddress address : java.util.Collections.list(nic.getInetAddresses())) {
                                hosts.add(bare(address.getHostAddress()));
                            }
                        }
                    }
                    String name = InetAddress.getLocalHost().getHostName().toLowerCase(Locale.ROOT);
                    hosts.add(name);
                    hosts.add(name.split("\\.", 2)[0]);
                    hosts.add(InetAddress.getLocalHost().getCanonicalHostName().toLowerCase(Locale.ROOT));
                } catch (IOException e) {
                    // the addresses above, the loopback names and --allow-host still hold
                }
            }
            return new Access(hosts, loopback, new HashSet<>(config.allowOrigins()));
        }

        /** An --allow-host value: a host name or address, without scheme, port or path. */
        static String parseAllowedHost(String value) {
            String host = bare(value.trim().toLowerCase(Locale.ROOT));
            if (host.isEmpty() || !host.matches("[a-z0-9._:%-]+") || host.contains("..")) {
                throw new UsageException("--allow-host takes a host name or address such as my-box.local or"
                        + " 192.168.1.5, without scheme, port or path; got '" + value + "'");
            }
            return host;
        }

        /** An --allow-origin value: * or scheme://host[:port], as a browser sends it in Origin. */
        static String parseAllowedOrigin(String value) {
            String origin = value.trim().toLowerCase(Locale.ROOT);
            while (origin.endsWith("/")) {
                origin = origin.substring(0, origin.length() - 1);
            }
            if (origin.equals("*") || origin.matches("https?://[a-z0-9._-]+(:[0-9]{1,5})?|https?://\\[[0-9a-f:.]+](:[0-9]{1,5})?")) {
                return origin;
            }
            throw new UsageException("--allow-origin takes * or an origin as browsers send it, scheme://host[:port]"
                    + " such as http://localhost:5173 (no path); got '" + value + "'");
        }

        /**
         * Null when the request may pass, else why not (for its 403 and its record).
         *
         * @param host the Host header, or null for an HTTP/1.0 request without one (no browser sends that)
         * @param absolute the request line's URI when in absolute form, else null
         * @param origin the Origin header, or null
         * @param fetchSite the Sec-Fetch-Site header, or null
         */
        String refusal(String host, URI absolute, String origin, String fetchSite) {
            if (host != null && !allowedHostHeaders.contains(host)) {
                if (!allowedHost(hostOf(host))) {
                    return refusedHost(host);
                }
                if (allowedHostHeaders.size() < KNOWN_LIMIT) {
                    allowedHostHeaders.add(host);
                }
            }
            if (absolute != null && absolute.getHost() != null && !allowedHost(bare(absolute.getHost().toLowerCase(Locale.ROOT)))) {
                return "the request names host '" + abbreviate(absolute.getHost()) + "', not this proxy";
            }
            if (origin != null) {
                if (!allowedOrigin(origin.trim().toLowerCase(Locale.ROOT))) {
                    return "requests from web pages at '" + abbreviate(origin) + "' are refused: only pages on this"
                            + " machine may use the proxy, others with --allow-origin ORIGIN";
                }
            } else if (fetchSite != null && fetchSite.trim().equalsIgnoreCase("cross-site") && !anyOrigin) {
                return "a browser sent this request from another site's page; only pages on this machine may use the proxy";
            }
            return null;
        }

        /** How many distinct allowed Host headers are remembered; beyond it each is checked afresh. */
        private static final int KNOWN_LIMIT = 64;

        private static String refusedHost(String host) {
            return "Host '" + abbreviate(host) + "' does not name this proxy: a web page may be trying to use it"
                    + " (DNS rebinding); a name of your own is allowed with --allow-host NAME";
        }

        private boolean allowedHost(String host) {
            return hosts.contains(host) || (loopbackNames && isLoopbackName(host));
        }

        private boolean allowedOrigin(String origin) {
            if (anyOrigin || origins.contains(origin)) {
                return true;
            }
            int scheme = origin.indexOf("://");
            if (scheme < 0 || !(origin.startsWith("http://") || origin.startsWith("https://"))) {
                return false; // "null" (a file, a sandboxed frame) and other schemes
            }
            String authority = origin.substring(scheme + 3);
            return !authority.contains("/") && !authority.contains("@") && isLoopbackName(hostOf(authority));
        }

        /** localhost, any 127.x.y.z, or ::1, written as a literal: never looked up. */
        static boolean isLoopbackName(String host) {
            if (host.equals("localhost") || host.equals("0:0:0:0:0:0:0:1")) {
                return true;
            }
            if (IPV4.matcher(host).matches() && host.startsWith("127.")) {
                for (String part : host.split("\\.")) {
                    if (Integer.parseInt(part) > 255) {
                        return false;
                    }
                }
                return true;
            }
            return false;
        }

        /** The host of "host", "host:port", "[v6]" or "[v6]:port", lower case, without a trailing dot. */
        static String hostOf(String authority) {
            String a = authority.trim().toLowerCase(Locale.ROOT);
            if (a.startsWith("[")) {
                int close = a.indexOf(']');
                String rest = close < 0 ? "?" : a.substring(close + 1);
                return close < 0 || !(rest.isEmpty() || PORT.matcher(rest).matches()) ? "" : bare(a.substring(0, close + 1));
            }
            int colon = a.lastIndexOf(':');
            if (colon >= 0) {
                if (a.indexOf(':') != colon || !PORT.matcher(a.substring(colon)).matches()) {
                    return "";
                }
                a = a.substring(0, colon);
            }
            return bare(a);
        }

        /** Without brackets, zone or trailing dot; an IPv6 literal in one spelling (::1 as 0:0:0:0:0:0:0:1). */
        private static String bare(String host) {
            String h = host.startsWith("[") && host.endsWith("]") ? host.substring(1, host.length() - 1) : host;
            int zone = h.indexOf('%');
            h = zone >= 0 ? h.substring(0, zone) : h;
            if (h.indexOf(':') >= 0 && IPV6.matcher(h).matches()) {
                try {
                    return InetAddress.getByName(h).getHostAddress(); // a literal: no lookup
                } catch (UnknownHostException e) {
                    return "";
                }
            }
            return h.endsWith(".") ? h.substring(0, h.length() - 1) : h;
        }

        private static String abbreviate(String text) {
            String printable = text.replaceAll("[^\\x20-\\x7e]", "?");
            return printable.length() > 100 ? printable.substring(0, 100) + "…" : printable;
        }
    }

    // --- forwarding ---

    /** Handles one exchange: builds the upstream request, streams the answer back, records it. */
    static final class Forwarder {
        /**
         * Copy-loop buffer sizes. A stream of small events keeps a small buffer for its whole
         * life; a read that fills the buffer doubles it, up to the JDK client's own buffer size.
         */
        private static final int FIRST_BUFFER = 2048;
        private static final int MAX_BUFFER = 16 * 1024;

        private final Config config;
        /** Client headers never forwarded as they are: computed once, not per request. */
        private final Set<String> requestDropped;
        private final int maxExchanges;
        private final LogMemory memory;
        private final HttpClient client;
        private final IdleWatchdog watchdog;
        private final LogWriter log;
        private final Access access;
        private final Secrets secrets;
        /** Threads that stream request bodies upstream: of the same kind as the exchanges'. */
        private final java.util.concurrent.ThreadFactory uploads;
        /** The live viewer, told of each exchange as it starts and ends; null without --ui-port. */
        private final Viewer viewer;
        /** The OTLP exporter, told of each finished exchange; null without an endpoint. */
        private final Telemetry telemetry;
        final AtomicInteger inFlight = new AtomicInteger();
        /** How many paths' upstream URIs are kept; beyond it each is parsed afresh. */
        private static final int KNOWN_PATHS = 256;
        private final Map<String, URI> upstreamUris = new ConcurrentHashMap<>();
        /** Told to each record: shutdown, not a peer, ended the exchanges cut after it began. */
        private final BooleanSupplier shuttingDown = () -> this.closing;
        /** Record ids: a random prefix per run, then a counter, e.g. 3f9a2c1e-42. */
        private final String idPrefix = String.format("%08x-", ThreadLocalRandom.current().nextInt());
        private final AtomicLong ids = new AtomicLong();
        volatile boolean closing;

        Forwarder(Config config, int maxExchanges, LogMemory memory, HttpClient client, IdleWatchdog watchdog,
                  LogWriter log, Access access, Secrets secrets, java.util.concurrent.ThreadFactory uploads, Viewer viewer,
                  Telemetry telemetry) {
            this.config = config;
            this.requestDropped = HeaderRules.requestDropped(config.addHeaders());
            this.maxExchanges = maxExchanges;
            this.memory = memory;
            this.client = client;
            this.watchdog = watchdog;
            this.log = log;
            this.access = access;
            this.secrets = secrets;
            this.uploads = uploads;
            this.viewer = viewer;
            this.telemetry = telemetry;
        }

        /** How the client's response ends. */
        enum Ending {
            /** The response is complete: the server ends it cleanly and may keep the connection. */
            ANSWERED,
            /** The response is cut short: the connection is dropped so the client sees it unfinished. */
            CUT
        }

        /** One exchange as the forwarder handles it: the server's exchange, its record, the client's body and waits. */
        private record Call(HttpExchange exchange, Record.Builder record, RequestBody body, IdleWatchdog.ClientWait client,
                            TraceContext trace) {}

        void handle(HttpExchange exchange) {
            Record.Builder record = new Record.Builder(idPrefix + ids.incrementAndGet(), exchange.getRequestMethod(),
                    clientUrl(exchange), exchange.getRequestURI(), config.logMaxBody(), memory, shuttingDown);
            var headers = exchange.getRequestHeaders();
            record.requestHeaders = headers;
            record.responseHeaders = exchange.getResponseHeaders();
            String requestEncoding = headers.getFirst("Content-Encoding");
            record.requestEncoding = requestEncoding == null ? "" : requestEncoding;
            IdleWatchdog.ClientWait client = watchdog.clientWait();
            RequestBody body = new RequestBody(exchange.getRequestBody(), record.requestBody, watchdog, client, uploads);
            Call call = new Call(exchange, record, body, client,
                    telemetry == null ? null : TraceContext.of(headers.getFirst("traceparent")));
            if (viewer != null) {
                viewer.started(record);
            }
            URI requested = exchange.getRequestURI();
            String refusal = access.refusal(headers.getFirst("Host"), requested.isAbsolute() ? requested : null,
                    headers.getFirst("Origin"), headers.getFirst("Sec-Fetch-Site"));
            try {
                Ending ending = run(call, refusal);
                if (ending == Ending.CUT) {
                    // Ending the handler by exception makes the server drop the connection without the
                    // final empty chunk, so the client sees a cut stream instead of a clean end.
                    throw new TruncatedResponse();
                }
                // Closing reads what is left of the request body (the server's drain): bounded too.
                client.call(() -> {
                    exchange.close();
                    return null;
                });
            } catch (IOException e) {
                // the connection is closed; the record is already written
            } finally {
                client.close();
            }
        }

        /** Answers, refuses or forwards the exchange, and always hands its record to the log. */
        private Ending run(Call call, String refusal) {
            Record.Builder record = call.record();
            RequestBody body = call.body();
            boolean counted = false;
            Ending ending = Ending.ANSWERED;
            try {
                if (refusal != null) {
                    body.drainForLog(RequestBody.SMALL);
                    ending = answerError(call, 403, "llmproxy_forbidden", Record.Outcome.REJECTED, refusal);
                } else if (closing) {
                    body.drainForLog(RequestBody.SMALL);
                    call.exchange().getResponseHeaders().set("Connection", "close");
                    ending = answerError(call, 503, "llmproxy_shutdown", Record.Outcome.SHUTDOWN,
                            "llmproxy is shutting down and takes no new requests");
                } else if (inFlight.incrementAndGet() > maxExchanges) {
                    inFlight.decrementAndGet(); // a refused request holds no slot while it drains
                    ending = refuse(call, "llmproxy is at its limit of " + maxExchanges + " exchanges at once; retry"
                            + " shortly (the limit follows the heap size, -Xmx, or -Dllmproxy.maxExchanges)");
                } else if (memory.spent() || !record.requestBody.takeAhead(
                        HeaderRules.requestBodyLength(call.exchange().getRequestHeaders()))) {
                    inFlight.decrementAndGet();
                    ending = refuse(call, "llmproxy's memory for log bodies is full (" + (memory.used() >> 20) + " of "
                            + (memory.limit() >> 20) + " MB, held by exchanges in flight and records being written);"
                            + " retry shortly (-Xmx, or -Dllmproxy.logMemory)");
                } else {
                    counted = true;
                    ending = forward(call);
                }
            } catch (Exception e) {
                // A response already under way can only be cut; otherwise the client gets an answer.
                ending = record.status != 0 ? Ending.CUT : answerError(call, 500,
                        "llmproxy_internal_error", Record.Outcome.UPSTREAM_ERROR, "internal error: " + e);
            } catch (Error e) {
                // Out of memory, say: answering could fail again. The server closes a connection
                // whose handler ends by exception, but not one whose handler ends by an Error.
                record.fail(Record.Outcome.UPSTREAM_ERROR, "internal error: " + e);
                ending = Ending.CUT;
            } finally {
                // First, before anything that can throw (even OutOfMemoryError): a lost slot is lost for good.
                if (counted) {
                    inFlight.decrementAndGet();
                }
                body.close();
                Record finished = record.finish();
                log.submit(finished);
                if (viewer != null) {
                    viewer.finished(finished);
                }
                if (telemetry != null) {
                    telemetry.finished(finished, call.trace());
                }
            }
            return ending;
        }

        /** Answers 503 when the proxy is at one of its limits. */
        private Ending refuse(Call call, String why) {
            call.body().drainForLog(RequestBody.SMALL);
            call.exchange().getResponseHeaders().set("Retry-After", "1");
            call.exchange().getResponseHeaders().set("Connection", "close"); // an idle keep-alive slot is what we lack
            return answerError(call, 503, "llmproxy_overloaded", Record.Outcome.REJECTED, why);
        }

        /** The upstream URI for a request; those of paths without a query are parsed once (a few are used again and again). */
        private URI upstreamUri(URI requested) {
            String rawPath = requested.getRawPath();
            if (requested.getRawQuery() != null || rawPath == null) {
                return config.upstreamUri(rawPath, requested.getRawQuery());
            }
            URI known = upstreamUris.get(rawPath);
            if (known == null) {
                known = config.upstreamUri(rawPath, null);
                if (upstreamUris.size() < KNOWN_PATHS) {
                    upstreamUris.put(rawPath, known);
                }
            }
            return known;
        }

        /** Runs the exchange; says how the client's response must end. */
        private Ending forward(Call call) throws IOException {
            HttpExchange exchange = call.exchange();
            Record.Builder record = call.record();
            RequestBody body = call.body();
            String method = exchange.getRequestMethod();
            URI requested = exchange.getRequestURI();
            if (method.equals("CONNECT")) {
                return answerError(call, 405, "llmproxy_bad_request", Record.Outcome.REJECTED,
                        "CONNECT is not supported: llmproxy is a reverse proxy for --target-url, not a forward proxy");
            }
            String upgrade = exchange.getRequestHeaders().getFirst("Upgrade");
            if (upgrade != null && upgrade.toLowerCase(Locale.ROOT).contains("websocket")) {
                // 426 is the answer that WebSocket-first clients (Codex) take as final: they fall
                // back to HTTP streaming at once instead of retrying the upgrade.
                return answerError(call, 426, "llmproxy_websocket_unsupported", Record.Outcome.REJECTED,
                        "llmproxy relays HTTP only, not WebSocket; send this request as HTTP (streaming with SSE)");
            }
            URI upstream;
            try {
                upstream = upstreamUri(requested);
            } catch (IllegalArgumentException e) {
                return answerError(call, 400, "llmproxy_bad_request", Record.Outcome.REJECTED, e.getMessage());
            }
            record.upstreamUrl = upstream.toString();
            HttpRequest request;
            try {
                request = buildRequest(exchange, upstream, body, call.trace());
            } catch (IllegalArgumentException e) {
                return answerError(call, 400, "llmproxy_bad_request", Record.Outcome.REJECTED,
                        "cannot forward this request: " + e.getMessage());
            } catch (IOException e) {
                return clientBodyFailed(call);
            }

            HttpResponse<InputStream> response;
            try {
                response = send(request, body);
            } catch (HttpTimeoutException e) {
                if (!body.ended()) {
                    // The upstream waited for the rest of a body the client is still sending: the
                    // client stalled, not the upstream. Its socket is closed; it gets no answer.
                    body.stopReading();
                    return clientBodyFailed(call);
                }
                return answerError(call, 504, "llmproxy_upstream_timeout", Record.Outcome.TIMEOUT,
                        "no response headers from " + config.target().getHost() + " within "
                                + Durations.format(config.timeout()) + " (--timeout)");
            } catch (IOException e) {
                if (body.clientFailed()) {
                    return clientBodyFailed(call);
                }
                body.drainForLog(Long.MAX_VALUE); // the record keeps the prompt the upstream never got
                String host = config.target().getHost();
                String what = e instanceof ConnectException ? "cannot reach " + host
                        : isTls(e) ? "TLS with " + host + " failed (its certificate must be valid for " + host
                                + " and trusted by this JVM: its cacerts, or -Djavax.net.ssl.trustStore)"
                        : host + " failed before answering";
                return answerError(call, 502, "llmproxy_upstream_error", Record.Outcome.UPSTREAM_ERROR,
                        what + ": " + Durations.describe(e));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                body.drainForLog(RequestBody.SMALL);
                return answerError(call, 503, "llmproxy_shutdown", Record.Outcome.SHUTDOWN,
                        "llmproxy is shutting down");
            }
            try (InputStream upstreamBody = response.body()) {
                return relay(call, response, upstreamBody);
            }
        }

        private static boolean isTls(Throwable e) {
            for (Throwable t = e; t != null; t = t.getCause()) {
                if (t instanceof javax.net.ssl.SSLException) {
                    return true;
                }
            }
            return false;
        }

        /** The client's request body failed or stalled: there is no one left to answer. */
        private Ending clientBodyFailed(Call call) {
            RequestBody body = call.body();
            if (body.timedOut()) {
                call.record().fail(Record.Outcome.TIMEOUT, "the client's request body stalled: "
                        + body.clientError() + "; received " + call.record().requestBody.total() + " bytes");
            } else {
                call.record().fail(Record.Outcome.CLIENT_CLOSED, "client stopped sending the request body: "
                        + body.clientError());
            }
            return Ending.CUT;
        }

        /** How soon a failure on a reused connection must come for the request to be sent again. */
        private static final long STALE_CONNECTION_NANOS = TimeUnit.MILLISECONDS.toNanos(500);
        /**
         * What the JDK client says when a pooled connection was closed as it was reused. It has
         * no exception type of its own; a test fails loudly if a JDK says it otherwise.
         */
        static final String STALE_CONNECTION_MESSAGE = "received no bytes";

        /**
         * Sends the request. The JDK client resends a request that met a pooled connection the
         * upstream had just closed (keep-alive timeouts: 5 s in uvicorn) only for GET and HEAD;
         * a POST fails with "header parser received no bytes". When that failure comes at once,
         * before any response byte, and the body can be sent again, llmproxy sends it once more:
         * a failure after a longer wait may mean the upstream worked on it, and is not retried
         * (the JDK's jdk.httpclient.enableAllMethodRetry would retry those too: a model billed twice).
         */
        private HttpResponse<InputStream> send(HttpRequest request, RequestBody body)
                throws IOException, InterruptedException {
            long start = System.nanoTime();
            try {
                return client.send(request, HttpResponse.BodyHandlers.ofInputStream());
            } catch (HttpTimeoutException e) {
                throw e;
            } catch (IOException e) {
                boolean stale = String.valueOf(e.getMessage()).contains(STALE_CONNECTION_MESSAGE)
                        && System.nanoTime() - start < STALE_CONNECTION_NANOS && body.replayable();
                if (!stale) {
                    throw e;
                }
                return client.send(request, HttpResponse.BodyHandlers.ofInputStream());
            }
        }

        private HttpRequest buildRequest(HttpExchange exchange, URI upstream, RequestBody body, TraceContext trace)
                throws IOException {
            String method = exchange.getRequestMethod();
            var headers = exchange.getRequestHeaders();
            HttpRequest.Builder builder = HttpRequest.newBuilder(upstream).timeout(config.timeout());
            Set<String> dropped = HeaderRules.plusListed(requestDropped, headers.get("Connection"));
            for (Map.Entry<String, List<String>> header : headers.entrySet()) {
                String name = header.getKey();
                String lower = name.toLowerCase(Locale.ROOT);
                if (dropped.contains(lower) || lower.startsWith("sec-websocket-")) {
                    continue;
                }
                for (String value : header.getValue()) {
                    if (name.equalsIgnoreCase("Accept-Encoding")) {
                        value = HeaderRules.narrowAcceptEncoding(value);
                        if (value.isEmpty()) {
                            continue;
                        }
                    }
                    try {
                        builder.header(name, value);
                    } catch (IllegalArgumentException e) {
                        // A header the JDK client refuses to send (restricted name or bad value):
                        // the upstream cannot get it from this client, so it goes without.
                    }
                }
            }
            for (AddedHeader added : config.addHeaders()) {
                builder.setHeader(added.name(), added.value());
            }
            if (trace != null) {
                builder.setHeader("traceparent", trace.traceparent()); // the upstream's work joins the caller's trace
            }
            long length = HeaderRules.requestBodyLength(headers);
            if (length == 0) {
                return switch (method) {
                    case "GET" -> builder.GET().build();
                    case "HEAD" -> builder.HEAD().build();
                    default -> builder.method(method, HttpRequest.BodyPublishers.noBody()).build();
                };
            }
            HttpRequest.BodyPublisher publisher;
            if (length > 0 && length <= RequestBody.WHOLE) {
                publisher = HttpRequest.BodyPublishers.ofByteArray(body.readWhole((int) length));
            } else if (length > 0) {
                publisher = HttpRequest.BodyPublishers.fromPublisher(body, length);
            } else {
                publisher = HttpRequest.BodyPublishers.fromPublisher(body);
            }
            return builder.method(method, publisher).build();
        }

        /** Sends the upstream's status and headers at once, then copies the body chunk by chunk. */
        private Ending relay(Call call, HttpResponse<InputStream> response, InputStream upstreamBody) {
            HttpExchange exchange = call.exchange();
            Record.Builder record = call.record();
            int status = response.statusCode();
            var upstreamHeaders = response.headers().map();
            var clientHeaders = exchange.getResponseHeaders();
            Set<String> dropped = HeaderRules.plusListed(HeaderRules.RESPONSE_DROPPED, response.headers().allValues("Connection"));
            for (Map.Entry<String, List<String>> header : upstreamHeaders.entrySet()) {
                String name = header.getKey();
                if (!name.startsWith(":") && !dropped.contains(name.toLowerCase(Locale.ROOT))) {
                    clientHeaders.put(name, header.getValue());
                }
            }
            record.responseEncoding = response.headers().firstValue("Content-Encoding").orElse("");
            boolean noBody = exchange.getRequestMethod().equals("HEAD") || status == 204 || status == 304
                    || (status >= 100 && status < 200);
            var upstreamLength = response.headers().firstValueAsLong("Content-Length");
            long length; // as sendResponseHeaders wants it: -1 no body, 0 chunked, n fixed
            if (closing) {
                clientHeaders.set("Connection", "close"); // no next request on this connection: it would get a 503
            }
            if (noBody) {
                length = -1;
                // HEAD and 304 answers may describe the body they do not carry; a 204 or 1xx never has one.
                if (status != 204 && status >= 200) {
                    upstreamLength.ifPresent(n -> clientHeaders.set("Content-Length", Long.toString(n)));
                }
            } else if (upstreamLength.isPresent()) {
                length = upstreamLength.getAsLong() == 0 ? -1 : upstreamLength.getAsLong();
            } else {
                length = 0;
            }
            record.responseStarted(status);
            try {
                call.client().call(() -> {
                    exchange.sendResponseHeaders(status, length);
                    return null;
                });
            } catch (IOException e) {
                return clientGone(call, "before the response headers", e);
            }
            OutputStream out = exchange.getResponseBody();
            if (noBody) {
                return Ending.ANSWERED;
            }
            if (available(upstreamBody) == 0) {
                try {
                    call.client().call(() -> {
                        out.flush(); // headers leave now, not with a first body chunk that may be far off
                        return null;
                    });
                } catch (IOException e) {
                    return clientGone(call, "before the response body", e);
                }
            } // else the body is already here: headers and its first bytes leave in one write
            return copy(call, upstreamBody, out);
        }

        /**
         * The copy loop: every upstream read goes to the client and is flushed before the next
         * read. Both waits are watched: a silent upstream, and a client that stopped reading.
         */
        private Ending copy(Call call, InputStream upstreamBody, OutputStream out) {
            Record.Builder record = call.record();
            IdleWatchdog.ClientWait client = call.client();
            byte[] buffer = new byte[FIRST_BUFFER];
            try (IdleWatchdog.Watch watch = watchdog.watch(upstreamBody)) {
                while (true) {
                    int n;
                    watch.waiting();
                    try {
                        n = upstreamBody.read(buffer);
                    } catch (IOException e) {
                        if (record.responseBody.total() == 0) {
                            flushQuietly(client, out); // the status and headers, at least, before the cut
                        }
                        if (watch.fired()) {
                            record.fail(Record.Outcome.TIMEOUT, "upstream sent nothing for "
                                    + Durations.format(config.timeout()) + " (--timeout)");
                        } else {
                            record.fail(Record.Outcome.UPSTREAM_ERROR, "upstream failed mid-body: "
                                    + Durations.describe(e));
                        }
                        return Ending.CUT;
                    }
                    watch.arrived();
                    if (n < 0) {
                        break;
                    }
                    record.responseBody.write(buffer, 0, n);
                    IOException failed = null;
                    client.begin(); // by hand rather than call(): no lambda per chunk
                    try {
                        out.write(buffer, 0, n);
                        out.flush();
                    } catch (IOException e) {
                        failed = e;
                    }
                    if (client.end() || failed != null) {
                        return clientGone(call, "mid-body", failed);
                    }
                    if (n == buffer.length && n < MAX_BUFFER) {
                        buffer = new byte[2 * n];
                    }
                }
            }
            try {
                client.call(() -> {
                    out.close();
                    return null;
                });
            } catch (IOException e) {
                return clientGone(call, "at the end of the body", e);
            }
            return Ending.ANSWERED;
        }

        private static void flushQuietly(IdleWatchdog.ClientWait client, OutputStream out) {
            try {
                client.call(() -> {
                    out.flush();
                    return null;
                });
            } catch (IOException e) {
                // the client is gone too: the record says what failed first
            }
        }

        /** The client left, or stopped reading for --timeout (its socket is then closed). */
        private Ending clientGone(Call call, String when, IOException e) {
            call.record().fail(Record.Outcome.CLIENT_CLOSED, call.client().timedOut()
                    ? "client stopped reading " + when + ": nothing was taken for "
                            + Durations.format(config.timeout()) + " (--timeout)"
                    : "client left " + when + ": " + (e == null ? "connection closed" : Durations.describe(e)));
            return Ending.CUT;
        }

        private static int available(InputStream in) {
            try {
                return in.available();
            } catch (IOException e) {
                return 0; // the read that follows reports the failure
            }
        }

        /** Answers with a small JSON error body (an exchange that never reached a working upstream). */
        private Ending answerError(Call call, int status, String type, Record.Outcome outcome, String message) {
            HttpExchange exchange = call.exchange();
            Record.Builder record = call.record();
            String said = secrets.scrub(message); // an exception's text may quote a header value
            record.fail(outcome, said);
            byte[] body = ("{\"error\": {\"type\": " + Json.quote(type) + ", \"message\": " + Json.quote(said)
                    + "}}\n").getBytes(StandardCharsets.UTF_8);
            record.responseBody.write(body, 0, body.length);
            exchange.getResponseHeaders().set("Content-Type", "application/json");
            record.responseStarted(status);
            try {
                call.client().call(() -> {
                    exchange.sendResponseHeaders(status, body.length);
                    try (OutputStream out = exchange.getResponseBody()) {
                        out.write(body);
                    }
                    return null;
                });
                return Ending.ANSWERED;
            } catch (IOException e) {
                return Ending.CUT;
            }
        }

        /** The URL the client asked the proxy for, as it would type it. */
        private static String clientUrl(HttpExchange exchange) {
            URI uri = exchange.getRequestURI();
            if (uri.isAbsolute()) {
                return uri.toString();
            }
            String host = exchange.getRequestHeaders().getFirst("Host");
            if (host == null || host.isBlank()) {
                InetSocketAddress local = exchange.getLocalAddress();
                host = Proxy.hostPort(local.getAddress(), local.getPort());
            }
            return "http://" + host + uri;
        }
    }

    /** Which headers cross the proxy: hop-by-hop headers stop here, everything else passes. */
    static final class HeaderRules {
        private HeaderRules() {}

        /** Headers that describe one connection, not the message (RFC 9110 section 7.6.1). */
        static final Set<String> HOP_BY_HOP = Set.of("connection", "keep-alive", "proxy-connection", "te",
                "trailer", "transfer-encoding", "upgrade", "http2-settings", "proxy-authorization",
                "proxy-authenticate");

        /** Request headers that Java's HTTP client computes itself and refuses to be given. */
        static final Set<String> SET_BY_CLIENT = Set.of("host", "content-length", "expect");

        /** Lower-case names of upstream headers that are not passed back to the client. */
        static final Set<String> RESPONSE_DROPPED = with(HOP_BY_HOP, List.of("content-length")); // the server writes its own

        /** Lower-case names of client headers that are never forwarded as they are (before Connection's list). */
        static Set<String> requestDropped(List<AddedHeader> added) {
            // The upstream gets its own Host; the JDK client computes Content-Length and Expect.
            List<String> names = new ArrayList<>(SET_BY_CLIENT);
            added.forEach(header -> names.add(header.name().toLowerCase(Locale.ROOT)));
            return with(HOP_BY_HOP, names);
        }

        /** {@code dropped} plus the names a Connection header lists; the same set when it lists none. */
        static Set<String> plusListed(Set<String> dropped, List<String> connection) {
            List<String> listed = new ArrayList<>();
            if (connection != null) {
                for (String value : connection) {
                    for (String token : value.split(",")) {
                        String name = token.trim().toLowerCase(Locale.ROOT);
                        if (!name.isEmpty() && !dropped.contains(name)) {
                            listed.add(name);
                        }
                    }
                }
            }
            return listed.isEmpty() ? dropped : with(dropped, listed);
        }

        private static Set<String> with(Set<String> names, List<String> more) {
            Set<String> all = new HashSet<>(names);
            all.addAll(more);
            return Set.copyOf(all);
        }

        /**
         * Keeps only the codings the log can decode (gzip, deflate, identity), so the upstream
         * never answers with br or zstd. Returns "" when nothing is left.
         */
        static String narrowAcceptEncoding(String value) {
            StringBuilder kept = new StringBuilder();
            for (String item : value.split(",")) {
                String coding = item.split(";", 2)[0].trim().toLowerCase(Locale.ROOT);
                if (coding.equals("gzip") || coding.equals("x-gzip") || coding.equals("deflate")
                        || coding.equals("identity")) {
                    kept.append(kept.isEmpty() ? "" : ", ").append(item.trim());
                }
            }
            return kept.toString();
        }

        /** The request body's length: n from Content-Length, -1 when chunked, 0 when there is none. */
        static long requestBodyLength(Map<String, List<String>> headers) {
            String te = first(headers, "Transfer-Encoding");
            if (te != null && !te.isBlank()) {
                return -1;
            }
            String length = first(headers, "Content-Length");
            if (length == null) {
                return 0;
            }
            try {
                return Math.max(0, Long.parseLong(length.trim()));
            } catch (NumberFormatException e) {
                return 0; // the server already refuses requests with a malformed length
            }
        }

        private static String first(Map<String, List<String>> headers, String name) {
            List<String> values = headers.get(name);
            return values == null || values.isEmpty() ? null : values.getFirst();
        }
    }

    // --- request body ---

    /**
     * The client's request body, read in one of three ways: whole, when it is small and the
     * request goes upstream; streamed to the upstream from a thread of its own, handing on each
     * chunk as soon as it is read (the JDK's InputStream publisher ran one read behind on pooled
     * connections); or drained for the log alone, when the request goes no further. Every byte
     * read is mirrored into the record's capture, and every read is bounded by --timeout.
     */
    static final class RequestBody implements Flow.Publisher<ByteBuffer> {
        private static final int CHUNK = 16 * 1024;
        /** What a refused request's drain reads for the log: a typical prompt. */
        static final int SMALL = 64 * 1024;
        /**
         * Bodies of a declared length up to this are read whole before they are sent, without a
         * pump thread, and the log's capture takes the same array: a coding agent's prompt is
         * 40-70 KB at its first turn and hundreds of KB later, and its client sends it at once.
         */
        static final int WHOLE = 1 << 20;

        /** How far reading the client's body has got. */
        private enum Progress {
            /** More may come. */
            READING,
            /** The client sent the whole body. */
            ENDED,
            /** The client failed or stalled before the end; {@link #clientError} says how. */
            FAILED,
            /** The proxy stopped reading before the end (the rest was not needed). */
            STOPPED
        }

        private final InputStream in;
        private final Capture capture;
        private final IdleWatchdog watchdog;
        private final IdleWatchdog.ClientWait handlerWait;
        private final java.util.concurrent.ThreadFactory threads;
        /** Held for each read from the client, so that the pump and a drain never interleave. */
        private final ReentrantLock readLock = new ReentrantLock();
        private volatile Progress progress = Progress.READING;
        private volatile IOException clientError;
        /** Set once the body is streamed upstream: it cannot be sent a second time. */
        private volatile Pump pump;

        RequestBody(InputStream in, Capture capture, IdleWatchdog watchdog, IdleWatchdog.ClientWait handlerWait,
                    java.util.concurrent.ThreadFactory threads) {
            this.in = in;
            this.capture = capture;
            this.watchdog = watchdog;
            this.handlerWait = handlerWait;
            this.threads = threads;
        }

        @Override
        public void subscribe(Flow.Subscriber<? super ByteBuffer> subscriber) {
            Pump next = new Pump(subscriber);
            synchronized (this) {
                if (pump != null) {
                    subscriber.onSubscribe(next);
                    subscriber.onError(new IllegalStateException("the request body can be sent only once"));
                    return;
                }
                pump = next;
            }
            subscriber.onSubscribe(next);
            threads.newThread(next).start();
        }

        /** Reads one chunk into the capture; null at the end of the body or once reading has stopped. */
        private ByteBuffer readChunk() throws IOException {
            readLock.lock();
            try {
                if (progress != Progress.READING) {
                    return null;
                }
                byte[] chunk = new byte[CHUNK];
                int n = in.read(chunk);
                if (n < 0) {
                    progress = Progress.ENDED;
                    return null;
                }
                capture.write(chunk, 0, n);
                return ByteBuffer.wrap(chunk, 0, n);
            } finally {
                readLock.unlock();
            }
        }

        private void failed(IOException e) {
            if (progress == Progress.READING) {
                clientError = e;
                progress = Progress.FAILED;
                capture.partial("the client stopped sending after " + capture.total() + " bytes");
            }
        }

        /** Reads a whole body of known small length, within --timeout; the client sends it at once in practice. */
        byte[] readWhole(int length) throws IOException {
            readLock.lock();
            try {
                byte[] bytes = new byte[length];
                int[] read = {0};
                int got;
                try {
                    got = handlerWait.call(() -> {
                        for (int n; read[0] < length && (n = in.read(bytes, read[0], length - read[0])) >= 0; ) {
                            read[0] += n;
                        }
                        return read[0];
                    });
                } catch (IOException e) {
                    capture.adopt(bytes, read[0]); // a stall keeps what arrived
                    failed(e);
                    throw e;
                }
                capture.adopt(bytes, got);
                if (got < length) {
                    failed(new IOException("request body ended after " + got + " of " + length + " bytes"));
                    throw clientError;
                }
                progress = Progress.ENDED;
                return bytes;
            } finally {
                readLock.unlock();
            }
        }

        /** Most bytes read from a body that goes no further: beyond, the connection is closed instead. */
        private static final long DRAIN_LIMIT = 64L << 20;

        /**
         * Reads the rest of the body when the request goes no further (it is refused, or the
         * upstream failed before taking it), all within one --timeout: the record must still hold
         * the prompt, and a client that sends its whole body before reading hears its answer only
         * once the body is read (cut off, it would see a reset instead of a 403 or 503). Keeps the
         * first {@code keep} bytes in the record and counts the rest.
         */
        void drainForLog(long keep) {
            Pump current = pump;
            if (current != null) {
                current.cancel();
            }
            capture.keepAtMost(keep);
            readLock.lock(); // a pump blocked on the client holds it no longer than --timeout
            try {
                handlerWait.call(() -> {
                    while (progress == Progress.READING && capture.total() < DRAIN_LIMIT) {
                        if (readChunk() == null) {
                            break;
                        }
                    }
                    return null;
                });
            } catch (IOException e) {
                failed(e);
            } finally {
                readLock.unlock();
            }
            if (progress == Progress.READING) {
                progress = Progress.STOPPED;
                capture.partial("llmproxy stopped reading after " + capture.total() + " bytes; the request went no further");
            }
        }

        /** Ends a pump still waiting on a slow client: the upstream gave up on the body. */
        void stopReading() {
            Pump current = pump;
            if (current != null) {
                current.cancel();
                current.stopWaiting();
            }
            failed(new ClientTimeout(watchdog.timeout(), null));
        }

        /** True once the client sent its whole body. */
        boolean ended() {
            return progress == Progress.ENDED;
        }

        boolean clientFailed() {
            return progress == Progress.FAILED;
        }

        /** True when the client's body stalled for --timeout. */
        boolean timedOut() {
            return clientError instanceof ClientTimeout;
        }

        /** True when the request can be sent again: it had no body, or one read whole, not a stream. */
        boolean replayable() {
            return pump == null && progress != Progress.FAILED;
        }

        String clientError() {
            return clientError == null ? "" : Durations.describe(clientError);
        }

        /** Releases the pump thread if the upstream client neither finished nor cancelled it. */
        void close() {
            Pump current = pump;
            if (current != null) {
                current.cancel();
            }
        }

        /** Hands chunks to the HTTP client as it asks for them. */
        private final class Pump implements Flow.Subscription, Runnable {
            private final Flow.Subscriber<? super ByteBuffer> subscriber;
            private final ReentrantLock lock = new ReentrantLock();
            private final Condition demanded = lock.newCondition();
            private long demand;
            private boolean cancelled;

            Pump(Flow.Subscriber<? super ByteBuffer> subscriber) {
                this.subscriber = subscriber;
            }

            private volatile IdleWatchdog.ClientWait wait;

            @Override
            public void run() {
                try (IdleWatchdog.ClientWait reads = watchdog.clientWait()) {
                    wait = reads;
                    while (awaitDemand()) {
                        ByteBuffer chunk;
                        try {
                            chunk = reads.call(RequestBody.this::readChunk);
                        } catch (IOException e) {
                            failed(e);
                            subscriber.onError(e);
                            return;
                        }
                        if (chunk == null) {
                            subscriber.onComplete();
                            return;
                        }
                        subscriber.onNext(chunk);
                    }
                }
            }

            /** Ends a read under way at once, as if it had stalled for --timeout. */
            void stopWaiting() {
                IdleWatchdog.ClientWait reads = wait;
                if (reads != null) {
                    reads.expireNow();
                }
            }

            private boolean awaitDemand() {
                lock.lock();
                try {
                    while (demand == 0 && !cancelled) {
                        demanded.awaitUninterruptibly();
                    }
                    if (cancelled) {
                        return false;
                    }
                    demand--;
                    return true;
                } finally {
                    lock.unlock();
                }
            }

            @Override
            public void request(long n) {
                if (n <= 0) {
                    cancel();
                    subscriber.onError(new IllegalArgumentException("non-positive demand " + n));
                    return;
                }
                lock.lock();
                try {
                    demand = demand + n < 0 ? Long.MAX_VALUE : demand + n;
                    demanded.signal();
                } finally {
                    lock.unlock();
                }
            }

            @Override
            public void cancel() {
                lock.lock();
                try {
                    cancelled = true;
                    demanded.signal();
                } finally {
                    lock.unlock();
                }
            }
        }
    }

    // --- idle watchdog ---

    /**
     * Ends waits on a peer that last longer than the timeout: upstream bodies that stay silent,
     * and blocking reads from and writes to a client that stopped sending or reading. Neither the
     * JDK client's timeout (it covers only the wait for headers) nor the JDK server (it has none)
     * bounds those, and a stalled peer would hold its thread, its slot and its upstream forever.
     * One thread checks every wait a few times per timeout, so a stream pays a volatile write or
     * two per chunk and never a timer of its own.
     */
    static final class IdleWatchdog implements AutoCloseable {
        private final long timeoutNanos;
        private final Duration timeout;
        private final Set<Watch> watched = ConcurrentHashMap.newKeySet();
        private final Set<ClientWait> clientWaits = ConcurrentHashMap.newKeySet();
        private final ScheduledExecutorService timer;

        IdleWatchdog(Duration timeout) {
            this.timeout = timeout;
            timeoutNanos = timeout.toNanos();
            timer = Executors.newSingleThreadScheduledExecutor(r -> {
                Thread t = new Thread(r, "llmproxy-idle-watchdog");
                t.setDaemon(true);
                return t;
            });
            long tick = Math.clamp(timeout.toMillis() / 4, 10, 1000);
            timer.scheduleWithFixedDelay(this::check, tick, tick, TimeUnit.MILLISECONDS);
        }

        Watch watch(InputStream body) {
            Watch watch = new Watch(body);
            watched.add(watch);
            return watch;
        }

        Duration timeout() {
            return timeout;
        }

        /** The waits of one thread on one client, watched until closed. */
        ClientWait clientWait() {
            ClientWait wait = new ClientWait(Thread.currentThread());
            clientWaits.add(wait);
            return wait;
        }

        /** Runs every few hundred milliseconds; whatever one wait throws, the others are still checked, now and later. */
        void check() {
            long now = System.nanoTime();
            for (Watch watch : watched) {
                try {
                    if (watch.silentFor(now, timeoutNanos)) {
                        watch.fire();
                    }
                } catch (RuntimeException | Error e) {
                    watched.remove(watch); // an exception out of here would cancel the schedule for good
                }
            }
            for (ClientWait wait : clientWaits) {
                try {
                    wait.expire(now, timeoutNanos);
                } catch (RuntimeException | Error e) {
                    clientWaits.remove(wait);
                }
            }
        }

        @Override
        public void close() {
            timer.shutdownNow();
        }

        /**
         * One watched body; closing the watch stops watching. Only the time spent waiting for
         * the upstream counts: while the copy loop writes to a slow client, the upstream is not
         * silent, it is waited on (and that wait is a {@link ClientWait}'s).
         */
        final class Watch implements AutoCloseable {
            private static final long NOT_WAITING = Long.MIN_VALUE;

            private final InputStream body;
            private volatile long waitingSince = NOT_WAITING;
            private volatile boolean fired;

            private Watch(InputStream body) {
                this.body = body;
            }

            /** The copy loop is about to wait for the upstream's next bytes. */
            void waiting() {
                long now = System.nanoTime();
                waitingSince = now == NOT_WAITING ? now + 1 : now;
            }

            /** The upstream's bytes arrived. */
            void arrived() {
                waitingSince = NOT_WAITING;
            }

            private boolean silentFor(long now, long limit) {
                long since = waitingSince;
                return since != NOT_WAITING && now - since > limit;
            }

            boolean fired() {
                return fired;
            }

            private void fire() {
                fired = true;
                watched.remove(this);
                try {
                    body.close(); // the blocked read then fails, and the upstream request is cancelled
                } catch (IOException e) {
                    // closing a cancelled body has nothing left to report
                }
            }

            @Override
            public void close() {
                watched.remove(this);
            }
        }

        /**
         * The blocking calls one thread makes on one client. A call that takes longer than the
         * timeout is ended by interrupting the thread, which closes the client's socket (the JDK
         * server's channels are interruptible) and makes the call throw. The state is the start
         * time of the call under way, so the watchdog can never end a later call by mistake.
         */
        final class ClientWait implements AutoCloseable {
            private static final long IDLE = Long.MIN_VALUE;
            private static final long FIRED = Long.MIN_VALUE + 1;

            private final Thread thread;
            private final AtomicLong since = new AtomicLong(IDLE);
            private volatile boolean interruptSent;
            private boolean timedOut;

            private ClientWait(Thread thread) {
                this.thread = thread;
            }

            /** Runs one blocking call on the client; a call the watchdog ended throws {@link ClientTimeout}. */
            <T> T call(IoCall<T> call) throws IOException {
                begin();
                T result;
                try {
                    result = call.run();
                } catch (IOException e) {
                    if (end()) {
                        throw new ClientTimeout(timeout, e);
                    }
                    throw e;
                }
                if (end()) {
                    throw new ClientTimeout(timeout, null);
                }
                return result;
            }

            /** Marks the start of a blocking call; {@link #end} must follow. */
            void begin() {
                long now = System.nanoTime();
                since.set(now == IDLE || now == FIRED ? now + 2 : now);
            }

            /** Marks its end: true when the watchdog ended it (the interrupt is then cleared). */
            boolean end() {
                long started = since.get();
                if (started != FIRED && since.compareAndSet(started, IDLE)) {
                    return false;
                }
                while (!interruptSent) {
                    Thread.onSpinWait(); // the watchdog is between marking and interrupting: a few instructions
                }
                Thread.interrupted(); // later calls (queues, locks) must not see it
                interruptSent = false;
                timedOut = true;
                return true;
            }

            /** True once a call was ended by the timeout: the client's socket is closed. */
            boolean timedOut() {
                return timedOut;
            }

            /** Ends the call under way now, if there is one. */
            void expireNow() {
                expire(0, -1);
            }

            /** Ends the call under way if it started more than {@code limit} ago; a negative limit ends it whatever its age. */
            private void expire(long now, long limit) {
                long started = since.get();
                if (started != IDLE && started != FIRED && (limit < 0 || now - started > limit)
                        && since.compareAndSet(started, FIRED)) {
                    thread.interrupt();
                    interruptSent = true;
                }
            }

            @Override
            public void close() {
                clientWaits.remove(this);
            }
        }

        /** A blocking call on a client. */
        interface IoCall<T> {
            T run() throws IOException;
        }
    }

    // --- records ---

    /**
     * The bounded copy of a body that the log keeps; the client always gets every byte. Bytes go
     * into chunks that start small and grow, and a chunk is never copied into a bigger one: a
     * long stream's early chunks stay where they are instead of being left behind as garbage
     * each time the body doubles, and the record takes the chunks as they are.
     */
    static final class Capture {
        private static final int FIRST_CHUNK = 512;
        private static final int MAX_CHUNK = 64 * 1024;
        private static final byte[][] NO_CHUNKS = {};

        private final int limit;
        private int keepLimit; // the limit, or less for a body that goes no further
        private final LogMemory memory;
        private byte[][] chunks = NO_CHUNKS; // all full but the last
        private int count; // chunks in use
        private int capacity; // bytes in those chunks
        private int size;
        private long total;
        private long taken; // from memory: the capacity, or more when taken ahead
        private boolean starved; // memory was spent: nothing more is kept, or the body would have a hole
        private String partial;

        Capture(long limit) {
            this(limit, LogMemory.UNLIMITED);
        }

        Capture(long limit, LogMemory memory) {
            this.limit = (int) Math.min(limit, Integer.MAX_VALUE - 64);
            this.keepLimit = this.limit;
            this.memory = memory;
        }

        /** Keeps no more than {@code bytes} from now on; what comes beyond is only counted. */
        synchronized void keepAtMost(long bytes) {
            keepLimit = (int) Math.min(keepLimit, Math.max(bytes, size));
        }

        /** Takes memory for the first {@code expected} bytes ahead (a declared length); false if it is not there. */
        synchronized boolean takeAhead(long expected) {
            return holdUpTo(Math.min(expected, limit));
        }

        synchronized void write(byte[] source, int offset, int length) {
            total += length;
            int kept = starved ? 0 : Math.min(length, keepLimit - size);
            while (kept > 0) {
                if (size == capacity && !addChunk(kept)) {
                    starved = true;
                    partial("llmproxy's memory for log bodies was full: only the first " + size + " bytes were kept"
                            + " (-Dllmproxy.logMemory)");
                    return;
                }
                byte[] last = chunks[count - 1];
                int at = last.length - (capacity - size);
                int n = Math.min(kept, capacity - size);
                System.arraycopy(source, offset, last, at, n);
                offset += n;
                size += n;
                kept -= n;
            }
        }

        /**
         * Adds a chunk for at least the next {@code needed} bytes: as big as the body so far (so
         * there are few chunks), within the limit and the log's memory.
         */
        private boolean addChunk(int needed) {
            int room = keepLimit - size;
            int length = Math.min(room, Math.max(needed, Math.max(FIRST_CHUNK, Math.min(capacity, MAX_CHUNK))));
            if (!holdUpTo(capacity + (long) length) && !holdUpTo(capacity + (long) (length = needed))) {
                return false;
            }
            if (count == chunks.length) {
                chunks = Arrays.copyOf(chunks, Math.max(4, 2 * count));
            }
            chunks[count++] = new byte[length];
            capacity += length;
            return true;
        }

        /** Holds at least {@code bytes} of the log's memory, taking what is missing; false, taking nothing, if it is not there. */
        private boolean holdUpTo(long bytes) {
            long missing = bytes - taken;
            if (missing <= 0) {
                return true;
            }
            if (!memory.take(missing)) {
                return false;
            }
            taken += missing;
            return true;
        }

        /**
         * Takes {@code bytes[0, n)} as the body, without a copy: a body read whole into an array
         * of its own. Copies instead when something was kept already or the array is beyond what
         * may be kept.
         */
        synchronized void adopt(byte[] bytes, int n) {
            if (count > 0 || starved || bytes.length > keepLimit || !holdUpTo(bytes.length)) {
                write(bytes, 0, n);
                return;
            }
            chunks = new byte[][] {bytes};
            count = 1;
            capacity = bytes.length;
            size = n;
            total += n;
        }

        synchronized boolean isFull() {
            return size >= limit;
        }

        /** A copy of the bytes kept so far, in one array: for the live viewer while the exchange runs. */
        synchronized byte[] snapshot() {
            return Record.Body.join(chunks, count, size);
        }

        /** The body for the record, holding these chunks; memory taken beyond them is given back, the rest the writer gives back. */
        synchronized Record.Body body(String encoding) {
            memory.give(taken - capacity);
            taken = capacity;
            return new Record.Body(Arrays.copyOf(chunks, count), size, total, encoding, partial);
        }

        /** Bytes seen, including those beyond the limit. */
        synchronized long total() {
            return total;
        }

        /** Notes that the body was not read to its end, and why; the first reason counts. */
        synchronized void partial(String why) {
            if (partial == null) {
                partial = why;
            }
        }

        /** Why the body was not read to its end, or null when it was. */
        synchronized String partial() {
            return partial;
        }
    }

    /** What the log keeps of one finished exchange. */
    record Record(String id, Instant start, String method, String url, String path, String upstreamUrl, int status,
                  Outcome outcome, String error, long durationMillis, long ttfbMillis,
                  Map<String, List<String>> requestHeaders, Map<String, List<String>> responseHeaders,
                  Body request, Body response, Reading reading) {

        Record(String id, Instant start, String method, String url, String path, String upstreamUrl, int status,
               Outcome outcome, String error, long durationMillis, long ttfbMillis,
               Map<String, List<String>> requestHeaders, Map<String, List<String>> responseHeaders,
               Body request, Body response) {
            this(id, start, method, url, path, upstreamUrl, status, outcome, error, durationMillis, ttfbMillis,
                    requestHeaders, responseHeaders, request, response, new Reading());
        }

        /**
         * The conversation read out of the record's bodies, kept for whoever asks next: the log's
         * LLM columns, the span and the viewer each need it, on threads of their own, and reading
         * it (decoding, parsing JSON or every SSE event) costs more than the rest of a record.
         */
        static final class Reading {
            private boolean done;
            private Llm llm;

            /** The conversation, read by {@code read} the first time only. */
            synchronized Llm get(java.util.function.Supplier<Llm> read) {
                if (!done) {
                    llm = read.get();
                    done = true;
                }
                return llm;
            }
        }

        /**
         * A body as the log keeps it: its first bytes (in the capture's chunks, joined when first
         * read, on the thread that reads them), its full length, its Content-Encoding, and when it
         * was not read to its end, why (else null).
         */
        static final class Body {
            private byte[][] chunks;
            private final int size;
            private final long held;
            private final long total;
            private final String encoding;
            private final String partial;

            Body(byte[] captured, long total, String encoding) {
                this(captured, total, encoding, null);
            }

            Body(byte[] captured, long total, String encoding, String partial) {
                this(new byte[][] {captured}, captured.length, total, encoding, partial);
            }

            Body(byte[][] chunks, int size, long total, String encoding, String partial) {
                this.chunks = chunks;
                this.size = size;
                long length = 0;
                for (byte[] chunk : chunks) {
                    length += chunk.length;
                }
                this.held = length;
                this.total = total;
                this.encoding = encoding;
                this.partial = partial;
            }

            /** The bytes kept, in one array. */
            synchronized byte[] captured() {
                if (chunks.length != 1 || chunks[0].length != size) {
                    chunks = new byte[][] {join(chunks, chunks.length, size)};
                }
                return chunks[0];
            }

            /** How many bytes were kept. */
            int length() {
                return size;
            }

            /** Heap the body holds: its chunks, however full. */
            long held() {
                return held;
            }

            long total() {
                return total;
            }

            String encoding() {
                return encoding;
            }

            String partial() {
                return partial;
            }

            static byte[] join(byte[][] chunks, int count, int size) {
                byte[] joined = new byte[size];
                int at = 0;
                for (int i = 0; i < count && at < size; i++) {
                    int n = Math.min(chunks[i].length, size - at);
                    System.arraycopy(chunks[i], 0, joined, at, n);
                    at += n;
                }
                return joined;
            }
        }

        /** How an exchange ended. */
        enum Outcome {
            COMPLETE, CLIENT_CLOSED, UPSTREAM_ERROR, TIMEOUT, REJECTED, SHUTDOWN;

            String label() {
                return name().toLowerCase(Locale.ROOT);
            }
        }

        /** Heap the record's bodies hold, taken from the log's memory until it is written. */
        long heldBytes() {
            return request.held() + response.held();
        }

        /** The same record without its headers and bodies (their sizes kept), and why in its error. */
        Record withoutBodies(String why) {
            return new Record(id, start, method, url, path, upstreamUrl, status, outcome,
                    error == null ? why : error + "; " + why, durationMillis, ttfbMillis, Map.of(), Map.of(),
                    new Body(new byte[0], request.total(), "", "left out of the log"),
                    new Body(new byte[0], response.total(), "", "left out of the log"));
        }

        /** One line for stderr: id, method, path (query hidden: it may hold a key), status, duration, bytes, outcome. */
        String summary() {
            return id + " " + method + " " + path + " " + (status == 0 ? "-" : String.valueOf(status)) + " "
                    + durationMillis + "ms " + response.total() + "B " + outcome.label()
                    + (error == null ? "" : " (" + error + ")");
        }

        /** Collects an exchange's record while it runs; used by one handler thread. */
        static final class Builder {
            private final long startNanos = System.nanoTime();
            private final Instant start = Instant.now();
            private final String id;
            private final BooleanSupplier shuttingDown;
            private final String method;
            private final String url;
            private final String path;
            final Capture requestBody;
            final Capture responseBody;
            String upstreamUrl = "";
            String requestEncoding = "";
            String responseEncoding = "";
            Map<String, List<String>> requestHeaders = Map.of();
            Map<String, List<String>> responseHeaders = Map.of();
            int status;
            private long firstByteNanos;
            private Outcome outcome = Outcome.COMPLETE;
            private String error;

            Builder(String id, String method, String url, URI requested, long maxBody, LogMemory memory,
                    BooleanSupplier shuttingDown) {
                this.id = id;
                this.shuttingDown = shuttingDown;
                this.method = method;
                this.url = url;
                this.path = requested.getRawPath() + (requested.getRawQuery() == null ? "" : "?…");
                requestBody = new Capture(maxBody, memory);
                responseBody = new Capture(maxBody, memory);
            }

            /** Notes that the response's first bytes (its status line and headers) are on their way. */
            void responseStarted(int code) {
                status = code;
                firstByteNanos = System.nanoTime();
            }

            /** Marks the exchange as failed; the first failure is the one that counts. */
            void fail(Outcome reason, String message) {
                if (outcome == Outcome.COMPLETE) {
                    // Shutdown ends exchanges by closing their connections, which reads as a
                    // client or upstream gone; say why it really happened.
                    boolean closedByShutdown = (reason == Outcome.CLIENT_CLOSED || reason == Outcome.UPSTREAM_ERROR)
                            && shuttingDown.getAsBoolean();
                    outcome = closedByShutdown ? Outcome.SHUTDOWN : reason;
                    error = closedByShutdown ? "llmproxy was stopped before the exchange ended (" + message + ")" : message;
                }
            }

            /** The record so far, for the live viewer: bodies copied as they stand (or left out), not trimmed. */
            Record snapshot(boolean bodies) {
                return new Record(id, start, method, url, path, upstreamUrl, status, Outcome.COMPLETE, error,
                        TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - startNanos),
                        firstByteNanos == 0 ? -1 : TimeUnit.NANOSECONDS.toMillis(firstByteNanos - startNanos),
                        Map.copyOf(requestHeaders), Map.copyOf(responseHeaders),
                        new Body(bodies ? requestBody.snapshot() : new byte[0], requestBody.total(), requestEncoding),
                        new Body(bodies ? responseBody.snapshot() : new byte[0], responseBody.total(), responseEncoding));
            }

            Record finish() {
                return new Record(id, start, method, url, path, upstreamUrl, status, outcome, error,
                        TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - startNanos),
                        firstByteNanos == 0 ? -1 : TimeUnit.NANOSECONDS.toMillis(firstByteNanos - startNanos),
                        requestHeaders, responseHeaders,
                        requestBody.body(requestEncoding), responseBody.body(responseEncoding));
            }
        }
    }

    // --- log writer ---

    /** A column of the log. */
    enum Column {
        TIME, ID, METHOD, URL, UPSTREAM_URL, STATUS, OUTCOME, DURATION_MS, TTFB_MS, REQUEST_BYTES, RESPONSE_BYTES,
        REQUEST_HEADERS, RESPONSE_HEADERS, ERROR, REQUEST_BODY, RESPONSE_BODY,
        MODEL, STREAM, RESPONSE_TEXT, REASONING_TEXT, TOOL_CALLS, INPUT_TOKENS, OUTPUT_TOKENS, CACHED_TOKENS,
        STOP_REASON, REASONING_TOKENS, CACHE_WRITE_TOKENS;

        /** Columns whose JSONL value is a number (or, for stream, a boolean) rather than a string. */
        private static final Set<Column> UNQUOTED = Set.of(STATUS, DURATION_MS, TTFB_MS, REQUEST_BYTES, RESPONSE_BYTES,
                STREAM, INPUT_TOKENS, OUTPUT_TOKENS, CACHED_TOKENS, REASONING_TOKENS, CACHE_WRITE_TOKENS);

        static final List<Column> DEFAULT = List.of(METHOD, URL, REQUEST_BODY, RESPONSE_BODY);
        private static final DateTimeFormatter TIME_FORMAT =
                DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);

        String header() {
            return name().toLowerCase(Locale.ROOT);
        }

        /** "all", or comma-separated names in the order wanted. */
        static List<Column> parse(String list) {
            if (list.trim().equals("all")) {
                return List.of(values());
            }
            List<Column> columns = new ArrayList<>();
            for (String name : list.split(",", -1)) {
                Column column = null;
                for (Column c : values()) {
                    if (c.header().equals(name.trim())) {
                        column = c;
                    }
                }
                if (column == null) {
                    throw new UsageException("--log-columns has no column '" + name.trim() + "'; the columns are "
                            + String.join(",", List.of(values()).stream().map(Column::header).toList()) + ", or all");
                }
                if (columns.contains(column)) {
                    throw new UsageException("--log-columns names '" + name.trim() + "' twice");
                }
                columns.add(column);
            }
            return List.copyOf(columns);
        }

        boolean unquoted() {
            return UNQUOTED.contains(this);
        }

        /** This column's field of a record, redacted as the secrets policy says; "" when empty. */
        String field(RecordView view) {
            Record r = view.record;
            Secrets secrets = view.secrets;
            long maxBody = view.maxBody;
            return switch (this) {
                case TIME -> TIME_FORMAT.format(r.start());
                case ID -> r.id();
                case METHOD -> r.method();
                case URL -> secrets.url(r.url());
                case UPSTREAM_URL -> secrets.url(r.upstreamUrl());
                case STATUS -> r.status() == 0 ? "" : String.valueOf(r.status());
                case OUTCOME -> r.outcome().label();
                case DURATION_MS -> String.valueOf(r.durationMillis());
                case TTFB_MS -> r.ttfbMillis() < 0 ? "" : String.valueOf(r.ttfbMillis());
                case REQUEST_BYTES -> String.valueOf(r.request().total());
                case RESPONSE_BYTES -> String.valueOf(r.response().total());
                case REQUEST_HEADERS -> secrets.headers(r.requestHeaders(), true);
                case RESPONSE_HEADERS -> secrets.headers(r.responseHeaders(), false);
                case ERROR -> r.error() == null ? "" : r.error();
                case REQUEST_BODY -> view.body(r.request());
                case RESPONSE_BODY -> view.body(r.response());
                case MODEL -> text(view.llm().model());
                case STREAM -> text(view.llm().stream());
                case RESPONSE_TEXT -> text(view.llm().text());
                case REASONING_TEXT -> text(view.llm().reasoning());
                case TOOL_CALLS -> text(view.llm().toolCalls());
                case INPUT_TOKENS -> text(view.llm().inputTokens());
                case OUTPUT_TOKENS -> text(view.llm().outputTokens());
                case CACHED_TOKENS -> text(view.llm().cachedTokens());
                case STOP_REASON -> text(view.llm().stopReason());
                case REASONING_TOKENS -> text(view.llm().reasoningTokens());
                case CACHE_WRITE_TOKENS -> text(view.llm().cacheWriteTokens());
            };
        }

        private static String text(Object value) {
            return value == null ? "" : String.valueOf(value);
        }
    }

    /** One record as the writer formats it: the conversation is read once, and only if a column wants it. */
    static final class RecordView {
        final Record record;
        final Secrets secrets;
        final long maxBody;
        private final boolean keepBase64;
        private Llm llm;

        RecordView(Record record, Secrets secrets, long maxBody, boolean keepBase64) {
            this.record = record;
            this.secrets = secrets;
            this.maxBody = maxBody;
            this.keepBase64 = keepBase64;
        }

        /** A body as the log shows it: decoded, and with inline base64 payloads summed up unless --log-base64. */
        String body(Record.Body body) {
            String text = BodyText.of(body, maxBody);
            return keepBase64 ? text : BodyText.elideBase64(text);
        }

        Llm llm() {
            if (llm == null) {
                llm = record.reading().get(this::readConversation);
            }
            return llm;
        }

        private Llm readConversation() {
            String contentType = null;
            for (Map.Entry<String, List<String>> h : record.responseHeaders().entrySet()) {
                if (h.getKey().equalsIgnoreCase("Content-Type") && !h.getValue().isEmpty()) {
                    contentType = h.getValue().getFirst();
                }
            }
            String url = record.upstreamUrl().isEmpty() ? record.url() : record.upstreamUrl();
            return Conversation.read(url, BodyText.decoded(record.request(), maxBody), contentType,
                    BodyText.decoded(record.response(), maxBody));
        }
    }

    /**
     * What the log may show of secrets. By default the values of credential headers and of key
     * query parameters keep a few characters at each end (Bearer sk-p…3xQz); --log-secrets shows
     * them whole. Values of --add-header never reach the log in any form.
     */
    static final class Secrets {
        static final Set<String> HEADERS = Set.of("authorization", "proxy-authorization", "x-api-key", "api-key",
                "apikey", "x-goog-api-key", "cookie", "set-cookie", "ocp-apim-subscription-key",
                "x-amz-security-token", "cf-aig-authorization", "x-auth-token");
        static final Set<String> QUERY_PARAMETERS = Set.of("key", "api_key", "api-key", "apikey", "access_token",
                "token", "sig", "x-amz-signature", "x-amz-credential");
        private static final String ADDED = "[set by llmproxy]";

        private final boolean redact;
        private final List<AddedHeader> added;
        private final List<String> addedValues;

        Secrets(boolean redact, List<AddedHeader> added) {
            this.redact = redact;
            this.added = added;
            List<String> values = new ArrayList<>();
            for (AddedHeader header : added) {
                if (!header.secret()) {
                    continue; // anthropic-version: 2023-06-01 is no secret, and may well appear in bodies
                }
                // the whole value, and its last word alone (the key of "Bearer <key>")
                String value = header.value();
                String lastWord = value.substring(value.lastIndexOf(' ') + 1);
                for (String v : List.of(value, lastWord)) {
                    if (v.length() >= 6 && !values.contains(v)) {
                        values.add(v);
                    }
                }
            }
            values.sort((a, b) -> b.length() - a.length()); // longest first, so a value's parts go with it
            addedValues = List.copyOf(values);
        }

        /** A credential header: one whose value is masked in the log ({@code *-api-key} names too). */
        static boolean isCredentialHeader(String lowerCaseName) {
            return HEADERS.contains(lowerCaseName) || lowerCaseName.endsWith("-api-key");
        }

        /** Removes every secret --add-header value from a field about to be logged or printed. */
        String scrub(String field) {
            for (String value : addedValues) {
                if (field.contains(value)) {
                    field = field.replace(value, ADDED);
                }
            }
            return field;
        }

        /** "Name: value" lines; request headers the proxy set are named, never shown. */
        String headers(Map<String, List<String>> headers, boolean request) {
            StringBuilder out = new StringBuilder();
            for (Map.Entry<String, List<String>> header : headers.entrySet()) {
                String name = header.getKey();
                if (request && replaced(name)) {
                    continue; // the upstream never saw the client's value: listed once below, as set by llmproxy
                }
                boolean secret = isCredentialHeader(name.toLowerCase(Locale.ROOT));
                for (String value : header.getValue()) {
                    out.append(out.isEmpty() ? "" : "\n").append(name).append(": ")
                            .append(secret && redact ? mask(value) : value);
                }
            }
            if (request) {
                for (AddedHeader header : added) {
                    out.append(out.isEmpty() ? "" : "\n").append(header.name()).append(": ").append(ADDED);
                }
            }
            return out.toString();
        }

        private boolean replaced(String name) {
            for (AddedHeader header : added) {
                if (header.name().equalsIgnoreCase(name)) {
                    return true;
                }
            }
            return false;
        }

        /** The URL with the values of key-like query parameters masked, unless --log-secrets. */
        String url(String url) {
            return redact ? maskQuery(url) : url;
        }

        /** The URL with the values of key-like query parameters masked. */
        static String maskQuery(String url) {
            int query = url.indexOf('?');
            if (query < 0) {
                return url;
            }
            StringBuilder out = new StringBuilder(url.length()).append(url, 0, query + 1);
            String[] parameters = url.substring(query + 1).split("&", -1);
            for (int i = 0; i < parameters.length; i++) {
                String parameter = parameters[i];
                int eq = parameter.indexOf('=');
                boolean secret = eq > 0 && QUERY_PARAMETERS.contains(parameter.substring(0, eq).toLowerCase(Locale.ROOT));
                out.append(i > 0 ? "&" : "")
                        .append(secret ? parameter.substring(0, eq + 1) + mask(parameter.substring(eq + 1)) : parameter);
            }
            return out.toString();
        }

        /** Keeps an auth scheme word and four characters at each end of the secret; short ones show none. */
        static String mask(String value) {
            String scheme = "";
            String secret = value;
            int space = value.indexOf(' ');
            if (space > 0 && value.substring(0, space).chars().allMatch(Character::isLetter)) {
                scheme = value.substring(0, space + 1);
                secret = value.substring(space + 1);
            }
            return secret.length() < 16 ? scheme + "…" : scheme + secret.substring(0, 4) + "…"
                    + secret.substring(secret.length() - 4);
        }
    }

    /**
     * Appends records to the log file from one thread fed by a queue: no request waits on the
     * disk, records never interleave, and each is on disk within a tenth of a second. Records wait in
     * memory until the next flush, so that a log file deleted, moved or failing underneath is
     * noticed and re-opened without ever splitting a record.
     */
    static final class LogWriter implements AutoCloseable {
        /** -Dllmproxy.log=off skips the CSV work, so a benchmark can price it; not for users. */
        private static final boolean DISCARD = "off".equals(System.getProperty("llmproxy.log"));
        /** Longest time a record waits in memory before it is written to the file. */
        private static final long FLUSH_NANOS = TimeUnit.MILLISECONDS.toNanos(100);
        /** Characters of formatted records held before they are written, however young. */
        private static final int PENDING_LIMIT = 1 << 20;
        private static final Record POISON = new Record("", Instant.EPOCH, "", "", "", "", 0, Record.Outcome.COMPLETE,
                null, 0, -1, Map.of(), Map.of(), new Record.Body(new byte[0], 0, ""), new Record.Body(new byte[0], 0, ""));

        private final LogMemory memory;
        private final Path file;
        private final List<Column> columns;
        private final boolean jsonl;
        private final boolean excelSafe;
        private final String header; // of a CSV log; a JSONL log has none
        private final Secrets secrets;
        private final long maxBody;
        private final boolean keepBase64;
        private final long rotateAt;
        private final int keep;
        private final BlockingQueue<Record> queue = new LinkedBlockingQueue<>();
        private final Thread thread;
        private final PrintStream err;
        private final AtomicLong written = new AtomicLong();
        private final AtomicLong lost = new AtomicLong();
        private final StringBuilder pending = new StringBuilder();
        private final byte[] slice = new byte[64 * 1024];
        private int pendingRecords;
        private final StringBuilder summaries = new StringBuilder();
        private OutputStream out;
        /** Standard output, with --log-file -: never re-opened, rotated or closed. */
        private volatile PrintStream stdout;
        private Object openedKey; // identity (device, inode) of the file `out` writes to
        private long size;
        private boolean failing;
        private boolean rotateFailing;
        private volatile boolean closed;

        private LogWriter(Config config, LogMemory memory, OutputStream out, long size, PrintStream err) {
            this.memory = memory;
            this.file = config.logFile();
            this.columns = config.logColumns();
            this.jsonl = config.logFormat() == LogFormat.JSONL;
            this.excelSafe = config.logExcelSafe();
            this.header = headerRow(columns);
            this.secrets = new Secrets(!config.logSecrets(), config.addHeaders());
            this.maxBody = config.logMaxBody();
            this.rotateAt = config.logRotate();
            this.keep = config.logKeep();
            this.keepBase64 = config.logBase64();
            this.out = out;
            this.openedKey = config.logToStdout() ? null : fileKey(config.logFile());
            this.size = size;
            this.err = err;
            thread = new Thread(this::run, "llmproxy-log-writer");
            thread.setDaemon(true);
            thread.start();
        }

        static String headerRow(List<Column> columns) {
            return String.join(",", columns.stream().map(Column::header).toList());
        }

        static LogWriter open(Config config, PrintStream err) {
            return open(config, LogMemory.UNLIMITED, err);
        }

        /**
         * Opens the log for appending; a new or empty file gets the header row, one with another
         * is refused. The writer gives back to {@code memory} what each record held once written.
         */
        static LogWriter open(Config config, LogMemory memory, PrintStream err) {
            return open(config, memory, System.out, err);
        }

        /** As {@link #open(Config, LogMemory, PrintStream)}; with --log-file - the records go to {@code stdout}. */
        static LogWriter open(Config config, LogMemory memory, PrintStream stdout, PrintStream err) {
            Path file = config.logFile();
            boolean jsonl = config.logFormat() == LogFormat.JSONL;
            String header = headerRow(config.logColumns());
            if (config.logToStdout()) {
                if (!jsonl) {
                    stdout.print(header + "\r\n");
                    stdout.flush();
                }
                LogWriter writer = new LogWriter(config, memory, stdout, 0, err);
                writer.stdout = stdout;
                return writer;
            }
            try {
                createPrivate(file);
                String first = firstLine(file);
                if (first != null && (jsonl ? !first.startsWith("{") : !first.equals(header))) {
                    throw new StartupException("log file " + file + " starts with '" + abbreviate(first) + "', not "
                            + (jsonl ? "a JSONL record" : "the header of the chosen --log-columns '" + header + "'")
                            + "; refusing to mix formats: choose another --log-file or move the old file away");
                }
                OutputStream out = Files.newOutputStream(file, StandardOpenOption.APPEND);
                if (first == null && !jsonl) {
                    out.write((header + "\r\n").getBytes(StandardCharsets.UTF_8));
                }
                return new LogWriter(config, memory, out, Files.size(file), err);
            } catch (AccessDeniedException e) {
                throw new StartupException("cannot write log file " + file + ": permission denied");
            } catch (NoSuchFileException e) {
                throw new StartupException("cannot create log file " + file + ": its directory does not exist");
            } catch (IOException e) {
                throw new StartupException("cannot open log file " + file + ": " + e.getMessage());
            }
        }

        /** Creates the file readable by its owner only, where the file system knows permissions. */
        private static void createPrivate(Path file) throws IOException {
            try {
                Files.createFile(file, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
            } catch (FileAlreadyExistsException e) {
                // appending to an existing log keeps its permissions
            } catch (UnsupportedOperationException e) {
                Files.createFile(file);
            }
        }

        /** The file's first line, or null when the file is empty. */
        private static String firstLine(Path file) throws IOException {
            try (InputStream in = Files.newInputStream(file)) {
                byte[] head = in.readNBytes(4096);
                if (head.length == 0) {
                    return null;
                }
                String text = new String(head, StandardCharsets.UTF_8);
                int end = text.indexOf('\n');
                String line = end < 0 ? text : text.substring(0, end);
                return line.endsWith("\r") ? line.substring(0, line.length() - 1) : line;
            }
        }

        private static String abbreviate(String text) {
            return text.length() > 80 ? text.substring(0, 80) + "…" : text;
        }

        Path file() {
            return file;
        }

        /** Records written to the file so far. */
        long written() {
            return written.get();
        }

        void submit(Record record) {
            if (closed) {
                err.println("llmproxy: log closed, record not written: " + record.method() + " " + record.url());
                lost.incrementAndGet();
                memory.give(record.heldBytes());
                return;
            }
            queue.add(record);
            if (memory.used() > memory.limit() / 2) {
                LockSupport.unpark(thread); // written sooner, their bodies' memory given back sooner
            }
        }

        /**
         * Takes records as they come and writes them at most every {@link #FLUSH_NANOS}, many per
         * system call, or sooner when large ones pile up. Nothing thrown ends this thread: only
         * close() does, after the queue is drained.
         */
        private void run() {
            long flushDue = Long.MAX_VALUE; // when the oldest record in memory must be on disk
            while (true) {
                try {
                    Record record;
                    if (flushDue == Long.MAX_VALUE) {
                        try {
                            record = queue.take();
                        } catch (InterruptedException e) {
                            continue;
                        }
                    } else if ((record = queue.poll()) == null) {
                        // A batch is open: sleep until it is due instead of waiting on the queue,
                        // which would wake this thread for every record that comes (the wake-up
                        // costs more than formatting the record). close() wakes it, and so does
                        // a log memory running short.
                        LockSupport.parkNanos(this, flushDue - System.nanoTime());
                    }
                    if (record == POISON) {
                        flush();
                        return;
                    }
                    if (record != null) {
                        try {
                            formatOrSalvage(record);
                        } finally {
                            memory.give(record.heldBytes()); // its text is in pending now, or lost
                        }
                        if (flushDue == Long.MAX_VALUE) {
                            flushDue = System.nanoTime() + FLUSH_NANOS;
                        }
                    }
                    if (System.nanoTime() - flushDue >= 0 || pending.length() > PENDING_LIMIT) {
                        flush();
                        flushDue = Long.MAX_VALUE;
                    }
                } catch (RuntimeException | Error e) {
                    // A heap full for a moment, say: the records in memory are lost, the writer is not.
                    lost.addAndGet(pendingRecords);
                    pending.setLength(0);
                    pendingRecords = 0;
                    flushDue = Long.MAX_VALUE;
                    err.println("llmproxy: the log writer failed (" + e + "); records in memory were lost, writing goes on");
                }
            }
        }

        /**
         * Formats a record; one that cannot be formatted (a heap full for a moment, a body that
         * breaks a reader) is still written with its metadata, its bodies left out, and why.
         */
        private void formatOrSalvage(Record record) {
            int mark = pending.length();
            int summaryMark = summaries.length();
            try {
                format(record);
            } catch (RuntimeException | OutOfMemoryError e) {
                pending.setLength(mark); // no half row
                summaries.setLength(summaryMark);
                try {
                    format(record.withoutBodies("llmproxy could not format this record: " + e));
                } catch (RuntimeException | OutOfMemoryError again) {
                    pending.setLength(mark);
                    summaries.setLength(summaryMark);
                    lost.incrementAndGet();
                    err.println("llmproxy: cannot format record " + record.id() + ": " + again);
                }
            }
        }

        private void format(Record record) {
            summaries.append(secrets.scrub(record.summary())).append(System.lineSeparator());
            if (DISCARD) {
                return;
            }
            RecordView view = new RecordView(record, secrets, maxBody, keepBase64);
            if (jsonl) {
                pending.append('{');
                for (int i = 0; i < columns.size(); i++) {
                    Column column = columns.get(i);
                    String value = secrets.scrub(column.field(view));
                    pending.append(i > 0 ? ", " : "").append(Json.quote(column.header())).append(": ")
                            .append(value.isEmpty() ? "null" : column.unquoted() ? value : Json.quote(value));
                }
                pending.append("}\n");
            } else {
                for (int i = 0; i < columns.size(); i++) {
                    String field = secrets.scrub(columns.get(i).field(view));
                    if (i > 0) {
                        pending.append(',');
                    }
                    Csv.field(pending, excelSafe ? Csv.inert(field) : field); // straight into the batch: no row string
                }
                pending.append("\r\n");
            }
            pendingRecords++;
        }

        /** Writes the records in memory, re-opening the file first if it is gone; then the stderr lines. */
        private void flush() {
            if (pendingRecords > 0) {
                try {
                    if (stdout != null) {
                        out = stdout;
                    } else if (out == null || !Objects.equals(fileKey(file), openedKey)) {
                        reopen(); // never opened, failed, or deleted, moved or replaced underneath
                    }
                    byte[] bytes = pending.toString().getBytes(StandardCharsets.UTF_8);
                    writeInSlices(bytes);
                    out.flush();
                    size += bytes.length;
                    written.addAndGet(pendingRecords);
                    if (failing) {
                        failing = false;
                        err.println("llmproxy: writing to log file " + file + " again");
                    }
                } catch (IOException e) {
                    lost.addAndGet(pendingRecords);
                    closeQuietly();
                    if (!failing) {
                        failing = true;
                        err.println("llmproxy: cannot write to log file " + file + " (" + e.getMessage()
                                + "); still serving, counting the records lost, trying again at the next record");
                    }
                }
                pending.setLength(0);
                if (pending.capacity() > 4 * PENDING_LIMIT) {
                    pending.trimToSize(); // a huge record's room is not kept for good; a busy log's is
                }
                pendingRecords = 0;
                if (rotateAt > 0 && size > rotateAt && out != null) {
                    rotate(); // after the records are counted as written: a failed rotation loses none
                }
            }
            if (!summaries.isEmpty()) {
                err.print(summaries);
                err.flush();
                summaries.setLength(0);
            }
        }

        /**
         * Writes through one reusable slice: the JDK's file stream keeps the last array it was
         * given (to reuse its wrapper), and NIO keeps a native copy buffer as large as the
         * largest write, each for as long as the writer lives; a batch may be tens of megabytes.
         */
        private void writeInSlices(byte[] bytes) throws IOException {
            for (int at = 0; at < bytes.length; at += slice.length) {
                int n = Math.min(slice.length, bytes.length - at);
                System.arraycopy(bytes, at, slice, 0, n);
                out.write(slice, 0, n);
            }
        }

        /** Opens the file afresh: it was deleted or moved, or writing to it failed. */
        private void reopen() throws IOException {
            boolean deleted = out != null;
            closeQuietly();
            createPrivate(file);
            out = Files.newOutputStream(file, StandardOpenOption.APPEND);
            openedKey = fileKey(file);
            size = Files.size(file);
            if (size == 0 && !jsonl) {
                byte[] row = (header + "\r\n").getBytes(StandardCharsets.UTF_8);
                out.write(row);
                size = row.length;
            }
            if (deleted) {
                err.println("llmproxy: log file " + file + " was deleted, moved or replaced; writing to it afresh");
            }
        }

        /** The file's identity, or null when there is none at that path. */
        private static Object fileKey(Path file) {
            try {
                return Files.readAttributes(file, BasicFileAttributes.class).fileKey();
            } catch (IOException e) {
                return null;
            }
        }

        /**
         * Renames the full file with a timestamp suffix and starts the new one (with its header
         * row) at once, so that the log file always exists; then deletes rotated files beyond
         * --log-keep. A rotation that fails leaves the records where they are and is tried again
         * after the next write.
         */
        private void rotate() {
            String name = file.getFileName().toString();
            int dot = name.lastIndexOf('.');
            String base = dot > 0 ? name.substring(0, dot) : name;
            String extension = dot > 0 ? name.substring(dot) : "";
            String stamp = DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss-SSS").withZone(ZoneOffset.UTC).format(Instant.now());
            Path rotated = file.resolveSibling(base + "-" + stamp + extension);
            for (int n = 1; Files.exists(rotated); n++) { // two rotations within a millisecond
                rotated = file.resolveSibling(base + "-" + stamp + "-" + n + extension);
            }
            closeQuietly();
            try {
                Files.move(file, rotated);
                rotateFailing = false;
            } catch (IOException e) {
                if (!rotateFailing) {
                    rotateFailing = true;
                    err.println("llmproxy: cannot rotate log file " + file + " (" + e + "); still writing to it,"
                            + " trying again after each write");
                }
            }
            try {
                reopen();
            } catch (IOException e) {
                closeQuietly(); // the next flush opens it, or counts what it cannot write
            }
            if (keep > 0) {
                deleteRotatedBeyond(base, extension);
            }
        }

        /** Deletes the oldest rotated files of this log, keeping the --log-keep newest. */
        private void deleteRotatedBeyond(String base, String extension) {
            Path dir = file.toAbsolutePath().getParent();
            String pattern = java.util.regex.Pattern.quote(base) + "-\\d{8}-\\d{6}-\\d{3}(-\\d+)?"
                    + java.util.regex.Pattern.quote(extension);
            try (var files = Files.list(dir)) {
                List<Path> rotated = files.filter(p -> p.getFileName().toString().matches(pattern))
                        .sorted(java.util.Comparator.comparing((Path p) -> p.getFileName().toString()).reversed())
                        .toList();
                for (Path old : rotated.subList(Math.min(keep, rotated.size()), rotated.size())) {
                    Files.deleteIfExists(old);
                }
            } catch (IOException | RuntimeException e) {
                err.println("llmproxy: cannot delete old rotated log files in " + dir + " (" + e + ")");
            }
        }

        private void closeQuietly() {
            if (stdout != null) {
                stdout.flush(); // standard output stays open: it is not ours
                return;
            }
            if (out != null) {
                try {
                    out.close();
                } catch (IOException e) {
                    // the records it held are already counted as lost
                }
                out = null;
            }
        }

        /**
         * Writes every queued record, then closes the file and says how many could not be written.
         * A second caller waits until the first is done.
         */
        @Override
        public synchronized void close() {
            if (closed) {
                return;
            }
            closed = true;
            queue.add(POISON);
            LockSupport.unpark(thread);
            try {
                thread.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            closeQuietly();
            long count = lost.get();
            if (count > 0) {
                err.println("llmproxy: " + count + " records could not be written to " + file);
            }
        }
    }

    /** Turns a captured body into the text of a log field. */
    static final class BodyText {
        private BodyText() {}

        /**
         * Decodes gzip or deflate as the Content-Encoding says, then UTF-8. A body that is not
         * text becomes "[binary N bytes]"; one the log could not decode says so in the same way.
         */
        static String of(Record.Body body, long maxBody) {
            if (body.partial() != null && body.length() == 0) {
                return body.total() == 0 ? "" : "[" + body.partial() + ": " + body.total() + " bytes]";
            }
            String text = of(body.captured(), body.total(), body.encoding(), maxBody);
            return body.partial() == null ? text : text + "…[partial: " + body.partial() + "]";
        }

        /** The body's bytes with its Content-Encoding undone, or null when it cannot be. */
        static byte[] decoded(Record.Body body, long maxBody) {
            String coding = body.encoding() == null ? "" : body.encoding().trim().toLowerCase(Locale.ROOT);
            if (coding.isEmpty() || coding.equals("identity")) {
                return body.captured();
            }
            try {
                return decode(body.captured(), coding, maxBody);
            } catch (IOException e) {
                return null;
            }
        }

        static String of(byte[] captured, long total, String contentEncoding, long maxBody) {
            if (total == 0) {
                return "";
            }
            boolean cut = total > captured.length;
            String coding = contentEncoding == null ? "" : contentEncoding.trim().toLowerCase(Locale.ROOT);
            byte[] plain = captured;
            if (!coding.isEmpty() && !coding.equals("identity")) {
                try {
                    plain = decode(captured, coding, maxBody);
                } catch (IOException e) {
                    return "[undecodable " + coding + " body, " + total + " bytes: " + e.getMessage() + "]";
                }
            }
            String text = utf8(plain, cut);
            if (text == null) {
                return "[binary " + total + " bytes]";
            }
            return cut ? text + "…[truncated: " + total + " bytes total]" : text;
        }

        private static byte[] decode(byte[] body, String coding, long maxBody) throws IOException {
            byte[] result = body;
            String[] codings = coding.split(",");
            for (int i = codings.length - 1; i >= 0; i--) { // codings are listed in the order applied
                result = switch (codings[i].trim()) {
                    case "gzip", "x-gzip" -> gunzip(result, maxBody);
                    case "deflate" -> inflate(result, maxBody);
                    case "identity", "" -> result;
                    default -> throw new IOException("no decoder for " + codings[i].trim());
                };
            }
            return result;
        }

        private static byte[] gunzip(byte[] body, long maxBody) throws IOException {
            try (InputStream in = new GZIPInputStream(new ByteArrayInputStream(body))) {
                return readAtMost(in, maxBody);
            } catch (ZipException e) {
                throw new IOException("corrupt gzip data (" + e.getMessage() + ")");
            }
        }

        private static byte[] readAtMost(InputStream in, long maxBody) throws IOException {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buffer = new byte[8192];
            try {
                int n;
                while (out.size() < maxBody && (n = in.read(buffer)) > 0) {
                    out.write(buffer, 0, (int) Math.min(n, maxBody - out.size()));
                }
            } catch (EOFException e) {
                // a body cut short decodes as far as it goes
            }
            return out.toByteArray();
        }

        /** "deflate" is zlib-wrapped by the standard, but some servers send raw deflate. */
        private static byte[] inflate(byte[] body, long maxBody) throws IOException {
            try {
                return inflate(body, false, maxBody);
            } catch (DataFormatException e) {
                try {
                    return inflate(body, true, maxBody);
                } catch (DataFormatException raw) {
                    throw new IOException("corrupt deflate data (" + e.getMessage() + ")");
                }
            }
        }

        private static byte[] inflate(byte[] body, boolean raw, long maxBody) throws DataFormatException {
            Inflater inflater = new Inflater(raw);
            try {
                inflater.setInput(body);
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                byte[] buffer = new byte[8192];
                while (!inflater.finished() && out.size() < maxBody) {
                    int n = inflater.inflate(buffer);
                    if (n == 0 && (inflater.needsInput() || inflater.needsDictionary())) {
                        break; // input cut short: keep what decoded
                    }
                    out.write(buffer, 0, (int) Math.min(n, maxBody - out.size()));
                }
                return out.toByteArray();
            } finally {
                inflater.end();
            }
        }

        /** Base64 strings shorter than this are left alone: ids, hashes, small icons. */
        private static final int BASE64_MIN = 1024;
        /** The characters of base64 and of its URL-safe form, by ASCII code. */
        private static final boolean[] BASE64_DIGIT = new boolean[128];

        static {
            for (char c : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_".toCharArray()) {
                BASE64_DIGIT[c] = true;
            }
        }

        /**
         * Replaces each JSON string that is a long base64 payload — a data: URL, Anthropic's
         * source.data, OpenAI's input_audio.data and file data, Gemini's inlineData.data — by
         * its type and decoded size, e.g. [base64 image/png, 1.4 MB]. Screenshots would
         * otherwise be most of an agent's log. Everything else is kept as it is.
         */
        static String elideBase64(String text) {
            if (text.length() < BASE64_MIN) {
                return text;
            }
            StringBuilder out = null;
            int kept = 0; // text before this index is in out
            for (int open = text.indexOf('"'); open >= 0; ) {
                int close = closingQuote(text, open);
                if (close < 0) {
                    break; // a string cut short (a truncated body): left as it is
                }
                if (close - open - 1 > BASE64_MIN) {
                    String summary = base64Summary(text, open + 1, close);
                    if (summary != null) {
                        out = out == null ? new StringBuilder(text.length() / 4) : out;
                        out.append(text, kept, open + 1).append(summary);
                        kept = close;
                    }
                }
                open = text.indexOf('"', close + 1);
            }
            return out == null ? text : out.append(text, kept, text.length()).toString();
        }

        /**
         * The quote that ends the JSON string opened at {@code open}, or -1: the next quote after
         * an even run of backslashes. indexOf finds quotes many characters at a time; a prompt is
         * mostly long strings.
         */
        private static int closingQuote(String text, int open) {
            for (int close = text.indexOf('"', open + 1); close >= 0; close = text.indexOf('"', close + 1)) {
                int backslashes = 0;
                while (close - backslashes - 1 > open && text.charAt(close - backslashes - 1) == '\\') {
                    backslashes++;
                }
                if (backslashes % 2 == 0) {
                    return close;
                }
            }
            return -1;
        }

        /** "[base64 TYPE, SIZE]" when text[from, to) is a base64 payload (or a data: URL of one), else null. */
        private static String base64Summary(String text, int from, int to) {
            String type = null;
            if (text.startsWith("data:", from)) {
                int comma = text.indexOf(',', from);
                int marker = text.indexOf(";base64,", from);
                if (comma < 0 || marker < 0 || marker + 7 != comma || comma > from + 200) {
                    return null;
                }
                type = text.substring(from + 5, text.indexOf(';', from));
                from = comma + 1;
            }
            long digits = 0;
            int padding = 0;
            char[] head = new char[16];
            for (int i = from; i < to; i++) {
                char c = text.charAt(i);
                if (c == '\\' && i + 1 < to && (text.charAt(i + 1) == '/' || text.charAt(i + 1) == 'n')) {
                    if (text.charAt(++i) == '/') { // JSON may escape the slash
                        if (digits < head.length) {
                            head[(int) digits] = '/';
                        }
                        digits++;
                    } // a \n is a MIME line break
                } else if (c == '=') {
                    padding++;
                } else if (padding == 0 && c < 128 && BASE64_DIGIT[c]) {
                    if (digits < head.length) {
                        head[(int) digits] = c == '-' ? '+' : c == '_' ? '/' : c;
                    }
                    digits++;
                } else {
                    return null;
                }
            }
            if (digits < BASE64_MIN || padding > 2) {
                return null;
            }
            long bytes = digits * 3 / 4;
            return "[base64 " + (type == null || type.isEmpty() ? sniff(new String(head)) : type) + ", " + size(bytes) + "]";
        }

        /** The media type that a payload's first bytes announce; "data" when they say nothing known. */
        private static String sniff(String head) {
            byte[] b;
            try {
                b = java.util.Base64.getDecoder().decode(head.substring(0, head.length() / 4 * 4));
            } catch (IllegalArgumentException e) {
                return "data";
            }
            String ascii = new String(b, StandardCharsets.ISO_8859_1);
            if (ascii.startsWith("\u0089PNG")) {
                return "image/png";
            } else if (ascii.startsWith("\u00ff\u00d8\u00ff")) {
                return "image/jpeg";
            } else if (ascii.startsWith("GIF8")) {
                return "image/gif";
            } else if (ascii.startsWith("RIFF") && ascii.startsWith("WEBP", 8)) {
                return "image/webp";
            } else if (ascii.startsWith("RIFF") && ascii.startsWith("WAVE", 8)) {
                return "audio/wav";
            } else if (ascii.startsWith("%PDF")) {
                return "application/pdf";
            } else if (ascii.startsWith("ID3") || ascii.startsWith("\u00ff\u00fb") || ascii.startsWith("\u00ff\u00f3")) {
                return "audio/mpeg";
            } else if (ascii.startsWith("OggS")) {
                return "audio/ogg";
            } else if (ascii.startsWith("fLaC")) {
                return "audio/flac";
            }
            return "data";
        }

        private static String size(long bytes) {
            if (bytes >= 1 << 20) {
                return String.format(Locale.ROOT, "%.1f MB", bytes / 1048576.0);
            }
            return bytes >= 1024 ? String.format(Locale.ROOT, "%.1f KB", bytes / 1024.0) : bytes + " bytes";
        }

        /** Strict UTF-8, or null; a body cut mid-character loses only that last partial character. */
        static String utf8(byte[] bytes, boolean mayEndMidCharacter) {
            int end = mayEndMidCharacter ? completeUtf8Length(bytes) : bytes.length;
            // The JDK's own decoding is the fast one and keeps ASCII at a byte a character; it turns
            // bad bytes into U+FFFD, so only a text with U+FFFD in it needs the strict decoder's verdict.
            String text = new String(bytes, 0, end, StandardCharsets.UTF_8);
            if (text.indexOf('\uFFFD') < 0) {
                return text;
            }
            var decoder = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT);
            try {
                return decoder.decode(ByteBuffer.wrap(bytes, 0, end)).toString();
            } catch (CharacterCodingException e) {
                return null;
            }
        }

        /** Length without a trailing incomplete UTF-8 sequence. */
        private static int completeUtf8Length(byte[] bytes) {
            for (int back = 1; back <= Math.min(3, bytes.length); back++) {
                int b = bytes[bytes.length - back] & 0xff;
                if ((b & 0xc0) != 0x80) { // a lead byte (or ASCII): does its sequence fit?
                    int needed = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
                    return needed > back ? bytes.length - back : bytes.length;
                }
            }
            return bytes.length;
        }
    }

    // --- reading the conversation ---

    /** What the log shows of an LLM exchange; null fields are empty columns. */
    record Llm(String model, Boolean stream, String text, String reasoning, String toolCalls,
               Long inputTokens, Long outputTokens, Long cachedTokens, String stopReason, Long reasoningTokens,
               Long cacheWriteTokens, String responseModel, String responseId) {
        static final Llm NONE = new Llm(null, null, null, null, null, null, null, null, null, null, null, null, null);
    }

    /**
     * Reads an LLM exchange from its bodies: OpenAI Chat Completions and Responses, Anthropic
     * Messages, Ollama and Gemini, streamed or not. It runs on the log thread over the bytes the
     * client already has, so it never delays a stream; anything it does not understand gives
     * empty columns, never an error, and a stream cut short gives the text received so far.
     */
    static final class Conversation {
        private Conversation() {}

        private enum Format { OPENAI_CHAT, OPENAI_RESPONSES, ANTHROPIC, OLLAMA, GEMINI }

        /** The API a path belongs to: openai-chat, openai-responses, anthropic, ollama, gemini; null for none. */
        static String api(String path) {
            Format format = format(trimSlashes(path));
            return format == null ? null : switch (format) {
                case OPENAI_CHAT -> "openai-chat";
                case OPENAI_RESPONSES -> "openai-responses";
                case ANTHROPIC -> "anthropic";
                case OLLAMA -> "ollama";
                case GEMINI -> "gemini";
            };
        }

        /**
         * @param url the upstream URL when there is one: its path names the API even when the
         *            client posts to "/" of a target that is the endpoint itself
         */
        static Llm read(String url, byte[] request, String contentType, byte[] response) {
            try {
                String path = trimSlashes(URI.create(url).getRawPath());
                Format format = format(path);
                if (format == null) {
                    return Llm.NONE;
                }
                Object requestJson = request == null || request.length == 0 ? null
                        : parseQuietly(new String(request, StandardCharsets.UTF_8));
                List<Object> messages = new ArrayList<>();
                boolean streamed = messages(contentType, response, messages);
                Assembly a = new Assembly();
                for (Object message : messages) {
                    switch (format) {
                        case OPENAI_CHAT -> a.openAiChat(message);
                        case OPENAI_RESPONSES -> a.openAiResponses(message);
                        case ANTHROPIC -> a.anthropic(message);
                        case OLLAMA -> a.ollama(message);
                        case GEMINI -> a.gemini(message);
                    }
                }
                String model = Json.string(requestJson, "model");
                if (model == null && format == Format.GEMINI) {
                    int at = path.indexOf("/models/");
                    int colon = path.lastIndexOf(':');
                    model = at >= 0 && colon > at ? path.substring(at + 8, colon) : null;
                }
                return a.result(model, messages.isEmpty() ? null : streamed);
            } catch (RuntimeException | StackOverflowError e) {
                return Llm.NONE; // a log column is not worth a lost record
            }
        }

        private static Format format(String path) {
            if (path.endsWith("/chat/completions")) {
                return Format.OPENAI_CHAT;
            } else if (path.endsWith("/responses")) {
                return Format.OPENAI_RESPONSES;
            } else if (path.endsWith("/messages")) {
                return Format.ANTHROPIC;
            } else if (path.endsWith("/api/chat") || path.endsWith("/api/generate")) {
                return Format.OLLAMA;
            } else if (path.contains(":generateContent") || path.contains(":streamGenerateContent")) {
                return Format.GEMINI;
            }
            return null;
        }

        /** The JSON documents of a response body, SSE, NDJSON or one document; true when streamed. */
        private static boolean messages(String contentType, byte[] body, List<Object> out) {
            if (body == null || body.length == 0) {
                return false;
            }
            String type = contentType == null ? "" : contentType.toLowerCase(Locale.ROOT);
            if (type.contains("text/event-stream") || looksLikeSse(body)) {
                Sse sse = new Sse();
                sse.feed(body, 0, body.length);
                for (Sse.Event event : sse.finish()) {
                    if (!event.data().equals("[DONE]")) {
                        Object json = parseQuietly(event.data());
                        if (json instanceof Map<?, ?> map && !map.containsKey("type") && !event.type().equals("message")) {
                            Map<String, Object> typed = new LinkedHashMap<>();
                            typed.put("type", event.type()); // the event name carries the type in some streams
                            map.forEach((k, v) -> typed.put(String.valueOf(k), v));
                            json = typed;
                        }
                        add(out, json);
                    }
                }
                return true;
            }
            String text = new String(body, StandardCharsets.UTF_8).trim();
            if (type.contains("ndjson") || (text.startsWith("{") && text.contains("}\n{"))) {
                for (String line : text.split("\r?\n")) {
                    if (!line.isBlank()) {
                        add(out, parseQuietly(line));
                    }
                }
                return out.size() > 1;
            }
            if (text.startsWith("[")) { // Gemini's streamGenerateContent without alt=sse
                arrayElements(text, out);
                return true;
            }
            add(out, parseQuietly(text));
            return false;
        }

        /** A body sent with the wrong content type that still reads as server-sent events. */
        private static boolean looksLikeSse(byte[] body) {
            String head = new String(body, 0, Math.min(body.length, 64), StandardCharsets.UTF_8).stripLeading();
            return head.startsWith("data:") || head.startsWith("event:") || head.startsWith(": ");
        }

        /**
         * The elements of a JSON array one by one, so that an array cut short (a stream that
         * ended early) still gives every element that arrived whole.
         */
        private static void arrayElements(String text, List<Object> out) {
            int depth = 0;
            int start = -1;
            boolean inString = false;
            for (int i = 1; i < text.length(); i++) {
                char c = text.charAt(i);
                if (inString) {
                    if (c == '\\') {
                        i++;
                    } else if (c == '"') {
                        inString = false;
                    }
                } else if (c == '"') {
                    inString = true;
                } else if (c == '{' || c == '[') {
                    if (depth++ == 0) {
                        start = i;
                    }
                } else if ((c == '}' || c == ']') && depth > 0 && --depth == 0) {
                    add(out, parseQuietly(text.substring(start, i + 1)));
                }
            }
        }

        private static void add(List<Object> out, Object json) {
            if (json != null) {
                out.add(json);
            }
        }

        private static Object parseQuietly(String text) {
            try {
                return Json.parse(text);
            } catch (IllegalArgumentException e) {
                return null; // a document cut mid-way (a stream cut short) adds nothing
            }
        }

        /** The pieces of an answer, gathered document by document. */
        private static final class Assembly {
            private String model;
            private final StringBuilder text = new StringBuilder();
            private final StringBuilder reasoning = new StringBuilder();
            private final Map<Object, String[]> tools = new LinkedHashMap<>(); // key -> {name, arguments}
            private Long input;
            private Long output;
            private Long cached;
            private Long reasoningTokens;
            private Long cacheWrite;
            private String id;
            private String stop;
            private boolean refused;

            private void tool(Object key, String name, String arguments) {
                String[] call = tools.computeIfAbsent(key, k -> new String[] {"", ""});
                if (name != null && !name.isEmpty()) {
                    call[0] = name;
                }
                if (arguments != null) {
                    call[1] += arguments;
                }
            }

            private static void append(StringBuilder to, String piece) {
                if (piece != null) {
                    to.append(piece);
                }
            }

            /** An API error: "error: kind: message", the kind being its type, or its code when the type says only "error". */
            private void error(Object error) {
                if (error != null) {
                    String type = Json.string(error, "type");
                    String kind = type != null && !type.equals("error") ? type : Json.string(error, "code");
                    String message = Json.string(error, "message");
                    stop = "error: " + (kind != null ? kind : "") + (message != null ? (kind != null ? ": " : "") + message : "");
                }
            }

            /** A model's refusal: its text goes to the answer, marked once, and the stop reason says so. */
            private void refusal(String piece) {
                if (piece != null) {
                    if (!refused) {
                        text.append(text.isEmpty() ? "" : "\n").append("[refusal] ");
                        refused = true;
                    }
                    text.append(piece);
                }
            }

            void openAiChat(Object m) {
                model = firstNonNull(model, Json.string(m, "model"));
                id = firstNonNull(id, Json.string(m, "id"));
                Object choice = null; // the first choice only: with n > 1, the others would interleave with it
                if (Json.at(m, "choices") instanceof List<?> choices) {
                    for (Object c : choices) {
                        Object index = Json.at(c, "index");
                        if (index == null || Long.valueOf(0).equals(index)) {
                            choice = c;
                            break;
                        }
                    }
                }
                Object delta = firstNonNull(Json.at(choice, "delta"), Json.at(choice, "message"));
                append(text, Json.string(delta, "content"));
                refusal(Json.string(delta, "refusal"));
                append(reasoning, firstNonNull(Json.string(delta, "reasoning_content"), Json.string(delta, "reasoning")));
                if (Json.at(delta, "tool_calls") instanceof List<?> calls) {
                    for (int i = 0; i < calls.size(); i++) {
                        Object call = calls.get(i);
                        Object index = firstNonNull(Json.at(call, "index"), (long) i);
                        tool(index, Json.string(call, "function", "name"), Json.string(call, "function", "arguments"));
                    }
                }
                stop = refused ? "refusal" : firstNonNull(Json.string(choice, "finish_reason"), stop);
                Object usage = Json.at(m, "usage");
                if (usage != null) {
                    input = Json.number(usage, "prompt_tokens");
                    output = Json.number(usage, "completion_tokens");
                    cached = Json.number(usage, "prompt_tokens_details", "cached_tokens");
                    reasoningTokens = Json.number(usage, "completion_tokens_details", "reasoning_tokens");
                }
                error(Json.at(m, "error"));
            }

            void openAiResponses(Object m) {
                String type = Json.string(m, "type");
                if (type == null || type.equals("response")) { // not streamed: the whole response object
                    Object object = Json.string(m, "object") != null ? m : Json.at(m, "response");
                    responseObject(object == null ? m : object, true);
                    return;
                }
                switch (type) {
                    case "response.output_text.delta" -> append(text, Json.string(m, "delta"));
                    case "response.reasoning_summary_text.delta", "response.reasoning_text.delta" ->
                            append(reasoning, Json.string(m, "delta"));
                    case "response.refusal.delta" -> refusal(Json.string(m, "delta"));
                    case "response.output_item.added" -> {
                        String item = String.valueOf(Json.string(m, "item", "type"));
                        if (item.equals("function_call") || item.equals("custom_tool_call")) {
                            tool(Json.at(m, "output_index"), Json.string(m, "item", "name"), null);
                        }
                    }
                    case "response.function_call_arguments.delta", "response.custom_tool_call_input.delta" ->
                            tool(Json.at(m, "output_index"), null, Json.string(m, "delta"));
                    case "response.custom_tool_call_input.done" -> {
                        String[] call = tools.get(Json.at(m, "output_index"));
                        if (call != null && call[1].isEmpty()) { // no deltas came: the whole input is here
                            tool(Json.at(m, "output_index"), null, Json.string(m, "input"));
                        }
                    }
                    case "response.created", "response.in_progress", "response.completed", "response.incomplete",
                         "response.failed" -> responseObject(Json.at(m, "response"), false);
                    case "error" -> error(firstNonNull(Json.at(m, "error"), m));
                    default -> { }
                }
            }

            /** A Responses API response object: its model, status and usage, and when whole its output. */
            private void responseObject(Object r, boolean whole) {
                model = firstNonNull(Json.string(r, "model"), model);
                id = firstNonNull(Json.string(r, "id"), id);
                String status = Json.string(r, "status");
                boolean errorSaid = stop != null && stop.startsWith("error:"); // by an error event: keep its code
                if (status != null && !status.equals("in_progress") && !status.equals("queued") && !errorSaid) {
                    String reason = Json.string(r, "incomplete_details", "reason");
                    stop = reason != null ? status + ": " + reason : status;
                }
                error(Json.at(r, "error"));
                Object usage = Json.at(r, "usage");
                if (usage != null) {
                    input = Json.number(usage, "input_tokens");
                    output = Json.number(usage, "output_tokens");
                    cached = Json.number(usage, "input_tokens_details", "cached_tokens");
                    reasoningTokens = Json.number(usage, "output_tokens_details", "reasoning_tokens");
                }
                if (whole && Json.at(r, "output") instanceof List<?> items) {
                    for (int i = 0; i < items.size(); i++) {
                        Object item = items.get(i);
                        switch (String.valueOf(Json.string(item, "type"))) {
                            case "message" -> {
                                if (Json.at(item, "content") instanceof List<?> parts) {
                                    for (Object part : parts) {
                                        append(text, Json.string(part, "text"));
                                        refusal(Json.string(part, "refusal"));
                                    }
                                }
                            }
                            case "reasoning" -> {
                                if (Json.at(item, "summary") instanceof List<?> parts) {
                                    parts.forEach(p -> append(reasoning, Json.string(p, "text")));
                                }
                            }
                            case "function_call" -> tool((long) i, Json.string(item, "name"), Json.string(item, "arguments"));
                            case "custom_tool_call" -> tool((long) i, Json.string(item, "name"), Json.string(item, "input"));
                            default -> { }
                        }
                    }
                }
                if (refused && "completed".equals(status)) {
                    stop = "refusal";
                }
            }

            void anthropic(Object m) {
                switch (String.valueOf(Json.string(m, "type"))) {
                    case "message_start" -> {
                        Object message = Json.at(m, "message");
                        model = firstNonNull(Json.string(message, "model"), model);
                        id = firstNonNull(Json.string(message, "id"), id);
                        input = firstNonNull(Json.number(message, "usage", "input_tokens"), input);
                        cached = firstNonNull(Json.number(message, "usage", "cache_read_input_tokens"), cached);
                        cacheWrite = firstNonNull(Json.number(message, "usage", "cache_creation_input_tokens"), cacheWrite);
                    }
                    case "content_block_start" -> {
                        Object block = Json.at(m, "content_block");
                        if (isAnthropicToolUse(Json.string(block, "type"))) {
                            tool(Json.at(m, "index"), Json.string(block, "name"), null);
                        }
                    }
                    case "content_block_delta" -> {
                        Object delta = Json.at(m, "delta");
                        switch (String.valueOf(Json.string(delta, "type"))) {
                            case "text_delta" -> append(text, Json.string(delta, "text"));
                            case "thinking_delta" -> append(reasoning, Json.string(delta, "thinking"));
                            case "input_json_delta" -> tool(Json.at(m, "index"), null, Json.string(delta, "partial_json"));
                            default -> { }
                        }
                    }
                    case "message_delta" -> {
                        stop = firstNonNull(Json.string(m, "delta", "stop_reason"), stop);
                        output = firstNonNull(Json.number(m, "usage", "output_tokens"), output);
                        input = firstNonNull(Json.number(m, "usage", "input_tokens"), input);
                        cached = firstNonNull(Json.number(m, "usage", "cache_read_input_tokens"), cached);
                        cacheWrite = firstNonNull(Json.number(m, "usage", "cache_creation_input_tokens"), cacheWrite);
                    }
                    case "message" -> { // not streamed
                        model = Json.string(m, "model");
                        id = Json.string(m, "id");
                        if (Json.at(m, "content") instanceof List<?> blocks) {
                            for (int i = 0; i < blocks.size(); i++) {
                                Object block = blocks.get(i);
                                switch (String.valueOf(Json.string(block, "type"))) {
                                    case "text" -> append(text, Json.string(block, "text"));
                                    case "thinking" -> append(reasoning, Json.string(block, "thinking"));
                                    default -> {
                                        if (isAnthropicToolUse(Json.string(block, "type"))) {
                                            tool((long) i, Json.string(block, "name"), Json.write(Json.at(block, "input")));
                                        }
                                    }
                                }
                            }
                        }
                        stop = Json.string(m, "stop_reason");
                        input = Json.number(m, "usage", "input_tokens");
                        output = Json.number(m, "usage", "output_tokens");
                        cached = Json.number(m, "usage", "cache_read_input_tokens");
                        cacheWrite = Json.number(m, "usage", "cache_creation_input_tokens");
                    }
                    case "error" -> error(Json.at(m, "error"));
                    default -> { } // ping, content_block_stop, message_stop, unknown events
                }
            }

            /** A tool call block: the client's tools, and those Anthropic runs itself (web search, MCP servers). */
            private static boolean isAnthropicToolUse(String type) {
                return "tool_use".equals(type) || "server_tool_use".equals(type) || "mcp_tool_use".equals(type);
            }

            void ollama(Object m) {
                model = firstNonNull(model, Json.string(m, "model"));
                append(text, firstNonNull(Json.string(m, "message", "content"), Json.string(m, "response")));
                append(reasoning, firstNonNull(Json.string(m, "message", "thinking"), Json.string(m, "thinking")));
                if (Json.at(m, "message", "tool_calls") instanceof List<?> calls) {
                    for (Object call : calls) {
                        tool((long) tools.size(), Json.string(call, "function", "name"),
                                Json.write(Json.at(call, "function", "arguments")));
                    }
                }
                if (Boolean.TRUE.equals(Json.at(m, "done"))) {
                    input = Json.number(m, "prompt_eval_count");
                    output = Json.number(m, "eval_count");
                    stop = Json.string(m, "done_reason");
                }
                String error = Json.string(m, "error");
                if (error != null) {
                    stop = "error: " + error;
                }
            }

            void gemini(Object m) {
                model = firstNonNull(Json.string(m, "modelVersion"), model);
                id = firstNonNull(id, Json.string(m, "responseId"));
                Object candidate = Json.at(m, "candidates", 0);
                if (Json.at(candidate, "content", "parts") instanceof List<?> parts) {
                    for (Object part : parts) {
                        boolean thought = Boolean.TRUE.equals(Json.at(part, "thought"));
                        append(thought ? reasoning : text, Json.string(part, "text"));
                        Object call = Json.at(part, "functionCall");
                        if (call != null) {
                            tool((long) tools.size(), Json.string(call, "name"), Json.write(Json.at(call, "args")));
                        }
                    }
                }
                stop = firstNonNull(Json.string(candidate, "finishReason"), stop);
                Object usage = Json.at(m, "usageMetadata");
                if (usage != null) {
                    input = Json.number(usage, "promptTokenCount");
                    // Gemini counts thinking apart from the answer; both are billed as output.
                    Long answer = Json.number(usage, "candidatesTokenCount");
                    reasoningTokens = Json.number(usage, "thoughtsTokenCount");
                    output = answer == null ? reasoningTokens
                            : reasoningTokens == null ? answer : Long.valueOf(answer + reasoningTokens);
                    cached = Json.number(usage, "cachedContentTokenCount");
                }
                error(Json.at(m, "error"));
            }

            Llm result(String requestModel, Boolean stream) {
                StringBuilder calls = new StringBuilder();
                for (String[] call : tools.values()) {
                    calls.append(calls.isEmpty() ? "" : "\n").append(call[0]).append('(').append(call[1]).append(')');
                }
                return new Llm(firstNonNull(requestModel, model), stream, text.isEmpty() ? null : text.toString(),
                        reasoning.isEmpty() ? null : reasoning.toString(), calls.isEmpty() ? null : calls.toString(),
                        input, output, cached, stop, reasoningTokens, cacheWrite, model, id);
            }
        }

        static <T> T firstNonNull(T a, T b) {
            return a != null ? a : b;
        }

        /** A URL path without its trailing slashes: /v1/ and /v1 name the same API. */
        static String trimSlashes(String path) {
            int end = path == null ? 0 : path.length();
            while (end > 0 && path.charAt(end - 1) == '/') {
                end--;
            }
            return end == 0 ? "" : path.substring(0, end);
        }
    }

    /**
     * Server-sent events per the HTML standard, fed bytes as they arrive: CR, LF or CRLF line
     * ends (also split across reads), multi-line data, comments, UTF-8 decoded per whole line.
     * Unlike a browser it keeps a last event that lacks its closing blank line: a cut stream.
     */
    static final class Sse {
        record Event(String type, String data) {}

        private final List<Event> events = new ArrayList<>();
        private final ByteArrayOutputStream line = new ByteArrayOutputStream();
        private boolean afterCr;
        private String type = "";
        private StringBuilder data;

        void feed(byte[] bytes, int offset, int length) {
            int end = offset + length;
            int i = offset;
            if (afterCr && i < end) {
                afterCr = false;
                if (bytes[i] == '\n') {
                    i++; // the LF of a CRLF split across two reads
                }
            }
            int start = i;
            while (i < end) {
                byte b = bytes[i];
                if (b != '\r' && b != '\n') {
                    i++;
                    continue;
                }
                line.write(bytes, start, i - start); // a whole span, not byte by byte
                endLine();
                if (b == '\r') {
                    if (i + 1 == end) {
                        afterCr = true;
                    } else if (bytes[i + 1] == '\n') {
                        i++;
                    }
                }
                start = ++i;
            }
            line.write(bytes, start, end - start);
        }

        List<Event> finish() {
            if (line.size() > 0) {
                endLine();
            }
            dispatch();
            return events;
        }

        private void endLine() {
            String text = line.toString(StandardCharsets.UTF_8);
            line.reset();
            if (text.isEmpty()) {
                dispatch();
                return;
            }
            if (text.startsWith(":")) {
                return; // a comment
            }
            int colon = text.indexOf(':');
            String field = colon < 0 ? text : text.substring(0, colon);
            String value = colon < 0 ? "" : text.substring(colon + 1);
            if (value.startsWith(" ")) {
                value = value.substring(1);
            }
            if (field.equals("data")) {
                data = data == null ? new StringBuilder(value) : data.append('\n').append(value);
            } else if (field.equals("event")) {
                type = value;
            }
        }

        private void dispatch() {
            if (data != null) {
                events.add(new Event(type.isEmpty() ? "message" : type, data.toString()));
            }
            data = null;
            type = "";
        }
    }

    // --- OpenTelemetry export ---

    /**
     * Where a span sits in a trace: the caller's trace when its request carried a W3C
     * traceparent, else a new one; this exchange's span; and the caller's span as parent.
     */
    record TraceContext(String traceId, String spanId, String parentSpanId, String flags) {
        private static final java.util.regex.Pattern TRACEPARENT =
                java.util.regex.Pattern.compile("00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})");

        /** A child of {@code traceparent} when it is valid, else the root of a new trace. */
        static TraceContext of(String traceparent) {
            var random = ThreadLocalRandom.current();
            String span = hex(random.nextLong(), 16);
            if (traceparent != null) {
                var m = TRACEPARENT.matcher(traceparent.trim());
                if (m.matches() && !m.group(1).equals("0".repeat(32)) && !m.group(2).equals("0".repeat(16))) {
                    return new TraceContext(m.group(1), span, m.group(2), m.group(3));
                }
            }
            return new TraceContext(hex(random.nextLong(), 16) + hex(random.nextLong(), 16), span, null, "01");
        }

        /** The traceparent the upstream gets: this exchange's span as the parent of whatever it does. */
        String traceparent() {
            return "00-" + traceId + "-" + spanId + "-" + flags;
        }

        private static String hex(long value, int digits) {
            String text = Long.toHexString(value);
            return "0".repeat(digits - text.length()) + text;
        }
    }

    /**
     * OTLP/HTTP export of one span per exchange, JSON encoded, after OpenTelemetry's GenAI
     * conventions. Exchanges are noted on the request path (a bounded queue, never a wait) and
     * sent in batches by a thread of its own, at most every second or 512 spans. A slow or dead
     * collector costs dropped spans only: counted, said once on stderr, totalled at shutdown;
     * 429, 502, 503, 504 and connection errors are retried with backoff (Retry-After honoured).
     */
    static final class Telemetry implements AutoCloseable {
        private static final int BATCH = 512;
        private static final int QUEUE = 8192;
        private static final long BATCH_NANOS = TimeUnit.SECONDS.toNanos(1);
        private static final int ATTEMPTS = 4;

        /** Where spans go and what they say of their service; from --otlp-endpoint and the OTEL_* variables. */
        record Settings(URI endpoint, Map<String, String> headers, Map<String, String> resource, boolean content) {
            static Settings of(String flag, boolean content, UnaryOperator<String> env) {
                String endpoint = flag;
                boolean whole = false;
                if (endpoint == null && env.apply("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != null) {
                    endpoint = env.apply("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
                    whole = true; // used as it is, as the specification says
                }
                if (endpoint == null) {
                    endpoint = env.apply("OTEL_EXPORTER_OTLP_ENDPOINT");
                }
                if (endpoint == null || endpoint.isBlank()) {
                    if (content) {
                        throw new UsageException("--otlp-content needs an endpoint: --otlp-endpoint URL or OTEL_EXPORTER_OTLP_ENDPOINT");
                    }
                    return null;
                }
                String url = endpoint.trim();
                if (!whole && !url.endsWith("/v1/traces")) {
                    url = url.replaceAll("/+$", "") + "/v1/traces";
                }
                URI uri;
                try {
                    uri = new URI(url);
                } catch (URISyntaxException e) {
                    uri = null;
                }
                if (uri == null || uri.getHost() == null || !(url.startsWith("http://") || url.startsWith("https://"))) {
                    throw new UsageException("the OTLP endpoint must be an http:// or https:// URL, got '" + endpoint + "'");
                }
                Map<String, String> resource = new LinkedHashMap<>(pairs(env.apply("OTEL_RESOURCE_ATTRIBUTES")));
                String service = env.apply("OTEL_SERVICE_NAME");
                resource.put("service.name", service != null && !service.isBlank() ? service
                        : resource.getOrDefault("service.name", "llmproxy"));
                resource.putIfAbsent("service.version", VERSION);
                return new Settings(uri, pairs(env.apply("OTEL_EXPORTER_OTLP_HEADERS")), resource, content);
            }

            /** "k1=v1,k2=v2", values percent-decoded, as the OTEL_* variables write them. */
            private static Map<String, String> pairs(String text) {
                Map<String, String> pairs = new LinkedHashMap<>();
                if (text != null) {
                    for (String pair : text.split(",")) {
                        int eq = pair.indexOf('=');
                        if (eq > 0) {
                            pairs.put(pair.substring(0, eq).trim(),
                                    java.net.URLDecoder.decode(pair.substring(eq + 1).trim(), StandardCharsets.UTF_8));
                        }
                    }
                }
                return pairs;
            }
        }

        private final Settings settings;
        private final Secrets secrets;
        private final long maxBody;
        private final Map<String, URI> uris = new HashMap<>();
        private final PrintStream err;
        private final HttpClient client;
        private final BlockingQueue<Object[]> queue = new java.util.concurrent.ArrayBlockingQueue<>(QUEUE);
        private final AtomicLong dropped = new AtomicLong();
        private final AtomicLong sent = new AtomicLong();
        private final Thread thread;
        private volatile boolean closing;
        private volatile boolean failing;
        private volatile int sending; // spans in the batch being sent now

        Telemetry(Settings settings, Config config, PrintStream err) {
            this.settings = settings;
            this.secrets = new Secrets(!config.logSecrets(), config.addHeaders());
            this.maxBody = config.logMaxBody();
            this.err = err;
            this.client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
            this.thread = new Thread(this::run, "llmproxy-otlp");
            this.thread.setDaemon(true);
            this.thread.start();
        }

        /** On the request path: the finished exchange goes in the queue, or is counted as dropped. */
        void finished(Record record, TraceContext trace) {
            if (!queue.offer(new Object[] {record, trace})) {
                dropped.incrementAndGet();
            }
        }

        private void run() {
            List<Object[]> batch = new ArrayList<>();
            while (true) {
                long due = System.nanoTime() + BATCH_NANOS;
                try {
                    while (batch.size() < BATCH) {
                        long wait = due - System.nanoTime();
                        Object[] next = closing ? queue.poll() : queue.poll(Math.max(0, wait), TimeUnit.NANOSECONDS);
                        if (next == null) {
                            break;
                        }
                        batch.add(next);
                    }
                } catch (InterruptedException e) {
                    // close() interrupts a wait: send what there is
                }
                if (!batch.isEmpty()) {
                    sending = batch.size();
                    send(batch);
                    sending = 0;
                    batch.clear();
                }
                if (closing && queue.isEmpty()) {
                    return;
                }
            }
        }

        private void send(List<Object[]> batch) {
            byte[] body;
            try {
                body = request(batch).getBytes(StandardCharsets.UTF_8);
            } catch (RuntimeException | OutOfMemoryError e) {
                drop(batch.size(), "cannot build the spans: " + e);
                return;
            }
            HttpRequest.Builder request = HttpRequest.newBuilder(settings.endpoint()).timeout(Duration.ofSeconds(10))
                    .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofByteArray(body));
            settings.headers().forEach((name, value) -> {
                try {
                    request.header(name, value);
                } catch (IllegalArgumentException e) {
                    // a header the JDK client cannot send: the collector goes without it
                }
            });
            long backoff = 500;
            for (int attempt = 1; attempt <= ATTEMPTS; attempt++) {
                String failure;
                long wait = backoff;
                try {
                    HttpResponse<Void> response = client.send(request.build(), HttpResponse.BodyHandlers.discarding());
                    int status = response.statusCode();
                    if (status >= 200 && status < 300) {
                        sent.addAndGet(batch.size());
                        if (failing) {
                            failing = false;
                            err.println("llmproxy: sending spans to " + settings.endpoint() + " works again");
                        }
                        return;
                    }
                    failure = "the collector answered " + status;
                    if (status != 429 && status != 502 && status != 503 && status != 504) {
                        break; // the spec: other answers are final
                    }
                    wait = response.headers().firstValueAsLong("Retry-After").orElse(-1) > 0
                            ? Math.min(30_000, response.headers().firstValueAsLong("Retry-After").getAsLong() * 1000) : backoff;
                } catch (IOException e) {
                    failure = Durations.describe(e);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    failure = "llmproxy is stopping";
                    attempt = ATTEMPTS;
                }
                if (attempt == ATTEMPTS || closing) {
                    drop(batch.size(), failure);
                    return;
                }
                try {
                    Thread.sleep(wait); // backoff before the next attempt, as OTLP asks
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                backoff *= 2;
            }
            drop(batch.size(), "the collector refused the spans");
        }

        private void drop(int count, String why) {
            dropped.addAndGet(count);
            if (!failing) {
                failing = true;
                err.println("llmproxy: cannot send spans to " + settings.endpoint() + " (" + why + "); dropping them,"
                        + " still serving");
            }
        }

        /** The ExportTraceServiceRequest of a batch, in OTLP's JSON encoding. */
        String request(List<Object[]> batch) {
            Map<String, Object> resource = new LinkedHashMap<>();
            resource.put("attributes", attributes(new LinkedHashMap<>(settings.resource())));
            List<Object> spans = new ArrayList<>();
            for (Object[] item : batch) {
                try {
                    spans.add(span((Record) item[0], (TraceContext) item[1]));
                } catch (RuntimeException e) {
                    dropped.incrementAndGet(); // one odd record (a URL that does not parse) costs its own span only
                }
            }
            Map<String, Object> scope = new LinkedHashMap<>();
            scope.put("scope", Map.of("name", "llmproxy", "version", VERSION));
            scope.put("spans", spans);
            Map<String, Object> resourceSpans = new LinkedHashMap<>();
            resourceSpans.put("resource", resource);
            resourceSpans.put("scopeSpans", List.of(scope));
            return Json.write(Map.of("resourceSpans", List.of(resourceSpans)));
        }

        /** A URL's parts; those of URLs without a query are parsed once (the exporter's thread alone asks). */
        private URI uri(String url) {
            if (url.indexOf('?') >= 0) {
                return URI.create(url);
            }
            URI known = uris.get(url);
            if (known == null) {
                known = URI.create(url);
                if (uris.size() < 256) {
                    uris.put(url, known);
                }
            }
            return known;
        }

        /** One exchange as a span: GenAI attributes for an LLM call, HTTP client ones for anything else. */
        Map<String, Object> span(Record r, TraceContext trace) {
            RecordView view = new RecordView(r, secrets, maxBody, false);
            URI upstream = uri(r.upstreamUrl().isEmpty() ? r.url() : r.upstreamUrl());
            String path = upstream.getRawPath() == null ? "" : upstream.getRawPath();
            String api = Conversation.api(path);
            Object request = api == null ? null : Json.parseOrNull(BodyText.decoded(r.request(), maxBody));
            Map<String, Object> a = new LinkedHashMap<>();
            String name = r.method();
            if (api != null) {
                Llm llm = view.llm();
                String operation = api.equals("gemini") ? "generate_content"
                        : path.endsWith("/api/generate") ? "text_completion" : "chat";
                a.put("gen_ai.operation.name", operation);
                a.put("gen_ai.provider.name", provider(upstream, api));
                if (api.startsWith("openai")) {
                    a.put("openai.api.type", api.equals("openai-responses") ? "responses" : "chat_completions");
                }
                String requestModel = Conversation.firstNonNull(Json.string(request, "model"), llm.model());
                a.put("gen_ai.request.model", requestModel);
                a.put("gen_ai.response.model", llm.responseModel());
                a.put("gen_ai.response.id", llm.responseId());
                if (llm.stopReason() != null && !llm.stopReason().startsWith("error:")) {
                    a.put("gen_ai.response.finish_reasons", List.of(llm.stopReason()));
                }
                Long input = llm.inputTokens();
                if (input != null && api.equals("anthropic")) { // the conventions count cached input tokens in
                    input += (llm.cachedTokens() == null ? 0 : llm.cachedTokens())
                            + (llm.cacheWriteTokens() == null ? 0 : llm.cacheWriteTokens());
                }
                a.put("gen_ai.usage.input_tokens", input);
                a.put("gen_ai.usage.output_tokens", llm.outputTokens());
                a.put("gen_ai.usage.cache_read.input_tokens", llm.cachedTokens());
                a.put("gen_ai.usage.cache_creation.input_tokens", llm.cacheWriteTokens());
                a.put("gen_ai.usage.reasoning.output_tokens", llm.reasoningTokens());
                a.put("gen_ai.request.max_tokens", firstNumber(request, List.of("max_tokens"), List.of("max_completion_tokens"),
                        List.of("max_output_tokens"), List.of("generationConfig", "maxOutputTokens"), List.of("options", "num_predict")));
                a.put("gen_ai.request.temperature", firstNumber(request, List.of("temperature"),
                        List.of("generationConfig", "temperature"), List.of("options", "temperature")));
                a.put("gen_ai.request.top_p", firstNumber(request, List.of("top_p"), List.of("generationConfig", "topP"),
                        List.of("options", "top_p")));
                if (Boolean.TRUE.equals(llm.stream())) {
                    a.put("gen_ai.request.stream", Boolean.TRUE);
                    if (r.ttfbMillis() >= 0) {
                        a.put("gen_ai.response.time_to_first_chunk", r.ttfbMillis() / 1000.0);
                    }
                }
                if (settings.content()) {
                    a.put("gen_ai.input.messages", secrets.scrub(BodyText.elideBase64(Json.write(Content.input(api, request)))));
                    a.put("gen_ai.output.messages", secrets.scrub(BodyText.elideBase64(Json.write(Content.output(llm)))));
                }
                name = operation + (requestModel == null ? "" : " " + requestModel);
            }
            a.put("http.request.method", r.method());
            if (r.status() > 0) {
                a.put("http.response.status_code", (long) r.status());
            }
            a.put("server.address", upstream.getHost());
            a.put("server.port", (long) (upstream.getPort() > 0 ? upstream.getPort()
                    : "https".equalsIgnoreCase(upstream.getScheme()) ? 443 : 80));
            a.put("url.path", path);
            boolean failed = r.outcome() != Record.Outcome.COMPLETE || r.status() >= 400;
            if (failed) {
                a.put("error.type", r.outcome() != Record.Outcome.COMPLETE ? r.outcome().label() : String.valueOf(r.status()));
            }
            a.put("llmproxy.id", r.id());
            a.put("llmproxy.outcome", r.outcome().label());
            long start = r.start().getEpochSecond() * 1_000_000_000L + r.start().getNano();
            Map<String, Object> span = new LinkedHashMap<>();
            span.put("traceId", trace.traceId());
            span.put("spanId", trace.spanId());
            if (trace.parentSpanId() != null) {
                span.put("parentSpanId", trace.parentSpanId());
            }
            span.put("name", name);
            span.put("kind", 3L); // CLIENT
            span.put("startTimeUnixNano", String.valueOf(start));
            span.put("endTimeUnixNano", String.valueOf(start + r.durationMillis() * 1_000_000L));
            span.put("attributes", attributes(a));
            if (r.ttfbMillis() >= 0) {
                span.put("events", List.of(Map.of("name", "first response byte", "timeUnixNano",
                        String.valueOf(start + r.ttfbMillis() * 1_000_000L))));
            }
            span.put("status", failed ? Map.of("code", 2L, "message", secrets.scrub(r.error() == null ? "" : r.error()))
                    : Map.of("code", 0L));
            return span;
        }

        private static String provider(URI upstream, String api) {
            String host = upstream.getHost() == null ? "" : upstream.getHost().toLowerCase(Locale.ROOT);
            if (host.endsWith("openai.azure.com")) {
                return "azure.ai.openai";
            } else if (host.contains("aiplatform.googleapis.com")) {
                return "gcp.vertex_ai";
            } else if (host.contains("bedrock")) {
                return "aws.bedrock";
            } else if (api.equals("ollama") || upstream.getPort() == 11434) {
                return "ollama";
            }
            return switch (api) {
                case "anthropic" -> "anthropic";
                case "gemini" -> "gcp.gemini";
                default -> "openai";
            };
        }

        /** OTLP's attribute list: typed values, 64-bit integers as decimal strings; absent values left out. */
        private static List<Object> attributes(Map<String, ?> values) {
            List<Object> list = new ArrayList<>();
            values.forEach((key, value) -> {
                if (value != null) {
                    list.add(Map.of("key", key, "value", attributeValue(value)));
                }
            });
            return list;
        }

        private static Map<String, Object> attributeValue(Object value) {
            return switch (value) {
                case Long l -> Map.of("intValue", String.valueOf(l));
                case Integer i -> Map.of("intValue", String.valueOf(i));
                case Double d -> Map.of("doubleValue", d);
                case Boolean b -> Map.of("boolValue", b);
                case List<?> list -> Map.of("arrayValue", Map.of("values", list.stream().map(Telemetry::attributeValue).toList()));
                default -> Map.of("stringValue", String.valueOf(value));
            };
        }

        /** The first of these paths that holds a number in the request body. */
        @SafeVarargs
        private static Object firstNumber(Object request, List<String>... paths) {
            for (List<String> path : paths) {
                Object value = Json.at(request, path.toArray());
                if (value instanceof Long || value instanceof Double) {
                    return value;
                }
            }
            return null;
        }

        long dropped() {
            return dropped.get();
        }

        /** Sends what is queued (a few seconds at most), then says how many spans were dropped. */
        @Override
        public void close() {
            closing = true;
            thread.interrupt();
            try {
                thread.join(TimeUnit.SECONDS.toMillis(5));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            boolean stuck = thread.isAlive(); // a collector that has not answered yet
            if (stuck && !failing) {
                err.println("llmproxy: cannot send spans to " + settings.endpoint() + " (no answer by the time llmproxy"
                        + " stopped)");
            }
            long lost = dropped.get() + queue.size() + (stuck ? sending : 0);
            if (lost > 0) {
                err.println("llmproxy: " + lost + " spans could not be sent to " + settings.endpoint());
            }
        }
    }

    /**
     * The conversation as OpenTelemetry's GenAI message schema wants it, for --otlp-content:
     * messages with a role and parts of type text, tool_call and tool_call_response.
     */
    static final class Content {
        private Content() {}

        static List<Object> input(String api, Object request) {
            List<Object> messages = new ArrayList<>();
            if (request == null) {
                return messages;
            }
            switch (api) {
                case "anthropic" -> {
                    Object system = Json.at(request, "system");
                    if (system != null) {
                        messages.add(message("system", parts(system)));
                    }
                    list(Json.at(request, "messages")).forEach(m -> messages.add(message(Json.string(m, "role"),
                            parts(Json.at(m, "content")))));
                }
                case "openai-responses" -> {
                    if (Json.string(request, "instructions") != null) {
                        messages.add(message("system", List.of(text(Json.string(request, "instructions")))));
                    }
                    Object input = Json.at(request, "input");
                    if (input instanceof String s) {
                        messages.add(message("user", List.of(text(s))));
                    }
                    for (Object item : list(input)) {
                        String type = String.valueOf(Json.string(item, "type"));
                        if (type.equals("function_call") || type.equals("custom_tool_call")) {
                            messages.add(message("assistant", List.of(toolCall(Json.string(item, "name"),
                                    Conversation.firstNonNull(Json.at(item, "arguments"), Json.at(item, "input"))))));
                        } else if (type.endsWith("_output")) {
                            messages.add(message("tool", List.of(toolResult(Json.at(item, "output")))));
                        } else if (Json.string(item, "role") != null) {
                            messages.add(message(Json.string(item, "role"), parts(Json.at(item, "content"))));
                        }
                    }
                }
                case "gemini" -> {
                    Object system = Json.at(request, "systemInstruction", "parts");
                    if (system != null) {
                        messages.add(message("system", geminiParts(system)));
                    }
                    list(Json.at(request, "contents")).forEach(c -> messages.add(message(
                            "model".equals(Json.string(c, "role")) ? "assistant" : "user", geminiParts(Json.at(c, "parts")))));
                }
                default -> { // OpenAI chat and Ollama
                    if (Json.string(request, "prompt") != null) {
                        messages.add(message("user", List.of(text(Json.string(request, "prompt")))));
                    }
                    for (Object m : list(Json.at(request, "messages"))) {
                        List<Object> parts = new ArrayList<>(parts(Json.at(m, "content")));
                        list(Json.at(m, "tool_calls")).forEach(c -> parts.add(toolCall(Json.string(c, "function", "name"),
                                Json.at(c, "function", "arguments"))));
                        messages.add(message(Json.string(m, "role"), parts));
                    }
                }
            }
            return messages;
        }

        static List<Object> output(Llm llm) {
            List<Object> parts = new ArrayList<>();
            if (llm.text() != null) {
                parts.add(text(llm.text()));
            }
            if (llm.toolCalls() != null) {
                for (String call : llm.toolCalls().split("\n")) {
                    int open = call.indexOf('(');
                    parts.add(toolCall(open > 0 ? call.substring(0, open) : call,
                            open > 0 && call.endsWith(")") ? call.substring(open + 1, call.length() - 1) : ""));
                }
            }
            Map<String, Object> message = new LinkedHashMap<>(message("assistant", parts));
            if (llm.stopReason() != null) {
                message.put("finish_reason", llm.stopReason());
            }
            return List.of(message);
        }

        private static Map<String, Object> message(String role, List<Object> parts) {
            Map<String, Object> message = new LinkedHashMap<>();
            message.put("role", role == null ? "user" : role);
            message.put("parts", parts);
            return message;
        }

        private static Map<String, Object> text(String content) {
            Map<String, Object> part = new LinkedHashMap<>();
            part.put("type", "text");
            part.put("content", content);
            return part;
        }

        private static Map<String, Object> toolCall(String name, Object arguments) {
            Map<String, Object> part = new LinkedHashMap<>();
            part.put("type", "tool_call");
            part.put("name", name == null ? "" : name);
            part.put("arguments", arguments instanceof String s ? s : Json.write(arguments));
            return part;
        }

        private static Map<String, Object> toolResult(Object result) {
            Map<String, Object> part = new LinkedHashMap<>();
            part.put("type", "tool_call_response");
            part.put("response", result instanceof String s ? s : Json.write(result));
            return part;
        }

        private static List<Object> parts(Object content) {
            if (content instanceof String s) {
                return List.of(text(s));
            }
            List<Object> parts = new ArrayList<>();
            for (Object block : list(content)) {
                String type = String.valueOf(Json.string(block, "type"));
                if (type.endsWith("tool_use")) {
                    parts.add(toolCall(Json.string(block, "name"), Json.at(block, "input")));
                } else if (type.endsWith("tool_result")) {
                    parts.add(toolResult(Json.at(block, "content")));
                } else if (Json.string(block, "text") != null) {
                    parts.add(text(Json.string(block, "text")));
                }
            }
            return parts;
        }

        private static List<Object> geminiParts(Object content) {
            List<Object> parts = new ArrayList<>();
            for (Object part : list(content)) {
                if (Json.string(part, "text") != null) {
                    parts.add(text(Json.string(part, "text")));
                } else if (Json.at(part, "functionCall") != null) {
                    parts.add(toolCall(Json.string(part, "functionCall", "name"), Json.at(part, "functionCall", "args")));
                } else if (Json.at(part, "functionResponse") != null) {
                    parts.add(toolResult(Json.at(part, "functionResponse", "response")));
                }
            }
            return parts;
        }

        private static List<?> list(Object value) {
            return value instanceof List<?> l ? l : List.of();
        }
    }

    // --- viewer ---

    /**
     * The viewer's page: HTML, CSS and plain JavaScript, one page for the live viewer and for a
     * report. The data goes into script elements of type application/json, which never run; the
     * script puts every text from the log into the page as text, never as markup; and the
     * Content-Security-Policy lets the page load nothing from anywhere (a report) or only from
     * its own origin (the live viewer), and run no script but its own.
     */
    static final class ViewerPage {
        private ViewerPage() {}

        static final String CSS = """
            body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: #1d1f23; background: #f6f7f9; }
            header { display: flex; gap: 12px; align-items: center; padding: 8px 12px; background: #1d1f23; color: #fff; }
            header h1 { font-size: 16px; margin: 0; }
            header .sub { color: #aab; flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
            header input { width: 280px; padding: 4px 8px; }
            main { display: flex; height: calc(100vh - 44px); }
            .list { width: 46%; overflow: auto; border-right: 1px solid #ccd; background: #fff; outline: none; }
            .detail { flex: 1; overflow: auto; padding: 12px 16px; }
            table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
            th { position: sticky; top: 0; background: #eef0f3; text-align: left; padding: 4px 6px; font-weight: 600; }
            td { padding: 3px 6px; border-bottom: 1px solid #eee; white-space: nowrap; max-width: 260px; overflow: hidden; text-overflow: ellipsis; }
            tr.row { cursor: pointer; }
            tr.row:hover { background: #f0f4ff; }
            tr.selected { background: #dde7ff !important; }
            .outcome-complete td:nth-child(6), .badge.outcome-complete { color: #17733a; }
            .outcome-client_closed td:nth-child(6), .badge.outcome-client_closed { color: #8a6100; }
            .outcome-upstream_error td:nth-child(6), .outcome-timeout td:nth-child(6), .badge.outcome-upstream_error, .badge.outcome-timeout { color: #b3261e; font-weight: 600; }
            .outcome-rejected td:nth-child(6), .outcome-shutdown td:nth-child(6), .badge.outcome-rejected, .badge.outcome-shutdown { color: #7a3db8; font-weight: 600; }
            .outcome-in_flight td:nth-child(6), .badge.outcome-in_flight { color: #1a5fb4; font-style: italic; }
            tr.has-error { background: #fff4f3; }
            .top { display: flex; gap: 10px; align-items: baseline; flex-wrap: wrap; margin-bottom: 8px; }
            .top .method { font-weight: 700; }
            .top .url { font-family: ui-monospace, monospace; word-break: break-all; }
            .badge { padding: 1px 6px; border-radius: 8px; background: #eef0f3; }
            .error, .problem { background: #fde8e6; color: #8c1d18; padding: 6px 10px; border-radius: 6px; margin: 6px 0; white-space: pre-wrap; }
            .tabs { display: flex; gap: 4px; margin: 8px 0; }
            .tab { border: 1px solid #ccd; background: #fff; padding: 4px 12px; border-radius: 6px; cursor: pointer; }
            .tab.on { background: #1d1f23; color: #fff; }
            .params { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 8px; }
            .param { background: #eef0f3; border-radius: 6px; padding: 1px 8px; font-size: 12.5px; }
            .message { background: #fff; border: 1px solid #dde; border-radius: 8px; padding: 8px 10px; margin: 8px 0; }
            .role { font-size: 11.5px; text-transform: uppercase; letter-spacing: .05em; color: #667; margin-bottom: 4px; }
            .role-system { border-left: 4px solid #8b8fa3; }
            .role-user { border-left: 4px solid #1a5fb4; }
            .role-assistant { border-left: 4px solid #17733a; }
            .role-tool { border-left: 4px solid #b26b00; }
            pre.text { white-space: pre-wrap; word-break: break-word; margin: 0; font: 13.5px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace; }
            .part { margin: 6px 0; }
            .label { font-size: 12px; color: #667; }
            .placeholder { font-style: italic; color: #556; }
            .tool { margin: 4px 0; }
            .tool-name { font-weight: 600; margin-right: 8px; font-family: ui-monospace, monospace; }
            .tool-description { color: #445; }
            details.box > summary { cursor: pointer; color: #445; }
            .earlier-messages { background: #eef0f3; border-radius: 8px; padding: 6px 10px; }
            .facts { color: #556; font-size: 12.5px; margin-top: 6px; }
            .raw .box { margin: 8px 0; }
            .raw-title { display: flex; gap: 8px; align-items: center; font-weight: 600; margin-bottom: 4px; }
            .copy { font-size: 12px; cursor: pointer; }
            .empty, .loading { color: #667; padding: 20px; }
            """;

        static final String JS = """
            'use strict';
            // The llmproxy viewer: a list of exchanges and the conversation of the one selected. Every text
            // from the log goes into the page through textContent, never as markup.
            (function () {
              const meta = JSON.parse(document.getElementById('llmproxy-meta').textContent);
              const live = meta.source === 'live';
              const state = {summaries: [], byId: new Map(), selected: null, filter: '', outcome: '', full: new Map(),
                             follow: null};

              // --- small DOM helpers ---
              function el(tag, cls, text) {
                const e = document.createElement(tag);
                if (cls) e.className = cls;
                if (text !== undefined && text !== null) e.textContent = String(text);
                return e;
              }
              function add(parent, ...children) {
                for (const c of children) if (c) parent.appendChild(c);
                return parent;
              }
              function clear(e) {
                while (e.firstChild) e.removeChild(e.firstChild);
              }
              function collapsible(title, body, open) {
                const d = el('details', 'box');
                if (open) d.open = true;
                add(d, el('summary', null, title), body);
                return d;
              }
              function num(v) {
                return v === null || v === undefined || v === '' ? null : Number(v);
              }
              function parseJson(text) {
                if (typeof text !== 'string' || text === '') return null;
                try { return JSON.parse(text); } catch (e) { return null; }
              }

              // --- the page's frame ---
              const app = document.getElementById('app');
              const head = add(el('header'), el('h1', null, 'llmproxy'), el('span', 'sub', meta.title || ''));
              const search = el('input');
              search.type = 'search';
              search.placeholder = 'filter: path, model, bodies…';
              search.id = 'filter';
              const outcomeSelect = el('select');
              outcomeSelect.id = 'outcome';
              for (const o of ['', 'complete', 'client_closed', 'upstream_error', 'timeout', 'rejected', 'shutdown']) {
                const opt = el('option', null, o === '' ? 'all outcomes' : o);
                opt.value = o;
                outcomeSelect.appendChild(opt);
              }
              add(head, search, outcomeSelect);
              const problems = el('div', 'problems');
              for (const p of meta.problems || []) problems.appendChild(el('div', 'problem', p));
              const list = el('div', 'list');
              list.id = 'list';
              list.tabIndex = 0;
              const detail = el('div', 'detail');
              detail.id = 'detail';
              add(app, head, problems, add(el('main'), list, detail));

              // --- the list ---
              const COLUMNS = ['time', 'method', 'path', 'model', 'status', 'outcome', 'duration', 'ttfb', 'tokens'];
              function pathOf(s) {
                try { const u = new URL(s.url); return u.pathname + (u.search ? '?…' : ''); } catch (e) { return s.url || ''; }
              }
              function tokens(s) {
                const i = num(s.input_tokens), o = num(s.output_tokens);
                return i === null && o === null ? '' : (i === null ? '–' : i) + ' / ' + (o === null ? '–' : o);
              }
              function duration(s) {
                if (s.in_flight) return 'in flight ' + ((Date.now() - Date.parse(s.time)) / 1000).toFixed(1) + ' s';
                const d = num(s.duration_ms);
                return d === null ? '' : d + ' ms';
              }
              function cells(s) {
                const t = s.time ? s.time.replace('T', ' ').replace('Z', '') : '';
                const ttfb = num(s.ttfb_ms);
                return [t, s.method || '', pathOf(s), s.model || '', s.status || '', s.in_flight ? 'in flight' : (s.outcome || ''),
                        duration(s), ttfb === null ? '' : ttfb + ' ms', tokens(s)];
              }
              function matches(s) {
                if (state.outcome && (s.in_flight ? 'in flight' : s.outcome) !== state.outcome) return false;
                if (!state.filter) return true;
                const q = state.filter.toLowerCase();
                if ((s.url || '').toLowerCase().includes(q) || (s.model || '').toLowerCase().includes(q)) return true;
                if (state.found) return state.found.has(s.id);
                const raw = source.rawText(s.id);
                return raw !== null && raw.toLowerCase().includes(q);
              }
              function visible() {
                const shown = state.summaries.filter(matches);
                return live ? shown.slice().reverse() : shown; // the live view shows the newest first
              }
              let rendered = [];
              function renderList() {
                rendered = visible();
                clear(list);
                const table = el('table');
                const tr = el('tr');
                for (const c of COLUMNS) tr.appendChild(el('th', null, c));
                add(table, add(el('thead'), tr));
                const body = el('tbody');
                table.appendChild(body);
                list.appendChild(table);
                // Rows are made in slices as the list scrolls: a report of 10,000 exchanges opens at once.
                let made = 0;
                function more() {
                  const until = Math.min(rendered.length, made + 200);
                  for (; made < until; made++) body.appendChild(row(rendered[made]));
                }
                more();
                list.onscroll = () => {
                  if (list.scrollTop + list.clientHeight > list.scrollHeight - 400) more();
                };
                list.more = more;
              }
              function row(s) {
                const tr = el('tr', 'row outcome-' + (s.in_flight ? 'in_flight' : (s.outcome || 'unknown')));
                tr.dataset.id = s.id;
                if (s.error) tr.classList.add('has-error');
                if (state.selected === s.id) tr.classList.add('selected');
                for (const c of cells(s)) tr.appendChild(el('td', null, c));
                tr.onclick = () => select(s.id);
                return tr;
              }
              function refreshRow(s) {
                const tr = list.querySelector('tr[data-id="' + CSS.escape(s.id) + '"]');
                if (tr) tr.replaceWith(row(s));
              }
              function moveSelection(step) {
                if (rendered.length === 0) return;
                let i = rendered.findIndex(s => s.id === state.selected);
                i = i < 0 ? 0 : Math.max(0, Math.min(rendered.length - 1, i + step));
                while (list.more && i >= list.querySelectorAll('tbody tr').length) list.more();
                select(rendered[i].id);
                const tr = list.querySelector('tr[data-id="' + CSS.escape(rendered[i].id) + '"]');
                if (tr) tr.scrollIntoView({block: 'nearest'});
              }
              document.addEventListener('keydown', e => {
                if (e.target === search) return;
                if (e.key === 'ArrowDown' || e.key === 'j') { moveSelection(1); e.preventDefault(); }
                if (e.key === 'ArrowUp' || e.key === 'k') { moveSelection(-1); e.preventDefault(); }
                if (e.key === 'Enter' && state.selected) select(state.selected);
                if (e.key === '/') { search.focus(); e.preventDefault(); }
              });
              let filterTimer = null;
              search.oninput = () => {
                clearTimeout(filterTimer);
                filterTimer = setTimeout(async () => {
                  state.filter = search.value.trim();
                  state.found = live && state.filter ? await source.search(state.filter) : null;
                  renderList();
                }, 150);
              };
              outcomeSelect.onchange = () => { state.outcome = outcomeSelect.value; renderList(); };

              // --- selecting one ---
              async function select(id) {
                state.selected = id;
                for (const tr of list.querySelectorAll('tr.selected')) tr.classList.remove('selected');
                const tr = list.querySelector('tr[data-id="' + CSS.escape(id) + '"]');
                if (tr) tr.classList.add('selected');
                if (state.follow) { state.follow.close(); state.follow = null; }
                const s = state.byId.get(id);
                clear(detail);
                detail.appendChild(el('div', 'loading', 'loading…'));
                const x = (await source.get(id)) || s;
                const format = x && formatOf(x);
                const earlier = format ? await earlierCount(x, readRequest(format, parseJson(x.request_body))) : 0;
                if (state.selected !== id) return;
                showDetail(x, earlier);
                if (live && s && s.in_flight) follow(id);
              }

              // --- reading requests: the five formats, as a reader sees them ---
              function formatOf(x) {
                let path = '';
                try { path = new URL(x.upstream_url || x.url).pathname.replace(/\\/+$/, ''); } catch (e) { path = ''; }
                if (path.endsWith('/chat/completions')) return 'openai-chat';
                if (path.endsWith('/responses')) return 'openai-responses';
                if (path.endsWith('/messages')) return 'anthropic';
                if (path.endsWith('/api/chat') || path.endsWith('/api/generate')) return 'ollama';
                if (path.includes(':generateContent') || path.includes(':streamGenerateContent')) return 'gemini';
                return null;
              }
              function payload(kind, data, mediaType) {
                // A base64 payload shows as its type and size, never its bytes.
                if (typeof data === 'string' && data.startsWith('[base64 ')) return {kind, text: data};
                let type = mediaType || '';
                let text = typeof data === 'string' ? data : '';
                const m = /^data:([^;,]*);base64,/.exec(text);
                if (m) { type = type || m[1]; text = text.slice(m[0].length); }
                if (/^https?:/.test(text)) return {kind, text: '[' + kind + ' ' + (type || 'link') + ': ' + text + ']'};
                const bytes = Math.floor(text.length * 3 / 4);
                const size = bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + ' MB' : (bytes / 1024).toFixed(1) + ' KB';
                return {kind, text: '[' + kind + ' ' + (type || 'data') + ', ' + size + ']'};
              }
              function textOf(v) {
                if (typeof v === 'string') return v;
                if (Array.isArray(v)) return v.map(p => typeof p === 'string' ? p : (p && (p.text || p.content)) || '').join('');
                if (v && typeof v === 'object') return JSON.stringify(v, null, 2);
                return v === undefined || v === null ? '' : String(v);
              }
              function args(v) {
                if (typeof v === 'string') { const j = parseJson(v); return j === null ? v : JSON.stringify(j, null, 2); }
                return JSON.stringify(v === undefined ? {} : v, null, 2);
              }
              // Content parts of OpenAI chat, Responses and Anthropic blocks.
              function parts(content) {
                if (content === null || content === undefined) return [];
                if (typeof content === 'string') return [{kind: 'text', text: content}];
                if (!Array.isArray(content)) return [{kind: 'other', text: JSON.stringify(content, null, 2)}];
                const out = [];
                for (const p of content) {
                  if (typeof p === 'string') { out.push({kind: 'text', text: p}); continue; }
                  const t = p && p.type;
                  if (t === 'text' || t === 'input_text' || t === 'output_text') out.push({kind: 'text', text: p.text || ''});
                  else if (t === 'image_url') out.push(payload('image', p.image_url && (p.image_url.url || p.image_url)));
                  else if (t === 'input_image') out.push(payload('image', p.image_url || p.file_id));
                  else if (t === 'image') out.push(payload('image', p.source && (p.source.data || p.source.url), p.source && p.source.media_type));
                  else if (t === 'document') out.push(payload('document', p.source && (p.source.data || p.source.url), p.source && p.source.media_type));
                  else if (t === 'input_audio') out.push(payload('audio', p.input_audio && p.input_audio.data, p.input_audio && ('audio/' + p.input_audio.format)));
                  else if (t === 'file' || t === 'input_file') out.push(payload('file', (p.file && p.file.file_data) || p.file_data || p.file_id, p.filename));
                  else if (t === 'refusal') out.push({kind: 'text', text: '[refusal] ' + (p.refusal || '')});
                  else if (t === 'tool_use' || t === 'server_tool_use' || t === 'mcp_tool_use') out.push({kind: 'tool_call', name: p.name, text: args(p.input)});
                  else if (t === 'tool_result' || t === 'web_search_tool_result' || t === 'mcp_tool_result') {
                    out.push({kind: 'tool_result', name: p.tool_use_id, text: textOf(p.content)});
                  } else if (t === 'thinking') out.push({kind: 'thinking', text: p.thinking || ''});
                  else if (t === 'redacted_thinking') out.push({kind: 'thinking', text: '[redacted thinking]'});
                  else out.push({kind: 'other', text: JSON.stringify(p, null, 2)});
                }
                return out;
              }
              function geminiParts(ps) {
                const out = [];
                for (const p of ps || []) {
                  if (p.text !== undefined) out.push({kind: p.thought ? 'thinking' : 'text', text: p.text});
                  else if (p.inlineData) out.push(payload(p.inlineData.mimeType && p.inlineData.mimeType.startsWith('audio') ? 'audio' : 'image', p.inlineData.data, p.inlineData.mimeType));
                  else if (p.fileData) out.push(payload('file', p.fileData.fileUri, p.fileData.mimeType));
                  else if (p.functionCall) out.push({kind: 'tool_call', name: p.functionCall.name, text: args(p.functionCall.args)});
                  else if (p.functionResponse) out.push({kind: 'tool_result', name: p.functionResponse.name, text: args(p.functionResponse.response)});
                  else out.push({kind: 'other', text: JSON.stringify(p, null, 2)});
                }
                return out;
              }
              // The request as {system, messages: [{role, parts}], tools: [{name, description, schema}], params}.
              function readRequest(format, body) {
                const r = {system: [], messages: [], tools: [], params: {}};
                if (!body || typeof body !== 'object') return r;
                const param = (name, value) => { if (value !== undefined && value !== null) r.params[name] = value; };
                param('model', body.model);
                param('stream', body.stream);
                param('temperature', body.temperature);
                param('top_p', body.top_p);
                if (format === 'openai-chat' || format === 'ollama') {
                  param('max_tokens', body.max_completion_tokens !== undefined ? body.max_completion_tokens : body.max_tokens);
                  param('reasoning_effort', body.reasoning_effort);
                  if (body.options) param('options', JSON.stringify(body.options));
                  if (format === 'ollama' && body.prompt !== undefined) {
                    if (body.system) r.system.push({kind: 'text', text: body.system});
                    r.messages.push({role: 'user', parts: [{kind: 'text', text: body.prompt}]});
                  }
                  for (const m of body.messages || []) {
                    const ps = parts(m.content);
                    for (const img of m.images || []) ps.push(payload('image', img));
                    for (const c of m.tool_calls || []) ps.push({kind: 'tool_call', name: c.function && c.function.name, text: args(c.function && c.function.arguments)});
                    if (m.role === 'system' || m.role === 'developer') r.system.push(...ps);
                    else r.messages.push({role: m.role === 'tool' ? 'tool' : m.role, parts: m.role === 'tool' ? [{kind: 'tool_result', name: m.tool_call_id || m.name, text: textOf(m.content)}] : ps});
                  }
                  for (const t of body.tools || []) {
                    const f = t.function || t;
                    r.tools.push({name: f.name, description: f.description, schema: f.parameters});
                  }
                } else if (format === 'openai-responses') {
                  param('max_tokens', body.max_output_tokens);
                  if (body.reasoning) param('reasoning', JSON.stringify(body.reasoning));
                  if (body.instructions) r.system.push({kind: 'text', text: body.instructions});
                  const input = typeof body.input === 'string' ? [{role: 'user', content: body.input}] : (body.input || []);
                  for (const item of input) {
                    const t = item.type;
                    if (t === 'function_call' || t === 'custom_tool_call') r.messages.push({role: 'assistant', parts: [{kind: 'tool_call', name: item.name, text: args(item.arguments !== undefined ? item.arguments : item.input)}]});
                    else if (t === 'function_call_output' || t === 'custom_tool_call_output') r.messages.push({role: 'tool', parts: [{kind: 'tool_result', name: item.call_id, text: textOf(item.output)}]});
                    else if (t === 'reasoning') r.messages.push({role: 'assistant', parts: [{kind: 'thinking', text: (item.summary || []).map(s => s.text).join('\\n') || '[encrypted reasoning]'}]});
                    else if (item.role === 'system' || item.role === 'developer') r.system.push(...parts(item.content));
                    else if (item.role) r.messages.push({role: item.role, parts: parts(item.content)});
                    else r.messages.push({role: 'other', parts: [{kind: 'other', text: JSON.stringify(item, null, 2)}]});
                  }
                  for (const t of body.tools || []) r.tools.push({name: t.name || t.type, description: t.description, schema: t.parameters || t.format});
                } else if (format === 'anthropic') {
                  param('max_tokens', body.max_tokens);
                  if (body.thinking) param('thinking', JSON.stringify(body.thinking));
                  r.system.push(...parts(body.system));
                  for (const m of body.messages || []) r.messages.push({role: m.role, parts: parts(m.content)});
                  for (const t of body.tools || []) r.tools.push({name: t.name, description: t.description, schema: t.input_schema || t});
                } else if (format === 'gemini') {
                  const g = body.generationConfig || {};
                  param('max_tokens', g.maxOutputTokens);
                  param('temperature', g.temperature);
                  param('top_p', g.topP);
                  if (body.systemInstruction) r.system.push(...geminiParts(body.systemInstruction.parts));
                  for (const c of body.contents || []) r.messages.push({role: c.role === 'model' ? 'assistant' : (c.role || 'user'), parts: geminiParts(c.parts)});
                  for (const t of body.tools || []) for (const f of t.functionDeclarations || []) r.tools.push({name: f.name, description: f.description, schema: f.parameters});
                }
                return r;
              }
              // What a reader sees of a message: agents resend history with other bytes (a dropped
              // cache_control, a one-block array turned into a string), so compare this, not the bytes.
              function seen(m) {
                return m.role + '\\u0000' + m.parts.map(p => p.kind + ':' + (p.name || '') + ':' + p.text).join('\\u0001');
              }
              async function earlierCount(x, request) {
                const idx = state.summaries.findIndex(s => s.id === x.id);
                const mine = request.messages.map(seen);
                const system = request.system.map(p => p.text).join('\\n');
                let best = 0;
                for (let i = idx - 1, looked = 0; i >= 0 && looked < 200; i--) {
                  const s = state.summaries[i];
                  if (!s || (s.model || '') !== (x.model || '') || formatOf(s) !== formatOf(x)) continue;
                  looked++;
                  const other = await source.get(s.id);
                  if (!other) continue;
                  const theirs = readRequest(formatOf(other), parseJson(other.request_body));
                  if (theirs.system.map(p => p.text).join('\\n') !== system) continue;
                  const seenTheirs = theirs.messages.map(seen);
                  if (seenTheirs.length === 0 || seenTheirs.length >= mine.length) continue;
                  let k = 0;
                  while (k < seenTheirs.length && seenTheirs[k] === mine[k]) k++;
                  if (k === seenTheirs.length && k > best) best = k;
                  if (best > 0) break; // the nearest earlier turn
                }
                return best;
              }

              // --- the detail ---
              function showDetail(x, earlier) {
                clear(detail);
                if (!x) { detail.appendChild(el('div', 'empty', 'not found')); return; }
                const top = el('div', 'top');
                const outcome = x.in_flight ? 'in flight' : x.outcome;
                add(top, el('span', 'method', x.method), el('span', 'url', x.url),
                    outcome ? el('span', 'badge outcome-' + (x.in_flight ? 'in_flight' : x.outcome), outcome) : null,
                    x.status ? el('span', 'status', x.status) : null);
                detail.appendChild(top);
                if (x.error) detail.appendChild(el('div', 'error', x.error));
                const tabs = el('div', 'tabs');
                const convTab = el('button', 'tab', 'Conversation');
                const rawTab = el('button', 'tab', 'Raw');
                const pane = el('div', 'pane');
                const format = formatOf(x);
                add(tabs, format ? convTab : null, rawTab);
                detail.appendChild(tabs);
                detail.appendChild(pane);
                function show(which) {
                  clear(pane);
                  convTab.classList.toggle('on', which === 'conv');
                  rawTab.classList.toggle('on', which === 'raw');
                  pane.appendChild(which === 'conv' ? conversation(x, format, earlier) : raw(x));
                }
                convTab.onclick = () => show('conv');
                rawTab.onclick = () => show('raw');
                show(format ? 'conv' : 'raw');
              }
              function partView(p) {
                const cls = 'part ' + p.kind;
                if (p.kind === 'tool_call') return add(el('div', cls), el('div', 'label', 'tool call: ' + (p.name || '')), el('pre', 'text', p.text));
                if (p.kind === 'tool_result') return add(el('div', cls), el('div', 'label', 'tool result' + (p.name ? ' (' + p.name + ')' : '')), el('pre', 'text', p.text));
                if (p.kind === 'thinking') return collapsible('thinking', el('pre', 'text', p.text), false);
                if (p.kind === 'image' || p.kind === 'audio' || p.kind === 'file' || p.kind === 'document') return el('div', cls + ' placeholder', p.text);
                return el('pre', 'text ' + cls, p.text);
              }
              function messageView(m) {
                const box = el('div', 'message role-' + m.role);
                box.appendChild(el('div', 'role', m.role));
                for (const p of m.parts) box.appendChild(partView(p));
                return box;
              }
              function conversation(x, format, earlier) {
                const root = el('div', 'conversation');
                const body = parseJson(x.request_body);
                if (x.request_body && body === null) root.appendChild(el('div', 'problem', 'the request body is not JSON: see Raw'));
                const request = readRequest(format, body);
                const params = el('div', 'params');
                for (const [k, v] of Object.entries(request.params)) params.appendChild(el('span', 'param', k + ': ' + v));
                root.appendChild(params);
                if (request.system.length) {
                  const sys = el('div', 'message role-system');
                  sys.appendChild(el('div', 'role', 'system'));
                  for (const p of request.system) sys.appendChild(partView(p));
                  root.appendChild(sys);
                }
                if (request.tools.length) {
                  const tools = el('div', 'tools');
                  for (const t of request.tools) {
                    tools.appendChild(add(el('div', 'tool'), el('span', 'tool-name', t.name || ''), el('span', 'tool-description', t.description || ''),
                                          t.schema ? collapsible('schema', el('pre', 'text', JSON.stringify(t.schema, null, 2)), false) : null));
                  }
                  root.appendChild(collapsible(request.tools.length + ' tools offered', tools, false));
                }
                const messages = el('div', 'messages');
                if (earlier > 0) {
                  const folded = el('div', 'earlier');
                  for (const m of request.messages.slice(0, earlier)) folded.appendChild(messageView(m));
                  const d = collapsible(earlier + (earlier === 1 ? ' earlier message' : ' earlier messages'), folded, false);
                  d.classList.add('earlier-messages');
                  messages.appendChild(d);
                }
                for (const m of request.messages.slice(earlier)) messages.appendChild(messageView(m));
                root.appendChild(messages);
                root.appendChild(answer(x));
                return root;
              }
              function answer(x) {
                const box = el('div', 'message role-assistant answer');
                box.id = 'answer';
                box.appendChild(el('div', 'role', x.in_flight ? 'answer (streaming…)' : 'answer'));
                if (x.reasoning_text) box.appendChild(collapsible('reasoning', el('pre', 'text reasoning', x.reasoning_text), false));
                const text = el('pre', 'text answer-text', x.response_text || '');
                text.id = 'answer-text';
                box.appendChild(text);
                if (x.tool_calls) {
                  for (const line of String(x.tool_calls).split('\\n')) {
                    const open = line.indexOf('(');
                    const name = open > 0 ? line.slice(0, open) : line;
                    const a = open > 0 && line.endsWith(')') ? line.slice(open + 1, -1) : '';
                    box.appendChild(partView({kind: 'tool_call', name, text: args(a)}));
                  }
                }
                const facts = [];
                if (x.stop_reason) facts.push('stop: ' + x.stop_reason);
                for (const k of ['input_tokens', 'output_tokens', 'cached_tokens', 'cache_write_tokens', 'reasoning_tokens']) {
                  if (x[k] !== undefined && x[k] !== null && x[k] !== '') facts.push(k.replace('_tokens', '') + ' tokens: ' + x[k]);
                }
                if (facts.length) box.appendChild(el('div', 'facts', facts.join(' · ')));
                return box;
              }
              function pretty(text) {
                if (!text) return '';
                const j = parseJson(text);
                if (j !== null) return JSON.stringify(j, null, 2);
                if (/^(data|event):/m.test(text)) {
                  return text.split(/\\r?\\n\\r?\\n/).filter(e => e.trim()).map(e => e.split(/\\r?\\n/).map(l => {
                    const d = /^data: ?(.*)$/.exec(l);
                    const inner = d && parseJson(d[1]);
                    return inner !== null && inner !== undefined && d ? 'data: ' + JSON.stringify(inner) : l;
                  }).join('\\n')).join('\\n');
                }
                return text;
              }
              function copyButton(label, text) {
                const b = el('button', 'copy', label);
                b.onclick = () => {
                  const done = () => { b.textContent = 'copied'; setTimeout(() => { b.textContent = label; }, 1200); };
                  if (navigator.clipboard) navigator.clipboard.writeText(text).then(done, () => fallbackCopy(text, done));
                  else fallbackCopy(text, done);
                };
                return b;
              }
              function fallbackCopy(text, done) {
                const t = el('textarea');
                t.value = text;
                document.body.appendChild(t);
                t.select();
                try { document.execCommand('copy'); done(); } finally { t.remove(); }
              }
              const SECRET = /^(authorization|proxy-authorization|x-api-key|api-key|apikey|cookie|ocp-apim-subscription-key|x-amz-security-token|cf-aig-authorization|x-auth-token|.*-api-key)$/i;
              function curl(x) {
                const q = s => "'" + String(s).replace(/'/g, "'\\\\''") + "'";
                const lines = ['curl -X ' + (x.method || 'GET') + ' ' + q(x.url)];
                for (const h of String(x.request_headers || '').split('\\n')) {
                  const c = h.indexOf(':');
                  if (c <= 0) continue;
                  const name = h.slice(0, c);
                  if (/^(host|content-length|connection|accept-encoding)$/i.test(name)) continue;
                  const value = SECRET.test(name) || h.includes('[set by llmproxy]') ? '$' + name.toUpperCase().replace(/[^A-Z0-9]/g, '_') : h.slice(c + 1).trim();
                  lines.push('  -H ' + (value.startsWith('$') ? '"' + name + ': ' + value + '"' : q(name + ': ' + value)));
                }
                if (x.request_body) lines.push('  --data-binary ' + q(x.request_body));
                return lines.join(' \\\\\\n');
              }
              function raw(x) {
                const root = el('div', 'raw');
                const section = (title, text, extra) => {
                  const box = el('div', 'box');
                  add(box, add(el('div', 'raw-title'), el('span', null, title), copyButton('copy', text || ''), extra), el('pre', 'text', text || ''));
                  return box;
                };
                root.appendChild(section('request headers', x.request_headers || '(not logged)', copyButton('copy as curl', curl(x))));
                root.appendChild(section('request body', pretty(x.request_body)));
                root.appendChild(section('response headers', x.response_headers || '(not logged)'));
                root.appendChild(section('response body', pretty(x.response_body)));
                const facts = [];
                for (const k of ['id', 'time', 'upstream_url', 'duration_ms', 'ttfb_ms', 'request_bytes', 'response_bytes']) {
                  if (x[k] !== undefined && x[k] !== null && x[k] !== '') facts.push(k + ': ' + x[k]);
                }
                root.appendChild(el('pre', 'text facts', facts.join('\\n')));
                return root;
              }

              // --- where exchanges come from: the embedded records of a report, or the live feed ---
              const source = live ? liveSource() : reportSource();
              function reportSource() {
                const nodes = document.querySelectorAll('script.llmproxy-record');
                const byId = new Map();
                nodes.forEach(n => byId.set(n.dataset.id, n));
                state.summaries = JSON.parse(document.getElementById('llmproxy-summaries').textContent);
                for (const s of state.summaries) state.byId.set(s.id, s);
                return {
                  rawText: id => { const n = byId.get(id); return n ? n.textContent : null; },
                  get: id => {
                    if (!state.full.has(id)) { const n = byId.get(id); state.full.set(id, n ? JSON.parse(n.textContent) : null); }
                    return Promise.resolve(state.full.get(id));
                  },
                };
              }
              function liveSource() {
                const feed = new EventSource('/feed');
                let pending = false;
                const later = () => { if (!pending) { pending = true; setTimeout(() => { pending = false; renderList(); }, 100); } };
                feed.addEventListener('exchange', e => {
                  const s = JSON.parse(e.data);
                  const known = state.byId.get(s.id);
                  const ended = known && known.in_flight && !s.in_flight;
                  if (known) {
                    Object.assign(known, s);
                    refreshRow(known);
                  } else {
                    state.summaries.push(s);
                    state.byId.set(s.id, s);
                    later();
                  }
                  if (ended && state.selected === s.id) select(s.id);
                });
                feed.addEventListener('evicted', e => {
                  const id = JSON.parse(e.data).id;
                  state.summaries = state.summaries.filter(s => s.id !== id);
                  state.byId.delete(id);
                  state.full.delete(id);
                  later();
                });
                setInterval(() => {
                  for (const s of state.summaries) if (s.in_flight) refreshRow(s);
                }, 500);
                return {
                  rawText: id => { const x = state.full.get(id); return x ? JSON.stringify(x) : null; },
                  search: async q => {
                    // The bodies are on the server: it says which exchanges hold the text.
                    const r = await fetch('/search?q=' + encodeURIComponent(q));
                    return new Set(r.ok ? await r.json() : []);
                  },
                  get: async id => {
                    if (state.full.has(id)) return state.full.get(id);
                    const r = await fetch('/exchange?id=' + encodeURIComponent(id));
                    if (!r.ok) return null;
                    const x = await r.json();
                    if (!x.in_flight) state.full.set(id, x);
                    return x;
                  },
                };
              }
              function follow(id) {
                // The answer of the exchange on screen grows while it streams: pushed, not polled.
                const f = new EventSource('/follow?id=' + encodeURIComponent(id));
                state.follow = f;
                f.addEventListener('progress', e => {
                  if (state.selected !== id) return;
                  const p = JSON.parse(e.data);
                  const text = document.getElementById('answer-text');
                  if (text) text.textContent = p.response_text || '';
                });
                f.addEventListener('done', () => { f.close(); if (state.follow === f) state.follow = null; });
              }
              renderList();
              if (!live && state.summaries.length) select(state.summaries[state.summaries.length - 1].id);
            })();
            """;

        private static final String CSS_HASH = sha256(CSS);
        private static final String JS_HASH = sha256(JS);

        private static String sha256(String text) {
            try {
                byte[] digest = java.security.MessageDigest.getInstance("SHA-256").digest(text.getBytes(StandardCharsets.UTF_8));
                return "'sha256-" + java.util.Base64.getEncoder().encodeToString(digest) + "'";
            } catch (java.security.NoSuchAlgorithmException e) {
                throw new IllegalStateException("every JDK has SHA-256", e);
            }
        }

        /** The policy: this page's own style and script, data only from its origin when live, nothing else. */
        static String contentSecurityPolicy(boolean live) {
            return "default-src 'none'; style-src " + CSS_HASH + "; script-src " + JS_HASH + "; connect-src "
                    + (live ? "'self'" : "'none'") + "; img-src 'none'; base-uri 'none'; form-action 'none'";
        }

        /** The page up to its data: head, policy, style, and the element the script fills. */
        static void open(Writer out, String title, boolean live) throws IOException {
            out.write("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
                    + "<meta http-equiv=\"Content-Security-Policy\" content=\"" + contentSecurityPolicy(live) + "\">\n"
                    + "<meta name=\"referrer\" content=\"no-referrer\">\n<title>" + html(title) + "</title>\n<style>"
                    + CSS + "</style></head>\n<body><div id=\"app\"></div>\n");
        }

        /** One JSON document in a script element that never runs and that nothing in the data can end. */
        static void data(Writer out, String attributes, String json) throws IOException {
            out.write("<script type=\"application/json\" " + attributes + ">");
            int run = 0;
            for (int i = 0; i < json.length(); i++) {
                char c = json.charAt(i);
                if (c == '<' || c == '>' || c == '&') { // inside JSON strings only: "\u003c" reads the same
                    out.write(json, run, i - run);
                    out.write(c == '<' ? "\\u003c" : c == '>' ? "\\u003e" : "\\u0026");
                    run = i + 1;
                }
            }
            out.write(json, run, json.length() - run);
            out.write("</script>\n");
        }

        /** The script, last, once the data above it is in the document. */
        static void close(Writer out) throws IOException {
            out.write("<script>" + JS + "</script>\n</body></html>\n");
        }

        /** Text for an HTML attribute or element. */
        static String html(String text) {
            StringBuilder out = new StringBuilder(text.length());
            for (int i = 0; i < text.length(); i++) {
                char c = text.charAt(i);
                switch (c) {
                    case '<' -> out.append("&lt;");
                    case '>' -> out.append("&gt;");
                    case '&' -> out.append("&amp;");
                    case '"' -> out.append("&quot;");
                    case '\'' -> out.append("&#39;");
                    default -> out.append(c);
                }
            }
            return out.toString();
        }
    }

    /**
     * The live viewer (--ui-port): a second server, on loopback whatever --host says, serving the
     * viewer's page, a feed of exchanges as they start and end (server-sent events), each
     * exchange on demand, and the growing answer of the exchange on screen. The forwarder only
     * drops a note in a queue; this side's own thread does the rest, so an open viewer never
     * slows a stream. It keeps the most recent exchanges within a count and a size; older ones
     * leave the page, never the log.
     */
    static final class Viewer implements AutoCloseable {
        private static final long FEED_NANOS = TimeUnit.MILLISECONDS.toNanos(100);
        /** How often the answer of the exchange on screen is sent while it streams. */
        private static final long FOLLOW_MILLIS = 250;
        private static final int FEED_QUEUE = 10_000;

        private final HttpServer server;
        private final ExecutorService handlers;
        private final ScheduledExecutorService thread;
        private final Secrets secrets;
        private final long maxBody;
        private final boolean keepBase64;
        private final int maxExchanges;
        private final long maxBytes;
        private final java.util.concurrent.ConcurrentLinkedQueue<Object> inbox = new java.util.concurrent.ConcurrentLinkedQueue<>();
        private final LinkedHashMap<String, Entry> entries = new LinkedHashMap<>(); // oldest first; guarded by this
        private final Set<BlockingQueue<String>> feeds = ConcurrentHashMap.newKeySet();
        private long bytes; // bodies held, guarded by this

        /** One exchange as the viewer holds it: running, finished, or read from the log at start. */
        private static final class Entry {
            final String id;
            volatile Record.Builder running;
            volatile RecordView finished;
            volatile Map<String, Object> logged;
            boolean modelShown; // a running one's model, once its request body has come
            long requestSeen = -1; // request bytes when the model was last looked for
            long bytes;

            Entry(String id) {
                this.id = id;
            }
        }

        private Viewer(HttpServer server, ExecutorService handlers, Config config) {
            this.server = server;
            this.handlers = handlers;
            this.secrets = new Secrets(!config.logSecrets(), config.addHeaders());
            this.maxBody = config.logMaxBody();
            this.keepBase64 = config.logBase64();
            this.maxExchanges = Integer.getInteger("llmproxy.viewerExchanges", 1000);
            long memory = 64L << 20;
            String property = System.getProperty("llmproxy.viewerMemory");
            if (property != null) {
                try {
                    memory = Cli.parseSize("-Dllmproxy.viewerMemory", property);
                } catch (UsageException e) {
                    throw new StartupException(e.getMessage());
                }
            }
            this.maxBytes = memory;
            this.thread = Executors.newSingleThreadScheduledExecutor(r -> {
                Thread t = new Thread(r, "llmproxy-viewer");
                t.setDaemon(true);
                return t;
            });
        }

        /** Starts the viewer on 127.0.0.1 at --ui-port, showing the most recent records of the log as it starts. */
        static Viewer start(Config config) {
            HttpServer server;
            try {
                server = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), config.uiPort()), 64);
            } catch (IOException e) {
                throw new StartupException("cannot serve the viewer on 127.0.0.1:" + config.uiPort() + ": " + e.getMessage()
                        + " (--ui-port 0 picks a free one)");
            }
            ExecutorService handlers = Executors.newVirtualThreadPerTaskExecutor();
            Viewer viewer = new Viewer(server, handlers, config);
            server.createContext("/", viewer::handle);
            server.setExecutor(handlers);
            server.start();
            if (!config.logToStdout()) {
                viewer.thread.execute(() -> viewer.loadLog(config.logFile()));
            }
            viewer.thread.scheduleWithFixedDelay(viewer::deliver, FEED_NANOS, FEED_NANOS, TimeUnit.NANOSECONDS);
            return viewer;
        }

        int port() {
            return server.getAddress().getPort();
        }

        /** On the request path: a note, nothing more. */
        void started(Record.Builder record) {
            inbox.add(record);
        }

        /** On the request path: a note, nothing more. */
        void finished(Record record) {
            inbox.add(record);
        }

        /** The most recent records of the log, shown as the viewer opens. */
        private void loadLog(Path log) {
            java.util.ArrayDeque<Map<String, Object>> recent = new java.util.ArrayDeque<>();
            try (var in = Files.newBufferedReader(log, StandardCharsets.UTF_8)) {
                Report.RecordSource records = Report.RecordSource.of(in, log, new ArrayList<>());
                int number = 0;
                for (Map<String, Object> record; (record = records.next()) != null; ) {
                    record.putIfAbsent("id", "log#" + ++number);
                    recent.addLast(record);
                    if (recent.size() > maxExchanges) {
                        recent.removeFirst();
                    }
                }
            } catch (IOException | RuntimeException e) {
                return; // an empty or new log: nothing to show yet
            }
            for (Map<String, Object> record : recent) {
                Report.complete(record, 0);
                Entry entry = new Entry(String.valueOf(record.get("id")));
                entry.logged = record;
                entry.bytes = String.valueOf(record.get("request_body")).length()
                        + String.valueOf(record.get("response_body")).length();
                synchronized (this) {
                    if (!entries.containsKey(entry.id)) {
                        entries.put(entry.id, entry);
                        bytes += entry.bytes;
                    }
                }
                publish("exchange", summary(entry));
            }
            evict();
        }

        /** Runs on the viewer's thread: turns the forwarder's notes into entries and feed events. */
        private void deliver() {
            try {
                for (Object note; (note = inbox.poll()) != null; ) {
                    if (note instanceof Record.Builder running) {
                        Entry entry = new Entry(running.id);
                        entry.running = running;
                        synchronized (this) {
                            entries.put(entry.id, entry);
                        }
                        publish("exchange", summary(entry));
                    } else if (note instanceof Record record) {
                        Entry entry;
                        synchronized (this) {
                            entry = entries.computeIfAbsent(record.id(), Entry::new);
                            entry.finished = new RecordView(record, secrets, maxBody, keepBase64);
                            entry.running = null;
                            entry.bytes = record.heldBytes();
                            bytes += entry.bytes;
                        }
                        publish("exchange", summary(entry));
                    }
                }
                List<Entry> running = new ArrayList<>();
                synchronized (this) {
                    for (Entry entry : entries.values()) {
                        Record.Builder live = entry.running;
                        // looked for again only when more of the body came: a GET has none to wait for
                        if (live != null && !entry.modelShown && live.requestBody.total() != entry.requestSeen) {
                            entry.requestSeen = live.requestBody.total();
                            running.add(entry);
                        }
                    }
                }
                for (Entry entry : running) { // the model shows once the request body is in
                    String summary = summary(entry);
                    if (summary.contains("\"model\":")) {
                        entry.modelShown = true;
                        publish("exchange", summary);
                    }
                }
                evict();
            } catch (RuntimeException | Error e) {
                // the next run tries again: the viewer must not stop for one bad note
            }
        }

        private void evict() {
            List<String> gone = new ArrayList<>();
            synchronized (this) {
                var it = entries.values().iterator();
                while (it.hasNext() && (entries.size() - gone.size() > maxExchanges || bytes > maxBytes)) {
                    Entry oldest = it.next();
                    if (oldest.running != null) {
                        continue; // in flight: it stays until it ends
                    }
                    it.remove();
                    bytes -= oldest.bytes;
                    gone.add(oldest.id);
                }
            }
            for (String id : gone) {
                publish("evicted", Json.write(Map.of("id", id)));
            }
        }

        private void publish(String event, String json) {
            String message = "event: " + event + "\ndata: " + json + "\n\n";
            for (BlockingQueue<String> feed : feeds) {
                if (!feed.offer(message)) {
                    feeds.remove(feed); // a browser that reads nothing: it reconnects and starts afresh
                    feed.clear();
                    feed.offer("");
                }
            }
        }

        /** What the list shows of an exchange. */
        private String summary(Entry entry) {
            Map<String, Object> all = exchange(entry, false);
            Map<String, Object> summary = new LinkedHashMap<>();
            for (String column : Report.SUMMARY) {
                if (all.get(column) != null) {
                    summary.put(column, all.get(column));
                }
            }
            summary.put("in_flight", Boolean.TRUE.equals(all.get("in_flight"))); // false too: it replaces a true
            return Json.write(summary);
        }

        /**
         * All the viewer knows of an exchange: every column, redacted as --log-columns all would
         * log it, whatever --log-columns says. A running one shows what has come so far.
         */
        private Map<String, Object> exchange(Entry entry, boolean bodies) {
            Record.Builder running = entry.running;
            RecordView finished = entry.finished;
            if (finished == null && running == null) {
                return entry.logged == null ? Map.of("id", entry.id) : entry.logged;
            }
            RecordView view = finished != null ? finished : new RecordView(running.snapshot(bodies), secrets, maxBody, keepBase64);
            Map<String, Object> values = exchangeValues(view, bodies);
            if (finished == null) {
                if (!bodies) { // the list wants the model, which only the request body says
                    String model = Json.string(Json.parseOrNull(running.requestBody.snapshot()), "model");
                    if (model != null) {
                        values.put("model", model);
                    }
                }
                values.put("in_flight", Boolean.TRUE);
                values.remove("outcome");
                values.remove("duration_ms");
            }
            return values;
        }

        private Map<String, Object> exchangeValues(RecordView view, boolean bodies) {
            Map<String, Object> values = new LinkedHashMap<>();
            for (Column column : Column.values()) {
                if (!bodies && (column == Column.REQUEST_BODY || column == Column.RESPONSE_BODY
                        || column == Column.REQUEST_HEADERS || column == Column.RESPONSE_HEADERS)) {
                    continue;
                }
                String field = secrets.scrub(column.field(view));
                if (!field.isEmpty()) {
                    values.put(column.header(), column.unquoted() ? (column == Column.STREAM ? (Object) Boolean.valueOf(field)
                            : (Object) Long.valueOf(field)) : field);
                }
            }
            return values;
        }

        /** The ids of the exchanges whose URL, model or bodies hold {@code text}, in any case. */
        private List<String> search(String text) {
            if (text == null || text.isEmpty()) {
                return List.of();
            }
            String wanted = text.toLowerCase(Locale.ROOT);
            List<Entry> all;
            synchronized (this) {
                all = new ArrayList<>(entries.values());
            }
            List<String> found = new ArrayList<>();
            for (Entry entry : all) {
                Map<String, Object> x = entry.finished != null || entry.logged != null ? exchange(entry, true) : Map.of();
                for (String column : List.of("url", "model", "request_body", "response_body")) {
                    if (String.valueOf(x.get(column)).toLowerCase(Locale.ROOT).contains(wanted)) {
                        found.add(entry.id);
                        break;
                    }
                }
            }
            return found;
        }

        private Entry entry(String id) {
            synchronized (this) {
                return id == null ? null : entries.get(id);
            }
        }

        // --- the viewer's HTTP side ---

        private void handle(HttpExchange exchange) {
            try (exchange) {
                String host = exchange.getRequestHeaders().getFirst("Host");
                int port = port();
                String h = host == null ? "" : host.toLowerCase(Locale.ROOT);
                if (!(h.equals("127.0.0.1:" + port) || h.equals("localhost:" + port) || h.equals("[::1]:" + port))) {
                    // A page whose name was made to resolve to 127.0.0.1 (DNS rebinding) must not read the viewer.
                    answer(exchange, 403, "text/plain", "403: the viewer answers only to 127.0.0.1:" + port);
                    return;
                }
                if (!exchange.getRequestMethod().equals("GET")) {
                    answer(exchange, 405, "text/plain", "405: the viewer only reads");
                    return;
                }
                String path = exchange.getRequestURI().getPath();
                String id = query(exchange.getRequestURI().getRawQuery(), "id");
                switch (path) {
                    case "/" -> page(exchange);
                    case "/feed" -> feed(exchange);
                    case "/exchange" -> {
                        Entry entry = entry(id);
                        if (entry == null) {
                            answer(exchange, 404, "application/json", "{\"error\": \"no such exchange in the viewer\"}");
                        } else {
                            answer(exchange, 200, "application/json", Json.write(exchange(entry, true)));
                        }
                    }
                    case "/follow" -> follow(exchange, entry(id));
                    case "/search" -> answer(exchange, 200, "application/json",
                            Json.write(search(query(exchange.getRequestURI().getRawQuery(), "q"))));
                    default -> answer(exchange, 404, "text/plain", "404");
                }
            } catch (IOException | RuntimeException e) {
                // the browser went away
            }
        }

        private void page(HttpExchange exchange) throws IOException {
            var text = new java.io.StringWriter();
            ViewerPage.open(text, "llmproxy: live", true);
            Map<String, Object> meta = new LinkedHashMap<>();
            meta.put("source", "live");
            meta.put("title", "live, most recent first");
            meta.put("problems", List.of());
            ViewerPage.data(text, "id=\"llmproxy-meta\"", Json.write(meta));
            ViewerPage.close(text);
            answer(exchange, 200, "text/html; charset=utf-8", text.toString());
        }

        /** The list's feed: every exchange held now, then each start, end and eviction as it happens. */
        private void feed(HttpExchange exchange) throws IOException {
            BlockingQueue<String> queue = new LinkedBlockingQueue<>(FEED_QUEUE);
            List<Entry> now;
            synchronized (this) {
                now = new ArrayList<>(entries.values());
                feeds.add(queue);
            }
            try {
                headers(exchange, "text/event-stream");
                exchange.sendResponseHeaders(200, 0);
                OutputStream out = exchange.getResponseBody();
                for (Entry entry : now) {
                    out.write(("event: exchange\ndata: " + summary(entry) + "\n\n").getBytes(StandardCharsets.UTF_8));
                }
                out.flush();
                while (true) {
                    String message = queue.poll(15, TimeUnit.SECONDS);
                    if (message != null && message.isEmpty()) {
                        return; // dropped as too slow
                    }
                    out.write((message == null ? ": still here\n\n" : message).getBytes(StandardCharsets.UTF_8));
                    out.flush();
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            } finally {
                feeds.remove(queue);
            }
        }

        /** The answer of one running exchange as it grows, sent when it changes, until it ends. */
        private void follow(HttpExchange exchange, Entry entry) throws IOException {
            headers(exchange, "text/event-stream");
            exchange.sendResponseHeaders(200, 0);
            OutputStream out = exchange.getResponseBody();
            String last = "";
            try {
                while (entry != null && entry.running != null) {
                    Record.Builder running = entry.running;
                    if (running == null) {
                        break;
                    }
                    RecordView view = new RecordView(running.snapshot(true), secrets, maxBody, keepBase64);
                    Map<String, Object> progress = new LinkedHashMap<>();
                    progress.put("response_text", secrets.scrub(Column.RESPONSE_TEXT.field(view)));
                    progress.put("reasoning_text", secrets.scrub(Column.REASONING_TEXT.field(view)));
                    progress.put("tool_calls", secrets.scrub(Column.TOOL_CALLS.field(view)));
                    String json = Json.write(progress);
                    if (!json.equals(last)) {
                        out.write(("event: progress\ndata: " + json + "\n\n").getBytes(StandardCharsets.UTF_8));
                        out.flush();
                        last = json;
                    }
                    Thread.sleep(FOLLOW_MILLIS); // the pace of updates, not a wait for anything
                }
                out.write("event: done\ndata: {}\n\n".getBytes(StandardCharsets.UTF_8));
                out.flush();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }

        private static void headers(HttpExchange exchange, String type) {
            var h = exchange.getResponseHeaders();
            h.set("Content-Type", type);
            h.set("Cache-Control", "no-store");
            h.set("Content-Security-Policy", ViewerPage.contentSecurityPolicy(true));
            h.set("X-Content-Type-Options", "nosniff");
            h.set("Referrer-Policy", "no-referrer");
        }

        private static void answer(HttpExchange exchange, int status, String type, String body) throws IOException {
            byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
            headers(exchange, type);
            exchange.sendResponseHeaders(status, bytes.length);
            exchange.getResponseBody().write(bytes);
        }

        private static String query(String query, String name) {
            if (query == null) {
                return null;
            }
            for (String pair : query.split("&")) {
                int eq = pair.indexOf('=');
                if (eq > 0 && pair.substring(0, eq).equals(name)) {
                    return java.net.URLDecoder.decode(pair.substring(eq + 1), StandardCharsets.UTF_8);
                }
            }
            return null;
        }

        @Override
        public void close() {
            server.stop(0);
            thread.shutdownNow();
            handlers.shutdownNow();
        }
    }

    // --- report ---

    /**
     * {@code llmproxy view LOG}: writes one self-contained HTML file of a log, CSV or JSONL, any
     * column set. Records go into the page one by one as they are read, so a log of any size
     * needs little memory; the page shows each record's conversation, reading the answer itself
     * (with the LLM columns' reader) when the log has only the bodies.
     */
    static final class Report {
        private Report() {}

        /** Columns the list shows, kept apart so that the page opens without reading every record. */
        static final List<String> SUMMARY = List.of("id", "time", "method", "url", "upstream_url", "status",
                "outcome", "error", "duration_ms", "ttfb_ms", "model", "input_tokens", "output_tokens");

        static Path defaultOutput(Path log) {
            String name = log.getFileName() == null ? "log" : log.getFileName().toString();
            int dot = name.lastIndexOf('.');
            return log.resolveSibling((dot > 0 ? name.substring(0, dot) : name) + ".html");
        }

        static int write(Path log, Path output, PrintStream out, PrintStream err) {
            List<String> problems = new ArrayList<>();
            List<Map<String, Object>> summaries = new ArrayList<>();
            try (var in = Files.newBufferedReader(log, StandardCharsets.UTF_8);
                 Writer html = Files.newBufferedWriter(output, StandardCharsets.UTF_8)) {
                ViewerPage.open(html, "llmproxy: " + log.getFileName(), false);
                RecordSource records = RecordSource.of(in, log, problems);
                for (Map<String, Object> record; (record = records.next()) != null; ) {
                    complete(record, summaries.size() + 1);
                    Map<String, Object> summary = new LinkedHashMap<>();
                    for (String column : SUMMARY) {
                        if (record.get(column) != null) {
                            summary.put(column, record.get(column));
                        }
                    }
                    summaries.add(summary);
                    ViewerPage.data(html, "class=\"llmproxy-record\" data-id=\"" + ViewerPage.html(String.valueOf(record.get("id")))
                            + "\"", Json.write(record));
                }
                ViewerPage.data(html, "id=\"llmproxy-summaries\"", Json.write(summaries));
                Map<String, Object> meta = new LinkedHashMap<>();
                meta.put("source", "report");
                meta.put("title", log.toString() + " (" + summaries.size() + " exchanges)");
                meta.put("problems", problems);
                ViewerPage.data(html, "id=\"llmproxy-meta\"", Json.write(meta));
                ViewerPage.close(html);
            } catch (NoSuchFileException e) {
                err.println("llmproxy: view: no such file: " + e.getFile());
                return 1;
            } catch (NotALog e) {
                err.println("llmproxy: view: " + e.getMessage());
                try {
                    Files.deleteIfExists(output);
                } catch (IOException ignored) {
                    // the message above says what matters
                }
                return 1;
            } catch (IOException | java.io.UncheckedIOException e) {
                err.println("llmproxy: view: cannot write " + output + " from " + log + ": " + e.getMessage());
                return 1;
            }
            for (String problem : problems) {
                err.println("llmproxy: view: " + log + ": " + problem);
            }
            out.println(output.toAbsolutePath());
            return 0;
        }

        /** Gives a record an id if it has none, and the LLM columns read from its bodies if the log lacks them. */
        static void complete(Map<String, Object> record, int number) {
            record.putIfAbsent("id", "#" + number);
            if (!record.containsKey("response_text") && (record.get("request_body") != null || record.get("response_body") != null)) {
                Object upstream = record.get("upstream_url");
                String url = upstream instanceof String u && !u.isEmpty() ? u : String.valueOf(record.get("url"));
                Llm llm = Conversation.read(url, bytes(record.get("request_body")), null, bytes(record.get("response_body")));
                record.putIfAbsent("model", llm.model());
                record.put("stream", llm.stream());
                record.put("response_text", llm.text());
                record.put("reasoning_text", llm.reasoning());
                record.put("tool_calls", llm.toolCalls());
                record.put("input_tokens", llm.inputTokens());
                record.put("output_tokens", llm.outputTokens());
                record.put("cached_tokens", llm.cachedTokens());
                record.put("stop_reason", llm.stopReason());
                record.put("reasoning_tokens", llm.reasoningTokens());
                record.put("cache_write_tokens", llm.cacheWriteTokens());
                record.values().removeIf(Objects::isNull);
            }
        }

        private static byte[] bytes(Object text) {
            return text instanceof String s ? s.getBytes(StandardCharsets.UTF_8) : null;
        }

        /** A file that is no llmproxy log. */
        static final class NotALog extends IOException {
            @Serial
            private static final long serialVersionUID = 1L;

            NotALog(String message) {
                super(message);
            }
        }

        /** Records of a CSV or JSONL log, as column -> value; what cannot be read is noted, the rest goes on. */
        interface RecordSource {
            Map<String, Object> next() throws IOException;

            static RecordSource of(java.io.BufferedReader in, Path log, List<String> problems) throws IOException {
                in.mark(1);
                int first = in.read();
                in.reset();
                return first == '{' ? jsonl(in, problems) : csv(in, log, problems);
            }

            private static RecordSource csv(java.io.BufferedReader in, Path log, List<String> problems) throws IOException {
                Csv.Reader reader = new Csv.Reader(in);
                List<String> header = reader.next();
                List<String> known = List.of(Column.values()).stream().map(Column::header).toList();
                if (header == null || header.stream().noneMatch(known::contains)) {
                    throw new NotALog(log + " is not a log written by llmproxy: its first line names none of its columns ("
                            + String.join(",", known.subList(0, 4)) + ", …)");
                }
                Set<String> numeric = new HashSet<>();
                for (Column c : Column.values()) {
                    if (c.unquoted() && c != Column.STREAM) {
                        numeric.add(c.header());
                    }
                }
                return () -> {
                    List<String> fields = reader.next();
                    if (fields == null) {
                        if (reader.truncated()) {
                            problems.add("the last record is cut short (the file ends inside it); it is left out");
                        }
                        return null;
                    }
                    Map<String, Object> record = new LinkedHashMap<>();
                    for (int i = 0; i < header.size() && i < fields.size(); i++) {
                        String value = fields.get(i);
                        if (value.isEmpty()) {
                            continue;
                        }
                        String column = header.get(i);
                        record.put(column, numeric.contains(column) && value.matches("-?[0-9]{1,18}") ? (Object) Long.valueOf(value)
                                : column.equals("stream") ? (Object) Boolean.valueOf(value) : value);
                    }
                    return record;
                };
            }

            private static RecordSource jsonl(java.io.BufferedReader in, List<String> problems) {
                int[] line = {0};
                return () -> {
                    for (String text; (text = in.readLine()) != null; ) {
                        line[0]++;
                        if (text.isBlank()) {
                            continue;
                        }
                        try {
                            if (Json.parse(text) instanceof Map<?, ?> map) {
                                Map<String, Object> record = new LinkedHashMap<>();
                                map.forEach((k, v) -> {
                                    if (v != null) {
                                        record.put(String.valueOf(k), v);
                                    }
                                });
                                return record;
                            }
                            problems.add("line " + line[0] + " is not a JSON object; it is left out");
                        } catch (IllegalArgumentException e) {
                            problems.add("line " + line[0] + " is not a whole JSON record (" + e.getMessage()
                                    + "); it is left out");
                        }
                    }
                    return null;
                };
            }
        }
    }

    // --- small utilities ---

    /** RFC 4180 CSV: a field is quoted only when it holds a comma, quote, CR or LF. */
    static final class Csv {
        private Csv() {}

        static String record(List<String> fields) {
            StringBuilder out = new StringBuilder();
            for (int i = 0; i < fields.size(); i++) {
                if (i > 0) {
                    out.append(',');
                }
                field(out, fields.get(i));
            }
            return out.append("\r\n").toString();
        }

        static void field(StringBuilder out, String value) {
            int length = value.length();
            int special = 0;
            while (special < length && !needsQuotes(value.charAt(special))) {
                special++;
            }
            if (special == length) {
                out.append(value);
                return;
            }
            out.append('"').append(value, 0, special);
            int run = special;
            for (int i = special; i < length; i++) {
                if (value.charAt(i) == '"') {
                    out.append(value, run, i + 1).append('"'); // a quote is written twice
                    run = i + 1;
                }
            }
            out.append(value, run, length).append('"');
        }

        private static boolean needsQuotes(char c) {
            return c == ',' || c == '"' || c == '\r' || c == '\n';
        }

        /**
         * Reads RFC 4180 records one at a time: quoted fields with commas, quotes and line ends
         * inside. A last record that the file cuts short (inside quotes, or without its CRLF) is
         * not returned as if whole: {@link #truncated()} says so.
         */
        static final class Reader {
            private final java.io.Reader in;
            private int peeked = -2;
            private boolean truncated;

            Reader(java.io.Reader in) {
                this.in = in;
            }

            /** The next record's fields, or null at the end of the file. */
            List<String> next() throws IOException {
                if (peek() < 0) {
                    return null;
                }
                List<String> fields = new ArrayList<>();
                StringBuilder field = new StringBuilder();
                while (true) {
                    int c = read();
                    if (c == '"' && field.isEmpty()) {
                        while (true) { // a quoted field, to its closing quote
                            int q = read();
                            if (q < 0) {
                                truncated = true;
                                return null;
                            }
                            if (q == '"') {
                                if (peek() != '"') {
                                    break;
                                }
                                read();
                            }
                            field.append((char) q);
                        }
                    } else if (c == ',') {
                        fields.add(field.toString());
                        field.setLength(0);
                    } else if (c == '\r' && peek() == '\n') {
                        read();
                        fields.add(field.toString());
                        return fields;
                    } else if (c == '\n') { // a bare LF ends a record too, as spreadsheets write them
                        fields.add(field.toString());
                        return fields;
                    } else if (c < 0) {
                        truncated = true; // the last record lacks its line end: written in part
                        return null;
                    } else {
                        field.append((char) c);
                    }
                }
            }

            /** True when the file ended inside its last record. */
            boolean truncated() {
                return truncated;
            }

            private int peek() throws IOException {
                if (peeked == -2) {
                    peeked = in.read();
                }
                return peeked;
            }

            private int read() throws IOException {
                int c = peek();
                peeked = -2;
                return c;
            }
        }

        /**
         * The field with a leading ' when a spreadsheet would run it as a formula: it starts with
         * =, +, -, @, a tab or a CR (OWASP's rule for CSV injection). Spreadsheets hide the '.
         */
        static String inert(String field) {
            if (field.isEmpty()) {
                return field;
            }
            char first = field.charAt(0);
            boolean formula = first == '=' || first == '+' || first == '-' || first == '@' || first == '\t' || first == '\r';
            return formula ? "'" + field : field;
        }
    }

    /** JSON: string literals and documents for the proxy's own output, and a strict reader for LLM bodies. */
    static final class Json {
        private static final int MAX_DEPTH = 256;

        private Json() {}

        static String quote(String value) {
            StringBuilder out = new StringBuilder(value.length() + 2);
            quote(out, value);
            return out.toString();
        }

        private static void quote(StringBuilder out, String value) {
            out.append('"');
            int run = 0;
            for (int i = 0; i < value.length(); i++) {
                char c = value.charAt(i);
                String escape = switch (c) {
                    case '"' -> "\\\"";
                    case '\\' -> "\\\\";
                    case '\n' -> "\\n";
                    case '\r' -> "\\r";
                    case '\t' -> "\\t";
                    default -> c < 0x20 ? String.format("\\u%04x", (int) c) : null;
                };
                if (escape != null) {
                    out.append(value, run, i).append(escape);
                    run = i + 1;
                }
            }
            out.append(value, run, value.length()).append('"');
        }

        /** Compact JSON for a value read by {@link #parse}; "" for a missing one. */
        static String write(Object value) {
            if (value == null) {
                return "";
            }
            StringBuilder out = new StringBuilder();
            write(out, value);
            return out.toString();
        }

        private static void write(StringBuilder out, Object value) {
            switch (value) {
                case null -> out.append("null");
                case String s -> quote(out, s);
                case Map<?, ?> map -> {
                    out.append('{');
                    boolean first = true;
                    for (Map.Entry<?, ?> e : map.entrySet()) {
                        out.append(first ? "" : ",");
                        quote(out, String.valueOf(e.getKey()));
                        out.append(':');
                        write(out, e.getValue());
                        first = false;
                    }
                    out.append('}');
                }
                case List<?> list -> {
                    out.append('[');
                    for (int i = 0; i < list.size(); i++) {
                        out.append(i > 0 ? "," : "");
                        write(out, list.get(i));
                    }
                    out.append(']');
                }
                default -> out.append(value); // Long, Double, Boolean
            }
        }

        /** Parses one document into Map, List, String, Long or Double, Boolean and null; strict, depth-bounded. */
        static Object parse(String text) {
            Reader reader = new Reader(text);
            Object value = reader.value(0);
            reader.space();
            if (reader.at < text.length()) {
                throw reader.error("text after the document");
            }
            return value;
        }

        /** The document in UTF-8 bytes, or null when there are none or they are not (yet) all of one. */
        static Object parseOrNull(byte[] json) {
            try {
                return json == null || json.length == 0 ? null : parse(new String(json, StandardCharsets.UTF_8));
            } catch (IllegalArgumentException e) {
                return null;
            }
        }

        /** The node at a path of keys and list indexes, or null when it is not there. */
        static Object at(Object node, Object... path) {
            for (Object step : path) {
                if (step instanceof String key && node instanceof Map<?, ?> map) {
                    node = map.get(key);
                } else if (step instanceof Integer index && node instanceof List<?> list && index < list.size()) {
                    node = list.get(index);
                } else {
                    return null;
                }
            }
            return node;
        }

        static String string(Object node, Object... path) {
            return at(node, path) instanceof String s ? s : null;
        }

        static Long number(Object node, Object... path) {
            Object value = at(node, path);
            return value instanceof Long l ? l : value instanceof Double d ? Long.valueOf(Math.round(d)) : null;
        }

        private static final class Reader {
            private final String text;
            private int at;

            Reader(String text) {
                this.text = text;
            }

            IllegalArgumentException error(String what) {
                return new IllegalArgumentException("bad JSON at " + at + ": " + what);
            }

            void space() {
                while (at < text.length() && " \t\r\n".indexOf(text.charAt(at)) >= 0) {
                    at++;
                }
            }

            Object value(int depth) {
                if (depth > MAX_DEPTH) {
                    throw error("nested too deep");
                }
                space();
                if (at >= text.length()) {
                    throw error("unexpected end");
                }
                char c = text.charAt(at);
                switch (c) {
                    case '{' -> {
                        at++;
                        Map<String, Object> map = new LinkedHashMap<>();
                        space();
                        if (peek('}')) {
                            return map;
                        }
                        do {
                            space();
                            if (at >= text.length() || text.charAt(at) != '"') {
                                throw error("expected a key");
                            }
                            String key = string();
                            space();
                            expect(':');
                            map.put(key, value(depth + 1));
                            space();
                        } while (peek(','));
                        expect('}');
                        return map;
                    }
                    case '[' -> {
                        at++;
                        List<Object> list = new ArrayList<>();
                        space();
                        if (peek(']')) {
                            return list;
                        }
                        do {
                            list.add(value(depth + 1));
                            space();
                        } while (peek(','));
                        expect(']');
                        return list;
                    }
                    case '"' -> {
                        return string();
                    }
                    case 't' -> {
                        return literal("true", Boolean.TRUE);
                    }
                    case 'f' -> {
                        return literal("false", Boolean.FALSE);
                    }
                    case 'n' -> {
                        return literal("null", null);
                    }
                    default -> {
                        return number();
                    }
                }
            }

            private boolean peek(char c) {
                if (at < text.length() && text.charAt(at) == c) {
                    at++;
                    return true;
                }
                return false;
            }

            private void expect(char c) {
                if (!peek(c)) {
                    throw error("expected '" + c + "'");
                }
            }

            private Object literal(String word, Object value) {
                if (!text.startsWith(word, at)) {
                    throw error("expected " + word);
                }
                at += word.length();
                return value;
            }

            private String string() {
                at++; // the opening quote
                StringBuilder out = new StringBuilder();
                int run = at;
                while (true) {
                    if (at >= text.length()) {
                        throw error("unterminated string");
                    }
                    char c = text.charAt(at);
                    if (c == '"') {
                        out.append(text, run, at++);
                        return out.toString();
                    }
                    if (c < 0x20) {
                        throw error("control character in a string");
                    }
                    if (c == '\\') {
                        out.append(text, run, at);
                        if (at + 1 >= text.length()) {
                            throw error("unterminated escape");
                        }
                        char e = text.charAt(at + 1);
                        at += 2;
                        switch (e) {
                            case '"', '\\', '/' -> out.append(e);
                            case 'b' -> out.append('\b');
                            case 'f' -> out.append('\f');
                            case 'n' -> out.append('\n');
                            case 'r' -> out.append('\r');
                            case 't' -> out.append('\t');
                            case 'u' -> {
                                if (at + 4 > text.length()) {
                                    throw error("short \\u escape");
                                }
                                try {
                                    out.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
                                } catch (NumberFormatException x) {
                                    throw error("bad \\u escape");
                                }
                                at += 4;
                            }
                            default -> throw error("bad escape \\" + e);
                        }
                        run = at;
                    } else {
                        at++;
                    }
                }
            }

            private Object number() {
                int start = at;
                peek('-');
                int digits = at;
                while (at < text.length() && Character.isDigit(text.charAt(at))) {
                    at++;
                }
                if (at == digits || (text.charAt(digits) == '0' && at - digits > 1)) {
                    throw error("bad number");
                }
                boolean integral = true;
                if (peek('.')) {
                    integral = false;
                    int fraction = at;
                    while (at < text.length() && Character.isDigit(text.charAt(at))) {
                        at++;
                    }
                    if (at == fraction) {
                        throw error("bad fraction");
                    }
                }
                if (at < text.length() && (text.charAt(at) == 'e' || text.charAt(at) == 'E')) {
                    integral = false;
                    at++;
                    if (!peek('+')) {
                        peek('-');
                    }
                    int exponent = at;
                    while (at < text.length() && Character.isDigit(text.charAt(at))) {
                        at++;
                    }
                    if (at == exponent) {
                        throw error("bad exponent");
                    }
                }
                String number = text.substring(start, at);
                if (integral && at - start <= 18) {
                    return Long.parseLong(number);
                }
                return Double.parseDouble(number);
            }
        }
    }

    /** Human-readable durations and failures for messages. */
    static final class Durations {
        private Durations() {}

        static String format(Duration d) {
            long millis = d.toMillis();
            if (millis % 60_000 == 0) {
                return millis / 60_000 + " min";
            }
            return millis % 1000 == 0 ? millis / 1000 + " s" : millis + " ms";
        }

        /** An exception's message, or its type when it has none (the JDK client often has none). */
        static String describe(Throwable e) {
            Throwable cause = e;
            while (cause.getMessage() == null && cause.getCause() != null) {
                cause = cause.getCause();
            }
            return cause.getMessage() == null ? cause.getClass().getSimpleName() : cause.getMessage();
        }
    }

    // --- exceptions ---

    /** A bad command line: the message names the problem; the process exits with 2. */
    static final class UsageException extends RuntimeException {
        @Serial
        private static final long serialVersionUID = 1L;

        UsageException(String message) {
            super(message);
        }
    }

    /** The proxy cannot start (port in use, log not writable); the process exits with 1. */
    static final class StartupException extends RuntimeException {
        @Serial
        private static final long serialVersionUID = 1L;

        StartupException(String message) {
            super(message);
        }
    }

    /** A blocking call on a client that the watchdog ended: the client sent or read nothing for --timeout. */
    static final class ClientTimeout extends IOException {
        @Serial
        private static final long serialVersionUID = 1L;

        ClientTimeout(Duration timeout, IOException cause) {
            super("nothing moved for " + Durations.format(timeout) + " (--timeout)", cause);
        }
    }

    /** Thrown out of a handler so the server drops the connection instead of ending the body cleanly. */
    static final class TruncatedResponse extends RuntimeException {
        @Serial
        private static final long serialVersionUID = 1L;

        TruncatedResponse() {
            super("response cut short", null, false, false);
        }
    }
}
