// Allocation-heavy Go service for profile-first's runtime tests, run with a low GOGC.
//
// Every request allocates ~4 MB of short-lived buffers while 400,000 linked nodes stay live, so
// with GOGC=5 a collection, which traces every live node, starts after every ~1 MB allocated:
// GC takes most of the CPU. Metrics: client_golang's Go collector (go_gc_duration_seconds, and the
// runtime/metrics GC histograms), the process collector, a request counter, and
// go_memstats_gc_cpu_fraction, the cumulative GC CPU fraction that client_golang exported
// before v1.13 (read from the same runtime field, MemStats.GCCPUFraction).
package main

import (
	"fmt"
	"net/http"
	"os"
	"regexp"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// live is a pointer-rich heap every collection has to trace: the cost of each GC.
var live []*node

type node struct {
	next *node
	v    int
}

// last keeps the previous request's buffers reachable, so they are heap-allocated and survive
// until the next request.
var last [][]byte

func handle(requests prometheus.Counter) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		bufs := make([][]byte, 0, 1000)
		total := 0
		for i := 0; i < 1000; i++ {
			b := make([]byte, 4096)
			b[i%4096] = byte(i)
			bufs = append(bufs, b)
			total += len(b)
		}
		last = bufs
		requests.Inc()
		fmt.Fprintf(w, "%d\n", total)
	}
}

func main() {
	for i := 0; i < 400000; i++ {
		n := &node{v: i}
		if i > 0 {
			n.next = live[i-1]
		}
		live = append(live, n)
	}
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounter(prometheus.CounterOpts{Name: "http_requests_total", Help: "Requests served."})
	reg.MustRegister(
		requests,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/pauses.*|^/sched/gomaxprocs.*`)})),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "go_memstats_gc_cpu_fraction",
			Help: "The fraction of this program's available CPU time used by the GC since the program started.",
		}, func() float64 {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			return m.GCCPUFraction
		}),
	)
	http.HandleFunc("/work", handle(requests))
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
