// Allocation-heavy JVM service for profile-first's runtime tests, run with the serial collector
// (-XX:+UseSerialGC) and a small heap. Every request builds short-lived objects while the
// previous requests' objects stay reachable, so they survive young collections and fill the
// old generation: collections are frequent and stop every thread.
//
// Metrics in the Prometheus text format, under the names client_java's simpleclient_hotspot
// exports (jvm_gc_collection_seconds per collector, process_cpu_seconds_total) plus a request
// counter and the seconds spent inside the request handler (server time, to compare with the
// client's latency); read from java.lang.management, no dependencies.
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;

public final class GcServer {
    private static final int KEEP = 8;
    private static final int OBJECTS = 40_000;
    private static final ArrayDeque<List<long[]>> kept = new ArrayDeque<>();
    private static final AtomicLong requests = new AtomicLong();
    private static final AtomicLong handlerNanos = new AtomicLong();

    private static synchronized int work() {
        List<long[]> batch = new ArrayList<>(OBJECTS);
        for (int i = 0; i < OBJECTS; i++) batch.add(new long[] {i, i + 1, i + 2});
        kept.addLast(batch);
        if (kept.size() > KEEP) kept.removeFirst();
        return batch.size();
    }

    private static void reply(HttpExchange ex, String body, String type) throws IOException {
        byte[] out = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", type);
        ex.sendResponseHeaders(200, out.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(out);
        }
    }

    private static String metrics() {
        StringBuilder sb = new StringBuilder();
        sb.append("# TYPE jvm_gc_collection_seconds summary\n");
        for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
            String name = gc.getName().replace("\"", "");
            sb.append("jvm_gc_collection_seconds_count{gc=\"").append(name).append("\"} ")
              .append(gc.getCollectionCount()).append('\n');
            sb.append("jvm_gc_collection_seconds_sum{gc=\"").append(name).append("\"} ")
              .append(gc.getCollectionTime() / 1000.0).append('\n');
        }
        com.sun.management.OperatingSystemMXBean os =
            (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        sb.append("# TYPE process_cpu_seconds_total counter\n");
        sb.append("process_cpu_seconds_total ").append(os.getProcessCpuTime() / 1e9).append('\n');
        sb.append("# TYPE jvm_threads_live_threads gauge\n");
        sb.append("jvm_threads_live_threads ").append(ManagementFactory.getThreadMXBean().getThreadCount()).append('\n');
        sb.append("# TYPE http_requests_total counter\n");
        sb.append("http_requests_total ").append(requests.get()).append('\n');
        sb.append("# TYPE http_request_handler_seconds_total counter\n");
        sb.append("http_request_handler_seconds_total ").append(handlerNanos.get() / 1e9).append('\n');
        return sb.toString();
    }

    public static void main(String[] args) throws IOException {
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", Integer.parseInt(args[0])), 64);
        server.createContext("/work", ex -> {
            long start = System.nanoTime();
            int n = work();
            reply(ex, n + "\n", "text/plain");
            handlerNanos.addAndGet(System.nanoTime() - start);
            requests.incrementAndGet();
        });
        server.createContext("/metrics", ex -> reply(ex, metrics(), "text/plain; version=0.0.4"));
        server.setExecutor(Executors.newFixedThreadPool(4));
        server.start();
    }
}
