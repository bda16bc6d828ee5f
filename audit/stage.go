package audit

// Stage is a step of a break-glass grant's life, the "stage" detail of a
// BreakGlass event.
type Stage string

// The stages, in the order a grant can go through them.
const (
	StageRequested   Stage = "requested"   // on call asked, with a reason
	StageApproved    Stage = "approved"    // a peer approved (or self-service)
	StageDenied      Stage = "denied"      // a peer denied
	StageLapsed      Stage = "lapsed"      // nobody decided in time
	StageMinted      Stage = "minted"      // the token exists (accessor, TTL)
	StageDelivered   Stage = "delivered"   // the wrapped token reached the requester
	StageFailed      Stage = "failed"      // creating or delivering it failed
	StageUnwrapped   Stage = "unwrapped"   // the requester unwrapped it
	StageCompromised Stage = "compromised" // someone else unwrapped it first
	StageRevoked     Stage = "revoked"     // ended before its time
	StageExpired     Stage = "expired"     // its time ran out
	StageDrift       Stage = "drift"       // the drift check after it
	StageReminded    Stage = "reminded"    // its review was asked for again
	StageReviewed    Stage = "reviewed"    // an approver reviewed what was done
)
