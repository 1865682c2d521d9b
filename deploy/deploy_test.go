// Package deploy holds the files that deploy Lattice: an image built FROM
// scratch around the static binary; Kubernetes manifests, one StatefulSet
// per region whose pods are the region's nodes; and a compose file that
// runs three regions of two nodes as containers. Its tests check them
// against the Kubernetes API types and against the cluster config they
// carry (the arguments of every container are parsed by lattice serve's
// own flags in cmd/lattice's TestDeployedServeArguments and
// TestComposeServeArguments).
package deploy

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/latticedb/lattice/region/config"
)

// objects splits a multi-document manifest and decodes each document,
// strictly (an unknown field is an error), into the API type of its kind.
func objects(t *testing.T, path string) []any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []any
	for i, doc := range bytes.Split(b, []byte("\n---\n")) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		var obj any
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "v1 Service":
			obj = &corev1.Service{}
		case "v1 ConfigMap":
			obj = &corev1.ConfigMap{}
		case "policy/v1 PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		default:
			t.Fatalf("%s document %d: unexpected %s %s", path, i, head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s document %d (%s): %v", path, i, head.Kind, err)
		}
		out = append(out, obj)
	}
	return out
}

func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return int32(n)
}

func host(t *testing.T, addr string) string {
	t.Helper()
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// selects reports whether every label of selector is on labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// argValue returns the value after flag in args ("" if absent).
func argValue(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// clusterConfig returns the ConfigMap of kubernetes/config.yaml and the
// cluster config it carries.
func clusterConfig(t *testing.T) (*corev1.ConfigMap, *config.Config) {
	t.Helper()
	objs := objects(t, filepath.Join("kubernetes", "config.yaml"))
	if len(objs) != 1 {
		t.Fatalf("config.yaml holds %d objects, want the ConfigMap alone", len(objs))
	}
	cm, ok := objs[0].(*corev1.ConfigMap)
	if !ok {
		t.Fatalf("config.yaml holds a %T", objs[0])
	}
	cfg, err := config.Parse([]byte(cm.Data["lattice.yaml"]))
	if err != nil {
		t.Fatalf("the ConfigMap's lattice.yaml: %v", err)
	}
	return cm, cfg
}

// TestKubernetesManifests decodes every manifest strictly into the
// Kubernetes API types and checks each region's objects against the
// cluster config: a partitioned cluster whose every region runs several
// nodes; a StatefulSet whose pods are exactly the region's nodes, named
// by them, passing their name as --node; the nodes' ports; a headless
// Service that gives the pods the names the nodes' advertise_api hold; a
// Service for the API; one UDP load balancer per node, at the port of its
// advertise_peer, and none for anything else; probes on /healthz and
// /readyz; mounts at the config's data_dir and tls_dir with the
// certificate files it expects; a volume claim per pod; resources with a
// 1-CPU limit; an unprivileged container; and a PodDisruptionBudget.
func TestKubernetesManifests(t *testing.T) {
	cm, cfg := clusterConfig(t)
	if cfg.PartitionCount() < 2 {
		t.Errorf("partitions: %d: the manifests deploy partitioned regions", cfg.PartitionCount())
	}
	for _, rc := range cfg.Regions {
		if n := len(cfg.Nodes(rc.Name)); n < 2 {
			t.Errorf("region %s lists %d node(s): the manifests deploy several per region", rc.Name, n)
		}
	}
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if name := strings.TrimSuffix(filepath.Base(f), ".yaml"); name != "config" {
			if _, ok := cfg.Region(name); !ok {
				t.Errorf("%s is not a region of the config", f)
			}
		}
	}
	for _, rc := range cfg.Regions {
		t.Run(rc.Name, func(t *testing.T) {
			checkRegionManifest(t, cfg, cm, rc)
		})
	}
}

func checkRegionManifest(t *testing.T, cfg *config.Config, cm *corev1.ConfigMap, rc config.RegionConfig) {
	objs := objects(t, filepath.Join("kubernetes", rc.Name+".yaml"))
	var sts *appsv1.StatefulSet
	var pdbs []*policyv1.PodDisruptionBudget
	services := map[string]*corev1.Service{}
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.StatefulSet:
			if sts != nil {
				t.Fatal("two StatefulSets: a region is one StatefulSet")
			}
			sts = o
		case *corev1.Service:
			services[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			pdbs = append(pdbs, o)
		default:
			t.Fatalf("unexpected %T in a region's file", o)
		}
	}
	if sts == nil {
		t.Fatal("no StatefulSet")
	}
	pod := sts.Spec.Template
	if sts.Spec.Selector == nil || !selects(sts.Spec.Selector.MatchLabels, pod.Labels) {
		t.Fatalf("the StatefulSet's selector %v does not select its pods %v", sts.Spec.Selector, pod.Labels)
	}
	if pod.Labels["lattice.dev/region"] != rc.Name {
		t.Errorf("pod label lattice.dev/region=%q, want %s", pod.Labels["lattice.dev/region"], rc.Name)
	}

	// Pods are the region's nodes, by name and in order: pod i is node i,
	// and there is no pod without a node nor a node without a pod.
	nodes := cfg.Nodes(rc.Name)
	if sts.Spec.Replicas == nil {
		t.Fatalf("replicas unset, want one pod per node of the region (%d)", len(nodes))
	}
	if int(*sts.Spec.Replicas) != len(nodes) {
		t.Fatalf("replicas %d, want one pod per node of the region (%d)", *sts.Spec.Replicas, len(nodes))
	}
	for i, n := range nodes {
		if want := fmt.Sprintf("%s-%d", sts.Name, i); n.Name != want {
			t.Errorf("node %d is %q; the StatefulSet's pod %d is %s", i, n.Name, i, want)
		}
		if len(ownedPartitions(cfg, n)) == 0 {
			t.Errorf("node %s owns no partition", n.Name)
		}
	}

	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if len(c.Command) != 0 || len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("command %q args %q: want the image's entry point with serve", c.Command, c.Args)
	}
	if r := argValue(c.Args, "--region"); r != rc.Name {
		t.Errorf("--region %q, want %s", r, rc.Name)
	}
	if n := argValue(c.Args, "--node"); n != "$(POD_NAME)" {
		t.Errorf("--node %q, want $(POD_NAME)", n)
	}
	i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_NAME" })
	if i < 0 || c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.FieldRef == nil || c.Env[i].ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("env %+v: want POD_NAME from metadata.name", c.Env)
	}

	ports := map[string]corev1.ContainerPort{}
	for _, p := range c.Ports {
		ports[p.Name] = p
	}
	headless := services[sts.Spec.ServiceName]
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !selects(headless.Spec.Selector, pod.Labels) || !headless.Spec.PublishNotReadyAddresses {
		t.Fatalf("serviceName %q: want a headless Service selecting the pods and publishing them before they are ready", sts.Spec.ServiceName)
	}
	for i, n := range nodes {
		if p := ports["api"]; p.ContainerPort != port(t, n.API) || p.Protocol != corev1.ProtocolTCP {
			t.Errorf("node %s: api port %+v, want TCP %d", n.Name, p, port(t, n.API))
		}
		if p := ports["peer"]; p.ContainerPort != port(t, n.Peer) || p.Protocol != corev1.ProtocolUDP {
			t.Errorf("node %s: peer port %+v, want UDP %d", n.Name, p, port(t, n.Peer))
		}
		// The other nodes of the region reach it by its pod's DNS name.
		if len(nodes) > 1 || n.AdvertiseAPI != "" {
			h := host(t, n.DialAPI())
			if h != n.Name+"."+headless.Name && !strings.HasPrefix(h, n.Name+"."+headless.Name+".") || port(t, n.DialAPI()) != port(t, n.API) {
				t.Errorf("node %s: advertise_api %q, want %s.%s:%d", n.Name, n.DialAPI(), n.Name, headless.Name, port(t, n.API))
			}
		}
		// The other regions dial its own UDP load balancer.
		lb := services[fmt.Sprintf("%s-%d-peer", sts.Name, i)]
		if lb == nil {
			t.Errorf("node %s: no Service %s-%d-peer for the other regions", n.Name, sts.Name, i)
			continue
		}
		if lb.Spec.Type != corev1.ServiceTypeLoadBalancer || lb.Spec.Selector["statefulset.kubernetes.io/pod-name"] != n.Name || !selects(lb.Spec.Selector, pod.Labels) && len(lb.Spec.Selector) == 0 {
			t.Errorf("service %s: want a LoadBalancer selecting pod %s", lb.Name, n.Name)
		}
		if len(lb.Spec.Ports) != 1 || lb.Spec.Ports[0].Port != port(t, n.DialPeer()) || lb.Spec.Ports[0].Protocol != corev1.ProtocolUDP || lb.Spec.Ports[0].TargetPort.String() != "peer" {
			t.Errorf("service %s ports %+v, want UDP %d to the peer port", lb.Name, lb.Spec.Ports, port(t, n.DialPeer()))
		}
		if !strings.HasPrefix(n.DialPeer(), lb.Name+".") {
			t.Errorf("node %s: advertise_peer %q should name its load balancer %s", n.Name, n.DialPeer(), lb.Name)
		}
	}
	for _, sp := range headless.Spec.Ports {
		if p, ok := ports[sp.TargetPort.String()]; !ok || p.Protocol != sp.Protocol || p.ContainerPort != sp.Port {
			t.Errorf("headless service port %+v does not match the container's", sp)
		}
	}
	// Clients reach any pod: each forwards the requests for the other
	// nodes' partitions to their owners.
	apiPort := port(t, nodes[0].API)
	api := services["lattice-"+rc.Name+"-api"]
	if api == nil || !selects(api.Spec.Selector, pod.Labels) || len(api.Spec.Ports) != 1 || api.Spec.Ports[0].Port != apiPort || api.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("want a Service lattice-%s-api selecting the pods on TCP %d", rc.Name, apiPort)
	}
	lbs := 0
	for name, svc := range services {
		if !selects(svc.Spec.Selector, pod.Labels) && svc.Spec.Selector["statefulset.kubernetes.io/pod-name"] == "" {
			t.Errorf("service %s selects no pod of the region", name)
		}
		if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
			lbs++
			if pn := svc.Spec.Selector["statefulset.kubernetes.io/pod-name"]; !slices.ContainsFunc(nodes, func(n config.NodeConfig) bool { return n.Name == pn }) {
				t.Errorf("load balancer %s selects pod %q, which is no node of the region", name, pn)
			}
		}
	}
	if lbs != len(nodes) {
		t.Errorf("%d load balancers for %d nodes: want one per node", lbs, len(nodes))
	}

	for probe, path := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port.String() != "api" {
			t.Errorf("probe %+v, want GET %s on the api port", probe, path)
		}
	}

	res := c.Resources
	if cpu := res.Limits[corev1.ResourceCPU]; cpu.Cmp(resource.MustParse("1")) != 0 {
		t.Errorf("CPU limit %s, want 1", cpu.String())
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := res.Requests[r], res.Limits[r]
		if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
			t.Errorf("%s: request %s, limit %s: want both, the request within the limit", r, req.String(), lim.String())
		}
	}

	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	cfgPath := argValue(c.Args, "--config")
	if mounts[cfg.DataDir] != "data" || mounts[cfg.TLSDir] != "certs" || mounts[filepath.Dir(cfgPath)] != "config" {
		t.Errorf("mounts %v: want data at %s, certs at %s, config at %s", mounts, cfg.DataDir, cfg.TLSDir, filepath.Dir(cfgPath))
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	if v := volumes["config"]; v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || cm.Data[filepath.Base(cfgPath)] == "" {
		t.Errorf("config volume %+v, want ConfigMap %s holding %s", v, cm.Name, filepath.Base(cfgPath))
	}
	v := volumes["certs"]
	if v.Secret == nil || v.Secret.SecretName != "lattice-certs-"+rc.Name {
		t.Fatalf("certs volume %+v, want Secret lattice-certs-%s", v, rc.Name)
	}
	var paths []string
	for _, it := range v.Secret.Items {
		if it.Key != it.Path {
			t.Errorf("secret item %+v: key and file differ", it)
		}
		paths = append(paths, it.Path)
	}
	ca, cert, key := cfg.TLSFiles(rc.Name)
	for _, f := range []string{ca, cert, key} {
		if filepath.Dir(f) != cfg.TLSDir || !slices.Contains(paths, filepath.Base(f)) {
			t.Errorf("secret items %v: the region reads %s", paths, f)
		}
	}
	if i := slices.IndexFunc(sts.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == "data" }); i < 0 {
		t.Error("no volume claim template named data: the store would not outlive its pod")
	} else if st := sts.Spec.VolumeClaimTemplates[i].Spec.Resources.Requests[corev1.ResourceStorage]; st.IsZero() {
		t.Error("the data claim requests no storage")
	}
	if _, ok := volumes["data"]; ok {
		t.Error("a pod volume named data hides the claim template")
	}

	sc := pod.Spec.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Error("the pod must run as a non-root user")
	}
	csc := c.SecurityContext
	if csc == nil || csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
		csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") {
		t.Error("the container must run on a read-only root file system, without privilege escalation or capabilities")
	}
	if a := pod.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Error("the pod mounts a service account token, though a region calls no Kubernetes API")
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g < 20 {
		t.Errorf("termination grace %v: a clean stop drains requests for up to 15 s, then closes the store", g)
	}

	if len(pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want one", len(pdbs))
	}
	pdb := pdbs[0]
	if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, pod.Labels) {
		t.Errorf("the PodDisruptionBudget does not select the region's pods")
	}
	if mu := pdb.Spec.MaxUnavailable; mu == nil || mu.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget maxUnavailable %v minAvailable %v: want maxUnavailable 1 (one node at a time; a minAvailable of every pod would block every drain)", mu, pdb.Spec.MinAvailable)
	}
}

// ownedPartitions returns the partitions node n owns.
func ownedPartitions(cfg *config.Config, n config.NodeConfig) []int {
	var out []int
	for p := range cfg.PartitionCount() {
		if n.Owns(p) {
			out = append(out, p)
		}
	}
	return out
}

// composeFile is what TestComposeFile reads of compose/compose.yaml.
type composeFile struct {
	Services map[string]struct {
		Image      string   `json:"image"`
		User       string   `json:"user"`
		ReadOnly   bool     `json:"read_only"`
		CapDrop    []string `json:"cap_drop"`
		StopSignal string   `json:"stop_signal"`
		Command    []string `json:"command"`
		Ports      []string `json:"ports"`
		Volumes    []string `json:"volumes"`
		Networks   map[string]*struct {
			Aliases []string `json:"aliases"`
		} `json:"networks"`
	} `json:"services"`
	Networks map[string]*struct {
		Internal bool `json:"internal"`
	} `json:"networks"`
}

// composeDefaults matches a variable with a default, ${NAME:-default},
// as compose expands it when NAME is unset.
var composeDefaults = regexp.MustCompile(`\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}`)

// TestComposeFile checks compose/compose.yaml against the config it
// mounts, compose/lattice.yaml: a partitioned cluster; a service for each
// node of each region and a node for each service, running it by name
// (--region, --node); every service mounting that one config (so every
// node agrees on the partitions and their owners); its API port
// published; the alias of its advertise_api on its region's network
// alone, so only the other node of its region forwards to it; the alias of
// its advertise_peer on its region's network and on the internal network
// wan, so every node reaches it over QUIC and disconnecting a region from
// wan cuts it off; its region's certificate files at tls_dir; a data
// directory of its own at data_dir; and the container unprivileged, on a
// read-only root file system, stopped with SIGTERM.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("compose", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(filepath.Join("compose", "lattice.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PartitionCount() < 2 {
		t.Errorf("partitions: %d: the compose cluster runs partitioned regions", cfg.PartitionCount())
	}
	if w := f.Networks["wan"]; w == nil || !w.Internal {
		t.Error("network wan must be internal: the regions reach each other there and nowhere else")
	}
	nodes := map[string]config.NodeConfig{} // service → node
	region := map[string]string{}           // service → region
	for _, r := range cfg.RegionNames() {
		ns := cfg.Nodes(r)
		if len(ns) < 2 {
			t.Errorf("region %s lists %d node(s), want several", r, len(ns))
		}
		for _, n := range ns {
			if _, dup := nodes[n.Name]; dup {
				t.Errorf("node name %s is used in two regions: a compose service is named by its node", n.Name)
			}
			nodes[n.Name], region[n.Name] = n, r
			if _, ok := f.Services[n.Name]; !ok {
				t.Errorf("node %s/%s has no service", r, n.Name)
			}
		}
	}
	dataDirs := map[string]string{}
	for name, svc := range f.Services {
		n, ok := nodes[name]
		if !ok {
			t.Errorf("service %s is no node of the config", name)
			continue
		}
		r := region[name]
		if argValue(svc.Command, "--region") != r || argValue(svc.Command, "--node") != name {
			t.Errorf("service %s runs %q: want --region %s --node %s", name, svc.Command, r, name)
		}
		cfgPath := argValue(svc.Command, "--config")
		mounts := map[string]string{} // container path → host path
		for _, v := range svc.Volumes {
			parts := strings.Split(composeDefaults.ReplaceAllString(v, "$1"), ":")
			if len(parts) < 2 {
				t.Fatalf("service %s: volume %q", name, v)
			}
			mounts[parts[1]] = parts[0]
		}
		if mounts[cfgPath] != "./lattice.yaml" {
			t.Errorf("service %s: --config %s is %q, want ./lattice.yaml", name, cfgPath, mounts[cfgPath])
		}
		ca, cert, key := cfg.TLSFiles(r)
		for _, file := range []string{ca, cert, key} {
			if host := mounts[file]; !strings.HasSuffix(host, "/"+filepath.Base(file)) {
				t.Errorf("service %s: %s is mounted from %q", name, file, host)
			}
		}
		data := mounts[cfg.DataDir]
		if data == "" || !strings.HasSuffix(data, "/"+name) {
			t.Errorf("service %s: %s is mounted from %q, want a directory named after the node", name, cfg.DataDir, data)
		} else if other, dup := dataDirs[data]; dup {
			t.Errorf("services %s and %s share the data directory %s", other, name, data)
		}
		dataDirs[data] = name
		if len(svc.Ports) != 1 || !strings.HasSuffix(svc.Ports[0], fmt.Sprintf("::%d", port(t, n.API))) {
			t.Errorf("service %s publishes %q, want its API port %d on an ephemeral host port", name, svc.Ports, port(t, n.API))
		}

		if len(svc.Networks) != 2 || svc.Networks[r] == nil || svc.Networks["wan"] == nil {
			t.Errorf("service %s is on networks %v, want %s and wan", name, slices.Sorted(maps.Keys(svc.Networks)), r)
			continue
		}
		apiHost, peerHost := host(t, n.DialAPI()), host(t, n.DialPeer())
		if port(t, n.DialAPI()) != port(t, n.API) || port(t, n.DialPeer()) != port(t, n.Peer) {
			t.Errorf("node %s: advertised ports %s, %s differ from its listening ports %s, %s", name, n.DialAPI(), n.DialPeer(), n.API, n.Peer)
		}
		if own := svc.Networks[r].Aliases; !slices.Contains(own, apiHost) || !slices.Contains(own, peerHost) {
			t.Errorf("service %s: aliases %v on network %s, want %s and %s", name, own, r, apiHost, peerHost)
		}
		if wan := svc.Networks["wan"].Aliases; !slices.Contains(wan, peerHost) || slices.Contains(wan, apiHost) {
			t.Errorf("service %s: aliases %v on wan, want %s and not %s", name, wan, peerHost, apiHost)
		}
		if svc.User == "" || strings.HasPrefix(svc.User, "0") || !svc.ReadOnly || !slices.Contains(svc.CapDrop, "ALL") || svc.StopSignal != "SIGTERM" {
			t.Errorf("service %s: user %q read_only %v cap_drop %v stop_signal %q", name, svc.User, svc.ReadOnly, svc.CapDrop, svc.StopSignal)
		}
	}
}

// TestDockerfileIsScratch: the image holds the static binary alone.
func TestDockerfileIsScratch(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var from []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.EqualFold(f[0], "FROM") {
			from = append(from, f[1])
		}
	}
	if fmt.Sprint(from) != "[scratch]" || !strings.Contains(string(b), "USER 65532") {
		t.Errorf("Dockerfile: FROM %v; want only scratch and an unprivileged user", from)
	}
}
