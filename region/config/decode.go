package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decode decodes the single YAML document b into c. A key that names no
// field of the config is an error naming the key, its line and, when one
// is close, the known key it was probably meant to be; every such key is
// reported, one line each (the first maxKeyErrors of them), as is a
// fractional number for an integer. given reports which of the keys that
// Parse defaults when left out the document gives (through merge keys
// and aliases too).
func decode(b []byte, c *Config) (given map[string]bool, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config: empty document")
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("config: more than one YAML document")
	}
	if err := checkAliases(&doc); err != nil {
		return nil, err
	}
	ke := keyErrors{fields: map[reflect.Type]map[string]reflect.Type{}}
	ke.check(&doc, reflect.TypeFor[Config](), "")
	if len(ke.errs) > 0 {
		errs := ke.errs
		if ke.more > 0 {
			errs = append(errs, fmt.Errorf("config: and %d more errors like these", ke.more))
		}
		return nil, errors.Join(errs...)
	}
	if err := doc.Decode(c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var probe struct {
		Partitions *int `yaml:"partitions"`
	}
	if err := doc.Decode(&probe); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return map[string]bool{"partitions": probe.Partitions != nil}, nil
}

// maxKeyErrors bounds the errors of unknown keys and wrong types that a
// config's refusal lists one by one.
const maxKeyErrors = 50

// Aliases may repeat parts of a document (an anchored node used again
// with *name), but the document they expand to may hold at most
// aliasSlack nodes more than twice its own: a few kilobytes of aliases of
// aliases ("billion laughs") would otherwise decode to gigabytes, and
// types that decode their own nodes (PartitionSet) copy what an alias
// repeats each time.
const aliasSlack = 10_000

// checkAliases refuses a document whose aliases expand it past the bound
// above. The expanded size of each anchored node is counted once.
func checkAliases(doc *yaml.Node) error {
	own := 0
	var count func(n *yaml.Node)
	count = func(n *yaml.Node) {
		own++
		for _, c := range n.Content {
			count(c)
		}
	}
	count(doc)
	limit := 2*own + aliasSlack
	memo := map[*yaml.Node]int{}
	var size func(n *yaml.Node, depth int) int
	size = func(n *yaml.Node, depth int) int {
		if depth > 10_000 {
			return limit + 1 // a cycle, or deeper than the parser allows
		}
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			if v, ok := memo[n.Alias]; ok {
				return v
			}
			v := size(n.Alias, depth+1)
			memo[n.Alias] = v
			return v
		}
		total := 1
		for _, c := range n.Content {
			if total += size(c, depth+1); total > limit {
				return total
			}
		}
		return total
	}
	if size(doc, 0) > limit {
		return fmt.Errorf("config: its aliases (*name) expand the document to more than %d nodes, twice its own %d and %d more", limit, own, aliasSlack)
	}
	return nil
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// keyErrors collects the errors of a config's unknown keys and wrong
// types: the first maxKeyErrors built, the rest only counted (a document
// full of unknown keys costs no more than reading it).
type keyErrors struct {
	errs   []error
	more   int
	fields map[reflect.Type]map[string]reflect.Type // yamlFields, by type
}

func (e *keyErrors) add(f func() error) {
	if len(e.errs) < maxKeyErrors {
		e.errs = append(e.errs, f())
		return
	}
	e.more++
}

func (e *keyErrors) fieldsOf(t reflect.Type) map[string]reflect.Type {
	f, ok := e.fields[t]
	if !ok {
		f = yamlFields(t)
		e.fields[t] = f
	}
	return f
}

// check walks n against t and notes an error for each mapping key that
// names no field of the struct it decodes into, and for each fraction
// where an integer goes. path names where n
// is (regions[1], emulate).
func (e *keyErrors) check(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return // the type decodes its own keys
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			e.check(c, t, path)
		}
		return
	case yaml.AliasNode:
		// Checked where it is used, against the type it decodes into
		// there (checkAliases bounds the work).
		if n.Alias != nil {
			e.check(n.Alias, t, path)
		}
		return
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return // the zero value, which any type takes
		}
		if isInteger(t.Kind()) && n.ShortTag() == "!!float" {
			e.add(func() error {
				return fmt.Errorf("config: %s: %s at line %d is not an integer (it is written as a float)", pathOr(path), n.Value, n.Line)
			})
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			e.add(func() error {
				return fmt.Errorf("config: %s: %s at line %d is not %s", pathOr(path), clipValue(n.Value), n.Line, kindName(t))
			})
		}
		return
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice && t.Kind() != reflect.Array {
			e.add(func() error {
				return fmt.Errorf("config: %s: a list at line %d where %s goes", pathOr(path), n.Line, kindName(t))
			})
			return
		}
		for i, c := range n.Content {
			e.check(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
		return
	case yaml.MappingNode:
	default:
		return
	}
	switch t.Kind() {
	case reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; k.Kind == yaml.ScalarNode {
				e.check(k, t.Key(), fmt.Sprintf("%s[%q]", path, k.Value))
			}
			e.check(n.Content[i+1], t.Elem(), fmt.Sprintf("%s[%q]", path, n.Content[i].Value))
		}
		return
	case reflect.Struct:
	default:
		e.add(func() error {
			return fmt.Errorf("config: %s: a mapping at line %d where %s goes", pathOr(path), n.Line, kindName(t))
		})
		return
	}
	fields := e.fieldsOf(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias // the key is the anchored node's value
		}
		if k.Kind == yaml.ScalarNode && k.Value == "<<" {
			// A merge key: a mapping, or a list of them, merged here.
			if v.Kind == yaml.AliasNode && v.Alias != nil {
				v = v.Alias
			}
			if v.Kind == yaml.SequenceNode {
				for _, m := range v.Content {
					e.check(m, t, path)
				}
				continue
			}
			e.check(v, t, path)
			continue
		}
		ft, ok := fields[k.Value]
		if !ok {
			e.add(func() error { return unknownKeyError(path, k, fields) })
			continue
		}
		e.check(v, ft, join(path, k.Value))
	}
}

// pathOr returns path, or "value" for the document's root.
func pathOr(path string) string {
	if path == "" {
		return "value"
	}
	return path
}

// clipValue quotes a scalar for an error, cut to 64 bytes.
func clipValue(v string) string {
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	return fmt.Sprintf("%q", v)
}

// kindName says in the config's words what a value of type t is.
func kindName(t reflect.Type) string {
	switch k := t.Kind(); {
	case k == reflect.Bool:
		return "a boolean (true or false)"
	case isInteger(k):
		return "an integer"
	case k == reflect.Float32 || k == reflect.Float64:
		return "a number"
	case k == reflect.String:
		return "a string"
	case k == reflect.Slice || k == reflect.Array:
		return "a list"
	case k == reflect.Map || k == reflect.Struct:
		return "a mapping"
	}
	return "a value of another kind"
}

// isInteger reports whether k is a kind of integer.
func isInteger(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	}
	return false
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func unknownKeyError(path string, k *yaml.Node, fields map[string]reflect.Type) error {
	where := ""
	if path != "" {
		where = " in " + path
	}
	msg := fmt.Sprintf("config: unknown key %q%s at line %d", k.Value, where, k.Line)
	known := make([]string, 0, len(fields))
	for name := range fields {
		known = append(known, name)
	}
	slices.Sort(known)
	if s := closest(k.Value, known); s != "" {
		return fmt.Errorf("%s; did you mean %q?", msg, s)
	}
	return fmt.Errorf("%s (known keys: %s)", msg, strings.Join(known, ", "))
}

// yamlFields maps each key a struct of type t decodes (its fields' yaml
// tags, or their lower-cased names as the YAML library does; inline
// structs' keys included) to the field's type.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := make(map[string]reflect.Type)
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || len(f.Index) > 1 && !inlined(t, f.Index) {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if slices.Contains(strings.Split(opts, ","), "inline") {
			continue // its fields are listed on their own
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// inlined reports whether the field at index of t sits in structs
// embedded with the yaml inline option all the way down.
func inlined(t reflect.Type, index []int) bool {
	for _, i := range index[:len(index)-1] {
		f := t.Field(i)
		_, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !slices.Contains(strings.Split(opts, ","), "inline") {
			return false
		}
		t = f.Type
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
	}
	return true
}

// Keys returns every key of the config file, as paths from the top
// (cluster, regions[].name, emulate.latency_ms: [] after a list), derived
// from the yaml tags of Config and the types it holds.
func Keys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string, seen map[reflect.Type]bool)
	walk = func(t reflect.Type, prefix string, seen map[reflect.Type]bool) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] || reflect.PointerTo(t).Implements(unmarshalerType) {
			return
		}
		seen[t] = true
		defer delete(seen, t)
		fields := yamlFields(t)
		names := make([]string, 0, len(fields))
		for n := range fields {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			out = append(out, prefix+n)
			sep := "."
			if k := fields[n].Kind(); k == reflect.Slice || k == reflect.Array {
				sep = "[]."
			}
			walk(fields[n], prefix+n+sep, seen)
		}
	}
	walk(reflect.TypeFor[Config](), "", map[reflect.Type]bool{})
	return out
}

// closest returns the known key nearest to key by edit distance, when it
// is near enough to be a likely misspelling, else the one known key key
// is a prefix of (or that is a prefix of key), else "".
func closest(key string, known []string) string {
	best, bestD := "", -1
	for _, k := range known {
		d := editDistance(strings.ToLower(key), k)
		if bestD < 0 || d < bestD {
			best, bestD = k, d
		}
	}
	if bestD >= 0 && bestD <= max(2, len(key)/3) {
		return best
	}
	// A key cut short or run on (loss for loss_pct), when only one fits.
	best = ""
	for _, k := range known {
		if len(key) >= 3 && (strings.HasPrefix(k, key) || strings.HasPrefix(key, k)) {
			if best != "" {
				return ""
			}
			best = k
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, over bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
