package providersstub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// dialect is the error shape of a provider's API.
type dialect uint8

const (
	// dialectOpenAI (OpenAI, and Qwen's compatible mode):
	// {"error":{"message","type","param","code"}}.
	dialectOpenAI dialect = iota
	// dialectGemini (Google APIs): {"error":{"code","message","status"}}.
	dialectGemini
)

// apiError is an answer in the provider's own error shape.
type apiError struct {
	status  int
	message string
	param   string // OpenAI's param: the request field at fault; "" is null
	code    string // OpenAI's code; "" is null
	// retryAfter, in seconds, is sent as Retry-After (and as Gemini's
	// RetryInfo) when status is 429.
	retryAfter int
}

// invalid is a 400 about the request, naming param (OpenAI's field).
func invalid(param, code, format string, args ...any) apiError {
	return apiError{status: http.StatusBadRequest, message: fmt.Sprintf(format, args...), param: param, code: code}
}

// statusError is the answer a knob forces: status in the words the
// provider uses for it.
func statusError(d dialect, status, retryAfter int) apiError {
	e := apiError{status: status, message: http.StatusText(status), retryAfter: retryAfter}
	switch {
	case status == http.StatusTooManyRequests && d == dialectGemini:
		e.message = "Resource has been exhausted (e.g. check quota)."
	case status == http.StatusTooManyRequests:
		e.message, e.code = fmt.Sprintf("Rate limit reached for requests. Please try again in %ds.", retryAfter), "rate_limit_exceeded"
	case status == http.StatusServiceUnavailable && d == dialectGemini:
		e.message = "The model is overloaded. Please try again later."
	case status == http.StatusServiceUnavailable:
		e.message = "The engine is currently overloaded, please try again later."
	case status == http.StatusInternalServerError && d == dialectGemini:
		e.message = "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
	case status == http.StatusInternalServerError:
		e.message = "The server had an error while processing your request. Sorry about that!"
	}
	if e.message == "" {
		e.message = "status " + strconv.Itoa(status)
	}
	return e
}

// openAIType is OpenAI's error type for a status.
func openAIType(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return "requests"
	case status == http.StatusUnauthorized:
		return "authentication_error"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request_error"
}

// googleStatus is the google.rpc.Code name Google APIs send for an HTTP
// status.
func googleStatus(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return "INVALID_ARGUMENT"
	case http.StatusUnauthorized:
		return "UNAUTHENTICATED"
	case http.StatusForbidden:
		return "PERMISSION_DENIED"
	case http.StatusNotFound:
		return "NOT_FOUND"
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return "UNIMPLEMENTED"
	case http.StatusConflict:
		return "ABORTED"
	case http.StatusTooManyRequests:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case http.StatusServiceUnavailable:
		return "UNAVAILABLE"
	case http.StatusGatewayTimeout:
		return "DEADLINE_EXCEEDED"
	}
	if status >= 500 {
		return "INTERNAL"
	}
	return "FAILED_PRECONDITION"
}

// write sends e in d's shape.
func (d dialect) write(w http.ResponseWriter, e apiError) {
	if e.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	if d == dialectGemini {
		writeJSON(w, e.status, geminiError(e))
		return
	}
	writeJSON(w, e.status, map[string]any{"error": map[string]any{
		"message": e.message, "type": openAIType(e.status), "param": nullable(e.param), "code": nullable(e.code),
	}})
}

func geminiError(e apiError) map[string]any {
	body := map[string]any{"code": e.status, "message": e.message, "status": googleStatus(e.status)}
	if e.status == http.StatusTooManyRequests {
		body["details"] = []any{map[string]any{
			"@type":      "type.googleapis.com/google.rpc.RetryInfo",
			"retryDelay": strconv.Itoa(e.retryAfter) + "s",
		}}
	}
	return map[string]any{"error": body}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// decodeError turns a failure to decode a request's JSON body into the
// provider's answer.
func decodeError(d dialect, err error) apiError {
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return invalid("", "", "The request body must be a JSON object, not %s.", typeErr.Value)
	case errors.As(err, &typeErr) && d == dialectGemini:
		return invalid(typeErr.Field, "", "Invalid JSON payload received. Invalid value at '%s' (%s), %s", typeErr.Field, typeErr.Type, typeErr.Value)
	case errors.As(err, &typeErr):
		return invalid(typeErr.Field, "invalid_type", "Invalid type for '%s': expected %s, but got %s.", typeErr.Field, typeErr.Type, typeErr.Value)
	case d == dialectGemini:
		return invalid("", "", "Invalid JSON payload received. %s", err)
	}
	return invalid("", "", "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)")
}

// writeJSON sends v as a JSON answer with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
