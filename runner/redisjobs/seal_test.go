package redisjobs

import (
	"testing"
	"time"

	"github.com/twokey/twokey/runner"
)

// A sealed wrapping token opens only with the one-time key it was sealed to.
func TestSealedWrappedOpensOnlyForItsRecipient(t *testing.T) {
	mine, err := newRecipient()
	if err != nil {
		t.Fatal(err)
	}
	other, err := newRecipient()
	if err != nil {
		t.Fatal(err)
	}
	w := runner.Wrapped{WrapToken: "hvs.wrapping-token-abcdefghijklmnopqrstuvwxyz", Accessor: "acc", Expires: time.Now().UTC().Round(0)}
	sealed, err := sealWrapped(mine.PublicKey().Bytes(), w)
	if err != nil {
		t.Fatal(err)
	}
	got, err := openWrapped(mine, sealed)
	if err != nil || got.WrapToken != w.WrapToken || got.Accessor != "acc" {
		t.Fatalf("open = %+v, %v", got, err)
	}
	if _, err := openWrapped(other, sealed); err == nil {
		t.Fatal("another key opened the token")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := openWrapped(mine, sealed); err == nil {
		t.Fatal("a changed box opened")
	}
	if _, err := sealWrapped(nil, w); err == nil {
		t.Fatal("sealed to no key")
	}
}
