package region

import "time"

// PeerStatus is a region's replication to one peer, as GET /v1/cluster
// serves it in ClusterStatus.Peers (docs/api.md). It is the one shape of
// that answer: the replication layer composes it from its protocol's
// state, a region without replication lists its configured peers as
// never connected, and the Go client decodes into it.
type PeerStatus struct {
	// Region is the peer's name.
	Region string `json:"region"`
	// Connected reports whether the connection to the peer is up.
	Connected bool `json:"connected"`
	// PendingDeltas and PendingBytes are the buffered deltas the peer
	// has not acknowledged.
	PendingDeltas int `json:"pending_deltas"`
	PendingBytes  int `json:"pending_bytes"`
	// InflightMessages are the delta messages sent to the peer and not
	// yet acknowledged.
	InflightMessages int `json:"inflight_messages"`
	// LagMs is the age of the oldest delta the peer has not
	// acknowledged, 0 when none.
	LagMs int64 `json:"lag_ms"`
	// LastAck is when the peer last acknowledged (nil if never).
	LastAck *time.Time `json:"last_ack,omitempty"`
	// PeerVersionVector is the version vector the peer last reported.
	PeerVersionVector map[string]uint64 `json:"peer_version_vector"`
	// AntiEntropy is idle, needed (a round is due) or running.
	AntiEntropy string `json:"anti_entropy"`
	// AntiEntropyRounds counts the rounds this region started with the
	// peer.
	AntiEntropyRounds uint64 `json:"anti_entropy_rounds"`
	// UnrepairedKeys are keys anti-entropy with the peer shipped several
	// rounds in a row without either side's state changing: a divergence
	// joins cannot repair. Should always be empty.
	UnrepairedKeys []string `json:"unrepaired_keys"`
	// KeysPushed and KeysPulled count the keys whose states
	// anti-entropy shipped to and received from the peer.
	KeysPushed uint64 `json:"anti_entropy_keys_pushed"`
	KeysPulled uint64 `json:"anti_entropy_keys_pulled"`
	// AntiEntropyRate bounds the bytes of states anti-entropy ships and
	// pulls per second with the peer (0: no bound).
	AntiEntropyRate int `json:"anti_entropy_rate_bytes_per_sec"`
	// LastAntiEntropy is when the last round with the peer ended (nil if
	// never).
	LastAntiEntropy *time.Time `json:"last_anti_entropy,omitempty"`
	// BytesSent and DeltaMessagesSent count the protocol bytes and the
	// delta messages sent to the peer.
	BytesSent         uint64 `json:"bytes_sent"`
	DeltaMessagesSent uint64 `json:"delta_messages_sent"`
	// Protocol is the replication protocol (ALPN) of the connection to
	// the peer: lattice-repl/2, whose message stream is compressed, or
	// lattice-repl/1 with a peer of an earlier version; empty while not
	// connected, and for a partitioned region, whose nodes each have
	// their own connections.
	Protocol string `json:"protocol,omitempty"`
	// StreamBytesSent counts the bytes of the message stream to the peer:
	// the protocol's bytes as framed, and compressed under
	// lattice-repl/2 (0 for a partitioned region).
	StreamBytesSent uint64 `json:"stream_bytes_sent"`
}

// UnattachedPeer is the status of a configured peer of a region that runs
// without replication: never connected, nothing pending, no anti-entropy.
func UnattachedPeer(name string) PeerStatus {
	return PeerStatus{Region: name, PeerVersionVector: map[string]uint64{}, AntiEntropy: "idle", UnrepairedKeys: []string{}}
}
