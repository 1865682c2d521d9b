package crdt

import "strconv"

// IncarnationSep separates a region name from its incarnation number in a
// replica id: "ap-south" is incarnation 0 of region ap-south, and
// "ap-south+1796000000" a later one. The separator is outside the
// identifier alphabet, so a region name never contains it.
const IncarnationSep = '+'

// MaxIncarnationDigits bounds the decimal digits of an incarnation number.
const MaxIncarnationDigits = 12

// Incarnation returns the replica id of incarnation k of region.
//
// A region's dots are unique per replica id. A region that may have lost
// the tail of its store (an unclean stop, a torn file, a restore from a
// backup) cannot know which of its last dots it had already handed out,
// so it goes on as a new incarnation: a replica id that has issued no dot
// yet. Old incarnations never issue again; their entries stay in version
// vectors and in the objects they wrote.
func Incarnation(region string, k uint64) ReplicaID {
	if k == 0 {
		return ReplicaID(region)
	}
	return ReplicaID(region + string(IncarnationSep) + strconv.FormatUint(k, 10))
}

// Region returns the region r is an incarnation of.
func (r ReplicaID) Region() string {
	for i := len(r) - 1; i >= 0; i-- {
		if r[i] == IncarnationSep {
			return string(r[:i])
		}
	}
	return string(r)
}

// Incarnation returns r's incarnation number (0 for a bare region name).
func (r ReplicaID) Incarnation() uint64 {
	reg := r.Region()
	if len(reg) == len(r) {
		return 0
	}
	k, err := strconv.ParseUint(string(r[len(reg)+1:]), 10, 64)
	if err != nil {
		return 0
	}
	return k
}

// ValidReplica reports whether r may name a replica: a region name of
// 1–MaxReplicaIDLen bytes of the identifier alphabet, optionally followed
// by IncarnationSep and an incarnation number ≥ 1 of at most
// MaxIncarnationDigits digits without leading zeros.
func ValidReplica(r ReplicaID) bool {
	reg := r.Region()
	if len(reg) > MaxReplicaIDLen || !ValidID(reg) {
		return false
	}
	if len(reg) == len(r) {
		return true
	}
	num := string(r[len(reg)+1:])
	if len(num) == 0 || len(num) > MaxIncarnationDigits || num[0] == '0' {
		return false
	}
	for i := 0; i < len(num); i++ {
		if num[i] < '0' || num[i] > '9' {
			return false
		}
	}
	return true
}
