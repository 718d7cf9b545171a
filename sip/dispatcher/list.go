package dispatcher

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
)

// Spec describes one destination as configuration gives it (from a dispatcher.list line or
// inline YAML), before it becomes a live Destination.
type Spec struct {
	SetID    int    `yaml:"set"`
	URI      string `yaml:"uri"`
	Flags    int    `yaml:"flags"`
	Priority int    `yaml:"priority"`
	Weight   int    `yaml:"weight"`
	RWeight  int    `yaml:"rweight"`
	MaxLoad  int    `yaml:"maxload"`
	DUID     string `yaml:"duid"`
	// State is the configured administrative state: active (default), draining or disabled.
	State string `yaml:"state"`
	// Origin says where the spec came from ("line 12"), so errors point at it.
	Origin string `yaml:"-"`
}

// where names a spec in error messages: its list line if it has one, else its position.
func (s Spec) where(i int) string {
	if s.Origin != "" {
		return s.Origin
	}
	return fmt.Sprintf("destination %d", i+1)
}

// ParseList reads Kamailio's dispatcher.list format: one destination per line,
// "setid uri [flags [priority [attrs]]]", attrs as "weight=50;maxload=200;duid=fs1".
// Blank lines and lines starting with # are ignored. Every bad line is reported, not just
// the first, so an operator fixes the file in one go.
func ParseList(r io.Reader) ([]Spec, error) {
	var specs []Spec
	var errs []error
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		s, err := parseLine(text)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", line, err))
			continue
		}
		s.Origin = fmt.Sprintf("line %d", line)
		specs = append(specs, s)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read dispatcher list: %w", err))
	}
	return specs, errors.Join(errs...)
}

func parseLine(text string) (Spec, error) {
	f := strings.Fields(text)
	if len(f) < 2 {
		return Spec{}, fmt.Errorf("want \"setid uri [flags [priority [attrs]]]\", got %q", text)
	}
	if len(f) > 5 {
		// attrs never contain spaces in Kamailio's format; a sixth field is a description.
		f = f[:5]
	}
	var s Spec
	var err error
	if s.SetID, err = strconv.Atoi(f[0]); err != nil || s.SetID < 0 {
		return s, fmt.Errorf("set id %q is not a non-negative integer", f[0])
	}
	s.URI = f[1]
	if len(f) > 2 {
		if s.Flags, err = strconv.Atoi(f[2]); err != nil {
			return s, fmt.Errorf("flags %q is not an integer", f[2])
		}
	}
	if len(f) > 3 {
		if s.Priority, err = strconv.Atoi(f[3]); err != nil {
			return s, fmt.Errorf("priority %q is not an integer", f[3])
		}
	}
	if len(f) > 4 {
		if err := parseAttrs(f[4], &s); err != nil {
			return s, err
		}
	}
	return s, nil
}

func parseAttrs(attrs string, s *Spec) error {
	for _, kv := range strings.Split(attrs, ";") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		var err error
		switch strings.ToLower(k) {
		case "weight":
			s.Weight, err = strconv.Atoi(v)
		case "rweight":
			s.RWeight, err = strconv.Atoi(v)
		case "maxload":
			s.MaxLoad, err = strconv.Atoi(v)
		case "duid":
			s.DUID = v
		default:
			// Kamailio keeps arbitrary attributes for scripts; we have no use for them.
		}
		if err != nil {
			return fmt.Errorf("attribute %s=%q is not an integer", k, v)
		}
	}
	return nil
}

// build validates specs and turns them into destinations grouped by set.
func build(specs []Spec) (map[int]*Set, error) {
	sets := map[int]*Set{}
	seen := map[string]bool{}
	var errs []error
	for i, s := range specs {
		d := &Destination{SetID: s.SetID, URI: s.URI, Priority: s.Priority, Weight: s.Weight,
			RWeight: s.RWeight, MaxLoad: s.MaxLoad, DUID: s.DUID, calls: new(atomic.Int64)}
		if err := d.parseURI(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.where(i), err))
			continue
		}
		if s.Weight < 0 || s.RWeight < 0 || s.MaxLoad < 0 {
			errs = append(errs, fmt.Errorf("%s (%s): weight, rweight and maxload must not be negative", s.where(i), s.URI))
			continue
		}
		if d.Weight == 0 {
			d.Weight = 1
		}
		if d.RWeight == 0 {
			d.RWeight = d.Weight
		}
		st, err := ParseState(s.State)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", s.where(i), s.URI, err))
			continue
		}
		switch {
		case s.Flags&flagDisabled != 0:
			st = Disabled
		case s.Flags&flagInactive != 0 && st == Active:
			st = Inactive
		}
		d.state.Store(int32(st))
		if seen[d.key()] {
			errs = append(errs, fmt.Errorf("%s: %s appears twice in set %d", s.where(i), s.URI, s.SetID))
			continue
		}
		seen[d.key()] = true
		set := sets[s.SetID]
		if set == nil {
			set = &Set{ID: s.SetID}
			sets[s.SetID] = set
		}
		set.Dests = append(set.Dests, d)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, set := range sets {
		set.prepare()
	}
	return sets, nil
}
