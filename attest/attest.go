// Package attest signs statements with ed25519 keys and verifies them
// against a set of trusted public keys, each known by a key ID derived from
// the key itself. twokey uses it so that what a Redis writer can change —
// plans, approvals, grants to apply, audit events — carries a signature that
// a Redis writer cannot make.
//
// Rotation: add the new public key to every process's trusted set, switch
// the signer to the new private key, and remove the old public key once
// nothing signed with it is still needed. A removed key stops verifying.
//
// Keys are files in the formats openssl writes: a PKCS#8 "PRIVATE KEY" PEM
// block (openssl genpkey -algorithm ed25519) and a PKIX "PUBLIC KEY" block
// (openssl pkey -pubout), or `twokey keygen`.
package attest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Signature is a signature and the ID of the key that made it.
type Signature struct {
	KeyID string `json:"key_id"`
	Sig   []byte `json:"sig"`
}

// IsZero reports whether s is no signature at all.
func (s Signature) IsZero() bool { return s.KeyID == "" && len(s.Sig) == 0 }

// Errors of Verify. A caller treats both the same: the statement is not
// trusted.
var (
	ErrUnsigned     = errors.New("not signed")
	ErrUnknownKey   = errors.New("signed by a key that is not trusted")
	ErrBadSignature = errors.New("signature does not match")
)

// KeyID names a public key: the first 8 bytes of its sha256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// message is what is signed: the purpose separates kinds of statement, so a
// signature made for one can never be presented as another.
func message(purpose string, msg []byte) []byte {
	b := make([]byte, 0, len("twokey/")+len(purpose)+1+len(msg))
	b = append(b, "twokey/"...)
	b = append(b, purpose...)
	b = append(b, 0)
	return append(b, msg...)
}

// Signer signs with one private key.
type Signer struct {
	id   string
	priv ed25519.PrivateKey
}

// NewSigner returns a Signer for priv.
func NewSigner(priv ed25519.PrivateKey) *Signer {
	return &Signer{id: KeyID(priv.Public().(ed25519.PublicKey)), priv: priv}
}

// GenerateSigner makes a new key, for tests and for a process that was given
// none (whose signatures then only it can verify).
func GenerateSigner() (*Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return NewSigner(priv), nil
}

// KeyID is the ID of the signer's key.
func (s *Signer) KeyID() string { return s.id }

// Public is the signer's public key.
func (s *Signer) Public() ed25519.PublicKey { return s.priv.Public().(ed25519.PublicKey) }

// Sign signs msg for purpose.
func (s *Signer) Sign(purpose string, msg []byte) Signature {
	return Signature{KeyID: s.id, Sig: ed25519.Sign(s.priv, message(purpose, msg))}
}

// String never shows the key.
func (s *Signer) String() string { return "ed25519 signer " + s.id }

// Keyring is a set of trusted public keys. Its zero value trusts nothing.
type Keyring struct {
	keys map[string]ed25519.PublicKey
}

// NewKeyring trusts pubs.
func NewKeyring(pubs ...ed25519.PublicKey) Keyring {
	return Keyring{}.With(pubs...)
}

// With returns a keyring that also trusts pubs.
func (k Keyring) With(pubs ...ed25519.PublicKey) Keyring {
	out := Keyring{keys: make(map[string]ed25519.PublicKey, len(k.keys)+len(pubs))}
	for id, p := range k.keys {
		out.keys[id] = p
	}
	for _, p := range pubs {
		out.keys[KeyID(p)] = slices.Clone(p)
	}
	return out
}

// Union trusts the keys of both.
func (k Keyring) Union(o Keyring) Keyring {
	pubs := make([]ed25519.PublicKey, 0, len(o.keys))
	for _, p := range o.keys {
		pubs = append(pubs, p)
	}
	return k.With(pubs...)
}

// IDs lists the trusted key IDs, sorted.
func (k Keyring) IDs() []string {
	ids := make([]string, 0, len(k.keys))
	for id := range k.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Keys are the trusted public keys, in the order of their IDs.
func (k Keyring) Keys() []ed25519.PublicKey {
	out := make([]ed25519.PublicKey, 0, len(k.keys))
	for _, id := range k.IDs() {
		out = append(out, slices.Clone(k.keys[id]))
	}
	return out
}

// Len is how many keys are trusted.
func (k Keyring) Len() int { return len(k.keys) }

// Verify checks that s is a trusted key's signature of msg for purpose.
func (k Keyring) Verify(purpose string, msg []byte, s Signature) error {
	if s.IsZero() {
		return ErrUnsigned
	}
	pub, ok := k.keys[s.KeyID]
	if !ok {
		return fmt.Errorf("%w (key %q)", ErrUnknownKey, s.KeyID)
	}
	if len(s.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, message(purpose, msg), s.Sig) {
		return fmt.Errorf("%w (key %s)", ErrBadSignature, s.KeyID)
	}
	return nil
}

// LoadSigner reads a private key file (PEM, PKCS#8 ed25519).
func LoadSigner(path string) (*Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signing key %s: no PEM \"PRIVATE KEY\" block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: %T is not an ed25519 key", path, k)
	}
	return NewSigner(priv), nil
}

// LoadKeyring reads public key files (PEM, PKIX ed25519) and trusts them
// all. It reports every unreadable file at once.
func LoadKeyring(paths ...string) (Keyring, error) {
	var pubs []ed25519.PublicKey
	var errs []error
	for _, path := range paths {
		p, err := loadPublic(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pubs = append(pubs, p)
	}
	return NewKeyring(pubs...), errors.Join(errs...)
}

func loadPublic(path string) (ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("public key %s: no PEM \"PUBLIC KEY\" block", path)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key %s: %T is not an ed25519 key", path, k)
	}
	return pub, nil
}

// WriteKeyPair makes a new key and writes it to base+".key" (mode 0600) and
// its public half to base+".pub". It refuses to overwrite either.
func WriteKeyPair(base string) (*Signer, error) {
	s, err := GenerateSigner()
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(s.priv)
	if err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		return nil, err
	}
	base = strings.TrimSuffix(base, ".key")
	for _, f := range []struct {
		path string
		typ  string
		der  []byte
		mode os.FileMode
	}{{base + ".key", "PRIVATE KEY", der, 0o600}, {base + ".pub", "PUBLIC KEY", pubDER, 0o644}} {
		out, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return nil, err
		}
		if err := errors.Join(pem.Encode(out, &pem.Block{Type: f.typ, Bytes: f.der}), out.Close()); err != nil {
			return nil, err
		}
	}
	return s, nil
}
