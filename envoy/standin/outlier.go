package standin

import "time"

// pick chooses the next endpoint round robin among those not ejected. When
// every endpoint is ejected it picks among all of them (Envoy's panic
// mode). Nil: the cluster has no endpoint.
func (u *upstream) pick(now time.Time) *host {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.hosts) == 0 {
		return nil
	}
	eligible := make([]*host, 0, len(u.hosts))
	for _, h := range u.hosts {
		if !h.ejected(now) {
			eligible = append(eligible, h)
		}
	}
	if len(eligible) == 0 {
		eligible = u.hosts
	}
	h := eligible[u.next%len(eligible)]
	u.next++
	return h
}

// ejected reports whether h is ejected at now, and brings it back once its
// ejection time is up.
func (h *host) ejected(now time.Time) bool {
	if h.until.IsZero() {
		return false
	}
	if now.Before(h.until) {
		return true
	}
	h.until, h.healthySince = time.Time{}, h.until
	return false
}

// report records the outcome of one request to h: failed is a 5xx, a
// connect failure or a reset (Envoy's consecutive_5xx counts locally
// originated failures too). It returns true when the failure ejected h.
//
// Ejection follows Envoy: after consecutive_5xx failures in a row, for
// base_ejection_time × the times h has been ejected (a count that drops by
// one for each interval h then stays in), unless max_ejection_percent of
// the cluster is ejected already, though one host can always be. An
// ejected host is brought back at the first interval tick (counted from
// the cluster's creation) at or after its time is up.
func (u *upstream) report(h *host, failed bool, now time.Time) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !failed {
		h.consecutive = 0
		return false
	}
	h.consecutive++
	o := u.cfg.outlier
	if o == nil || h.consecutive < o.consecutive5xx || h.ejected(now) {
		return false
	}
	ejected := 0
	for _, x := range u.hosts {
		if x.ejected(now) {
			ejected++
		}
	}
	if ejected > 0 && (ejected+1)*100 > o.maxEjectPercent*len(u.hosts) {
		return false
	}
	if !h.healthySince.IsZero() {
		h.ejections = max(0, h.ejections-int(now.Sub(h.healthySince)/o.interval))
	}
	h.ejections++
	h.consecutive = 0
	end := now.Add(o.baseEject * time.Duration(h.ejections))
	ticks := (end.Sub(u.created) + o.interval - 1) / o.interval
	h.until = u.created.Add(ticks * o.interval)
	return true
}
