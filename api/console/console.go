// Package console serves a region's live console at /console: one page,
// embedded in the binary and working offline (plain HTML, CSS and
// JavaScript, nothing fetched at run time), that shows the cluster as a map
// of regions and links, replication lag, anti-entropy, convergence times
// against the one-way floor, write rates and store health, and a cart and
// stock explorer that shows one cart or sku at every region side by side.
//
// The page talks only to the region that serves it. That region answers
// GET /console/api/snapshot by asking every region (itself in process,
// its peers over HTTP at their API address) for GET /console/api/local,
// which is that region's /v1/cluster, convergence histogram and, when
// asked, one cart and one sku as its REST API answers them. Edits made on
// the page go to a chosen region through POST, PUT and DELETE
// /console/api/regions/{name}/v1/..., which the serving region carries to
// that region's API (a short list of cart and stock routes; nothing else
// is relayed). So the browser never makes a cross-origin request and no
// region answers with CORS headers.
//
// Authentication is the API's: when the region needs bearer tokens, every
// /console/api and /console/dev route needs one too (GET a read or
// read-write token, anything else a read-write token), and the serving
// region passes the request's Authorization header on to the region it
// asks, which checks it again. The page itself (HTML, CSS, script) holds
// no data and is served without a token; the user types a token into it.
//
// Controls that cut a region off, heal it, or change the emulated latency
// and loss exist only when Options.Controls is set, which only `lattice
// dev` does; otherwise /console/dev/... is 404.
package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
)

//go:embed static
var static embed.FS

// Path is where the console is served.
const Path = "/console"

// Limits of the console.
const (
	// PeerTimeout bounds one request the serving region makes to another
	// region for the page.
	PeerTimeout = 2 * time.Second
	// MaxBodyBytes bounds the body of an edit or a control request.
	MaxBodyBytes = 64 << 10
	// MaxLatencyMS bounds the latency a control may set.
	MaxLatencyMS = config.MaxLatencyMS
)

// Controls change the emulated WAN between the regions of a development
// cluster. Its methods are safe for concurrent use; a region name that is
// not in the cluster is an error, and an error changes nothing.
type Controls interface {
	// State returns which regions are cut off and each link's emulated
	// latency and loss.
	State() ControlState
	// Cut drops every packet between region and every other region.
	Cut(region string) error
	// Heal undoes Cut.
	Heal(region string) error
	// SetLatency sets the one-way latency between regions a and b, in
	// both directions.
	SetLatency(a, b string, d time.Duration) error
	// SetLoss sets the share of packets dropped on every link, in
	// percent (0 to 100).
	SetLoss(pct float64) error
}

// ControlState is what the development controls have set.
type ControlState struct {
	// Cut lists the regions cut off from all the others.
	Cut []string `json:"cut"`
	// Links lists every pair of regions with its emulated one-way
	// latency.
	Links []LinkState `json:"links"`
	// LossPct is the share of packets dropped on every link, in percent.
	LossPct float64 `json:"loss_pct"`
}

// LinkState is the emulated link between regions A and B.
type LinkState struct {
	A         string `json:"a"`
	B         string `json:"b"`
	LatencyMS int64  `json:"latency_ms"`
}

// Options configure the console of one region.
type Options struct {
	// Region is the name of the region serving the console.
	Region string
	// Config is the cluster's config: its regions and their API
	// addresses, and the configured latencies (the convergence floor).
	Config *config.Config
	// API is the region's REST API; the console reads and writes through
	// it in process, so its answers, tokens and checks are the API's.
	API http.Handler
	// Gatherer holds the region's metrics
	// (lattice_replication_convergence_seconds).
	Gatherer prometheus.Gatherer
	// Tokens, when set, are the bearer tokens the region's API needs; the
	// console's data routes need them too.
	Tokens *api.Tokens
	// RootCAs verifies the other regions' API certificates when the
	// config has api_tls; nil means the system's roots (which honour
	// SSL_CERT_FILE).
	RootCAs *x509.CertPool
	// Controls, when set, enables /console/dev/...: `lattice dev` only.
	Controls Controls
	// Logger receives a record per failed request to another region.
	Logger *slog.Logger
}

// RegionLink is a region of the cluster and the base URL of its API.
type RegionLink struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// Handler serves /console and everything under it, and hands every other
// request to the region's API.
type Handler struct {
	opts    Options
	regions []RegionLink
	client  *http.Client
	files   http.Handler
}

// New returns the handler of the console of opts.Region, in front of
// opts.API.
func New(opts Options) (*Handler, error) {
	if opts.Config == nil || opts.API == nil {
		return nil, errors.New("console: Config and API are required")
	}
	if _, ok := opts.Config.Region(opts.Region); !ok {
		return nil, fmt.Errorf("console: region %q is not in the config", opts.Region)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Gatherer == nil {
		opts.Gatherer = prometheus.NewRegistry()
	}
	h := &Handler{opts: opts}
	for _, r := range opts.Config.Regions {
		// A region of several nodes is reached at its first node (any
		// node answers for the whole region).
		api := r.API
		if nodes := opts.Config.Nodes(r.Name); api == "" && len(nodes) > 0 {
			api = nodes[0].DialAPI()
		}
		h.regions = append(h.regions, RegionLink{Name: r.Name, URL: BaseURL(api, opts.Config.APITLS.Enabled())})
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 4
	// No Timeout of the client's own: every call's context bounds it
	// (PeerTimeout for a snapshot, longer for a relayed edit, which the
	// peer may answer after its own operation deadline).
	h.client = &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	h.files = http.FileServerFS(sub)
	return h, nil
}

// BaseURL is the base URL of the API at addr (host:port): https when tls,
// and an unspecified host (":7101", "0.0.0.0:7101") is this machine.
func BaseURL(addr string, tls bool) string {
	scheme := "http://"
	if tls {
		scheme = "https://"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return scheme + addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return scheme + net.JoinHostPort(host, port)
}

// Regions returns the regions of the cluster and their API URLs, in the
// config's order.
func (h *Handler) Regions() []RegionLink { return append([]RegionLink(nil), h.regions...) }

// ServeHTTP serves the console's routes and passes every other request to
// the API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p != Path && !strings.HasPrefix(p, Path+"/") {
		h.opts.API.ServeHTTP(w, r)
		return
	}
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cache-Control", "no-store")
	switch {
	case p == Path+"/api/snapshot":
		h.route(w, r, http.MethodGet, h.snapshot)
	case p == Path+"/api/local":
		h.route(w, r, http.MethodGet, h.local)
	case strings.HasPrefix(p, Path+"/api/regions/"):
		h.relay(w, r)
	case strings.HasPrefix(p, Path+"/dev/"):
		h.dev(w, r)
	case strings.HasPrefix(p, Path+"/api/"):
		problem(w, http.StatusNotFound, "not_found", "no such console route")
	default:
		h.page(w, r)
	}
}

// page serves the embedded files: /console is the page, /console/NAME its
// script and style sheet.
func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		problem(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here")
		return
	}
	name := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, Path), "/")
	if name == "" || name == "index.html" {
		name = "index.html"
	}
	if strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
		problem(w, http.StatusNotFound, "not_found", "no such console file")
		return
	}
	if _, err := fs.Stat(static, "static/"+name); err != nil {
		problem(w, http.StatusNotFound, "not_found", "no such console file")
		return
	}
	w.Header().Set("Content-Security-Policy",
		"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + name
	if name == "index.html" {
		// The file server redirects /index.html to /; serve the file.
		f, err := static.ReadFile("static/index.html")
		if err != nil {
			problem(w, http.StatusInternalServerError, "internal", "console: page missing")
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(f)
		}
		return
	}
	h.files.ServeHTTP(w, r2)
}

// route checks the method and the token's scope, then runs f.
func (h *Handler) route(w http.ResponseWriter, r *http.Request, method string, f http.HandlerFunc) {
	if r.Method != method {
		w.Header().Set("Allow", method)
		problem(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" is not allowed here; use "+method)
		return
	}
	if !h.authorized(w, r) {
		return
	}
	f(w, r)
}

// authorized answers 401 or 403 as the API does when the region needs
// tokens and the request's does not allow its method.
func (h *Handler) authorized(w http.ResponseWriter, r *http.Request) bool {
	if h.opts.Tokens == nil {
		return true
	}
	need := api.ScopeWrite
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		need = api.ScopeRead
	}
	const realm = `Bearer realm="lattice"`
	tok, ok := api.BearerToken(r.Header)
	if !ok {
		w.Header().Set("WWW-Authenticate", realm)
		problem(w, http.StatusUnauthorized, api.CodeUnauthorized, "a bearer token is required: Authorization: Bearer TOKEN")
		return false
	}
	switch got := h.opts.Tokens.Scope(tok); {
	case got == api.ScopeNone:
		w.Header().Set("WWW-Authenticate", realm+`, error="invalid_token"`)
		problem(w, http.StatusUnauthorized, api.CodeUnauthorized, "the bearer token is not valid")
		return false
	case got < need:
		w.Header().Set("WWW-Authenticate", realm+`, error="insufficient_scope", scope="write"`)
		problem(w, http.StatusForbidden, api.CodeForbidden, "the bearer token may only read; "+r.Method+" needs a read-write token")
		return false
	}
	return true
}

// Answer is one answer of a region's API as the console shows it: its
// status, its Lattice-Token and a short digest of that token (the
// answer's version), and its JSON body.
type Answer struct {
	Status  int             `json:"status"`
	Token   string          `json:"token,omitempty"`
	Version string          `json:"version,omitempty"`
	Body    json.RawMessage `json:"body,omitempty"`
	Error   string          `json:"error,omitempty"`
	// unanswered marks an Error of a request that was sent whole but
	// whose answer did not come back: the region may have applied it.
	unanswered bool
}

// Convergence is the histogram of lattice_replication_convergence_seconds
// of deltas from Origin applied at the region: cumulative counts at each
// bucket's upper bound, in milliseconds, and the one-way floor.
type Convergence struct {
	Origin  string   `json:"origin"`
	FloorMS float64  `json:"floor_ms"`
	Count   uint64   `json:"count"`
	SumMS   float64  `json:"sum_ms"`
	Buckets []Bucket `json:"buckets"`
}

// Bucket is one cumulative histogram bucket.
type Bucket struct {
	LeMS  float64 `json:"le_ms"`
	Count uint64  `json:"count"`
}

// Local is what GET /console/api/local answers: the region's
// /v1/cluster, its convergence histograms, and the cart and sku asked
// for.
type Local struct {
	Region      string        `json:"region"`
	Time        time.Time     `json:"time"`
	Cluster     Answer        `json:"cluster"`
	Convergence []Convergence `json:"convergence"`
	Cart        *Answer       `json:"cart,omitempty"`
	Stock       *Answer       `json:"stock,omitempty"`
}

// RegionView is one region in a snapshot: its link and what it answered,
// or why it could not be asked.
type RegionView struct {
	RegionLink
	Error string `json:"error,omitempty"`
	Local *Local `json:"local,omitempty"`
}

// Snapshot is what GET /console/api/snapshot answers: every region's
// view, in the config's order, and the development controls' state when
// they are enabled.
type Snapshot struct {
	Region   string        `json:"region"`
	Time     time.Time     `json:"time"`
	Auth     bool          `json:"auth"`
	Regions  []RegionView  `json:"regions"`
	Controls *ControlState `json:"controls,omitempty"`
}

// lookups are the cart id and sku a snapshot or a local view asks for,
// validated.
func lookups(w http.ResponseWriter, r *http.Request) (cart, sku string, ok bool) {
	q := r.URL.Query()
	for k, v := range q {
		if k != "cart" && k != "sku" {
			problem(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("unknown query parameter %q; want cart and sku", k))
			return "", "", false
		}
		if len(v) != 1 {
			problem(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("query parameter %q given %d times", k, len(v)))
			return "", "", false
		}
		if v[0] != "" && !crdt.ValidID(v[0]) {
			problem(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("%s must be 1–128 characters of [A-Za-z0-9._:-]", k))
			return "", "", false
		}
	}
	return q.Get("cart"), q.Get("sku"), true
}

func (h *Handler) snapshot(w http.ResponseWriter, r *http.Request) {
	cart, sku, ok := lookups(w, r)
	if !ok {
		return
	}
	snap := Snapshot{Region: h.opts.Region, Time: time.Now().UTC(), Auth: h.opts.Tokens != nil,
		Regions: make([]RegionView, len(h.regions))}
	q := url.Values{}
	if cart != "" {
		q.Set("cart", cart)
	}
	if sku != "" {
		q.Set("sku", sku)
	}
	var wg sync.WaitGroup
	for i, rl := range h.regions {
		snap.Regions[i].RegionLink = rl
		wg.Go(func() {
			v := &snap.Regions[i]
			if rl.Name == h.opts.Region {
				l := h.localView(r, cart, sku)
				v.Local = &l
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), PeerTimeout)
			defer cancel()
			a := h.call(ctx, r, rl, http.MethodGet, Path+"/api/local", q.Encode(), nil)
			if a.Error != "" {
				v.Error = a.Error
				return
			}
			if a.Status != http.StatusOK {
				v.Error = fmt.Sprintf("%s answered %d: %s", rl.Name, a.Status, errorText([]byte(problemDetail(a.Body))))
				return
			}
			var l Local
			if err := json.Unmarshal(a.Body, &l); err != nil {
				v.Error = fmt.Sprintf("%s: undecodable answer: %v", rl.Name, err)
				return
			}
			v.Local = &l
		})
	}
	wg.Wait()
	if h.opts.Controls != nil {
		st := h.opts.Controls.State()
		snap.Controls = &st
	}
	writeJSON(w, http.StatusOK, snap)
}

func (h *Handler) local(w http.ResponseWriter, r *http.Request) {
	cart, sku, ok := lookups(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, h.localView(r, cart, sku))
}

// localView reads this region's cluster status, cart and sku through its
// own API, with the request's Authorization.
func (h *Handler) localView(r *http.Request, cart, sku string) Local {
	l := Local{Region: h.opts.Region, Time: time.Now().UTC(), Convergence: h.convergence()}
	self := RegionLink{Name: h.opts.Region}
	l.Cluster = h.call(r.Context(), r, self, http.MethodGet, "/v1/cluster", "", nil)
	if nodes := h.opts.Config.Nodes(h.opts.Region); len(nodes) > 1 {
		l.Cluster = h.gatherNodes(r, l.Cluster, nodes)
	}
	if cart != "" {
		a := h.call(r.Context(), r, self, http.MethodGet, "/v1/carts/"+url.PathEscape(cart), "", nil)
		l.Cart = &a
	}
	if sku != "" {
		a := h.call(r.Context(), r, self, http.MethodGet, "/v1/inventory/"+url.PathEscape(sku), "", nil)
		l.Stock = &a
	}
	return l
}

// gatherNodes makes mine, this node's GET /v1/cluster in a region of
// several nodes, the whole region's: the partitions of every node that
// answers (each node's own status covers only those it serves), gathered
// as a node gathers its own (region.GatherPartitions). A node that does
// not answer leaves its partitions out.
func (h *Handler) gatherNodes(r *http.Request, mine Answer, nodes []config.NodeConfig) Answer {
	var base region.ClusterStatus
	if mine.Status != http.StatusOK || json.Unmarshal(mine.Body, &base) != nil || base.PartitionCount == 0 {
		return mine
	}
	answers := make([]Answer, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		if n.Name == base.Node {
			continue
		}
		link := RegionLink{Name: h.opts.Region + "/" + n.Name, URL: BaseURL(n.DialAPI(), h.opts.Config.APITLS.Enabled())}
		wg.Go(func() { answers[i] = h.call(r.Context(), r, link, http.MethodGet, "/v1/cluster", "", nil) })
	}
	wg.Wait()
	parts := base.Partitions
	for _, a := range answers {
		var st region.ClusterStatus
		if a.Status != http.StatusOK || json.Unmarshal(a.Body, &st) != nil {
			continue
		}
		for _, ps := range st.Partitions {
			if !slices.ContainsFunc(parts, func(q region.PartitionStatus) bool { return q.Partition == ps.Partition }) {
				parts = append(parts, ps)
			}
		}
	}
	slices.SortFunc(parts, func(a, b region.PartitionStatus) int { return a.Partition - b.Partition })
	body, err := json.Marshal(region.GatherPartitions(base.Region, base.Node, base.PartitionCount, parts))
	if err != nil {
		return mine
	}
	mine.Body = body
	return mine
}

// convergence reads this region's convergence histograms from its
// metrics.
func (h *Handler) convergence() []Convergence {
	out := []Convergence{}
	mfs, err := h.opts.Gatherer.Gather()
	if err != nil {
		h.opts.Logger.Warn("console: gathering metrics", "err", err)
	}
	var floors map[[2]string]int64
	if h.opts.Controls != nil {
		floors = map[[2]string]int64{}
		for _, l := range h.opts.Controls.State().Links {
			floors[[2]string{l.A, l.B}] = l.LatencyMS
			floors[[2]string{l.B, l.A}] = l.LatencyMS
		}
	}
	for _, mf := range mfs {
		if mf.GetName() != "lattice_replication_convergence_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if r, ok := labels["region"]; ok && r != h.opts.Region {
				continue
			}
			hist := m.GetHistogram()
			if hist == nil {
				continue
			}
			c := Convergence{Origin: labels["origin"], Count: hist.GetSampleCount(), SumMS: hist.GetSampleSum() * 1000,
				Buckets: buckets(hist)}
			c.FloorMS = float64(h.opts.Config.Latency(c.Origin, h.opts.Region).Milliseconds())
			if ms, ok := floors[[2]string{c.Origin, h.opts.Region}]; ok {
				c.FloorMS = float64(ms)
			}
			out = append(out, c)
		}
	}
	return out
}

func buckets(hist *dto.Histogram) []Bucket {
	var out []Bucket
	for _, b := range hist.GetBucket() {
		if math.IsInf(b.GetUpperBound(), 1) {
			continue
		}
		out = append(out, Bucket{LeMS: b.GetUpperBound() * 1000, Count: b.GetCumulativeCount()})
	}
	return out
}

// call makes one request to region rl's API (in process when rl is this
// region) with r's Authorization header, and returns its answer. query is
// an encoded query string, body the request's JSON body or nil.
func (h *Handler) call(ctx context.Context, r *http.Request, rl RegionLink, method, path, query string, body []byte) Answer {
	target := path
	if query != "" {
		target += "?" + query
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	if rl.Name == h.opts.Region {
		req, err := http.NewRequestWithContext(ctx, method, target, rd)
		if err != nil {
			return Answer{Error: err.Error()}
		}
		req.RemoteAddr = r.RemoteAddr
		copyHeaders(req.Header, r.Header, body != nil)
		return h.inProcess(req)
	}
	req, err := http.NewRequestWithContext(ctx, method, rl.URL+target, rd)
	if err != nil {
		return Answer{Error: err.Error()}
	}
	copyHeaders(req.Header, r.Header, body != nil)
	// Whether the request was written whole: one that was may have been
	// applied though its answer never came.
	var wrote atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
			}
		},
	}))
	res, err := h.client.Do(req)
	if err != nil {
		h.opts.Logger.Debug("console: request to another region failed", "peer", rl.Name, "path", path, "err", err)
		if wrote.Load() {
			return Answer{Error: fmt.Sprintf("%s was sent the request, but its answer did not come back: %v", rl.Name, err), unanswered: true}
		}
		return Answer{Error: fmt.Sprintf("%s unreachable: %v", rl.Name, err)}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxPeerAnswer+1))
	if err != nil {
		return Answer{Error: fmt.Sprintf("%s: reading the answer: %v", rl.Name, err)}
	}
	if len(b) > maxPeerAnswer {
		return Answer{Status: res.StatusCode, Error: fmt.Sprintf("%s: answer larger than %d bytes", rl.Name, maxPeerAnswer)}
	}
	return answerOf(res.StatusCode, res.Header, b)
}

// maxPeerAnswer bounds an answer the console reads from a region.
const maxPeerAnswer = 8 << 20

// maxErrorText bounds the text of a region's answer that is not JSON kept
// as an Answer's error.
const maxErrorText = 256

func copyHeaders(dst, src http.Header, withBody bool) {
	if v := src.Values("Authorization"); len(v) > 0 {
		dst["Authorization"] = append([]string(nil), v...)
	}
	if id := src.Get(api.HeaderRequestID); id != "" {
		dst.Set(api.HeaderRequestID, id)
	}
	dst.Set("Accept", "application/json")
	if withBody {
		dst.Set("Content-Type", "application/json")
	}
}

func answerOf(status int, hdr http.Header, body []byte) Answer {
	a := Answer{Status: status, Token: hdr.Get(api.HeaderToken)}
	if a.Token != "" {
		d := sha256.Sum256([]byte(a.Token))
		a.Version = hex.EncodeToString(d[:4])
	}
	if json.Valid(body) {
		a.Body = json.RawMessage(body)
	} else if len(body) > 0 {
		a.Error = errorText(body)
	}
	return a
}

// errorText is the start of a body that is not JSON, as valid UTF-8, for
// an error: at most maxErrorText bytes of it.
func errorText(body []byte) string {
	t := strings.TrimSpace(string(body))
	if len(t) > maxErrorText {
		n := maxErrorText
		for n > 0 && !utf8.RuneStart(t[n]) {
			n--
		}
		t = t[:n] + "…"
	}
	return strings.ToValidUTF8(t, "�")
}

// problemDetail returns the detail of a problem body, or the body.
func problemDetail(b []byte) string {
	var p struct {
		Detail string `json:"detail"`
	}
	if json.Unmarshal(b, &p) == nil && p.Detail != "" {
		return p.Detail
	}
	return strings.TrimSpace(string(b))
}

// inProcess serves req with this region's API in process. The API aborts
// an answer it cannot finish (http.ErrAbortHandler: a partition's owner
// cut its forwarded answer short), which net/http recovers only on the
// request's own goroutine; a console call may run on another (a
// snapshot's), so the abort is taken here and made the call's error.
func (h *Handler) inProcess(req *http.Request) (a Answer) {
	defer func() {
		if r := recover(); r != nil {
			if r != http.ErrAbortHandler {
				panic(r)
			}
			a = Answer{Error: "the answer was cut short", unanswered: true}
		}
	}()
	rec := newRecorder()
	h.opts.API.ServeHTTP(rec, req)
	return answerOf(rec.status, rec.header, rec.body.Bytes())
}

// recorder is an in-process http.ResponseWriter.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

// problem writes an RFC 9457 problem with code, as the API does.
func problem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"type": "urn:lattice:problem:" + code, "title": http.StatusText(status), "status": status,
		"detail": detail, "code": code,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		problem(w, http.StatusInternalServerError, "internal", "console: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
