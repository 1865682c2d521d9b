package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/latticedb/lattice/region"
)

// TestOpenAPIMatchesRoutes checks that the document describes exactly the
// routes the handler registers: every registered method and path is in the
// document, and every operation of the document is registered.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	e, _ := newTestAPI(t)
	registered := map[string]bool{}
	for _, r := range e.Routes() {
		if !slices.Contains([]string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete,
			http.MethodPatch, http.MethodHead, http.MethodOptions}, r.Method) {
			continue // echo's internal not-found entries
		}
		registered[r.Method+" "+r.Path] = true
	}
	documented := map[string]bool{}
	for path, item := range OpenAPI().Paths {
		for method := range item {
			documented[strings.ToUpper(method)+" "+echoPattern(path)] = true
		}
	}
	for k := range registered {
		if !documented[k] {
			t.Errorf("route %s is registered but not in the OpenAPI document", k)
		}
	}
	for k := range documented {
		if !registered[k] {
			t.Errorf("operation %s is in the OpenAPI document but not registered", k)
		}
	}
	if len(registered) != 19 {
		t.Errorf("%d routes registered, want the 18 of SPEC §6, the document and a checkout's status", len(registered))
	}
}

// TestOpenAPIWellFormed checks what a validator would: unique operation
// ids, every $ref resolving, every path parameter declared, responses on
// every operation.
func TestOpenAPIWellFormed(t *testing.T) {
	doc := OpenAPI()
	raw, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var tree any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"].(string); ok {
				if !resolves(tree, r) {
					t.Errorf("$ref %s does not resolve", r)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(tree)

	ids := map[string]bool{}
	params := doc.Components.Parameters
	for path, item := range doc.Paths {
		for method, op := range item {
			if !slices.Contains([]string{"get", "post", "put", "delete"}, method) {
				t.Errorf("%s: method %q", path, method)
			}
			if op.OperationID == "" || ids[op.OperationID] {
				t.Errorf("%s %s: operationId %q missing or repeated", method, path, op.OperationID)
			}
			ids[op.OperationID] = true
			if len(op.Responses) == 0 {
				t.Errorf("%s %s: no responses", method, path)
			}
			declared := map[string]bool{}
			for _, p := range op.Parameters {
				if r, ok := p["$ref"].(string); ok {
					p = params[strings.TrimPrefix(r, "#/components/parameters/")]
				}
				if p["in"] == "path" {
					declared[p["name"].(string)] = true
				}
			}
			for _, seg := range strings.Split(path, "/") {
				if strings.HasPrefix(seg, "{") {
					name := strings.Trim(seg, "{}")
					if !declared[name] {
						t.Errorf("%s %s: path parameter %s not declared", method, path, name)
					}
					delete(declared, name)
				}
			}
			if len(declared) != 0 {
				t.Errorf("%s %s: parameters %v are not in the path", method, path, declared)
			}
		}
	}
}

func resolves(tree any, ref string) bool {
	if !strings.HasPrefix(ref, "#/") {
		return false
	}
	cur := tree
	for _, part := range strings.Split(ref[2:], "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}

// SchemaErrors validates v against the schema at ref ("#/components/...")
// of doc, an OpenAPI document, and returns what does not conform. Both doc
// and v are as encoding/json decodes them with UseNumber. It knows the
// subset of JSON Schema the document uses, and fails on any other keyword
// or format so that a schema it cannot check is never passed. It is
// stricter than JSON Schema on one point: an object whose schema lists
// properties may hold no other member unless additionalProperties is a
// schema, so that an answer cannot carry a field the document lacks.
func SchemaErrors(doc any, ref string, v any) []string {
	c := &schemaChecker{doc: doc}
	c.check(Object{"$ref": ref}, v, "$")
	return c.errs
}

// DecodeJSON decodes b as SchemaErrors takes it, numbers as json.Number.
func DecodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("api: trailing data after the JSON value")
	}
	return v, nil
}

type schemaChecker struct {
	doc  any
	errs []string
}

func (c *schemaChecker) fail(at, format string, args ...any) {
	c.errs = append(c.errs, at+": "+fmt.Sprintf(format, args...))
}

// annotations are keywords that constrain nothing.
var annotations = map[string]bool{"description": true, "default": true, "example": true, "title": true}

func (c *schemaChecker) check(schema map[string]any, v any, at string) {
	keys := slices.Sorted(maps.Keys(schema))
	for _, k := range keys {
		kw := schema[k]
		switch k {
		case "$ref":
			r, _ := kw.(string)
			target, ok := lookup(c.doc, r)
			if !ok {
				c.fail(at, "$ref %s does not resolve", r)
				continue
			}
			c.check(target, v, at)
		case "type":
			var types []string
			switch t := kw.(type) {
			case string:
				types = []string{t}
			case []any:
				for _, x := range t {
					types = append(types, x.(string))
				}
			}
			got := jsonType(v)
			if !slices.Contains(types, got) && !(got == "integer" && slices.Contains(types, "number")) {
				c.fail(at, "%s, want %s", got, strings.Join(types, " or "))
			}
		case "properties", "additionalProperties":
			obj, ok := v.(map[string]any)
			if !ok || k == "additionalProperties" && schema["properties"] != nil {
				continue // properties checks the members of both
			}
			props, _ := schema["properties"].(map[string]any)
			for _, name := range slices.Sorted(maps.Keys(obj)) {
				if p, ok := props[name]; ok {
					c.check(p.(map[string]any), obj[name], at+"."+name)
				} else if extra, ok := schema["additionalProperties"].(map[string]any); ok {
					c.check(extra, obj[name], at+"."+name)
				} else if props != nil || schema["additionalProperties"] == false {
					c.fail(at, "member %q is not declared", name)
				}
			}
		case "required":
			obj, ok := v.(map[string]any)
			if !ok {
				continue
			}
			for _, name := range kw.([]any) {
				if _, ok := obj[name.(string)]; !ok {
					c.fail(at, "required member %q is missing", name)
				}
			}
		case "items":
			arr, _ := v.([]any)
			for i, x := range arr {
				c.check(kw.(map[string]any), x, fmt.Sprintf("%s[%d]", at, i))
			}
		case "maxItems":
			if arr, ok := v.([]any); ok && big.NewRat(int64(len(arr)), 1).Cmp(rat(kw)) > 0 {
				c.fail(at, "%d items, at most %v allowed", len(arr), kw)
			}
		case "enum":
			if !slices.ContainsFunc(kw.([]any), func(x any) bool { return reflect.DeepEqual(x, v) }) {
				c.fail(at, "%v is not one of %v", v, kw)
			}
		case "const":
			if !reflect.DeepEqual(kw, v) {
				c.fail(at, "%v, want %v", v, kw)
			}
		case "not":
			sub := &schemaChecker{doc: c.doc}
			sub.check(kw.(map[string]any), v, at)
			if len(sub.errs) == 0 {
				c.fail(at, "%v matches the schema of not", v)
			}
		case "minimum", "maximum":
			n, ok := v.(json.Number)
			if !ok {
				continue
			}
			if cmp := rat(n).Cmp(rat(kw)); k == "minimum" && cmp < 0 || k == "maximum" && cmp > 0 {
				c.fail(at, "%s is beyond the %s %v", n, k, kw)
			}
		case "minLength", "maxLength":
			s, ok := v.(string)
			if !ok {
				continue
			}
			if cmp := big.NewRat(int64(utf8.RuneCountInString(s)), 1).Cmp(rat(kw)); k == "minLength" && cmp < 0 || k == "maxLength" && cmp > 0 {
				c.fail(at, "%q is beyond the %s %v", s, k, kw)
			}
		case "pattern":
			if s, ok := v.(string); ok && !regexp.MustCompile(kw.(string)).MatchString(s) {
				c.fail(at, "%q does not match %s", s, kw)
			}
		case "format":
			c.checkFormat(kw.(string), v, at)
		default:
			if !annotations[k] {
				c.fail(at, "the schema uses keyword %q, which this checker does not know", k)
			}
		}
	}
}

func (c *schemaChecker) checkFormat(format string, v any, at string) {
	switch format {
	case "int64":
		if n, ok := v.(json.Number); ok {
			if _, err := strconv.ParseInt(n.String(), 10, 64); err != nil {
				c.fail(at, "%s is not an int64", n)
			}
		}
	case "date-time":
		if s, ok := v.(string); ok {
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				c.fail(at, "%q is not an RFC 3339 date-time", s)
			}
		}
	case "uri":
		if s, ok := v.(string); ok {
			if u, err := url.Parse(s); err != nil || u.Scheme == "" {
				c.fail(at, "%q is not an absolute URI", s)
			}
		}
	default:
		c.fail(at, "the schema uses format %q, which this checker does not know", format)
	}
}

func jsonType(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case json.Number:
		if !strings.ContainsAny(v.String(), ".eE") {
			return "integer"
		}
		if r := rat(v); r != nil && r.IsInt() {
			return "integer"
		}
		return "number"
	}
	return fmt.Sprintf("%T", v)
}

// rat is a JSON number of a document or value as an exact rational.
func rat(v any) *big.Rat {
	r, ok := new(big.Rat).SetString(fmt.Sprint(v))
	if !ok {
		return nil
	}
	return r
}

func lookup(doc any, ref string) (map[string]any, bool) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, false
	}
	cur := doc
	for _, part := range strings.Split(ref[2:], "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	m, ok := cur.(map[string]any)
	return m, ok
}

// documentTree is the OpenAPI document as served, decoded for
// SchemaErrors.
func documentTree(t *testing.T) any {
	t.Helper()
	raw, err := json.Marshal(OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	doc, err := DecodeJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// TestSchemaErrorsRejects checks that the checker the schema tests rely
// on fails what does not conform, and passes what does.
func TestSchemaErrorsRejects(t *testing.T) {
	doc := documentTree(t)
	peer := `"region":"eu-west","connected":true,"pending_deltas":0,"pending_bytes":0,"inflight_messages":0,"lag_ms":0,` +
		`"peer_version_vector":{"eu-west":3},"anti_entropy":"idle","anti_entropy_rounds":1,"unrepaired_keys":[],` +
		`"anti_entropy_keys_pushed":0,"anti_entropy_keys_pulled":0,"anti_entropy_rate_bytes_per_sec":8388608,"bytes_sent":10,"delta_messages_sent":1,` +
		`"stream_bytes_sent":4`
	cases := []struct {
		ref, body, want string // want "" passes
	}{
		{"PeerStatus", `{` + peer + `}`, ""},
		{"PeerStatus", `{` + peer + `,"last_ack":"2026-03-02T10:15:00.123456Z","bytes_sent":18446744073709551615}`, ""},
		{"PeerStatus", `{` + peer + `,"protocol":"lattice-repl/2"}`, ""},
		{"PeerStatus", `{` + peer + `,"protocol":"lattice-repl/3"}`, `is not one of`},
		{"PeerStatus", `{` + peer + `,"extra":1}`, `member "extra" is not declared`},
		{"PeerStatus", `{` + strings.Replace(peer, `"connected":true,`, ``, 1) + `}`, `required member "connected" is missing`},
		{"PeerStatus", `{` + strings.Replace(peer, `"connected":true`, `"connected":"yes"`, 1) + `}`, `$.connected: string, want boolean`},
		{"PeerStatus", `{` + strings.Replace(peer, `"lag_ms":0`, `"lag_ms":1.5`, 1) + `}`, `$.lag_ms: number, want integer`},
		{"PeerStatus", `{` + strings.Replace(peer, `"lag_ms":0`, `"lag_ms":-1`, 1) + `}`, `beyond the minimum`},
		{"PeerStatus", `{` + strings.Replace(peer, `"idle"`, `"asleep"`, 1) + `}`, `is not one of`},
		{"PeerStatus", `{` + strings.Replace(peer, `{"eu-west":3}`, `{"eu-west":"3"}`, 1) + `}`, `$.peer_version_vector.eu-west: string, want integer`},
		{"PeerStatus", `{` + peer + `,"last_ack":"yesterday"}`, `not an RFC 3339 date-time`},
		{"PeerStatus", `{` + strings.Replace(peer, `"unrepaired_keys":[]`, `"unrepaired_keys":null`, 1) + `}`, `null, want array`},
		{"AddItemRequest", `{"sku":"a b","qty":1}`, `does not match`},
		{"AddItemRequest", `{"sku":"a","qty":1000001}`, `beyond the maximum`},
		{"AdjustRequest", `{"delta":0}`, `matches the schema of not`},
		{"Problem", `{"type":"x","title":"t","status":400,"code":"invalid_request"}`, `not an absolute URI`},
		{"Problem", `{"type":"urn:lattice:problem:nope","title":"t","status":400,"code":"nope"}`, `is not one of`},
	}
	for _, tc := range cases {
		v, err := DecodeJSON([]byte(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		errs := SchemaErrors(doc, "#/components/schemas/"+tc.ref, v)
		switch {
		case tc.want == "" && len(errs) != 0:
			t.Errorf("%s %s: %v, want none", tc.ref, tc.body, errs)
		case tc.want != "" && !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, tc.want) }):
			t.Errorf("%s %s: %v, want one saying %q", tc.ref, tc.body, errs, tc.want)
		}
	}
	if errs := SchemaErrors(doc, "#/components/schemas/Nothing", nil); len(errs) != 1 {
		t.Errorf("an unresolved $ref: %v", errs)
	}
	if errs := SchemaErrors(Object{"s": Object{"type": "string", "format": "email"}}, "#/s", "a@b"); len(errs) != 1 {
		t.Errorf("an unknown format: %v", errs)
	}
}

// TestOpenAPIExamplesConform checks every example of the document against
// the schema beside it, and that the main bodies have one: a cart add, a
// reservation, a checkout and a problem.
func TestOpenAPIExamplesConform(t *testing.T) {
	doc := documentTree(t)
	var found []string
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if ex, ok := v["example"]; ok {
				if schema, ok := v["schema"].(map[string]any); ok {
					found = append(found, at)
					c := &schemaChecker{doc: doc}
					c.check(schema, ex, "example")
					for _, e := range c.errs {
						t.Errorf("%s: %s", at, e)
					}
				}
			}
			for _, k := range slices.Sorted(maps.Keys(v)) {
				walk(v[k], at+"/"+k)
			}
		case []any:
			for i, x := range v {
				walk(x, fmt.Sprintf("%s/%d", at, i))
			}
		}
	}
	walk(doc, "#")
	for _, want := range []string{
		"#/paths//v1/carts/{cart_id}/items/post/requestBody/content/application/json",
		"#/paths//v1/carts/{cart_id}/items/post/responses/200/content/application/json",
		"#/paths//v1/reservations/post/requestBody/content/application/json",
		"#/paths//v1/reservations/post/responses/201/content/application/json",
		"#/paths//v1/carts/{cart_id}/checkout/post/requestBody/content/application/json",
		"#/paths//v1/carts/{cart_id}/checkout/post/responses/201/content/application/json",
		"#/components/responses/Conflict/content/" + ProblemContentType,
		"#/components/responses/BadRequest/content/" + ProblemContentType,
	} {
		if !slices.Contains(found, want) {
			t.Errorf("no example at %s", want)
		}
	}
}

// TestOpenAPIClusterSchemaMatchesStatus checks that the schemas of GET
// /v1/cluster declare exactly the JSON members of the Go types the region
// answers with, and require exactly those always present (every member
// not marked omitempty).
func TestOpenAPIClusterSchemaMatchesStatus(t *testing.T) {
	schemas := OpenAPI().Components.Schemas
	for name, typ := range map[string]reflect.Type{
		"Cluster":     reflect.TypeFor[region.ClusterStatus](),
		"StoreStatus": reflect.TypeFor[region.StoreStatus](),
		"PeerStatus":  reflect.TypeFor[region.PeerStatus](),
	} {
		var members, required []string
		for f := range typ.Fields() {
			tag, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if tag == "-" || !f.IsExported() {
				continue
			}
			members = append(members, tag)
			if opts != "omitempty" {
				required = append(required, tag)
			}
		}
		slices.Sort(members)
		slices.Sort(required)
		s := schemas[name]
		props, _ := s["properties"].(Object)
		declared := slices.Sorted(maps.Keys(props))
		req, _ := s["required"].([]string)
		req = slices.Sorted(slices.Values(req))
		if !slices.Equal(declared, members) {
			t.Errorf("schema %s declares %v; %s has %v", name, declared, typ, members)
		}
		if !slices.Equal(req, required) {
			t.Errorf("schema %s requires %v; %s always has %v", name, req, typ, required)
		}
	}
	if r := schemas["Cluster"]["properties"].(Object)["peers"].(Object)["items"].(Object)["$ref"]; r != "#/components/schemas/PeerStatus" {
		t.Errorf("Cluster.peers items %v", r)
	}
	if r := OpenAPI().Paths["/v1/cluster"]["get"].Responses["200"]["content"].(Object)["application/json"].(Object)["schema"]; r.(Object)["$ref"] != "#/components/schemas/Cluster" {
		t.Errorf("GET /v1/cluster answers %v", r)
	}
}

// TestOpenAPIMethodNotAllowedAndServers checks that every operation
// declares its path's 405 answer, with Allow as the server sends it, and
// that the document names the serving region as its one server.
func TestOpenAPIMethodNotAllowedAndServers(t *testing.T) {
	doc := OpenAPI()
	for path, item := range doc.Paths {
		methods := []string{"OPTIONS"}
		for m := range item {
			methods = append(methods, strings.ToUpper(m))
		}
		slices.Sort(methods[1:])
		for method, o := range item {
			r := o.Responses["405"]
			if r == nil {
				t.Errorf("%s %s: no 405", method, path)
				continue
			}
			allow := r["headers"].(Object)["Allow"].(Object)["schema"].(Object)["const"]
			if allow != strings.Join(methods, ", ") {
				t.Errorf("%s %s: 405 Allow %v, want %s", method, path, allow, strings.Join(methods, ", "))
			}
			if _, ok := r["content"].(Object)[ProblemContentType]; !ok {
				t.Errorf("%s %s: 405 is not a problem", method, path)
			}
		}
	}
	if len(doc.Servers) != 1 || doc.Servers[0]["url"] != "/" || doc.Servers[0]["description"] == "" {
		t.Errorf("servers %v", doc.Servers)
	}
}
