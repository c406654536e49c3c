import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import org.junit.jupiter.api.Test;

/** Reading LLM exchanges: SSE, JSON, and the five wire formats, from realistic transcripts. */
class ConversationTest {
    private static LlmProxy.Llm read(String path, String request, String contentType, String response) {
        return LlmProxy.Conversation.read("http://127.0.0.1:8080" + path, bytes(request), contentType, bytes(response));
    }

    private static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    private static final String SSE = "text/event-stream; charset=utf-8";

    // --- OpenAI Chat Completions ---

    static final String CHAT_STREAM = """
            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}

            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}

            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":", wörld"},"finish_reason":null}]}

            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}

            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":"}}]},"finish_reason":null}]}

            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\"Paris\\"}"}}]},"finish_reason":null}]}

            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":null}]}

            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

            data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1764201600,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":25,"completion_tokens":12,"total_tokens":37,"prompt_tokens_details":{"cached_tokens":8}}}

            data: [DONE]

            """;
    static final String CHAT_REQUEST = """
            {"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
             "messages": [{"role": "user", "content": "Weather in Paris?"}]}""";

    @Test
    void assemblesAStreamedChatCompletionWithToolCallsAndUsage() {
        var llm = read("/v1/chat/completions", CHAT_REQUEST, SSE, CHAT_STREAM);
        assertEquals(new LlmProxy.Llm("gpt-4o-mini", true, "Hello, wörld", null,
                "get_weather({\"city\":\"Paris\"})\nget_time({})", 25L, 12L, 8L, "tool_calls", null, null, "gpt-4o-mini-2024-07-18", "chatcmpl-1"), llm);
    }

    @Test
    void readsTheSameStreamWithCrlfAndCrLineEnds() {
        for (String end : List.of("\r\n", "\r")) {
            var llm = read("/v1/chat/completions", CHAT_REQUEST, SSE, CHAT_STREAM.replace("\n", end));
            assertEquals("Hello, wörld", llm.text(), "line ends " + end.replace("\r", "CR").replace("\n", "LF"));
            assertEquals(12L, llm.outputTokens());
        }
    }

    @Test
    void keepsTheTextOfAStreamCutMidEvent() {
        String cut = CHAT_STREAM.substring(0, CHAT_STREAM.indexOf(", wörld") + 4); // inside the third event
        var llm = read("/v1/chat/completions", CHAT_REQUEST, SSE, cut);
        assertEquals("Hello", llm.text());
        assertNull(llm.stopReason());
        assertNull(llm.outputTokens());
    }

    @Test
    void readsANonStreamedChatCompletion() {
        String response = """
                {"id":"chatcmpl-2","object":"chat.completion","created":1764201600,"model":"gpt-4o-2024-08-06",
                 "choices":[{"index":0,"message":{"role":"assistant","content":null,"reasoning_content":"Think first.",
                   "tool_calls":[{"id":"call_9","type":"function","function":{"name":"lookup","arguments":"{\\"q\\":\\"x\\"}"}}]},
                   "logprobs":null,"finish_reason":"tool_calls"}],
                 "usage":{"prompt_tokens":40,"completion_tokens":9,"total_tokens":49}}""";
        var llm = read("/chat/completions", "{\"model\":\"gpt-4o\",\"messages\":[]}", "application/json", response);
        assertEquals(new LlmProxy.Llm("gpt-4o", false, null, "Think first.", "lookup({\"q\":\"x\"})", 40L, 9L, null,
                "tool_calls", null, null, "gpt-4o-2024-08-06", "chatcmpl-2"), llm);
    }

    @Test
    void reportsAnApiError() {
        String response = """
                {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}}""";
        var llm = read("/v1/chat/completions", CHAT_REQUEST, "application/json", response);
        assertEquals("error: invalid_request_error: Incorrect API key provided", llm.stopReason());
        assertEquals("gpt-4o-mini", llm.model());
    }

    // --- OpenAI Responses ---

    static final String RESPONSES_STREAM = """
            event: response.created
            data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-5-2025-08-07","output":[]}}

            event: response.output_item.added
            data: {"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}

            event: response.reasoning_summary_text.delta
            data: {"type":"response.reasoning_summary_text.delta","sequence_number":2,"item_id":"rs_1","output_index":0,"summary_index":0,"delta":"Need the weather."}

            event: response.output_item.added
            data: {"type":"response.output_item.added","sequence_number":3,"output_index":1,"item":{"id":"fc_1","type":"function_call","status":"in_progress","arguments":"","call_id":"call_1","name":"get_weather"}}

            event: response.function_call_arguments.delta
            data: {"type":"response.function_call_arguments.delta","sequence_number":4,"item_id":"fc_1","output_index":1,"delta":"{\\"city\\":"}

            event: response.function_call_arguments.delta
            data: {"type":"response.function_call_arguments.delta","sequence_number":5,"item_id":"fc_1","output_index":1,"delta":"\\"Oslo\\"}"}

            event: response.output_text.delta
            data: {"type":"response.output_text.delta","sequence_number":6,"item_id":"msg_1","output_index":2,"content_index":0,"delta":"Checking"}

            event: response.output_text.delta
            data: {"type":"response.output_text.delta","sequence_number":7,"item_id":"msg_1","output_index":2,"content_index":0,"delta":" now."}

            event: response.completed
            data: {"type":"response.completed","sequence_number":8,"response":{"id":"resp_1","object":"response","status":"completed","model":"gpt-5-2025-08-07","usage":{"input_tokens":52,"input_tokens_details":{"cached_tokens":0},"output_tokens":31,"output_tokens_details":{"reasoning_tokens":12},"total_tokens":83}}}

            """;

    @Test
    void assemblesAStreamedResponsesCall() {
        var llm = read("/v1/responses", "{\"model\":\"gpt-5\",\"stream\":true,\"input\":\"hi\"}", SSE, RESPONSES_STREAM);
        assertEquals(new LlmProxy.Llm("gpt-5", true, "Checking now.", "Need the weather.",
                "get_weather({\"city\":\"Oslo\"})", 52L, 31L, 0L, "completed", 12L, null, "gpt-5-2025-08-07", "resp_1"), llm);
    }

    @Test
    void reportsAnIncompleteResponsesStream() {
        String stream = """
                event: response.output_text.delta
                data: {"type":"response.output_text.delta","sequence_number":1,"delta":"Partial"}

                event: response.incomplete
                data: {"type":"response.incomplete","sequence_number":2,"response":{"object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-5","usage":{"input_tokens":5,"output_tokens":16}}}

                """;
        var llm = read("/v1/responses", "", SSE, stream);
        assertEquals("Partial", llm.text());
        assertEquals("incomplete: max_output_tokens", llm.stopReason());
        assertEquals("gpt-5", llm.model());
    }

    @Test
    void readsANonStreamedResponse() {
        String response = """
                {"id":"resp_2","object":"response","status":"completed","model":"gpt-5-mini-2025-08-07",
                 "output":[{"type":"reasoning","id":"rs_2","summary":[{"type":"summary_text","text":"Simple."}]},
                  {"type":"message","id":"msg_2","role":"assistant","content":[{"type":"output_text","text":"Hi there.","annotations":[]}]},
                  {"type":"function_call","id":"fc_2","call_id":"call_2","name":"note","arguments":"{\\"x\\":1}"}],
                 "usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":3},"output_tokens":4,"total_tokens":11}}""";
        var llm = read("/v1/responses", "{\"model\":\"gpt-5-mini\",\"input\":\"hi\"}", "application/json", response);
        assertEquals(new LlmProxy.Llm("gpt-5-mini", false, "Hi there.", "Simple.", "note({\"x\":1})", 7L, 4L, 3L,
                "completed", null, null, "gpt-5-mini-2025-08-07", "resp_2"), llm);
    }

    // --- Anthropic Messages ---

    static final String ANTHROPIC_STREAM = """
            event: message_start
            data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"usage":{"input_tokens":472,"cache_read_input_tokens":100,"output_tokens":2}}}

            event: content_block_start
            data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

            event: ping
            data: {"type": "ping"}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user wants "}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"the weather."}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":0}

            event: content_block_start
            data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Let me check."}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":1}

            event: content_block_start
            data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\\"location\\": \\"San Fra"}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"ncisco\\"}"}}

            event: content_block_stop
            data: {"type":"content_block_stop","index":2}

            event: message_delta
            data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

            event: message_stop
            data: {"type":"message_stop"}

            """;

    @Test
    void assemblesAStreamedAnthropicMessageWithThinkingAndToolUse() {
        var llm = read("/v1/messages", "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":1024,\"stream\":true}", SSE,
                ANTHROPIC_STREAM);
        assertEquals(new LlmProxy.Llm("claude-sonnet-4-5", true, "Let me check.", "The user wants the weather.",
                "get_weather({\"location\": \"San Francisco\"})", 472L, 89L, 100L, "tool_use", null, null, "claude-sonnet-4-5-20250929", "msg_1"), llm);
    }

    @Test
    void reportsAnAnthropicErrorEventMidStream() {
        String stream = ANTHROPIC_STREAM.substring(0, ANTHROPIC_STREAM.indexOf("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}"))
                + "event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";
        var llm = read("/v1/messages", "", SSE, stream);
        assertEquals("Let me check.", llm.text());
        assertEquals("error: overloaded_error: Overloaded", llm.stopReason());
        assertEquals("claude-sonnet-4-5-20250929", llm.model(), "from the response when the request has none");
    }

    @Test
    void readsANonStreamedAnthropicMessage() {
        String response = """
                {"id":"msg_2","type":"message","role":"assistant","model":"claude-haiku-4-5-20251001",
                 "content":[{"type":"text","text":"Sure."},{"type":"tool_use","id":"toolu_2","name":"search","input":{"q":"jdk","n":3}}],
                 "stop_reason":"tool_use","stop_sequence":null,
                 "usage":{"input_tokens":20,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":30}}""";
        var llm = read("/v1/messages", "{\"model\":\"claude-haiku-4-5\"}", "application/json", response);
        assertEquals(new LlmProxy.Llm("claude-haiku-4-5", false, "Sure.", null, "search({\"q\":\"jdk\",\"n\":3})", 20L,
                30L, 0L, "tool_use", null, 0L, "claude-haiku-4-5-20251001", "msg_2"), llm);
    }

    // --- Ollama ---

    @Test
    void assemblesAnOllamaChatStream() {
        String stream = """
                {"model":"qwen3:8b","created_at":"2026-11-27T14:00:00Z","message":{"role":"assistant","content":"","thinking":"Hmm."},"done":false}
                {"model":"qwen3:8b","created_at":"2026-11-27T14:00:00Z","message":{"role":"assistant","content":"Hi"},"done":false}
                {"model":"qwen3:8b","created_at":"2026-11-27T14:00:00Z","message":{"role":"assistant","content":"!","tool_calls":[{"function":{"name":"wave","arguments":{"times":2}}}]},"done":false}
                {"model":"qwen3:8b","created_at":"2026-11-27T14:00:01Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":1,"prompt_eval_count":26,"eval_count":290}
                """;
        var llm = read("/api/chat", "{\"model\":\"qwen3:8b\",\"messages\":[]}", "application/x-ndjson", stream);
        assertEquals(new LlmProxy.Llm("qwen3:8b", true, "Hi!", "Hmm.", "wave({\"times\":2})", 26L, 290L, null, "stop", null, null, "qwen3:8b", null), llm);
    }

    @Test
    void readsANonStreamedOllamaGenerate() {
        String response = """
                {"model":"llama3.2","created_at":"2026-11-27T14:00:00Z","response":"The sky is blue.","done":true,"done_reason":"stop","prompt_eval_count":10,"eval_count":6}""";
        var llm = read("/api/generate", "{\"model\":\"llama3.2\",\"prompt\":\"Why?\",\"stream\":false}", "application/json",
                response);
        assertEquals(new LlmProxy.Llm("llama3.2", false, "The sky is blue.", null, null, 10L, 6L, null, "stop", null, null, "llama3.2", null), llm);
    }

    // --- Gemini ---

    static final String GEMINI_STREAM = """
            data: {"candidates": [{"content": {"parts": [{"text": "Planning.", "thought": true}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash"}

            data: {"candidates": [{"content": {"parts": [{"text": "Two plus two"}],"role": "model"},"index": 0}],"modelVersion": "gemini-2.5-flash"}

            data: {"candidates": [{"content": {"parts": [{"text": " is four."}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 9,"candidatesTokenCount": 5,"cachedContentTokenCount": 2,"thoughtsTokenCount": 20,"totalTokenCount": 34},"modelVersion": "gemini-2.5-flash"}

            """;

    @Test
    void assemblesAGeminiSseStream() {
        var llm = read("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "{\"contents\":[]}", SSE,
                GEMINI_STREAM);
        // Gemini counts thinking apart from the answer (candidates 5, thoughts 20); both are billed output.
        assertEquals(new LlmProxy.Llm("gemini-2.5-flash", true, "Two plus two is four.", "Planning.", null, 9L, 25L, 2L,
                "STOP", 20L, null, "gemini-2.5-flash", null), llm);
    }

    @Test
    void readsGeminiGenerateContentAndItsJsonArrayStream() {
        String one = """
                {"candidates": [{"content": {"parts": [{"functionCall": {"name": "add", "args": {"a": 2, "b": 2}}}],"role": "model"},"finishReason": "STOP"}],
                 "usageMetadata": {"promptTokenCount": 12,"candidatesTokenCount": 3},"modelVersion": "gemini-2.5-pro"}""";
        var llm = read("/v1beta/models/gemini-2.5-pro:generateContent", "{}", "application/json", one);
        assertEquals(new LlmProxy.Llm("gemini-2.5-pro", false, null, null, "add({\"a\":2,\"b\":2})", 12L, 3L, null, "STOP", null, null, "gemini-2.5-pro", null),
                llm);
        String array = "[" + GEMINI_STREAM.lines().filter(l -> l.startsWith("data: ")).map(l -> l.substring(6))
                .reduce((a, b) -> a + ",\n" + b).orElseThrow() + "]";
        var streamed = read("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "{}", "application/json", array);
        assertEquals("Two plus two is four.", streamed.text());
        assertEquals(true, streamed.stream());
    }

    @Test
    void readsAGeminiArrayStreamCutShortElementByElement() {
        String array = "[" + GEMINI_STREAM.lines().filter(l -> l.startsWith("data: ")).map(l -> l.substring(6))
                .reduce((a, b) -> a + ",\n" + b).orElseThrow() + "]";
        String cut = array.substring(0, array.indexOf(" is four.")); // inside the third element
        var llm = read("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "{}", "application/json", cut);
        assertEquals("Two plus two", llm.text());
        assertEquals("Planning.", llm.reasoning());
        assertEquals(true, llm.stream());
    }

    // --- fixes found by review ---

    @Test
    void readsAnthropicCacheWritesAndReads() {
        String stream = ANTHROPIC_STREAM.replace("\"cache_read_input_tokens\":100",
                "\"cache_creation_input_tokens\":1200,\"cache_read_input_tokens\":100");
        var llm = read("/v1/messages", "{\"model\":\"claude-sonnet-4-5\"}", SSE, stream);
        assertEquals(1200L, llm.cacheWriteTokens());
        assertEquals(100L, llm.cachedTokens());
        assertEquals(472L, llm.inputTokens(), "Anthropic's input_tokens leaves the cached ones out, as sent");
    }

    @Test
    void namesAnthropicServerAndMcpToolCalls() {
        String stream = """
                event: message_start
                data: {"type":"message_start","message":{"id":"msg_3","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":10,"output_tokens":1}}}

                event: content_block_start
                data: {"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}

                event: content_block_delta
                data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"query\\": \\"jdk 25\\"}"}}

                event: content_block_start
                data: {"type":"content_block_start","index":1,"content_block":{"type":"mcp_tool_use","id":"mcptoolu_1","name":"list_issues","server_name":"github","input":{}}}

                event: content_block_delta
                data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{}"}}

                """;
        assertEquals("web_search({\"query\": \"jdk 25\"})\nlist_issues({})", read("/v1/messages", "", SSE, stream).toolCalls());
        String whole = """
                {"type":"message","model":"claude-sonnet-4-5","content":[
                 {"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{"query":"jdk"}},
                 {"type":"mcp_tool_use","id":"mcptoolu_1","name":"list_issues","server_name":"github","input":{}}],
                 "stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}""";
        assertEquals("web_search({\"query\":\"jdk\"})\nlist_issues({})",
                read("/v1/messages", "", "application/json", whole).toolCalls());
    }

    @Test
    void readsResponsesCustomToolCallsLikeFunctionCalls() {
        String stream = """
                event: response.output_item.added
                data: {"type":"response.output_item.added","output_index":0,"item":{"id":"ctc_1","type":"custom_tool_call","status":"in_progress","call_id":"call_1","input":"","name":"shell"}}

                event: response.custom_tool_call_input.delta
                data: {"type":"response.custom_tool_call_input.delta","output_index":0,"item_id":"ctc_1","delta":"ls -la"}

                event: response.custom_tool_call_input.delta
                data: {"type":"response.custom_tool_call_input.delta","output_index":0,"item_id":"ctc_1","delta":" src"}

                event: response.custom_tool_call_input.done
                data: {"type":"response.custom_tool_call_input.done","output_index":0,"item_id":"ctc_1","input":"ls -la src"}

                event: response.output_item.added
                data: {"type":"response.output_item.added","output_index":1,"item":{"id":"ctc_2","type":"custom_tool_call","call_id":"call_2","input":"","name":"apply_patch"}}

                event: response.custom_tool_call_input.done
                data: {"type":"response.custom_tool_call_input.done","output_index":1,"item_id":"ctc_2","input":"*** Begin Patch"}

                """;
        assertEquals("shell(ls -la src)\napply_patch(*** Begin Patch)", read("/v1/responses", "", SSE, stream).toolCalls());
        String whole = """
                {"id":"resp_3","object":"response","status":"completed","model":"gpt-5-codex",
                 "output":[{"type":"custom_tool_call","call_id":"call_1","name":"shell","input":"pwd"}]}""";
        assertEquals("shell(pwd)", read("/v1/responses", "", "application/json", whole).toolCalls());
    }

    @Test
    void marksAnOpenAiRefusalInTheTextAndTheStopReason() {
        String stream = """
                data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":null,"refusal":""},"finish_reason":null}]}

                data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"refusal":"I can't help"},"finish_reason":null}]}

                data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"refusal":" with that."},"finish_reason":null}]}

                data: {"id":"c","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

                data: [DONE]

                """;
        var streamed = read("/v1/chat/completions", "", SSE, stream);
        assertEquals("[refusal] I can't help with that.", streamed.text());
        assertEquals("refusal", streamed.stopReason());
        String whole = """
                {"object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":null,
                 "refusal":"I can't help with that."},"finish_reason":"stop"}]}""";
        assertEquals("[refusal] I can't help with that.", read("/v1/chat/completions", "", "application/json", whole).text());
        String responses = """
                {"id":"resp_4","object":"response","status":"completed","model":"gpt-5",
                 "output":[{"type":"message","role":"assistant","content":[{"type":"refusal","refusal":"No."}]}]}""";
        var fromResponses = read("/v1/responses", "", "application/json", responses);
        assertEquals("[refusal] No.", fromResponses.text());
        assertEquals("refusal", fromResponses.stopReason());
        String responsesStream = """
                event: response.refusal.delta
                data: {"type":"response.refusal.delta","output_index":0,"content_index":0,"delta":"No."}

                event: response.completed
                data: {"type":"response.completed","response":{"id":"resp_5","object":"response","status":"completed","model":"gpt-5"}}

                """;
        var streamedResponses = read("/v1/responses", "", SSE, responsesStream);
        assertEquals("[refusal] No.", streamedResponses.text());
        assertEquals("refusal", streamedResponses.stopReason());
    }

    @Test
    void keepsTheFirstChoiceAloneWhenAStreamHasSeveral() {
        String stream = """
                data: {"object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Red"},"finish_reason":null}]}

                data: {"object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":1,"delta":{"content":"Blue"},"finish_reason":null}]}

                data: {"object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"content":" apple"},"finish_reason":null}]}

                data: {"object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":1,"delta":{"content":" sky"},"finish_reason":"length"}]}

                data: {"object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

                """;
        var llm = read("/v1/chat/completions", "{\"n\": 2}", SSE, stream);
        assertEquals("Red apple", llm.text());
        assertEquals("stop", llm.stopReason());
    }

    @Test
    void readsTheCodeOfAResponsesErrorEvent() {
        String stream = """
                event: response.output_text.delta
                data: {"type":"response.output_text.delta","output_index":0,"delta":"Part"}

                event: error
                data: {"type":"error","code":"rate_limit_exceeded","message":"Slow down.","param":null}

                event: response.failed
                data: {"type":"response.failed","response":{"id":"resp_6","object":"response","status":"failed","model":"gpt-5","error":null}}

                """;
        var llm = read("/v1/responses", "", SSE, stream);
        assertEquals("error: rate_limit_exceeded: Slow down.", llm.stopReason());
        assertEquals("Part", llm.text());
    }

    @Test
    void choosesTheFormatFromTheUpstreamUrlAndReadsSseSentWithAnotherContentType() {
        // -t https://api.openai.com/v1/chat/completions with a client that posts to "/".
        var llm = LlmProxy.Conversation.read("https://api.openai.com/v1/chat/completions/", bytes(CHAT_REQUEST),
                "text/plain", bytes(CHAT_STREAM));
        assertEquals("Hello, wörld", llm.text());
        assertEquals(true, llm.stream());
    }

    // --- not LLM calls ---

    @Test
    void leavesTheColumnsEmptyForOtherExchanges() {
        assertEquals(LlmProxy.Llm.NONE, read("/v1/models", "", "application/json",
                "{\"object\":\"list\",\"data\":[{\"id\":\"gpt-4o\",\"object\":\"model\"}]}"));
        assertEquals(LlmProxy.Llm.NONE, LlmProxy.Conversation.read("http://127.0.0.1:8080/files/a.bin", new byte[0],
                "application/octet-stream", new byte[] {(byte) 0xff, 0, 1, 2}));
        assertEquals(LlmProxy.Llm.NONE, read("/v1/chat/completions", "", "application/json", "not json at all {"));
        assertEquals(LlmProxy.Llm.NONE, LlmProxy.Conversation.read("http://127.0.0.1:8080/v1/messages", null, null, null));
    }

    // --- SSE ---

    private static List<LlmProxy.Sse.Event> events(byte[]... pieces) {
        var sse = new LlmProxy.Sse();
        for (byte[] piece : pieces) {
            sse.feed(piece, 0, piece.length);
        }
        return sse.finish();
    }

    @Test
    void parsesEventsAtEverySplitPosition() {
        byte[] whole = bytes(ANTHROPIC_STREAM.replace("\n", "\r\n") + ": a comment\r\nevent: x\r\ndata: ünï\r\ndata: côdé\r\n\r\n");
        List<LlmProxy.Sse.Event> expected = events(whole);
        assertEquals(new LlmProxy.Sse.Event("x", "ünï\ncôdé"), expected.getLast());
        assertEquals(ANTHROPIC_STREAM.split("\n\n").length + 1, expected.size());
        for (int split = 0; split <= whole.length; split++) { // through CRLFs and UTF-8 sequences
            assertEquals(expected, events(Arrays.copyOfRange(whole, 0, split), Arrays.copyOfRange(whole, split, whole.length)),
                    "split at byte " + split);
        }
    }

    @Test
    void keepsALastEventWithoutItsBlankLine() {
        assertEquals(List.of(new LlmProxy.Sse.Event("message", "a"), new LlmProxy.Sse.Event("message", "b")),
                events(bytes("data: a\n\ndata: b")));
    }

    @Test
    void ignoresUnknownFieldsAndEventsWithoutData() {
        assertEquals(List.of(new LlmProxy.Sse.Event("message", "x")),
                events(bytes("id: 1\nretry: 10\nevent: nothing\n\nfoo: bar\ndata:x\n\n")));
    }

    // --- JSON ---

    @Test
    void parsesJsonStrictly() {
        Object doc = LlmProxy.Json.parse(" {\"a\": [1, -2.5e1, true, false, null, \"\\u00fc\\n\\\"\"], \"b\": {}} ");
        assertEquals(Map.of("a", new ArrayList<>(Arrays.asList(1L, -25.0, true, false, null, "ü\n\"")), "b", Map.of()), doc);
        for (String bad : List.of("{\"a\":1,}", "[1 2]", "{'a':1}", "01", "\"tab\there\"", "[", "{} x", "tru", "1.", "-")) {
            assertThrows(IllegalArgumentException.class, () -> LlmProxy.Json.parse(bad), bad);
        }
        assertThrows(IllegalArgumentException.class, () -> LlmProxy.Json.parse("[".repeat(300) + "]".repeat(300)),
                "depth is bounded");
    }

    @Test
    void writesJsonBack() {
        Object doc = LlmProxy.Json.parse("{\"q\":\"a\\\"b\",\"n\":[1,2.5,null,true]}");
        assertEquals("{\"q\":\"a\\\"b\",\"n\":[1,2.5,null,true]}", LlmProxy.Json.write(doc));
    }
}
