package gateway

import (
	"fmt"
	"net/netip"

	"github.com/dualgate/dualgate/sip"
	"github.com/dualgate/dualgate/sip/dispatcher"
	"github.com/dualgate/dualgate/users"
	"github.com/dualgate/dualgate/web"
)

// accounts lets the HTTP plane's login check passwords against the users file.
type accounts struct{ st *users.Store }

var _ web.Accounts = accounts{}

func (a accounts) Authenticate(name, password string) ([]string, bool) {
	u, ok := a.st.CheckWebPassword(name, password)
	if !ok {
		return nil, false
	}
	return u.Roles, true
}

func (a accounts) Roles(name string) ([]string, bool) {
	u, ok := a.st.Lookup(name)
	if !ok {
		return nil, false
	}
	return u.Roles, true
}

// sipUsers gives the SIP plane the users file: who exists, and their digest hashes.
type sipUsers struct{ st *users.Store }

var _ sip.Directory = sipUsers{}

func (u sipUsers) HA1(name, algorithm string) (string, bool) { return u.st.HA1(name, algorithm) }

func (u sipUsers) Exists(name string) bool {
	_, ok := u.st.Lookup(name)
	return ok
}

// adminAdapter gives the HTTP plane's admin API plain views of the SIP plane's state.
type adminAdapter struct{ g *Gateway }

var _ web.Admin = adminAdapter{}

func (a adminAdapter) DispatcherSets() []web.DispatcherSet {
	var out []web.DispatcherSet
	for _, set := range a.g.disp.Sets() {
		ws := web.DispatcherSet{ID: set.ID}
		for _, d := range set.Dests {
			last, reason := d.ProbeStatus()
			ws.Destinations = append(ws.Destinations, web.Destination{
				URI: d.URI, State: d.State().String(), ActiveCalls: d.ActiveCalls(),
				RTTMillis: float64(d.RTT().Microseconds()) / 1000, Weight: d.Weight, Priority: d.Priority,
				MaxLoad: d.MaxLoad, DUID: d.DUID, LastProbe: last, ProbeResult: reason,
			})
		}
		out = append(out, ws)
	}
	return out
}

func (a adminAdapter) SetDestinationState(set int, uri, state string) error {
	st, err := dispatcher.ParseState(state)
	if err != nil {
		return fmt.Errorf("%w: %v", web.ErrInvalid, err)
	}
	if a.g.disp.Find(set, uri) == nil {
		return fmt.Errorf("%w: set %d has no destination %s", web.ErrNotFound, set, uri)
	}
	return a.g.disp.SetState(set, uri, st)
}

// ReloadDispatcher re-reads the config file (or, for the embedded config, its list file) and
// replaces the dispatcher sets all-or-nothing.
func (a adminAdapter) ReloadDispatcher() error {
	next := a.g.cfg
	if a.g.cfg.path != "" {
		var err error
		if next, err = Load(a.g.cfg.path); err != nil {
			return err
		}
	}
	return a.g.Reload(next)
}

func (a adminAdapter) Registrations() []web.Registration {
	out := []web.Registration{}
	for _, b := range a.g.router.Bindings() {
		out = append(out, web.Registration{User: b.AOR, Contact: b.Contact.String(), Source: b.Source.String(),
			Transport: b.Transport, Expires: b.Expires, UserAgent: b.UserAgent, Instance: b.Instance})
	}
	return out
}

func (a adminAdapter) Bans() []web.Ban {
	out := []web.Ban{}
	for _, b := range a.g.router.Bans() {
		out = append(out, web.Ban{Prefix: b.Prefix().String(), Reason: b.Reason, User: b.User, Since: b.Since, Until: b.Until})
	}
	return out
}

func (a adminAdapter) LiftBan(addr string) error {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address", web.ErrInvalid, addr)
	}
	if !a.g.router.LiftBan(ip) {
		return fmt.Errorf("%w: no ban covers %s", web.ErrNotFound, addr)
	}
	return nil
}

func (a adminAdapter) Dialogs() []web.Dialog {
	var out []web.Dialog
	for _, d := range a.g.router.Dialogs() {
		out = append(out, web.Dialog{CallID: d.CallID, Backend: d.Backend, State: d.State, Started: d.Started, Answered: d.Answered})
	}
	return out
}
