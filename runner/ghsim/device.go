package ghsim

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// device is one OAuth device authorization: a code a person enters at the
// verification URL, and what they answered there.
type device struct {
	userCode string
	expires  time.Time
	login    string // authorized as; "" while pending
	denied   bool
	token    string // issued once
}

func (s *Server) clientID() string {
	if s.ClientID == "" {
		return "Iv1.twokey"
	}
	return s.ClientID
}

// serveDeviceFlow answers GitHub's device flow, as github.com does:
// POST /login/device/code, POST /login/oauth/access_token (errors with
// status 200: authorization_pending, expired_token, access_denied), and
// GET /api/v3/user for the token it issued. It reports whether it answered.
func (s *Server) serveDeviceFlow(w http.ResponseWriter, r *http.Request, body []byte) bool {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/login/device/code":
		form, _ := url.ParseQuery(string(body))
		if form.Get("client_id") != s.clientID() {
			writeJSON(w, http.StatusOK, map[string]string{"error": "incorrect_client_credentials"})
			return true
		}
		code, user := randomHex(20), strings.ToUpper(randomHex(2)+"-"+randomHex(2))
		s.mu.Lock()
		life := s.DeviceExpires
		if life <= 0 {
			life = 15 * time.Minute
		}
		s.devices[code] = &device{userCode: user, expires: time.Now().Add(life)}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"device_code": code, "user_code": user,
			"verification_uri": "https://github.example/login/device", "expires_in": int(life.Seconds()), "interval": 1})
		return true
	case r.Method == http.MethodPost && r.URL.Path == "/login/oauth/access_token":
		form, _ := url.ParseQuery(string(body))
		s.mu.Lock()
		defer s.mu.Unlock()
		d := s.devices[form.Get("device_code")]
		switch {
		case form.Get("client_id") != s.clientID():
			writeJSON(w, http.StatusOK, map[string]string{"error": "incorrect_client_credentials"})
		case form.Get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code":
			writeJSON(w, http.StatusOK, map[string]string{"error": "unsupported_grant_type"})
		case d == nil:
			writeJSON(w, http.StatusOK, map[string]string{"error": "incorrect_device_code"})
		case time.Now().After(d.expires):
			writeJSON(w, http.StatusOK, map[string]string{"error": "expired_token", "error_description": "The device code has expired."})
		case d.denied:
			writeJSON(w, http.StatusOK, map[string]string{"error": "access_denied", "error_description": "The authorization request was denied."})
		case d.login == "" || d.token != "":
			writeJSON(w, http.StatusOK, map[string]string{"error": "authorization_pending"})
		default:
			d.token = "gho_" + randomHex(18)
			s.userTokens[d.token] = d.login
			writeJSON(w, http.StatusOK, map[string]string{"access_token": d.token, "token_type": "bearer", "scope": ""})
		}
		return true
	case r.Method == http.MethodGet && strings.TrimSuffix(r.URL.Path, "/") == "/api/v3/user":
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.mu.Lock()
		login, ok := s.userTokens[tok]
		s.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials"})
			return true
		}
		u := s.userBy(login, "")
		s.mu.Lock()
		for _, known := range s.users {
			if known.Login == login && len(known.Emails) > 0 {
				u["email"] = known.Emails[0]
			}
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, u)
		return true
	}
	return false
}

// AuthorizeDevice is a person entering userCode at the verification URL
// and authorizing the app as login.
func (s *Server) AuthorizeDevice(userCode, login string) bool {
	return s.answerDevice(userCode, login, false)
}

// DenyDevice is a person entering userCode and cancelling.
func (s *Server) DenyDevice(userCode string) bool { return s.answerDevice(userCode, "", true) }

func (s *Server) answerDevice(userCode, login string, deny bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.devices {
		if d.userCode == userCode && time.Now().Before(d.expires) {
			d.login, d.denied = login, deny
			return true
		}
	}
	return false
}

// UserTokensIssued counts the OAuth tokens the device flow issued.
func (s *Server) UserTokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.userTokens)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SetDeviceExpiry sets how long device codes issued from now on live.
func (s *Server) SetDeviceExpiry(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.DeviceExpires = d
}
