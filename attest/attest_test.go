package attest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestSignVerify(t *testing.T) {
	s, err := GenerateSigner()
	if err != nil {
		t.Fatal(err)
	}
	k := NewKeyring(s.Public())
	sig := s.Sign("grant", []byte("body"))
	if err := k.Verify("grant", []byte("body"), sig); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		purpose string
		msg     string
		sig     Signature
		want    error
	}{
		"other purpose":  {"approval", "body", sig, ErrBadSignature},
		"other message":  {"grant", "bodz", sig, ErrBadSignature},
		"unsigned":       {"grant", "body", Signature{}, ErrUnsigned},
		"unknown key":    {"grant", "body", Signature{KeyID: "0011223344556677", Sig: sig.Sig}, ErrUnknownKey},
		"truncated":      {"grant", "body", Signature{KeyID: sig.KeyID, Sig: sig.Sig[:10]}, ErrBadSignature},
		"untrusted ring": {"grant", "body", sig, ErrUnknownKey},
	} {
		ring := k
		if name == "untrusted ring" {
			ring = Keyring{}
		}
		if err := ring.Verify(c.purpose, []byte(c.msg), c.sig); !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c.want)
		}
	}
}

// Rotation: adding a key keeps old signatures verifying; removing the old
// key stops them.
func TestRotation(t *testing.T) {
	old, _ := GenerateSigner()
	next, _ := GenerateSigner()
	sig := old.Sign("audit", []byte("h"))
	if err := NewKeyring(old.Public()).With(next.Public()).Verify("audit", []byte("h"), sig); err != nil {
		t.Fatalf("after adding a key: %v", err)
	}
	if err := NewKeyring(next.Public()).Verify("audit", []byte("h"), sig); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("after removing the old key: %v", err)
	}
}

// Key files: twokey keygen's, and openssl's (the same formats).
func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := WriteKeyPair(filepath.Join(dir, "serve"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "serve.key")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v", fi.Mode().Perm())
	}
	if _, err := WriteKeyPair(filepath.Join(dir, "serve")); err == nil {
		t.Fatal("overwrote a key")
	}
	loaded, err := LoadSigner(filepath.Join(dir, "serve.key"))
	if err != nil || loaded.KeyID() != s.KeyID() {
		t.Fatalf("load signer: %v", err)
	}
	ring, err := LoadKeyring(filepath.Join(dir, "serve.pub"))
	if err != nil || ring.Len() != 1 || ring.IDs()[0] != s.KeyID() {
		t.Fatalf("load keyring: %v %v", ring.IDs(), err)
	}
	if err := ring.Verify("x", []byte("m"), loaded.Sign("x", []byte("m"))); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyring(filepath.Join(dir, "serve.key"), filepath.Join(dir, "missing.pub")); err == nil {
		t.Fatal("a private key and a missing file loaded as public keys")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("no openssl; skipping its formats")
		return
	}
	priv, pub := filepath.Join(dir, "o.key"), filepath.Join(dir, "o.pub")
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519", "-out", priv).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v %s", err, out)
	}
	if out, err := exec.Command("openssl", "pkey", "-in", priv, "-pubout", "-out", pub).CombinedOutput(); err != nil {
		t.Fatalf("openssl pkey: %v %s", err, out)
	}
	os2, err := LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	ring, err = LoadKeyring(pub)
	if err != nil || ring.Verify("x", []byte("m"), os2.Sign("x", []byte("m"))) != nil {
		t.Fatalf("openssl keys: %v", err)
	}
}
