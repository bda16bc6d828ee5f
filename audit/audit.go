// Package audit is twokey's record of who changed what, when and why: every
// command, plan, approval, credential and apply, as events in a hash chain.
// Each event carries the sha256 of the previous event's canonical form, so
// editing or deleting one breaks the chain at that point, and Verify finds
// where. Each event is also signed by the process that wrote it, so that a
// Redis writer who rewrites the chain cannot seal it again unseen
// (VerifySigned).
//
// This package is pure; redisaudit stores the chain in a Redis Stream.
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twokey/twokey/attest"
)

// Event types.
const (
	Command             = "command"              // a /tf command arrived
	PlanStarted         = "plan_started"         // the lock was taken and terraform plan started
	PlanFinished        = "plan_finished"        // plan ready (digest, counts) or without changes
	PlanFailed          = "plan_failed"          // terraform plan failed
	Approval            = "approval"             // an approval counted
	Rejection           = "rejection"            // the plan was rejected
	Invalidation        = "invalidation"         // void: expired, replaced, new commit, unlock, lost lock
	CredentialRequested = "credential_requested" // a child token is about to be minted (role, TTL, purpose)
	CredentialMinted    = "credential_minted"    // a child token (accessor and TTL, never the token)
	CredentialRevoked   = "credential_revoked"   // … and its end
	ApplyStarted        = "apply_started"        // terraform apply is about to run
	ApplyFinished       = "apply_finished"       // result and duration
	Unlock              = "unlock"               // an admin freed an environment by force
	ConfigLoaded        = "config_loaded"        // a process started with a config (its sha256)
	GitHubUpdated       = "github_updated"       // the PR comment or a commit status was written
	GitHubUnavailable   = "github_unavailable"   // … or could not be, and will be retried
	BreakGlass          = "breakglass"           // an emergency credential's life (detail "stage")
	Forgery             = "forgery"              // state in Redis without a trusted signature was found and not acted on
	DriftCheck          = "drift_check"          // an environment was planned at the default branch's head to find drift (result, trigger)
	IdentityLinked      = "identity_linked"      // a Slack user linked a GitHub account (login, ID; never the token)
	IdentityUnlinked    = "identity_unlinked"    // an admin dropped a user's link
	PolicyOverride      = "policy_override"      // a policy owner overrode a policy denial (the rules it denied by)
	Verification        = "verification"         // an apply was verified after it (result passed or failed, each step's result)
)

// Actor is who caused an event: a Slack user (ID, and display name at the
// time), or a twokey process.
type Actor struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// Event is one entry of the record.
type Event struct {
	// ID is the entry's place in the store (a stream ID); it is not part of
	// the hash, which links events by content.
	ID        string            `json:"id,omitempty"`
	Time      time.Time         `json:"time"`
	Type      string            `json:"type"`
	Actor     Actor             `json:"actor"`
	Project   string            `json:"project,omitempty"`
	Env       string            `json:"env,omitempty"`
	PR        int               `json:"pr,omitempty"`
	Ref       string            `json:"ref,omitempty"`
	SHA       string            `json:"sha,omitempty"`
	PlanID    string            `json:"plan_id,omitempty"`
	Digest    string            `json:"digest,omitempty"`
	Fence     int64             `json:"fence,omitempty"`
	Permalink string            `json:"permalink,omitempty"`
	Detail    map[string]string `json:"detail,omitempty"`
	// Prev is the hash of the event before; Hash is this event's.
	Prev string `json:"prev"`
	Hash string `json:"hash"`
	// Sig is the writing process's signature of Hash (Sign), so that
	// re-sealing a rewritten chain takes a key, not just sha256.
	Sig attest.Signature `json:"sig,omitzero"`
}

// Canonical is the event as it is hashed: JSON with fields in declaration
// order and detail keys sorted, without ID, Hash and Sig.
func (e Event) Canonical() []byte {
	e.ID, e.Hash, e.Sig = "", "", attest.Signature{}
	e.Time = e.Time.UTC()
	b, err := json.Marshal(e)
	if err != nil {
		panic(err) // an Event always marshals
	}
	return b
}

// Seal links e after the event whose hash is prev.
func (e *Event) Seal(prev string) {
	e.Prev = prev
	sum := sha256.Sum256(e.Canonical())
	e.Hash = hex.EncodeToString(sum[:])
}

// purposeAudit is what an audit signature is for.
const purposeAudit = "audit"

// Sign signs a sealed event's hash (Seal first).
func (e *Event) Sign(s *attest.Signer) {
	e.Sig = s.Sign(purposeAudit, []byte(e.Hash))
}

// Recorder appends events. Appends that the flow depends on (a credential
// mint, an apply start) must succeed, or the flow stops.
type Recorder interface {
	Record(ctx context.Context, e Event) error
}

// BreakError says where the chain breaks.
type BreakError struct {
	Index  int    // position among the events checked
	ID     string // the event's ID in the store
	Reason string
}

func (e *BreakError) Error() string {
	return fmt.Sprintf("audit chain broken at event %d (%s): %s", e.Index, e.ID, e.Reason)
}

// Verify checks that events form an unbroken chain starting after the
// event whose hash is anchor ("" for the first event ever). It does not
// check signatures: anyone can re-seal a chain; see VerifySigned.
func Verify(anchor string, events []Event) error {
	return VerifySigned(anchor, events, nil)
}

// VerifySigned is Verify that also requires every event to be signed by a
// key in trust (if trust is not nil), and names the first that is not.
func VerifySigned(anchor string, events []Event, trust *attest.Keyring) error {
	prev := anchor
	for i, e := range events {
		if e.Prev != prev {
			return &BreakError{Index: i, ID: e.ID, Reason: fmt.Sprintf("it follows %s, but the event before it is %s (an event was deleted or reordered)", short(e.Prev), short(prev))}
		}
		stored := e.Hash
		e.Seal(e.Prev)
		if e.Hash != stored {
			return &BreakError{Index: i, ID: e.ID, Reason: "its content does not match its hash (it was edited)"}
		}
		if trust != nil {
			if err := trust.Verify(purposeAudit, []byte(stored), e.Sig); err != nil {
				return &BreakError{Index: i, ID: e.ID, Reason: fmt.Sprintf("its signature does not verify (%v): it was forged, or the chain was re-sealed from here (%s event of %s)",
					err, e.Type, e.Time.UTC().Format(time.RFC3339))}
			}
		}
		prev = stored
	}
	return nil
}

func short(h string) string {
	if h == "" {
		return "the start"
	}
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
