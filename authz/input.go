package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/leakytokens/leaky/authz/store"
	"github.com/leakytokens/leaky/internal/serve"
)

// decodeJSON reads a bounded JSON body into v: one UTF-8 JSON value and
// nothing after it but white space, no unknown fields, and every string in
// it (at any depth) store.ValidText.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &apiError{http.StatusRequestEntityTooLarge, "too_large", "request body too large"}
	} else if err != nil {
		return badRequest("cannot read the body")
	}
	if !utf8.Valid(data) {
		return badRequest("body: not UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("malformed JSON body")
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("malformed JSON body: data after the JSON value")
	}
	if field, ok := textOK(reflect.ValueOf(v), ""); !ok {
		return badRequest(field + ": text must not contain a NUL character")
	}
	return nil
}

// textOK walks v's strings (through pointers, structs, slices and maps)
// and reports the JSON name of the first that is not store.ValidText.
func textOK(v reflect.Value, field string) (string, bool) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return textOK(v.Elem(), field)
		}
	case reflect.String:
		return field, store.ValidText(v.String())
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				name = f.Name
			}
			if f.IsExported() {
				if bad, ok := textOK(v.Field(i), name); !ok {
					return bad, false
				}
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if bad, ok := textOK(v.Index(i), field); !ok {
				return bad, false
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if !store.ValidText(it.Key().String()) {
				return field, false
			}
			if bad, ok := textOK(it.Value(), field); !ok {
				return bad, false
			}
		}
	}
	return field, true
}

// validURL refuses, 400 with the JSON envelope, a request whose decoded
// path or query is not store.ValidText (%00, %ff) or whose query is
// malformed, before any handler or store sees it.
func validURL(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !store.ValidText(r.URL.Path) {
			serve.WriteJSON(w, http.StatusBadRequest, serve.ErrorBody{Error: "invalid_request", Message: "path: not UTF-8 text, or contains a NUL character"})
			return
		}
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err == nil {
			for k, vs := range q {
				if !store.ValidText(k) || slices.ContainsFunc(vs, invalidText) {
					err = errors.New("query: not text")
				}
			}
		}
		if err != nil {
			serve.WriteJSON(w, http.StatusBadRequest, serve.ErrorBody{Error: "invalid_request", Message: "query: malformed, not UTF-8 text, or contains a NUL character"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func invalidText(s string) bool { return !store.ValidText(s) }
