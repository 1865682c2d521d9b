package api

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the HTTP metrics of one API handler:
//
//	lattice_http_requests_total{region,method,route,status}
//	lattice_http_request_duration_seconds{region,method,route}
//
// route is the route pattern in OpenAPI form (/v1/carts/{cart_id}), or
// "unmatched" for a request that matched no route, so that the label set
// stays bounded whatever clients send.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// forwards and forwardFailures count the requests this node of a
	// partitioned region forwarded to the owner of their partition, and
	// those that could not reach it.
	forwards, forwardFailures prometheus.Counter

	// mu guards the children of requests and duration already looked up,
	// so that a request does not hash its label values again.
	mu       sync.RWMutex
	counters map[requestKey]prometheus.Counter
	timers   map[routeKey]prometheus.Observer
}

// routeKey names a child of lattice_http_request_duration_seconds.
type routeKey struct{ method, route string }

// requestKey names a child of lattice_http_requests_total.
type requestKey struct {
	routeKey
	status int
}

func prometheusDefaultCollectors() []prometheus.Collector {
	return []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
}

// LatencyBuckets are the bounds of lattice_http_request_duration_seconds:
// 0.5 ms to 10 s, written out so that the exposition shows them exactly.
var LatencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lattice_http_requests_total",
			Help: "HTTP requests served by the API, by method, route pattern and status code.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lattice_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request of the API, by method and route pattern.",
			Buckets: LatencyBuckets,
		}, []string{"method", "route"}),
		counters: make(map[requestKey]prometheus.Counter),
		timers:   make(map[routeKey]prometheus.Observer),
	}
	m.requests = register(reg, m.requests)
	m.duration = register(reg, m.duration)
	m.forwards = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lattice_http_forwarded_total",
		Help: "Requests this node forwarded to the node of its region that owns their partition (partitioned regions).",
	}))
	m.forwardFailures = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lattice_http_forward_failures_total",
		Help: "Forwards that found the owning node unreachable or silent (answered 503 partition_unavailable).",
	}))
	// Every route's latency series exists from the start (requests_total
	// gains a series per status code as they are answered).
	for path, item := range OpenAPI().Paths {
		for method := range item {
			m.duration.WithLabelValues(strings.ToUpper(method), path)
		}
	}
	return m
}

// register registers c, or returns the collector already registered under
// the same description (a second handler for the same region on one
// registry shares the first one's metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("api: registering metrics: " + err.Error())
	}
	return c
}

func (m *metrics) observe(method, route string, status int, d time.Duration) {
	if !knownMethods[method] {
		method = "OTHER"
	}
	rk := routeKey{method, route}
	k := requestKey{rk, status}
	m.mu.RLock()
	c, t := m.counters[k], m.timers[rk]
	m.mu.RUnlock()
	if c == nil || t == nil {
		c, t = m.children(k)
	}
	c.Inc()
	t.Observe(d.Seconds())
}

// children looks up and remembers the children of the metrics for k. The
// label sets are bounded (known methods, registered routes, the statuses
// the handlers write), and so is what is remembered.
func (m *metrics) children(k requestKey) (prometheus.Counter, prometheus.Observer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.counters[k]
	if !ok {
		c = m.requests.WithLabelValues(k.method, k.route, strconv.Itoa(k.status))
		m.counters[k] = c
	}
	t, ok := m.timers[k.routeKey]
	if !ok {
		t = m.duration.WithLabelValues(k.method, k.route)
		m.timers[k.routeKey] = t
	}
	return c, t
}

func (m *metrics) handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// knownMethods bounds the method label: any other method counts as OTHER.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
}

// routeLabel turns an echo route pattern into its OpenAPI form, or
// "unmatched" when the request matched no registered route.
func routeLabel(echoPath string) string {
	if label, ok := routeLabels[echoPath]; ok {
		return label
	}
	return "unmatched"
}

// routeLabels maps each registered echo pattern to its OpenAPI form. It is
// filled from the OpenAPI document's paths, and a test checks that those
// are exactly the registered routes.
var routeLabels = func() map[string]string {
	m := make(map[string]string)
	for path := range OpenAPI().Paths {
		m[echoPattern(path)] = path
	}
	return m
}()

// echoPattern turns /v1/carts/{cart_id} into /v1/carts/:cart_id.
func echoPattern(openapiPath string) string {
	parts := strings.Split(openapiPath, "/")
	for i, p := range parts {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			parts[i] = ":" + p[1:len(p)-1]
		}
	}
	return strings.Join(parts, "/")
}
