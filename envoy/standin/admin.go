package standin

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
)

// adminHandler is the admin interface (Envoy's /ready and /config_dump,
// and /metrics): loopback only, see Config.Validate.
func (g *Gateway) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if g.current.Load() == nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("PRE_INITIALIZING\n"))
			return
		}
		_, _ = w.Write([]byte("LIVE\n"))
	})
	mux.HandleFunc("GET /config_dump", g.configDump)
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "message": "the admin interface has /ready, /config_dump and /metrics"})
	})
	return mux
}

// configDump is the applied configuration: the version of each type and
// every resource as protojson, by kind (listeners, routes, clusters,
// endpoints). Before the first configuration it is {"applied": false}.
func (g *Gateway) configDump(w http.ResponseWriter, _ *http.Request) {
	p := g.current.Load()
	if p == nil {
		writeJSON(w, http.StatusOK, map[string]any{"applied": false})
		return
	}
	out := map[string]any{"applied": true, "versions": p.cfg.versions}
	for kind, msgs := range p.cfg.resources {
		list := make([]json.RawMessage, 0, len(msgs))
		for _, m := range msgs {
			b, err := protojson.Marshal(m)
			if err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal", "message": err.Error()})
				return
			}
			list = append(list, b)
		}
		out[kind] = list
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
