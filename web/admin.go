package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
)

// Admin is what the admin API needs from the SIP plane; the gateway adapts the dispatcher and
// router to it. Values cross the boundary as plain data.
type Admin interface {
	DispatcherSets() []DispatcherSet
	SetDestinationState(set int, uri, state string) error
	ReloadDispatcher() error
	Dialogs() []Dialog
	Registrations() []Registration
	Bans() []Ban
	// LiftBan ends the ban covering addr (ErrInvalid: not an address; ErrNotFound: no ban).
	LiftBan(addr string) error
}

// Registration is one binding in the location service.
type Registration struct {
	User      string    `json:"user"`
	Contact   string    `json:"contact"`
	Source    string    `json:"source"`
	Transport string    `json:"transport"`
	Expires   time.Time `json:"expires"`
	UserAgent string    `json:"user_agent,omitempty"`
	Instance  string    `json:"instance,omitempty"`
}

// Ban is one source the SIP plane ignores.
type Ban struct {
	Prefix string    `json:"prefix"`
	Reason string    `json:"reason"`
	User   string    `json:"user,omitempty"`
	Since  time.Time `json:"since"`
	Until  time.Time `json:"until"`
}

// DispatcherSet is one dispatcher set as the admin API shows it.
type DispatcherSet struct {
	ID           int           `json:"id"`
	Destinations []Destination `json:"destinations"`
}

// Destination is one backend with its live state.
type Destination struct {
	URI         string    `json:"uri"`
	State       string    `json:"state"`
	ActiveCalls int64     `json:"active_calls"`
	RTTMillis   float64   `json:"rtt_ms"`
	Weight      int       `json:"weight"`
	Priority    int       `json:"priority"`
	MaxLoad     int       `json:"maxload"`
	DUID        string    `json:"duid,omitempty"`
	LastProbe   time.Time `json:"last_probe,omitzero"`
	ProbeResult string    `json:"probe_result,omitempty"`
}

// Dialog is one call the proxy tracks.
type Dialog struct {
	CallID   string    `json:"call_id"`
	Backend  string    `json:"backend"`
	State    string    `json:"state"`
	Started  time.Time `json:"started"`
	Answered time.Time `json:"answered,omitzero"`
}

// ErrNotFound tells the admin API to answer 404; ErrInvalid, 422.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid")
)

func (s *Server) adminRoutes(r chi.Router) {
	r.Get("/dispatcher", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"sets": s.deps.Admin.DispatcherSets()})
	})
	r.Post("/dispatcher/state", s.setState)
	r.Post("/dispatcher/reload", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.deps.Admin.ReloadDispatcher(); err != nil {
			// All-or-nothing: the running sets are untouched; say why the new list was refused.
			writeJSONError(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "sets": s.deps.Admin.DispatcherSets()})
	})
	r.Get("/dialogs", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"dialogs": s.deps.Admin.Dialogs()})
	})
	r.Get("/registrations", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"registrations": s.deps.Admin.Registrations()})
	})
	r.Get("/bans", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"bans": s.deps.Admin.Bans()})
	})
	r.Post("/bans/lift", s.liftBan)
}

func (s *Server) liftBan(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Address string `json:"address"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1024))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "body must be {\"address\": \"IP\"}")
		return
	}
	if err := s.deps.Admin.LiftBan(req.Address); err != nil {
		status := http.StatusUnprocessableEntity
		if errors.Is(err, ErrNotFound) {
			status = http.StatusNotFound
		}
		writeJSONError(w, status, err.Error())
		return
	}
	s.log.Info("ban lifted by admin", "remote", req.Address)
	writeJSON(w, http.StatusOK, map[string]any{"bans": s.deps.Admin.Bans()})
}

type stateChange struct {
	Set   int    `json:"set"`
	URI   string `json:"uri"`
	State string `json:"state"`
}

func (s *Server) setState(w http.ResponseWriter, r *http.Request) {
	var req stateChange
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "body must be {\"set\": N, \"uri\": \"sip:...\", \"state\": \"active|draining|disabled\"}")
		return
	}
	switch req.State {
	case "active", "draining", "disabled":
	default:
		writeJSONError(w, http.StatusUnprocessableEntity, "state must be active, draining or disabled")
		return
	}
	if err := s.deps.Admin.SetDestinationState(req.Set, req.URI, req.State); err != nil {
		status := http.StatusUnprocessableEntity
		if errors.Is(err, ErrNotFound) {
			status = http.StatusNotFound
		}
		writeJSONError(w, status, err.Error())
		return
	}
	s.log.Info("destination state set by admin", "set", req.Set, "backend", req.URI, "state", req.State)
	writeJSON(w, http.StatusOK, map[string]any{"sets": s.deps.Admin.DispatcherSets()})
}
