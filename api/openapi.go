package api

import (
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/latticedb/lattice/region"
)

// Object is a JSON object of the OpenAPI document: a schema, a parameter,
// a response, a header.
type Object = map[string]any

// Document is an OpenAPI 3.1 document, typed down to its operations.
type Document struct {
	OpenAPI string `json:"openapi"`
	Info    Object `json:"info"`
	// Servers holds one relative entry: the document is served by the
	// region it describes, and every region serves the same API.
	Servers    []Object            `json:"servers"`
	Paths      map[string]PathItem `json:"paths"`
	Components Components          `json:"components"`
	// Security is what every operation needs unless it says otherwise:
	// a bearer token, when the region is configured with tokens.
	Security []Object `json:"security"`
}

// PathItem maps a lower-case HTTP method to its operation. Every
// operation of a path declares the path's 405 answer, since OpenAPI has no
// responses of a path itself (see methodNotAllowed).
type PathItem map[string]*Operation

// Operation is one method of one path.
type Operation struct {
	OperationID string            `json:"operationId"`
	Summary     string            `json:"summary"`
	Description string            `json:"description,omitempty"`
	Tags        []string          `json:"tags"`
	Parameters  []Object          `json:"parameters,omitempty"`
	RequestBody Object            `json:"requestBody,omitempty"`
	Responses   map[string]Object `json:"responses"`
	// Security, when set, replaces the document's Security.
	Security []Object `json:"security,omitempty"`
}

// Components holds what operations refer to.
type Components struct {
	Schemas    map[string]Object `json:"schemas"`
	Parameters map[string]Object `json:"parameters"`
	Headers    map[string]Object `json:"headers"`
	Responses  map[string]Object `json:"responses"`
	// SecuritySchemes declares the bearer token scheme.
	SecuritySchemes map[string]Object `json:"securitySchemes"`
}

func ref(kind, name string) Object { return Object{"$ref": "#/components/" + kind + "/" + name} }

func schemaRef(name string) Object { return ref("schemas", name) }

func jsonContent(schema Object) Object {
	return Object{"application/json": Object{"schema": schema}}
}

func requestBody(schema string, required bool, example Object) Object {
	return withExample(Object{"required": required, "content": jsonContent(schemaRef(schema)), "description": bodyLimits}, example)
}

// withExample returns o, a request body or a response, with example as
// the example of its one media type.
func withExample(o Object, example Object) Object {
	o = maps.Clone(o)
	content := maps.Clone(o["content"].(Object))
	for mt, m := range content {
		m := maps.Clone(m.(Object))
		m["example"] = example
		content[mt] = m
	}
	o["content"] = content
	return o
}

// bodyLimits describes the limits every request body is held to.
var bodyLimits = "One JSON object of at most " + strconv.Itoa(MaxBodyBytes>>10) + " KiB (else 413 body_too_large), " +
	"nesting objects and arrays at most " + strconv.Itoa(MaxBodyDepth) + " deep, " +
	"holding at most " + strconv.Itoa(MaxBodyTokens) + " names and values in all, " +
	"none longer than " + strconv.Itoa(MaxBodyTokenBytes) + " bytes as written (else 400 invalid_request, field body)."

func success(desc, schema string) Object {
	return Object{
		"description": desc,
		"headers":     Object{HeaderToken: ref("headers", "LatticeToken")},
		"content":     jsonContent(schemaRef(schema)),
	}
}

func problemResponse(desc string) Object {
	return Object{
		"description": desc,
		"content":     Object{ProblemContentType: Object{"schema": schemaRef("Problem")}},
	}
}

func idSchema(desc string) Object {
	return Object{"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]+$", "description": desc}
}

func intSchema(lo, hi int64, desc string) Object {
	return Object{"type": "integer", "format": "int64", "minimum": lo, "maximum": hi, "description": desc}
}

func pathParam(name, desc string) Object {
	return Object{"name": name, "in": "path", "required": true, "schema": idSchema(desc)}
}

// op builds an operation: data routes take the causal-token headers,
// idempotent ones Idempotency-Key; every operation may answer 400, 500
// and 503, every one with a body 413.
func op(id, summary, tag string, params []Object, body Object, okStatus int, ok Object, errs ...string) *Operation {
	o := &Operation{OperationID: id, Summary: summary, Tags: []string{tag}, Parameters: params, RequestBody: body,
		Responses: map[string]Object{strconv.Itoa(okStatus): ok}}
	for _, e := range append(errs, "BadRequest", "Unavailable", "Internal") {
		o.Responses[errorStatus[e]] = ref("responses", e)
	}
	if body != nil {
		o.Responses["413"] = ref("responses", "TooLarge")
	}
	return o
}

var errorStatus = map[string]string{
	"BadRequest": "400", "NotFound": "404", "Conflict": "409", "TooLarge": "413",
	"Unprocessable": "422", "Internal": "500", "Unavailable": "503",
}

// OpenAPI returns the OpenAPI 3.1 document of the whole API, as served at
// GET /v1/openapi.json. Its limits are this package's constants.
func OpenAPI() *Document {
	causal := []Object{ref("parameters", "LatticeToken"), ref("parameters", "LatticeWait")}
	with := func(ps ...Object) []Object { return append(append([]Object{}, ps...), causal...) }
	cartID := ref("parameters", "CartID")
	sku := ref("parameters", "SKU")
	resID := ref("parameters", "ReservationID")
	idemKey := ref("parameters", "IdempotencyKey")

	paths := map[string]PathItem{
		"/v1/carts/{cart_id}": {
			"get": op("getCart", "Read a cart", "carts", with(cartID, ref("parameters", "Quorum")), nil,
				http.StatusOK, success("The cart, items sorted by sku.", "Cart")),
			"delete": minimalAnswer(op("clearCart", "Clear a cart: remove every line this region has seen", "carts", with(cartID), nil,
				http.StatusOK, success("The cart, now empty.", "Cart"), "TooLarge")),
		},
		"/v1/carts/{cart_id}/items": {
			"post": minimalAnswer(op("addItem", "Add qty units of a sku to a cart", "carts", with(cartID), requestBody("AddItemRequest", true, exampleAddItem),
				http.StatusOK, withExample(success("The cart after the add.", "Cart"), exampleCart), "Unprocessable")),
		},
		"/v1/carts/{cart_id}/items/{sku}": {
			"put": minimalAnswer(op("setItem", "Set the quantity of a sku in a cart (0 removes it)", "carts", with(cartID, sku), requestBody("SetItemRequest", true, Object{"qty": 3}),
				http.StatusOK, success("The cart after the set.", "Cart"), "Unprocessable")),
			"delete": minimalAnswer(op("removeItem", "Remove a sku from a cart", "carts", with(cartID, sku), nil,
				http.StatusOK, success("The cart after the removal.", "Cart"), "TooLarge")),
		},
		"/v1/carts/{cart_id}/checkout": {
			"post": op("checkout", "Reserve and commit every line of a cart, then remove them from it", "carts",
				with(cartID, idemKey), requestBody("CheckoutRequest", false, Object{"ttl_ms": 600000}),
				http.StatusCreated, withExample(success("The order.", "Order"), exampleOrder), "Conflict", "Unprocessable"),
			"get": op("checkoutStatus", "What the cart's coordinator knows of the checkout made with this Idempotency-Key: phase, outcome and every step", "carts",
				with(cartID, ref("parameters", "IdempotencyKeyRequired")), nil,
				http.StatusOK, success("The checkout's status.", "CheckoutStatus"), "NotFound"),
		},
		"/v1/inventory/{sku}": {
			"get": op("getItem", "Read a sku's stock as this region knows it, or as its home knows it", "inventory",
				with(sku, ref("parameters", "Consistent"), ref("parameters", "Quorum")), nil,
				http.StatusOK, success("The item.", "Item")),
		},
		"/v1/inventory/{sku}/restock": {
			"post": op("restock", "Add stock (accepted by any region)", "inventory", with(sku), requestBody("RestockRequest", true, Object{"qty": 100}),
				http.StatusOK, success("The item after the restock.", "Item")),
		},
		"/v1/inventory/{sku}/adjust": {
			"post": op("adjust", "Adjust stock; a negative delta is decided at the sku's home", "inventory", with(sku), requestBody("AdjustRequest", true, Object{"delta": -2, "reason": "damaged in the warehouse"}),
				http.StatusOK, success("The item after the adjustment.", "Item"), "Conflict"),
		},
		"/v1/reservations": {
			"post": op("reserve", "Hold qty units of a sku, decided at its home", "reservations", with(idemKey), requestBody("ReserveRequest", true, Object{"sku": "book-42", "qty": 1, "ttl_ms": 60000}),
				http.StatusCreated, withLocation(withExample(success("The held reservation.", "Reservation"), exampleReservation("held"))), "Conflict", "Unprocessable"),
		},
		"/v1/reservations/{id}": {
			"get": op("getReservation", "Read a reservation from its home", "reservations", with(resID), nil,
				http.StatusOK, success("The reservation.", "Reservation"), "NotFound"),
		},
		"/v1/reservations/{id}/commit": {
			"post": op("commitReservation", "Commit a held reservation (repeating it is a no-op)", "reservations", with(resID, idemKey), nil,
				http.StatusOK, withExample(success("The committed reservation.", "Reservation"), exampleReservation("committed")), "NotFound", "Conflict", "Unprocessable", "TooLarge"),
		},
		"/v1/reservations/{id}/release": {
			"post": op("releaseReservation", "Release a held reservation (repeating it is a no-op)", "reservations", with(resID, idemKey), nil,
				http.StatusOK, success("The released reservation.", "Reservation"), "NotFound", "Conflict", "Unprocessable", "TooLarge"),
		},
		"/v1/cluster": {
			"get": op("getCluster", "This region and each peer: connected, replication lag, pending deltas, version vector", "operations", with(), nil,
				http.StatusOK, success("The cluster status.", "Cluster")),
		},
		"/v1/openapi.json": {
			"get": withUnavailable(plain("getOpenAPI", "This document", Object{"type": "object"})),
		},
		"/healthz": {
			"get": plain("healthz", "Liveness: 200 while the process serves HTTP", schemaRef("Health")),
		},
		"/readyz": {
			"get": withUnavailable(plain("readyz", "Readiness: 200 when the region's storage is open and serving; 503 starting while it is being opened", schemaRef("Health"))),
		},
		"/metrics": {
			"get": {OperationID: "metrics", Summary: "Prometheus metrics in the text exposition format", Tags: []string{"operations"},
				Responses: map[string]Object{"200": {"description": "The metrics.", "content": Object{"text/plain": Object{"schema": Object{"type": "string"}}}},
					"503": ref("responses", "Unavailable")}},
		},
	}

	// Every operation may be refused for its token (401), every write
	// for a read-only token (403); the probes stay open unless the region
	// protects them; every operation takes an X-Request-Id; every path
	// answers the methods it lacks with 405.
	for path, item := range paths {
		notAllowed := methodNotAllowed(item)
		for method, o := range item {
			o.Responses["405"] = notAllowed
			o.Responses["401"] = ref("responses", "Unauthorized")
			if method != "get" {
				o.Responses["403"] = ref("responses", "Forbidden")
			}
			if probePaths[path] {
				o.Security = []Object{{}, {"bearer": []string{}}}
			}
			o.Parameters = append(o.Parameters, ref("parameters", "RequestID"))
			if method != "get" && strings.HasPrefix(path, "/v1/") {
				o.Parameters = append(o.Parameters, ref("parameters", "LatticeReplicas"))
			}
		}
	}

	problemCodes := make([]string, 0, len(codes))
	for c := range codes {
		problemCodes = append(problemCodes, c)
	}
	slices.Sort(problemCodes)

	return &Document{
		OpenAPI: "3.1.0",
		Info: Object{
			"title":   "Lattice",
			"version": "1",
			"description": "Multi-region replicated shopping carts and inventory. Every successful response carries " +
				HeaderToken + "; a request that sends one is served once this region has applied what it covers. " +
				"Errors are RFC 9457 problem details with a code member and the request's " + HeaderRequestID + " as request_id.",
		},
		Servers: []Object{{"url": "/",
			"description": "The region that serves this document. Every region of the cluster serves the same API at its own api address, and any of them answers any request."}},
		Paths:    paths,
		Security: []Object{{"bearer": []string{}}},
		Components: Components{
			Schemas: map[string]Object{
				"CartItem": {"type": "object", "required": []string{"sku", "qty"}, "properties": Object{
					"sku": idSchema("The sku."), "qty": intSchema(1, 1<<62, "Units in the cart."),
				}},
				"Cart": {"type": "object", "required": []string{"cart_id", "region", "items"}, "properties": Object{
					"cart_id": idSchema("The cart."),
					"region":  Object{"type": "string", "description": "The region that answered."},
					"items":   Object{"type": "array", "items": schemaRef("CartItem"), "description": "Sorted by sku."},
				}},
				"Item": {"type": "object", "required": []string{"sku", "home", "stock", "reserved", "available"}, "properties": Object{
					"sku":       idSchema("The sku."),
					"home":      Object{"type": "string", "description": "The sku's home region."},
					"stock":     Object{"type": "integer", "format": "int64"},
					"reserved":  Object{"type": "integer", "format": "int64", "description": "Units held by reservations."},
					"available": Object{"type": "integer", "format": "int64", "description": "stock − reserved (− granted, for an escrow sku)."},
					"granted": Object{"type": "integer", "format": "int64", "minimum": 0,
						"description": "Escrow skus only: units the home granted other regions that they have not used or returned yet, as the answering region sees it."},
					"rights": Object{"type": "integer", "format": "int64", "minimum": 0,
						"description": "Escrow skus only, at a region other than the home: the units this region may reserve alone."},
				}},
				"Reservation": {"type": "object", "required": []string{"reservation_id", "sku", "qty", "home", "state", "expires_at"}, "properties": Object{
					"reservation_id": idSchema("Tells any region which home to route to."),
					"sku":            idSchema("The sku."),
					"qty":            Object{"type": "integer", "format": "int64", "minimum": 1, "description": "Units held. At most 1,000,000 for a reservation request; a checkout reserves a whole cart line, which adds at several regions may take past that."},
					"home":           Object{"type": "string"},
					"state":          Object{"type": "string", "enum": []string{"held", "committed", "released", "expired"}},
					"expires_at":     Object{"type": "string", "format": "date-time", "description": "When a held reservation expires, by its home's clock."},
				}},
				"OrderLine": {"type": "object", "required": []string{"sku", "qty", "reservation_id", "home"}, "properties": Object{
					"sku":            idSchema("The sku."),
					"qty":            Object{"type": "integer", "format": "int64"},
					"reservation_id": idSchema("The committed reservation."),
					"home":           Object{"type": "string"},
				}},
				"Order": {"type": "object", "required": []string{"order_id", "cart_id", "lines"}, "properties": Object{
					"order_id": Object{"type": "string"},
					"cart_id":  idSchema("The cart."),
					"lines":    Object{"type": "array", "items": schemaRef("OrderLine")},
				}},
				"CheckoutStatus": {"type": "object", "required": []string{"cart_id", "order_id", "phase", "attempt", "lines", "steps"}, "properties": Object{
					"cart_id":  idSchema("The cart."),
					"order_id": Object{"type": "string"},
					"phase": Object{"type": "string", "enum": []string{"reserve", "commit", "return", "settled", "failed-transiently"},
						"description": "reserve, commit or return while the saga runs; settled once it is an order or a clean failure; failed-transiently when an attempt ended on an unreachable home (the next retry starts a new attempt)."},
					"attempt":      Object{"type": "integer"},
					"order":        schemaRef("Order"),
					"failure":      Object{"type": "object", "properties": Object{"code": Object{"type": "string"}, "detail": Object{"type": "string"}}},
					"lines":        Object{"type": "array", "items": Object{"type": "object"}},
					"reservations": Object{"type": "array", "items": Object{"type": "string"}},
					"steps": Object{"type": "array", "items": Object{"type": "object", "properties": Object{
						"at": Object{"type": "string", "format": "date-time"}, "attempt": Object{"type": "integer"},
						"step": Object{"type": "string", "enum": []string{"reserve", "commit", "release", "return"}}, "sku": Object{"type": "string"},
						"reservation": Object{"type": "string"}, "result": Object{"type": "string", "description": "ok, or the error code the home answered."}}}},
				}},
				"Cluster": {"type": "object", "description": "This region and each peer: connected, replication lag, pending deltas, version vector.",
					"required": []string{"region", "replica", "catching_up", "divergent_keys", "version_vector", "store", "peers"},
					"properties": Object{
						"region":  Object{"type": "string", "description": "The region that answered."},
						"replica": Object{"type": "string", "description": "The replica id of the region's current incarnation: its name, or NAME+K after a new incarnation K."},
						"catching_up": Object{"type": "boolean",
							"description": "The region began an incarnation that may have lost writes and has not yet completed anti-entropy with every peer; it decides nothing as a home meanwhile."},
						"divergent_keys": Object{"type": "array", "items": Object{"type": "string"}, "maxItems": 64,
							"description": "Store keys found holding an entry under a dot a peer holds with other content. Should always be empty."},
						"version_vector": versionVector("Replica id → highest region-level write seq applied without gaps."),
						"store":          schemaRef("StoreStatus"),
						"peers":          Object{"type": "array", "items": schemaRef("PeerStatus"), "description": "One per peer; empty in a single-region cluster. On a node of a partitioned region, each peer region's links of all the node's partitions summed up: connected only if all are, the largest lag, pending work and traffic summed."},
						"node":           Object{"type": "string", "description": "Partitioned regions only: the node that answered."},
						"partition_count": Object{"type": "integer", "minimum": 2, "maximum": 4096,
							"description": "Partitioned regions only: the cluster's number of partitions."},
						"partitions": Object{"type": "array", "items": schemaRef("PartitionStatus"),
							"description": "Partitioned regions only: each partition the node owns, as a replica of its own (replica, version vector, store, peers). The top level's version_vector is then empty and its store sums the partitions'."},
					}},
				"PartitionStatus": {"type": "object", "description": "One partition of a partitioned region's node: its number and the fields of Cluster for it.",
					"required": []string{"partition", "region", "replica", "catching_up", "divergent_keys", "version_vector", "store", "peers"},
					"properties": Object{
						"partition":      Object{"type": "integer", "minimum": 0, "maximum": 4095},
						"region":         Object{"type": "string"},
						"replica":        Object{"type": "string"},
						"catching_up":    Object{"type": "boolean"},
						"divergent_keys": Object{"type": "array", "items": Object{"type": "string"}},
						"version_vector": versionVector("Replica id → highest write seq of this partition applied without gaps."),
						"store":          schemaRef("StoreStatus"),
						"peers":          Object{"type": "array", "items": schemaRef("PeerStatus")},
					}},
				"StoreStatus": {"type": "object", "required": []string{"file_bytes", "live_bytes", "durability", "corrupt_keys"}, "properties": Object{
					"file_bytes":   Object{"type": "integer", "format": "int64", "minimum": 0, "description": "Size of the store file."},
					"live_bytes":   Object{"type": "integer", "format": "int64", "minimum": 0, "description": "Size of the store's live data."},
					"durability":   Object{"type": "string", "enum": []string{"always", "everysec"}},
					"corrupt_keys": Object{"type": "array", "items": Object{"type": "string"}, "description": "Store keys whose values failed their checksum and have not been rewritten since."},
				}},
				"PeerStatus": {"type": "object", "description": "This region's replication to one peer.",
					"required": []string{"region", "connected", "pending_deltas", "pending_bytes", "inflight_messages", "lag_ms",
						"peer_version_vector", "anti_entropy", "anti_entropy_rounds", "unrepaired_keys",
						"anti_entropy_keys_pushed", "anti_entropy_keys_pulled", "anti_entropy_rate_bytes_per_sec", "bytes_sent", "delta_messages_sent", "stream_bytes_sent"},
					"properties": Object{
						"region":              Object{"type": "string", "description": "The peer."},
						"connected":           Object{"type": "boolean", "description": "The connection to the peer is up."},
						"pending_deltas":      Object{"type": "integer", "format": "int64", "minimum": 0, "description": "Buffered deltas the peer has not acknowledged."},
						"pending_bytes":       Object{"type": "integer", "format": "int64", "minimum": 0, "description": "Their size in bytes."},
						"inflight_messages":   Object{"type": "integer", "format": "int64", "minimum": 0, "description": "Delta messages sent and not yet acknowledged."},
						"lag_ms":              Object{"type": "integer", "format": "int64", "minimum": 0, "description": "Age of the oldest delta the peer has not acknowledged; 0 when none."},
						"last_ack":            Object{"type": "string", "format": "date-time", "description": "When the peer last acknowledged; absent if never."},
						"peer_version_vector": versionVector("The version vector the peer last reported."),
						"anti_entropy":        Object{"type": "string", "enum": []string{"idle", "needed", "running"}, "description": "needed: a round is due."},
						"anti_entropy_rounds": counterSchema("Anti-entropy rounds this region started with the peer."),
						"unrepaired_keys": Object{"type": "array", "items": Object{"type": "string"}, "maxItems": 64,
							"description": "Keys anti-entropy shipped several rounds in a row without either state changing. Should always be empty."},
						"anti_entropy_keys_pushed": counterSchema("Keys whose states anti-entropy shipped to the peer."),
						"anti_entropy_keys_pulled": counterSchema("Keys anti-entropy received from the peer."),
						"anti_entropy_rate_bytes_per_sec": Object{"type": "integer", "format": "int64", "minimum": 0,
							"description": "Bytes of states anti-entropy ships and pulls per second with the peer at most; 0: no bound."},
						"last_anti_entropy":   Object{"type": "string", "format": "date-time", "description": "When the last anti-entropy round with the peer ended; absent if never."},
						"bytes_sent":          counterSchema("Protocol bytes sent to the peer."),
						"delta_messages_sent": counterSchema("Delta messages sent to the peer."),
						"protocol": Object{"type": "string", "enum": []string{"lattice-repl/1", "lattice-repl/2"},
							"description": "The replication protocol of the connection to the peer: lattice-repl/2 compresses the message stream; lattice-repl/1 is a peer of an earlier version. Absent while not connected, and in a partitioned region."},
						"stream_bytes_sent": counterSchema("Bytes of the message stream to the peer: bytes_sent as framed, compressed under lattice-repl/2 (0 in a partitioned region)."),
					}},
				"Health": {"type": "object", "required": []string{"status", "region"}, "properties": Object{
					"status": Object{"type": "string", "enum": []string{"ok", "ready"}},
					"region": Object{"type": "string"},
					"warnings": Object{"type": "array", "items": Object{"type": "string"},
						"description": "GET /readyz only, when present: what an operator should look at although the region serves."},
				}},
				"AddItemRequest": {"type": "object", "additionalProperties": false, "required": []string{"sku", "qty"}, "properties": Object{
					"sku": idSchema("The sku to add."), "qty": intSchema(1, MaxQty, "Units to add."),
				}},
				"SetItemRequest": {"type": "object", "additionalProperties": false, "required": []string{"qty"}, "properties": Object{
					"qty": intSchema(0, MaxQty, "The new quantity; 0 removes the sku."),
				}},
				"RestockRequest": {"type": "object", "additionalProperties": false, "required": []string{"qty"}, "properties": Object{
					"qty": intSchema(1, MaxQty, "Units to add to stock."),
				}},
				"AdjustRequest": {"type": "object", "additionalProperties": false, "required": []string{"delta"}, "properties": Object{
					"delta": Object{"type": "integer", "format": "int64", "minimum": -MaxAdjust, "maximum": MaxAdjust, "not": Object{"const": 0},
						"description": "Nonzero change of stock; a negative one must leave available ≥ 0."},
					"reason": Object{"type": "string", "maxLength": MaxReasonLen, "description": "Free text without control characters."},
				}},
				"ReserveRequest": {"type": "object", "additionalProperties": false, "required": []string{"sku", "qty"}, "properties": Object{
					"sku":    idSchema("The sku to hold."),
					"qty":    intSchema(1, MaxQty, "Units to hold."),
					"ttl_ms": ttlSchema(),
				}},
				"CheckoutRequest": {"type": "object", "additionalProperties": false, "properties": Object{
					"ttl_ms": ttlSchema(),
				}, "description": "Optional: an empty body is the same as {}."},
				"SkuAvailable": {"type": "object", "required": []string{"sku", "available"}, "properties": Object{
					"sku": idSchema("A sku that could not be reserved."), "available": Object{"type": "integer", "format": "int64"},
					"home": Object{"type": "string"},
				}},
				"Problem": {"type": "object", "required": []string{"type", "title", "status", "code"}, "properties": Object{
					"type":       Object{"type": "string", "format": "uri", "description": ProblemTypePrefix + "CODE"},
					"title":      Object{"type": "string"},
					"status":     Object{"type": "integer"},
					"detail":     Object{"type": "string"},
					"code":       Object{"type": "string", "enum": problemCodes},
					"field":      Object{"type": "string", "description": "The offending body field, path or query parameter, or header."},
					"available":  Object{"type": "integer", "format": "int64", "description": "On insufficient_stock for one sku."},
					"lines":      Object{"type": "array", "items": schemaRef("SkuAvailable"), "description": "On a checkout's insufficient_stock."},
					"request_id": Object{"type": "string", "description": "The request's " + HeaderRequestID + "."},
				}},
			},
			Parameters: map[string]Object{
				"CartID":        pathParam("cart_id", "The cart."),
				"SKU":           pathParam("sku", "The sku."),
				"ReservationID": pathParam("id", "The reservation."),
				"Consistent": {"name": "consistent", "in": "query", "required": false,
					"description": "true forwards the read to the sku's home region.",
					"schema":      Object{"type": "string", "enum": []string{"true", "false"}, "default": "false"}},
				"Quorum": {"name": QueryQuorum, "in": "query", "required": false,
					"description": "Read concern: answer the join of this many regions' states (this one included), repairing the regions found behind; too few answers is 503 quorum_unavailable.",
					"schema":      concernSchema()},
				"LatticeReplicas": {"name": HeaderReplicas, "in": "header", "required": false,
					"description": "Write concern: answer once this many regions (this one included) hold the write durably; not in time, 503 replication_timeout (the write stays applied and still replicates).",
					"schema":      concernSchema()},
				"LatticeToken": {"name": HeaderToken, "in": "header", "required": false,
					"description": "A causal token from an earlier response: the request is served once this region has applied what it covers.",
					"schema":      Object{"type": "string"}},
				"LatticeWait": {"name": HeaderWait, "in": "header", "required": false,
					"description": "How long to wait for " + HeaderToken + ", in milliseconds.",
					"schema":      Object{"type": "string", "pattern": "^[0-9]{1,5}$", "description": "0..10000, default 1000"}},
				"RequestID": {"name": HeaderRequestID, "in": "header", "required": false,
					"description": "Names the request in the answer's " + HeaderRequestID + ", problem bodies and the access log; one that is not valid is replaced by a generated one.",
					"schema":      Object{"type": "string", "minLength": 1, "maxLength": MaxRequestIDLen, "pattern": "^[A-Za-z0-9._:/+=@-]+$"}},
				"Prefer": {"name": HeaderPrefer, "in": "header", "required": false,
					"description": "return=minimal (RFC 7240): answer 204 without the cart, which saves listing every line of a large cart; other preferences are ignored.",
					"schema":      Object{"type": "string"}},
				"IdempotencyKey": {"name": HeaderIdempotencyKey, "in": "header", "required": false,
					"description": "A retry with the same key and request returns the first outcome and changes nothing.",
					"schema":      Object{"type": "string", "minLength": 1, "maxLength": MaxIdempotencyKeyLen, "pattern": "^[\\x20-\\x7e]+$"}},
				"IdempotencyKeyRequired": {"name": HeaderIdempotencyKey, "in": "header", "required": true,
					"description": "The key the checkout was made with.",
					"schema":      Object{"type": "string", "minLength": 1, "maxLength": MaxIdempotencyKeyLen, "pattern": "^[\\x20-\\x7e]+$"}},
			},
			Headers: map[string]Object{
				"LatticeToken": {"description": "The causal token of everything the region had applied when it answered.",
					"schema": Object{"type": "string"}},
				"RetryAfter": {"description": "Seconds to wait before retrying.", "schema": Object{"type": "integer"}},
				"Location":   {"description": "The URL of the new reservation.", "schema": Object{"type": "string"}},
				"WWWAuthenticate": {"description": "The Bearer challenge (RFC 6750), with error=\"invalid_token\" for an unknown token or error=\"insufficient_scope\" for a read-only one.",
					"schema": Object{"type": "string"}},
			},
			Responses: map[string]Object{
				"BadRequest": withExample(problemResponse("invalid_request naming the field (body for a body that is not one JSON object or is over a limit its description states), or invalid_token."),
					exampleProblem(region.CodeInvalidRequest, "qty must be an integer from 1 to "+strconv.Itoa(MaxQty), Object{"field": "qty"})),
				"NotFound": problemResponse("not_found."),
				"Conflict": withExample(problemResponse("insufficient_stock (with available, or lines on checkout), cart_empty, "+
					"reservation_expired, reservation_released, reservation_committed or request_in_progress."),
					exampleProblem(region.CodeInsufficientStock, "only 0 of book-42 available", Object{"available": 0})),
				"TooLarge":      problemResponse("body_too_large: the body is over " + strconv.Itoa(MaxBodyBytes>>10) + " KiB."),
				"Unprocessable": problemResponse("cart_full or idempotency_mismatch."),
				"Internal":      problemResponse("internal."),
				"Unavailable": withRetryAfter(problemResponse(
					"home_unavailable, causal_timeout, replication_timeout, quorum_unavailable, partition_unavailable, unavailable, or starting (every route but /healthz while the region opens its store), with Retry-After.")),
				"Unauthorized": withChallenge(problemResponse("unauthorized: the region requires a bearer token and the request has none, or one it does not accept.")),
				"Forbidden":    withChallenge(problemResponse("forbidden: the bearer token may only read; writes need a read-write token.")),
			},
			SecuritySchemes: map[string]Object{
				"bearer": {"type": "http", "scheme": "bearer",
					"description": "Needed only when the region is configured with tokens (api_auth): GET and HEAD take a read-only or read-write token, every other method a read-write one. /healthz, /readyz and /metrics stay open unless api_auth.protect_probes is set."},
			},
		},
	}
}

// minimalAnswer adds to a cart write the Prefer parameter and its 204
// answer.
func minimalAnswer(o *Operation) *Operation {
	o.Parameters = append(o.Parameters, ref("parameters", "Prefer"))
	o.Responses["204"] = Object{"description": "Applied, answered without the cart: the request asked Prefer: return=minimal.",
		"headers": Object{HeaderToken: ref("headers", "LatticeToken"),
			"Preference-Applied": Object{"description": "return=minimal", "schema": Object{"type": "string", "const": "return=minimal"}}}}
	return o
}

// concernSchema is a write or read concern: a number of regions, majority
// or all.
func concernSchema() Object {
	return Object{"type": "string", "pattern": "^([1-9][0-9]?|majority|all)$", "default": "1",
		"description": "1..R (the regions of the cluster), majority (R/2+1) or all"}
}

func ttlSchema() Object {
	return intSchema(MinTTL.Milliseconds(), MaxTTL.Milliseconds(), "Time to live of the reservation in ms; default 600000 (10 min).")
}

// plain is an operation outside the causal-token protocol.
func plain(id, summary string, schema Object) *Operation {
	tag := "operations"
	if strings.HasPrefix(id, "getOpenAPI") {
		tag = "documentation"
	}
	return &Operation{OperationID: id, Summary: summary, Tags: []string{tag},
		Responses: map[string]Object{"200": {"description": "OK", "content": jsonContent(schema)}}}
}

func withUnavailable(o *Operation) *Operation {
	o.Responses["503"] = ref("responses", "Unavailable")
	return o
}

func withLocation(o Object) Object {
	o = maps.Clone(o)
	o["headers"] = Object{HeaderToken: ref("headers", "LatticeToken"), "Location": ref("headers", "Location")}
	return o
}

func withChallenge(o Object) Object {
	o["headers"] = Object{"WWW-Authenticate": ref("headers", "WWWAuthenticate")}
	return o
}

func withRetryAfter(o Object) Object {
	o["headers"] = Object{"Retry-After": ref("headers", "RetryAfter")}
	return o
}

// methodNotAllowed is the 405 answer of a path whose operations are item:
// the methods the path lacks, with Allow listing those it has as the
// server sends them (OPTIONS, which answers 204 with the same Allow, then
// the path's methods in alphabetical order).
func methodNotAllowed(item PathItem) Object {
	methods := make([]string, 0, len(item))
	for m := range item {
		methods = append(methods, strings.ToUpper(m))
	}
	slices.Sort(methods)
	allow := strings.Join(append([]string{http.MethodOptions}, methods...), ", ")
	o := problemResponse("method_not_allowed: answered, instead of any operation, to a method this path lacks (HEAD included). " +
		"OPTIONS answers 204 with the same Allow.")
	o["headers"] = Object{"Allow": Object{"description": "The methods of this path.", "schema": Object{"type": "string", "const": allow}}}
	return withExample(o, exampleProblem(CodeMethodNotAllowed, "this path does not support the request method", nil))
}

func versionVector(desc string) Object {
	return Object{"type": "object", "additionalProperties": counterSchema("A replica's highest write seq."), "description": desc}
}

// counterSchema is an unsigned 64-bit count.
func counterSchema(desc string) Object {
	return Object{"type": "integer", "minimum": 0, "description": desc + " Unsigned 64-bit."}
}

// Examples of the main request and answer bodies.
var (
	exampleAddItem = Object{"sku": "book-42", "qty": 2}
	exampleCart    = Object{"cart_id": "c-1001", "region": "us-east", "items": []Object{
		{"sku": "book-42", "qty": 2}, {"sku": "pen-7", "qty": 1}}}
	exampleOrder = Object{"order_id": "o-5f1c0e9a7b3d2c4e6f8a9b0c", "cart_id": "c-1001", "lines": []Object{
		{"sku": "book-42", "qty": 2, "reservation_id": "us-east:2s", "home": "us-east"},
		{"sku": "pen-7", "qty": 1, "reservation_id": "eu-west:k3", "home": "eu-west"}}}
)

func exampleReservation(state string) Object {
	return Object{"reservation_id": "us-east:2r", "sku": "book-42", "qty": 1, "home": "us-east", "state": state,
		"expires_at": "2026-03-02T10:15:00Z"}
}

// exampleProblem is the problem body of code with detail and members.
func exampleProblem(code, detail string, members Object) Object {
	info := codes[code]
	p := Object{"type": ProblemTypePrefix + code, "title": info.title, "status": info.status, "detail": detail, "code": code,
		"request_id": "8d3c1f0e2b7a4c5d9e6f1a2b3c4d5e6f"}
	maps.Copy(p, members)
	return p
}
