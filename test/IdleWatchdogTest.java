import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.io.PipedInputStream;
import java.io.PipedOutputStream;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;

import org.junit.jupiter.api.Test;

/** The watchdog that bounds every wait on a peer. */
class IdleWatchdogTest {
    /** An empty body that runs {@code onClose} when closed. */
    private static InputStream body(Runnable onClose) {
        return new InputStream() {
            @Override
            public int read() {
                return -1;
            }

            @Override
            public void close() {
                onClose.run();
            }
        };
    }

    @Test
    void keepsWatchingAfterWhatItCallsThrows() throws Exception {
        try (var watchdog = new LlmProxy.IdleWatchdog(Duration.ofMillis(20))) {
            watchdog.watch(body(() -> {
                throw new IllegalStateException("a body whose close throws");
            })).waiting();
            CountDownLatch closed = new CountDownLatch(1);
            watchdog.watch(body(closed::countDown)).waiting();
            // Without the guard, the first exception cancels the schedule and this never closes.
            TestSupport.await(closed, "the second body to be ended");
        }
    }

    @Test
    void endsABlockedClientReadByInterruptingItsThread() throws Exception {
        try (var watchdog = new LlmProxy.IdleWatchdog(Duration.ofMillis(50));
             var silent = new PipedOutputStream();
             var in = new PipedInputStream(silent)) {
            var wait = watchdog.clientWait();
            // PipedInputStream waits in wait(), which an interrupt ends: a socket read ends likewise.
            var e = assertThrows(LlmProxy.ClientTimeout.class, () -> wait.call(in::read));
            assertTrue(e.getMessage().contains("--timeout"), e.getMessage());
            assertTrue(wait.timedOut());
            assertFalse(Thread.currentThread().isInterrupted(), "the interrupt does not leak into later calls");
            wait.close();
        }
    }

    @Test
    void neverEndsACallThatFinishesInTime() throws Exception {
        try (var watchdog = new LlmProxy.IdleWatchdog(Duration.ofSeconds(10))) {
            var wait = watchdog.clientWait();
            for (int i = 0; i < 1000; i++) {
                assertEquals(i, (int) wait.call(() -> Integer.valueOf(0)) + i);
            }
            assertFalse(wait.timedOut());
            wait.close();
        }
    }
}
