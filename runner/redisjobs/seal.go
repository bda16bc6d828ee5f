package redisjobs

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twokey/twokey/runner"
)

// A break-glass job's wrapping token goes back through Redis, where anyone
// with a Redis password could read it, and a signed job can be replayed. So
// the serve replica that dispatches the job makes a one-time X25519 key,
// puts its public half in the signed job, and keeps the private half in
// memory for as long as it waits; the worker seals the wrapping token to
// it. A replayed job makes the worker seal a new token to a key nobody
// holds any more.

const sealInfo = "twokey break-glass wrapping token v1"

// newRecipient makes the one-time key a break-glass job's result is sealed to.
func newRecipient() (*ecdh.PrivateKey, error) { return ecdh.X25519().GenerateKey(rand.Reader) }

// sealWrapped seals w to the recipient's public key: an ephemeral X25519
// key, and AES-256-GCM under a key derived from both.
func sealWrapped(recipient []byte, w runner.Wrapped) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(recipient)
	if err != nil {
		return nil, fmt.Errorf("break-glass job without a valid recipient key: %w", err)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	aead, err := sealKey(eph, pub, eph.PublicKey().Bytes(), recipient)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append(eph.PublicKey().Bytes(), nonce...)
	return aead.Seal(out, nonce, plain, recipient), nil
}

// openWrapped opens what sealWrapped sealed to priv's public key.
func openWrapped(priv *ecdh.PrivateKey, sealed []byte) (runner.Wrapped, error) {
	const keyLen = 32
	if len(sealed) < keyLen+12 {
		return runner.Wrapped{}, errors.New("sealed break-glass token too short")
	}
	ephPub, err := ecdh.X25519().NewPublicKey(sealed[:keyLen])
	if err != nil {
		return runner.Wrapped{}, err
	}
	recipient := priv.PublicKey().Bytes()
	aead, err := sealKey(priv, ephPub, sealed[:keyLen], recipient)
	if err != nil {
		return runner.Wrapped{}, err
	}
	nonce, box := sealed[keyLen:keyLen+aead.NonceSize()], sealed[keyLen+aead.NonceSize():]
	plain, err := aead.Open(nil, nonce, box, recipient)
	if err != nil {
		return runner.Wrapped{}, fmt.Errorf("open the sealed break-glass token: %w", err)
	}
	var w runner.Wrapped
	return w, json.Unmarshal(plain, &w)
}

func sealKey(priv *ecdh.PrivateKey, pub *ecdh.PublicKey, ephPub, recipient []byte) (cipher.AEAD, error) {
	shared, err := priv.ECDH(pub)
	if err != nil {
		return nil, err
	}
	key, err := hkdf.Key(sha256.New, shared, append(append([]byte{}, ephPub...), recipient...), sealInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
